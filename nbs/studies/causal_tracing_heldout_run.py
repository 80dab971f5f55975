"""Causal tracing, held out: does the MLP window that `30_causal_tracing` chose (centred on layer 6) carry the fact on
known_1000 facts that no choice saw?

    OMP_NUM_THREADS=1 EDITLAB_DATA=... python causal_tracing_heldout_run.py [n_facts]

The layer was chosen on the 56 built-in facts and the first 100 known_1000 facts the model predicts; this run traces
the next ones (predicted facts 100 on), MLP states, windows of 10 centred on layer 6 and, as a contrast, on layer 20
(the late layers where the subject's MLP states no longer matter), 2 noise draws, ROME's noise scale over all subjects.
Writes results/causal_tracing_heldout.csv: per fact the indirect effect at the last subject token for each window.
"""
import os, sys
os.environ.setdefault('OMP_NUM_THREADS', '1')
from pathlib import Path
import pandas as pd, torch
from editlab.models import load_model
from editlab.data import load_known
from editlab.tracing import trace, predicted_facts, noise_level

RES = Path(__file__).resolve().parent/'results'
LAYERS = [6, 20]

if __name__ == '__main__':
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    torch.set_grad_enabled(False)
    model, tok = load_model()
    known_all = load_known()
    known = predicted_facts(model, tok, known_all)
    nu = noise_level(model, tok, [k['subject'] for k in known_all])
    rows = []
    for f in known[100:100 + n]:
        r = trace(model, tok, f['prompt'], f['subject'], f['target'], kind='mlp', window=10, samples=2, noise=nu, layers=LAYERS)
        last = r.subject[1] - 1
        rows.append(dict(known_id=f['known_id'], subject=f['subject'], p_clean=r.p_clean, p_corrupted=r.p_corrupted,
                         **{f'ie_{L}': float(r.scores[i, last] - r.p_corrupted) for i, L in enumerate(r.layers)}))
        print(f['known_id'], flush=True)
    RES.mkdir(exist_ok=True); pd.DataFrame(rows).to_csv(RES/'causal_tracing_heldout.csv', index=False)
