"""Causal tracing, the full study behind `studies/causal_tracing_aie`: average indirect effects over many facts.

    OMP_NUM_THREADS=1 EDITLAB_DATA=... python causal_tracing_run.py builtin   # 56 built-in facts, all three kinds
    OMP_NUM_THREADS=1 EDITLAB_DATA=... python causal_tracing_run.py known     # first 100 predicted known_1000 facts, MLP

Each part writes its tidy effect table (kind, layer, token_class, aie, p, n, window) to
results/causal_tracing_<part>.csv and one row of what it was run on (facts, mean p clean / corrupted, noise scale,
draws, window) to results/causal_tracing_<part>_meta.csv; the notebook reads both. The two parts are independent and
can run side by side. Windows of 10 layers, 2 noise draws per fact, ROME's noise scale (3 x the std of the subjects'
token embeddings) over the set's own subjects.
"""
import os, sys
os.environ.setdefault('OMP_NUM_THREADS', '1')
from pathlib import Path
import pandas as pd, torch
from editlab.models import load_model
from editlab.data import builtin_facts, load_known
from editlab.tracing import average_effects, predicted_facts, noise_level

RES = Path(__file__).resolve().parent/'results'
PARTS = ('builtin', 'known')

def run(part:str):
    torch.set_grad_enabled(False)
    model, tok = load_model()
    if part == 'builtin':
        pool = builtin_facts()
        facts = predicted_facts(model, tok, pool)
        eff = average_effects(model, tok, facts, samples=2, noise=noise_level(model, tok, [f['subject'] for f in pool]))
    else:
        pool = load_known()    # ROME's known_1000 facts, the full file
        predicted = predicted_facts(model, tok, pool)
        facts, n_pred = predicted[:100], len(predicted)
        eff = average_effects(model, tok, facts, kind='mlp', samples=2, noise=noise_level(model, tok, [k['subject'] for k in pool]))
    meta = dict(part=part, n_pool=len(pool), n_predicted=len(facts) if part == 'builtin' else n_pred, **eff.attrs)
    RES.mkdir(exist_ok=True)
    eff.to_csv(RES/f'causal_tracing_{part}.csv', index=False)
    pd.DataFrame([meta]).to_csv(RES/f'causal_tracing_{part}_meta.csv', index=False)

if __name__ == '__main__':
    parts = sys.argv[1:] or list(PARTS)
    bad = [p for p in parts if p not in PARTS]
    if bad: sys.exit(f"unknown part(s) {bad}: choose from {PARTS}")
    for p in parts: run(p)
