"""Knowledge neurons on the built-in facts and on CounterFact, the slow parts of `studies/kn_locality`.

    OMP_NUM_THREADS=1 EDITLAB_DATA=... python kn_locality_study_run.py builtin       # the 56 built-in facts
    OMP_NUM_THREADS=1 EDITLAB_DATA=... python kn_locality_study_run.py counterfact   # CounterFact dev-500, first 50 records

Knowledge neurons are searched in the upper half of the layers (15-29), three prompts per fact (`fact_prompts`), 20 IG
steps, threshold 0.2, share 0.5 (the `knowledge_neurons` defaults). `kept` is the share of the other built-in facts
(those whose answer is neither of the record's answers) still top-1 correct with the edit applied. A fact or record that
`kn_edit` refuses keeps its unedited scores (`edited` False, `refused` says why).

builtin writes
  results/kn_locality_builtin_neurons.csv   one row per knowledge neuron: case_id, layer, neuron
  results/kn_locality_builtin_effects.csv   one row per fact: neurons found, search seconds, `kn_effects` (relative changes
                                            of P(answer) with the knowledge / random neurons suppressed and enhanced)
  results/kn_locality_builtin_edits.csv     one row per (setting, fact): edit_scores, kept, edited, refused
counterfact writes
  results/kn_locality_cf_records.csv        one row per record: top-1 correct before editing, neurons, seconds of `kn_edit`
                                            (search and update), refused
  results/kn_locality_cf_edits.csv          one row per (setting, record): edit_scores, kept, edited
"""
import os, sys
os.environ.setdefault('OMP_NUM_THREADS', '1')
import time
from pathlib import Path
import numpy as np, pandas as pd, torch
from editlab.models import load_model, adapter
from editlab.data import builtin_facts, load_counterfact
from editlab.evaluate import edit_scores
from editlab.knowledge_neurons import knowledge_neurons, fact_prompts, kn_effects, kn_edit, top1_correct

RES = Path(__file__).resolve().parent/'results'
PARTS = ('builtin', 'counterfact')
# built-in facts: the KN edit under four settings of its update rule
SETTINGS = {'λ1=λ2=0.1 (default)': {}, 'λ1=λ2=1 (released code)': dict(lambda1=1.0, lambda2=1.0),
            'λ=0.1, no sign (paper rule)': dict(sign_aware=False), "EasyEdit scale: 2(t'-t)": dict(norm_match=False, lambda1=2.0, lambda2=2.0)}
LAMBDAS = (0.03, 0.1, 0.3, 1.0)   # CounterFact: the same neurons edited at lambda1 = lambda2 = each of these
N_CF = 50

def others_of(r, facts):
    "The built-in facts whose answer is neither of the record's answers"
    return [g for g in facts if g['target_true'] not in (r['target_true'], r['target_new'])]

def kept_share(model, tok, r, facts): return float(np.mean(top1_correct(model, tok, others_of(r, facts))))

def refusal(e:ValueError)->str: return 'same first token' if 'same token' in str(e) else 'no knowledge neurons'

def run_builtin(model, tok, layers):
    facts = builtin_facts()
    neurons, eff = {}, []
    for f in facts:
        t = time.perf_counter()
        neurons[f['case_id']] = knowledge_neurons(model, tok, fact_prompts(f), f['target_true'], layers=layers)[0]
        secs = time.perf_counter() - t
        row = dict(case_id=f['case_id'], n_neurons=len(neurons[f['case_id']]), search_seconds=secs)
        if neurons[f['case_id']]: row.update(kn_effects(model, tok, f, neurons[f['case_id']], seed=f['case_id']))
        eff.append(row); print(f"neurons {f['case_id']}: {len(neurons[f['case_id']])} in {secs:.1f} s", flush=True)
    RES.mkdir(exist_ok=True)
    pd.DataFrame([dict(case_id=c, layer=L, neuron=i) for c, v in neurons.items() for L, i in v]).to_csv(RES/'kn_locality_builtin_neurons.csv', index=False)
    pd.DataFrame(eff).to_csv(RES/'kn_locality_builtin_effects.csv', index=False)
    has = [f for f in facts if neurons[f['case_id']]]
    rows = [edit_scores(model, tok, has).assign(setting='unedited', kept=1.0, edited=False, refused='')]
    for name, kw in SETTINGS.items():
        for f in has:
            try: d = kn_edit(model, tok, f, neurons=neurons[f['case_id']], **kw)
            except ValueError as e:
                rows.append(edit_scores(model, tok, [f]).assign(setting=name, kept=np.nan, edited=False, refused=refusal(e))); continue
            with d.apply(model):
                rows.append(edit_scores(model, tok, [f]).assign(setting=name, kept=kept_share(model, tok, f, facts), edited=True, refused=''))
        print(f"edits: {name}", flush=True)
    pd.concat(rows, ignore_index=True).to_csv(RES/'kn_locality_builtin_edits.csv', index=False)

def run_counterfact(model, tok, layers):
    facts, cf = builtin_facts(), load_counterfact('dev-500', N_CF)
    before = top1_correct(model, tok, cf)
    rows = [edit_scores(model, tok, cf).assign(setting='unedited', kept=1.0, edited=False)]
    recs = []
    for r, b in zip(cf, before):
        t = time.perf_counter()
        try: d = kn_edit(model, tok, r, layers=layers)
        except ValueError as e:
            recs.append(dict(case_id=r['case_id'], top1_before=b, n_neurons=0, seconds=np.nan, refused=refusal(e)))
            rows += [edit_scores(model, tok, [r]).assign(setting=f'KN λ={l}', kept=1.0, edited=False) for l in LAMBDAS]
            continue
        recs.append(dict(case_id=r['case_id'], top1_before=b, n_neurons=len(d.meta['neurons']), seconds=time.perf_counter() - t, refused=''))
        for l in LAMBDAS:
            dl = d if l == d.meta['hparams']['lambda1'] else kn_edit(model, tok, r, neurons=d.meta['neurons'], lambda1=l, lambda2=l)
            with dl.apply(model): rows.append(edit_scores(model, tok, [r]).assign(setting=f'KN λ={l}', kept=kept_share(model, tok, r, facts), edited=True))
        print(f"{r['case_id']}: {recs[-1]['seconds']:.1f} s", flush=True)
    RES.mkdir(exist_ok=True)
    pd.DataFrame(recs).to_csv(RES/'kn_locality_cf_records.csv', index=False)
    pd.concat(rows, ignore_index=True).to_csv(RES/'kn_locality_cf_edits.csv', index=False)

if __name__ == '__main__':
    parts = sys.argv[1:] or list(PARTS)
    bad = [p for p in parts if p not in PARTS]
    if bad: sys.exit(f"unknown part(s) {bad}: choose from {PARTS}")
    torch.set_grad_enabled(False)
    model, tok = load_model()
    L = adapter(model).n_layers; layers = list(range(L // 2, L))
    for p in parts:
        t0 = time.perf_counter()
        (run_builtin if p == 'builtin' else run_counterfact)(model, tok, layers)
        print(f"{p}: {time.perf_counter() - t0:.0f} s", flush=True)
