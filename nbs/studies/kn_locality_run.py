"""Knowledge-neuron edits: efficacy against locality on held-out CounterFact records.

    OMP_NUM_THREADS=1 EDITLAB_DATA=... python kn_locality_run.py [n_records]

Records: CounterFact dev-500 records 400 on (no choice of KN saw them; the registry default was fixed before). Per record,
integrated gradients over the three prompts of `fact_prompts` (the prompt, its paraphrase, "Fact: {prompt}"; layers
15-29, 20 steps) are computed once; each setting refines them (`refine_neurons`: at most None / 5 / 2 neurons) and edits
with `kn_edit` at lambda1 = lambda2 = lambda. No setting is chosen here: the file draws the trade-off curve on which the
registry default sits. Resumable: appends one line per (setting, record) to results/kn_locality_items.csv after each
record and skips the records already there.
"""
import os, sys
os.environ.setdefault('OMP_NUM_THREADS', '1')
import time
from pathlib import Path
import pandas as pd, torch
from editlab.models import load_model, adapter
from editlab.data import load_counterfact
from editlab.knowledge_neurons import kn_tradeoff_items

RES = Path(__file__).resolve().parent/'results'
OUT = RES/'kn_locality_items.csv'
SETTINGS = [(None, 0.1),   # the registry's default: every refined neuron, lambda 0.1
            (None, 0.03), (None, 0.3), (5, 0.1), (5, 0.3), (2, 0.3), (2, 1.0)]

if __name__ == '__main__':
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    torch.set_grad_enabled(False)
    model, tok = load_model()
    L = adapter(model).n_layers; layers = list(range(L // 2, L))
    done = pd.read_csv(OUT) if OUT.exists() else pd.DataFrame(columns=['case_id'])
    RES.mkdir(exist_ok=True)
    for r in load_counterfact('dev-500')[400:400 + n]:
        if r['case_id'] in set(done.case_id): continue
        t = time.perf_counter()
        rows = kn_tradeoff_items(model, tok, [r], SETTINGS, layers).assign(subject=r['subject'])
        rows['setting'] = [s + (' (default)' if s == 'all neurons, λ 0.1' else '') for s in rows.setting]
        done = pd.concat([done, rows], ignore_index=True)
        done.to_csv(OUT, index=False)
        print(f"{r['case_id']}: {time.perf_counter() - t:.0f} s", flush=True)
