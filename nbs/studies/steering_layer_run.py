"""Steering layer and sign, measured: the layer chosen on selection prompts, the effect reported on held-out prompts.

    OMP_NUM_THREADS=1 python steering_layer_run.py

Vector: mean difference of the 72 built-in sentiment pairs (mean over tokens) at every layer's residual stream.
Selection: `NEUTRAL_PROMPTS` (20 prompts), layers 2-12, alpha in {-8, -4, -2, 0, 2, 4, 8}; the layer is chosen by
`editlab.steering.choose_layer`. Held-out: `HELD_OUT_PROMPTS` (32 prompts no choice saw), the chosen layer and the previous
default (3), alpha in {-8, -6, -4, -3, -2, -1, 0, 2, 4, 8} (finer where the text turns negative). The selection rows are kept when the file has them (resumable). Writes results/steering_layer_items.csv: one line per
(split, layer, alpha, prompt) with the VADER score, the n-gram entropy and the continuation.
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
from pathlib import Path
import numpy as np, pandas as pd, torch
from editlab.models import load_model
from editlab.data import sentiment_pairs
from editlab.steering import contrast_activations, vectors_from, steering_sweep, NEUTRAL_PROMPTS, HELD_OUT_PROMPTS

RES = Path(__file__).resolve().parent/'results'
SEL_LAYERS, SEL_ALPHAS = [2, 3, 4, 6, 8, 10, 12], [-8, -4, -2, 2, 4, 8]
HELD_ALPHAS = [-8, -6, -4, -3, -2, -1, 2, 4, 8]

def sweep_items(model, tok, vecs, layers, alphas, prompts, split):
    "Per-prompt rows of a sweep; alpha = 0 is run once and shared by the layers"
    hooks = [f'blocks.{L}.hook_resid_post' for L in layers]
    sw = steering_sweep(model, tok, vecs, alphas, prompts=prompts, hooks=hooks, max_new_tokens=20, progress=True)
    base = steering_sweep(model, tok, vecs, [0], prompts=prompts, hooks=hooks[:1], max_new_tokens=20, progress=False)
    base = pd.concat([base.assign(layer=L) for L in layers])
    rows = []
    for r in pd.concat([base, sw]).itertuples():
        for i, (s, f) in enumerate(zip(r.scores, r.fluencies)): rows.append(dict(split=split, layer=r.layer, alpha=r.alpha, prompt=i, score=s, fluency=f))
    return pd.DataFrame(rows)

if __name__ == '__main__':
    torch.set_grad_enabled(False)
    model, tok = load_model()
    pairs = sentiment_pairs()
    P, N = contrast_activations(model, tok, [p for p, _ in pairs], [n for _, n in pairs], read='mean')
    vecs = vectors_from(P, N, 'mean_diff')
    out = RES/'steering_layer_items.csv'
    sel = pd.read_csv(out).query("split == 'selection'") if out.exists() else None
    if sel is None or sel.empty:
        sel = sweep_items(model, tok, vecs, SEL_LAYERS, SEL_ALPHAS, NEUTRAL_PROMPTS, 'selection')
        RES.mkdir(exist_ok=True); sel.to_csv(out, index=False)
    from editlab.steering import choose_layer
    L, table = choose_layer(sel)
    print(table.round(3)); print('chosen layer', L)
    held = sweep_items(model, tok, vecs, sorted({L, 3}), HELD_ALPHAS, HELD_OUT_PROMPTS, 'held-out')
    pd.concat([sel, held]).to_csv(out, index=False)
