"""The studies of tests/test_multiprocess.py, run by one process (`python tests/mp_studies.py OUT`) or by several
(`accelerate launch --num_processes 2 --cpu tests/mp_studies.py OUT`): the main process writes each study's frame to OUT"""
import os, sys
from pathlib import Path
import torch
from editlab.models import tiny_model, adapter
from editlab.data import builtin_facts
from editlab.artifacts import WeightDelta
from editlab.rome import rome
from editlab.memit import memit
from editlab.compare import compare_editors
from editlab.table import run_table_study
from editlab.sequential import sequential_runs
from editlab.steering import steering_sweep
from editlab.shard import process_state

def toy(L):
    "A sequential editor adding a seeded random delta to block L's down projection"
    def ed(model, tok, rec, prev):
        n = adapter(model).param_name(L, 'down'); g = torch.Generator().manual_seed(len(rec['prompt']) + L)
        return WeightDelta({n: 0.01 * torch.randn(model.get_parameter(n).shape, generator=g)})
    return ed

def main(out:Path):
    torch.set_num_threads(1); torch.set_grad_enabled(False)
    st = process_state(); out.mkdir(parents=True, exist_ok=True)
    m, tok = tiny_model('llama', n_layers=3)
    recs = [dict(case_id=i, subject=s, prompt=f'the {s} is', target_true='there', target_new=t,
                 paraphrases=[f'so the {s} is'], neighborhood=['a small cat is'], neighborhood_true=['there'])
            for i, (s, t) in enumerate([('big world', 'hello'), ('red moon', 'world'), ('old tree', 'green')])]
    ran = []   # the records this process edited with ROME: each process runs only its share
    eds = {'ROME': lambda mm, tt, r: ran.append(r['case_id']) or rome(mm, tt, r, 0, prefixes=['a b'], steps=2),
           'MEMIT': lambda mm, tt, rs: memit(mm, tt, rs, [0, 1], prefixes=['a b'], steps=2, progress=False)}
    frames = {'compare': compare_editors(m, tok, recs, eds, batch=('MEMIT',), gen_tokens=4, progress=False, save=out/'compare_saved.csv')}
    facts = builtin_facts()[:3]
    frames['table'] = run_table_study(m, tok, ['FT-L', 'GRACE'], facts, save=out/'table_saved.csv', progress=False,
                                      hp={'FT-L': dict(layer=0, steps=2), 'GRACE': dict(layer=1, steps=2)})
    frames['sequential'] = sequential_runs(m, tok, {'toy0': dict(records=facts, editor=toy(0), stages=(1, 3)),
                                                    'toy1': dict(records=facts[::-1], editor=toy(1), stages=(2, 3))})
    g = torch.Generator().manual_seed(0)
    vecs = {f'blocks.{L}.hook_resid_post': torch.randn(adapter(m).d_model, generator=g) for L in (0, 1)}
    frames['sweep'] = steering_sweep(m, tok, vecs, [0.0, 2.0, 8.0], prompts=['the big world', 'a small cat'], max_new_tokens=4,
                                     score=lambda texts: [float(len(t)) for t in texts], progress=False)
    (out/f'rome_records_{st.process_index}.txt').write_text(' '.join(map(str, ran)))
    if st.is_main_process:
        for k, df in frames.items(): df.to_csv(out/f'{k}.csv', index=False)
        (out/'processes.txt').write_text(str(st.num_processes))
    st.wait_for_everyone()

if __name__ == '__main__': main(Path(sys.argv[1]))
