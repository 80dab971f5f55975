"""ITI probe fitting for every head of the embedded model: editlab's batched torch fit vs a per-head scikit-learn loop.

Same features (per-head outputs at the answer's last token for TruthfulQA fold-0 train answers, grouped split by
question), same standardisation; prints wall time of each, the ratio, and the validation-accuracy difference per head.
Targets: >= 10x faster, accuracy within 1 point.  Needs scikit-learn (pip install scikit-learn) and TruthfulQA
(`editlab.data.load_truthfulqa`: `$EDITLAB_DATA`, the cache or a download).

    python bench/iti_probes.py [--questions 200]
"""
import argparse, time
from pathlib import Path
import numpy as np, torch

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--questions', type=int, default=200); a = ap.parse_args()
    from sklearn.linear_model import LogisticRegression
    from editlab.models import load_model
    from editlab.data import load_truthfulqa, split
    from editlab.iti import qa_pairs, head_activations, fit_head_probes
    torch.set_grad_enabled(False)
    items = load_truthfulqa('train')[:a.questions]
    fit, tune = split(items, 0.2, seed=0)
    model, tok = load_model()
    Pf, Af, yf, _ = qa_pairs(fit, 2); Pt, At, yt, _ = qa_pairs(tune, 2)
    t = time.perf_counter(); Xf, Xt = head_activations(model, tok, Pf, Af), head_activations(model, tok, Pt, At)
    print(f"features: {len(Pf)} train / {len(Pt)} validation answers, {Xf.shape[1]}x{Xf.shape[2]} heads x {Xf.shape[3]} ({time.perf_counter()-t:.1f} s, not timed below)")
    yf, yt = torch.tensor(yf), torch.tensor(yt)
    t = time.perf_counter(); r = fit_head_probes(Xf, yf, Xt, yt); t_torch = time.perf_counter() - t
    mu, sd = Xf.mean(0), Xf.std(0).clamp_min(1e-6); Zf, Zt = ((Xf - mu)/sd).numpy(), ((Xt - mu)/sd).numpy()
    L, H = Xf.shape[1:3]; acc = np.zeros((L, H))
    t = time.perf_counter()
    for l in range(L):
        for h in range(H):
            clf = LogisticRegression(max_iter=1000).fit(Zf[:, l, h], yf.numpy())
            acc[l, h] = clf.score(Zt[:, l, h], yt.numpy())
    t_sk = time.perf_counter() - t
    ours = r.set_index(['layer', 'head']).val_acc
    diff = np.array([ours[(l, h)] - acc[l, h] for l in range(L) for h in range(H)])
    print(f"batched torch (all {L*H} heads at once): {t_torch:6.2f} s")
    print(f"scikit-learn loop ({L*H} LogisticRegression fits): {t_sk:6.2f} s")
    print(f"speed-up: {t_sk/t_torch:.1f}x   (target >= 10x)")
    print(f"validation accuracy, editlab - sklearn, per head: mean {100*diff.mean():+.2f} pts, mean |diff| {100*np.abs(diff).mean():.2f} pts, "
          f"best-head accuracy {100*ours.max():.1f} vs {100*acc.max():.1f}   (target: within 1 pt)")
    top_sk = {(int(l), int(h)) for l, h in zip(*np.unravel_index(np.argsort(-acc, axis=None)[:16], acc.shape))}
    top_ours = {(int(l), int(h)) for l, h in r.head(16)[['layer', 'head']].values}
    print(f"top-16 heads shared: {len(top_ours & top_sk)}/16")

if __name__ == '__main__': main()
