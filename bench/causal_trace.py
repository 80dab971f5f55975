"""Causal tracing of one prompt on the embedded model: editlab's batched `trace` against one forward per (layer, token) cell.

All layers x all tokens of one prompt, `samples` noise draws per cell, the same draws in both arms. The reference arm is
the naive algorithm (ROME's loop): one forward of `samples` rows per cell, the full prompt each time, every token
included. The batched arms pack many cells x draws into each forward; `reuse_prefix` additionally skips the tokens before
the subject (exact: nothing changes there) and recomputes only positions >= the restored token from the corrupted run's
KV cache (exact by causality). Checks that all arms give the same grid (max abs diff), prints the times and the speed
ratios. Target: batched >= 5x faster than one forward per cell.

On one CPU thread the ratio depends on the prompt: each naive forward (10 rows x T tokens) is already a fair-sized matrix
product, so batching alone gains 1.3-4.4x and the rest comes from the work `reuse_prefix` skips, which is large when the
subject sits late in a short prompt ("The capital of Italy is": ~10x) and small when it opens a long one (the default,
10 tokens with the subject at token 1: 2.5-3x). The arms run one after the other, so load drift on a shared machine moves
the ratio by tens of percent: compare runs on a quiet machine.

    python bench/causal_trace.py [--prompt "..." --subject "..."] [--kind resid] [--samples 10] [--threads 0]
"""
import argparse, time
import torch
from editlab.models import load_model, adapter
from editlab.hooks import capture, forward, hook_name, intervene
from editlab.evaluate import encode_prompt, subject_span
from editlab.data import builtin_facts
from editlab.tracing import TRACE_KINDS, noise_level, trace, window_layers

def one_forward_per_cell(model, tok, prompt, subject, kind, window, samples, noise, seed=0):
    "The naive trace: for every (layer, token), one forward of `samples` corrupted rows with that cell restored"
    ids = encode_prompt(tok, prompt); s, e = subject_span(tok, prompt, subject)
    nL, d, T = adapter(model).n_layers, adapter(model).d_model, len(ids)
    x = torch.tensor([ids])
    eps = torch.randn(samples, e - s, d, generator=torch.Generator().manual_seed(seed)) * noise
    def corrupt(a, ctx): a = a.clone(); a[:, s:e] += eps.to(a.dtype); return a
    with capture(model, f'blocks.*.{TRACE_KINDS[kind]}') as c: ans = int(forward(model, x).logits[0, -1].argmax())
    grid = torch.zeros(nL, T)
    for L in range(nL):
        for t in range(T):
            fns = {'blocks.0.hook_resid_pre': corrupt}
            for M in ([L] if kind == 'resid' else window_layers(nL, L, window)):
                n = hook_name(M, TRACE_KINDS[kind])
                def restore(a, ctx, n=n, t=t): a = a.clone(); a[:, t] = c[n][0, t]; return a
                fns[n] = restore
            with intervene(model, fns):
                grid[L, t] = forward(model, x.expand(samples, -1)).logits[:, -1].float().softmax(-1)[:, ans].mean()
    return grid

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--prompt', default="The Eiffel Tower is located in the city of")
    ap.add_argument('--subject', default="Eiffel Tower")
    ap.add_argument('--kind', default='resid', choices=list(TRACE_KINDS))
    ap.add_argument('--samples', type=int, default=10); ap.add_argument('--window', type=int, default=10)
    ap.add_argument('--batch-size', type=int, default=256); ap.add_argument('--threads', type=int, default=0)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    model, tok = load_model()
    nu = noise_level(model, tok, [f['subject'] for f in builtin_facts()])
    T = len(encode_prompt(tok, a.prompt)); s, e = subject_span(tok, a.prompt, a.subject); nL = adapter(model).n_layers
    print(f"{a.kind} trace of {a.prompt!r} (subject {a.subject!r}, tokens {s}..{e-1} of {T}): {nL} layers x {T} tokens = "
          f"{nL*T} cells x {a.samples} noise draws, torch threads {torch.get_num_threads()}")
    kw = dict(kind=a.kind, window=a.window, samples=a.samples, noise=nu, batch_size=a.batch_size)
    trace(model, tok, a.prompt, a.subject, layers=[nL-1], **kw)   # warm-up
    times = {}
    t = time.perf_counter(); fast = trace(model, tok, a.prompt, a.subject, **kw)
    times['batched, reuse_prefix'] = time.perf_counter() - t
    t = time.perf_counter(); full = trace(model, tok, a.prompt, a.subject, reuse_prefix=False, **kw)
    times['batched, full sequences'] = time.perf_counter() - t
    t = time.perf_counter(); ref = one_forward_per_cell(model, tok, a.prompt, a.subject, a.kind, a.window, a.samples, nu)
    times['one forward per cell'] = time.perf_counter() - t
    d1, d2 = float((fast.scores - ref).abs().max()), float((full.scores - ref).abs().max())
    print(f"p_clean {fast.p_clean:.4f}  p_corrupted {fast.p_corrupted:.4f}  answer {fast.answer!r}")
    print(f"max |batched - per cell|: reuse_prefix {d1:.2e}, full sequences {d2:.2e}")
    assert d1 < 1e-4 and d2 < 1e-4, "batched and per-cell grids differ"
    base = times['one forward per cell']
    for k, v in times.items(): print(f"  {k:26s} {v:8.2f} s   speed-up x{base/v:6.2f}")

if __name__ == '__main__':
    main()
