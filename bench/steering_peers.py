"""Steering side by side with the peers `steering-vectors` (0.12) and `repeng` (0.4): generation speed with a vector
applied, and vector extraction for contrast pairs. One process, same model, same prompts, same vector.

1. Greedy generation (`--new-tokens`, default 64) with the same vector added to the residual stream after decoder
   block `--layer` (editlab `blocks.10.hook_resid_post` = steering-vectors `layer_activations={10: v}` with
   layer_type='decoder_block' = repeng `ControlModel(model, [10])`), at every position, coefficient 1. Before timing,
   the greedy tokens and per-step logits of editlab's arm are checked against each peer's arm (and against plain HF,
   to show the vector is active). Arms run in interleaved rounds, the order rotated every round, so drift in machine
   load hits them alike; prints tokens/s (median) and the overhead against plain HF (median and best), then the
   per-forward cost on the prompt (blocks of forwards, interleaved), which is less noisy than tokens/s.
   repeng wraps the decoder layer in place, so its arm wraps, sets the control, generates, resets and unwraps each
   time (all inside the timed region, as editlab's and steering-vectors' apply/undo are), and the other arms always
   run on the bare model.
2. Extraction for `--pairs` contrast pairs (default 100, built from `editlab.data.sentiment_pairs()`), all layers,
   batch 8: `editlab.steering.contrastive_vectors` (mean difference at the last token; pca_diff too, for the
   method-matched repeng comparison) vs `steering_vectors.train_steering_vector` (mean difference, token -1) vs
   `repeng.ControlVector.train` (its default, pca_diff). Warm-up, then best of `--repeats` interleaved runs; prints
   seconds and the ratios, and the cosine between the vectors at each layer.

Targets: editlab's generation overhead <= 2% and <= each peer's.  The peers pin transformers < 5: run in .venv-peers

    bash bench/peers_env.sh
    .venv-peers/bin/python bench/steering_peers.py [--rounds 9] [--new-tokens 64] [--layer 10] [--threads 1]
                                                   [--pairs 100] [--batch-size 8] [--repeats 3] [--skip-gen] [--skip-extract]
"""
import os
os.environ.setdefault('TQDM_DISABLE', '1')  # repeng's extraction has hard-wired progress bars
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import argparse, datetime, platform, statistics, time, warnings
from importlib.metadata import version
import numpy as np
import torch, transformers
if int(transformers.__version__.split('.')[0]) < 5:  # the safetensors cache format differs slightly by version (see scripts/compat.sh)
    os.environ.setdefault('EDITLAB_CACHE', os.path.expanduser('~/.cache/editlab-tf4'))
from editlab.models import load_model, adapter
from editlab.hooks import encode, forward
from editlab.artifacts import Intervention
from editlab.steering import contrastive_vectors, contrast_activations
from editlab.data import sentiment_pairs
from steering_vectors import SteeringVector, train_steering_vector
from repeng import ControlModel, ControlVector, DatasetEntry

def contrast_pairs(n:int)->tuple[list[str], list[str]]:
    "n distinct (positive, negative) pairs: the built-in sentiment pairs, then again behind prefixes"
    base, prefixes = sentiment_pairs(), ['', 'Review: ', 'Note: ', 'Quote: ', 'Comment: ']
    if n > len(base)*len(prefixes): raise ValueError(f"at most {len(base)*len(prefixes)} pairs")
    ps = [(prefixes[i // len(base)] + p, prefixes[i // len(base)] + q) for i, (p, q) in
          ((i, base[i % len(base)]) for i in range(n))]
    assert len(set(ps)) == n
    return [p for p, _ in ps], [q for _, q in ps]

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=9); ap.add_argument('--new-tokens', type=int, default=64)
    ap.add_argument('--layer', type=int, default=10); ap.add_argument('--threads', type=int, default=1, help='0 = torch default')
    ap.add_argument('--forward-blocks', type=int, default=20, help='blocks of 10 prompt forwards per arm (0 skips)')
    ap.add_argument('--pairs', type=int, default=100); ap.add_argument('--batch-size', type=int, default=8)
    ap.add_argument('--repeats', type=int, default=3); ap.add_argument('--skip-gen', action='store_true')
    ap.add_argument('--skip-extract', action='store_true')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    print(f"steering_peers  {datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()} ({os.cpu_count()} CPUs)")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, editlab {version('editlab')}, "
          f"steering-vectors {version('steering-vectors')}, repeng {version('repeng')}, numpy {np.__version__}, "
          f"scikit-learn {version('scikit-learn')}; torch threads {torch.get_num_threads()}")
    model, tok = load_model()
    A = adapter(model)
    print(f"model: SmolLM2-135M-Instruct ({A.n_layers} layers, d_model {A.d_model}, {model.dtype}), EDITLAB_CACHE={os.environ.get('EDITLAB_CACHE')}")
    if not a.skip_gen: bench_generation(model, tok, A, a)
    if not a.skip_extract: bench_extraction(model, tok, A, a)

# ---------------------------------------------------------------------------------------------------------- generation
def bench_generation(model, tok, A, a):
    L, hook = a.layer, f'blocks.{a.layer}.hook_resid_post'
    block = model.model.layers[L]
    b = encode(tok, ["The history of the city begins with"])
    vec = torch.randn(A.d_model, generator=torch.Generator().manual_seed(0))
    steer = Intervention.from_vectors({hook: vec}, positions='all')
    sv = SteeringVector(layer_activations={L: vec.clone()}, layer_type='decoder_block')
    cv = ControlVector(model_type=model.config.model_type, directions={L: vec.numpy().copy()})

    def gen(m=model, **kw):
        return m.generate(**b, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False,
                          pad_token_id=tok.pad_token_id, **kw)
    def repeng_arm(**kw):
        cm = ControlModel(model, [L])   # wraps model.model.layers[L] in place
        try:
            cm.set_control(cv, 1.0)
            return gen(cm, **kw)
        finally:
            cm.reset(); cm.unwrap()     # back to the bare block, so no other arm runs through repeng's wrapper
    arms = {
        'plain HF': lambda **kw: gen(**kw),
        'editlab (Intervention)': lambda **kw: _with(steer.apply(model), lambda: gen(**kw)),
        'steering-vectors': lambda **kw: _with(sv.apply(model), lambda: gen(**kw)),
        'repeng (ControlModel)': repeng_arm,
    }
    def bare():
        assert model.model.layers[L] is block, "a wrapper was left on the decoder layer"
        assert not block._forward_hooks and not block._forward_pre_hooks, "a hook was left on the decoder layer"

    # equivalence: same greedy tokens and (near-)same logits at every step
    print(f"\n== 1. generation: {a.new_tokens} new tokens, greedy, vector (seeded randn, |v|={vec.norm():.1f}) after "
          f"decoder block {L} = {hook}, all positions, coefficient 1 ==")
    outs = {}
    for k, f in arms.items():
        o = f(return_dict_in_generate=True, output_logits=True); bare()
        outs[k] = (o.sequences[0, b['input_ids'].shape[1]:], torch.stack(o.logits)[:, 0])
    ref_t, ref_l = outs['editlab (Intervention)']
    print("equivalence check (editlab arm vs each other arm, all steps):")
    for k, (t, l) in outs.items():
        if k == 'editlab (Intervention)': continue
        same = int((t == ref_t).sum()); dl = float((l - ref_l).abs().max())
        first = next((i for i in range(len(t)) if t[i] != ref_t[i]), None)
        print(f"  vs {k:24s} greedy tokens identical {same}/{len(t)}" + (f" (first difference at step {first})" if first is not None else "")
              + f", max |logit diff| {dl:.3g}")
        if k == 'plain HF': assert first is not None or dl > 1e-2, "the steering vector has no effect: the check would prove nothing"
        else: assert first is None and dl < 1e-3, f"{k} does not add the same vector at the same place as editlab"
    print(f"  editlab continuation: {tok.decode(ref_t[:24])!r}...")
    print(f"  plain   continuation: {tok.decode(outs['plain HF'][0][:24])!r}...")

    gen()  # warm-up
    times = {k: [] for k in arms}; names = list(arms)
    for r in range(a.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:   # rotate the order every round
            t = time.perf_counter(); arms[k](); times[k].append(time.perf_counter() - t); bare()
    base, bmin = statistics.median(times['plain HF']), min(times['plain HF'])
    print(f"\n{a.rounds} interleaved rounds (order rotated), torch threads {torch.get_num_threads()}")
    print(f"{'arm':26s} {'tok/s (median)':>15s} {'tok/s (best)':>13s} {'overhead (median)':>18s} {'overhead (best)':>16s}")
    for k, ts in times.items():
        m = statistics.median(ts)
        print(f"{k:26s} {a.new_tokens/m:15.2f} {a.new_tokens/min(ts):13.2f} {100*(m/base-1):+17.2f}% {100*(min(ts)/bmin-1):+15.2f}%")
    e = times['editlab (Intervention)']
    for k in ('steering-vectors', 'repeng (ControlModel)'):
        print(f"editlab time vs {k:22s}: {100*(statistics.median(e)/statistics.median(times[k])-1):+.2f}% (median), "
              f"{100*(min(e)/min(times[k])-1):+.2f}% (best)   (negative = editlab faster)")
    ov = 100*(statistics.median(e)/base-1)
    peers_ov = {k: 100*(statistics.median(times[k])/base-1) for k in ('steering-vectors', 'repeng (ControlModel)')}
    print(f"target editlab overhead <= 2%: {'met' if ov <= 2 else 'NOT met'} ({ov:+.2f}% median); "
          + "; ".join(f"<= {k} ({v:+.2f}%): {'met' if ov <= v else 'NOT met'}" for k, v in peers_ov.items()))

    if a.forward_blocks:
        print(f"per-forward cost on the prompt ({b['input_ids'].shape[1]} tokens), {a.forward_blocks} blocks of 10 forwards "
              f"per arm, interleaved (apply/undo once per block):")
        fwd = lambda m=model: [forward(m, **b) for _ in range(10)]
        def rep_block():
            cm = ControlModel(model, [L])
            try: cm.set_control(cv, 1.0); fwd()
            finally: cm.reset(); cm.unwrap()
        blocks = {'plain HF': fwd, 'editlab (Intervention)': lambda: _with(steer.apply(model), fwd),
                  'steering-vectors': lambda: _with(sv.apply(model), fwd), 'repeng (ControlModel)': rep_block}
        ts = {k: [] for k in blocks}
        for r in range(a.forward_blocks):
            for k in names[r % len(names):] + names[:r % len(names)]:
                t = time.perf_counter(); blocks[k](); ts[k].append((time.perf_counter() - t)/10); bare()
        fb, fm = min(ts['plain HF']), statistics.median(ts['plain HF'])
        for k, v in ts.items():
            print(f"  forward, {k:24s} best {1000*min(v):7.2f} ms  median {1000*statistics.median(v):7.2f} ms  "
                  f"overhead best {100*(min(v)/fb-1):+6.2f}%  median {100*(statistics.median(v)/fm-1):+6.2f}%")

# ---------------------------------------------------------------------------------------------------------- extraction
def bench_extraction(model, tok, A, a):
    pos, neg = contrast_pairs(a.pairs)
    layers = list(range(A.n_layers)); bs = a.batch_size
    print(f"\n== 2. extraction: {a.pairs} contrast pairs ({2*a.pairs} prompts), all {len(layers)} layers, batch {bs}, "
          f"last token ==")
    def repeng_train():
        cm = ControlModel(model, [a.layer])   # repeng's README trains on the wrapped model
        try:  # hidden_layers: repeng's default, range(-1, -n_layers, -1), leaves out layer 0; batch_size, not the documented max_batch_size
            return cm, ControlVector.train(cm, tok, [DatasetEntry(p, n) for p, n in zip(pos, neg)], batch_size=bs,
                                           hidden_layers=layers)
        finally: cm.unwrap()
    arms = {
        'editlab mean_diff': lambda: contrastive_vectors(model, tok, pos, neg, hooks='blocks.*.hook_resid_post', read='last',
                                                          method='mean_diff', batch_size=bs),
        'steering-vectors (mean)': lambda: train_steering_vector(model, tok, list(zip(pos, neg)), layers=layers,
                                                                 layer_type='decoder_block', read_token_index=-1, batch_size=bs),
        'repeng (pca_diff)': lambda: repeng_train()[1],
        'editlab pca_diff': lambda: contrastive_vectors(model, tok, pos, neg, hooks='blocks.*.hook_resid_post', read='last',
                                                         method='pca_diff', batch_size=bs),
    }
    res, times, names = {}, {k: [] for k in arms}, list(arms)
    for k, f in arms.items(): res[k] = f()   # warm-up; its vectors feed the agreement check
    for r in range(a.repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter(); arms[k](); times[k].append(time.perf_counter() - t)
    print(f"{'arm':26s} {'best s':>8s} {'median s':>9s}   runs (after a warm-up)")
    for k, ts in times.items(): print(f"{k:26s} {min(ts):8.2f} {statistics.median(ts):9.2f}   {', '.join(f'{t:.2f}' for t in ts)}")
    e, ep = min(times['editlab mean_diff']), min(times['editlab pca_diff'])
    print(f"editlab mean_diff vs steering-vectors: {min(times['steering-vectors (mean)'])/e:.2f}x the speed (best vs best)")
    print(f"editlab mean_diff vs repeng:           {min(times['repeng (pca_diff)'])/e:.2f}x the speed")
    print(f"editlab pca_diff  vs repeng (same method family): {min(times['repeng (pca_diff)'])/ep:.2f}x the speed")

    cos = lambda x, y: float(torch.nn.functional.cosine_similarity(torch.as_tensor(x).double().flatten(), torch.as_tensor(y).double().flatten(), 0))
    em, es = res['editlab mean_diff'], res['steering-vectors (mean)'].layer_activations
    cs = [cos(em[f'blocks.{l}.hook_resid_post'], es[l]) for l in layers]
    rel = max(float((em[f'blocks.{l}.hook_resid_post'] - es[l].cpu()).norm() / es[l].norm()) for l in layers)
    print(f"agreement, editlab mean_diff vs steering-vectors: cosine at layer {a.layer} {cs[a.layer]:.6f}; "
          f"min over all {len(layers)} layers {min(cs):.6f}; max relative L2 difference {rel:.2e}")
    ep_, rp = res['editlab pca_diff'], res['repeng (pca_diff)'].directions
    cr = [cos(ep_[f'blocks.{l}.hook_resid_post'], rp[l]) for l in layers]
    cm_ = [cos(em[f'blocks.{l}.hook_resid_post'], rp[l]) for l in layers]
    print(f"agreement, editlab pca_diff vs repeng pca_diff: cosine at layer {a.layer} {cr[a.layer]:.4f}, "
          f"median over layers {statistics.median(cr):.4f} (repeng's sklearn PCA centres the differences, editlab's pca_diff "
          f"does not; repeng's layer {layers[-1]} is read after the final norm)")
    print(f"agreement, editlab mean_diff vs repeng pca_diff: cosine at layer {a.layer} {cm_[a.layer]:.4f}, "
          f"median over layers {statistics.median(cm_):.4f}")
    # repeng's recipe redone on editlab's own activations (untimed): sklearn-style PCA, i.e. centred, of the pair differences
    P, N = contrast_activations(model, tok, pos, neg, hooks='blocks.*.hook_resid_post', read='last', batch_size=bs)
    def centred_pc(l):
        D = (P[f'blocks.{l}.hook_resid_post'] - N[f'blocks.{l}.hook_resid_post']).double()
        return torch.linalg.svd(D - D.mean(0), full_matrices=False).Vh[0]
    cc = [abs(cos(centred_pc(l), rp[l])) for l in layers]
    print(f"agreement, centred PCA of editlab's pair differences vs repeng pca_diff (|cosine|, sign is arbitrary): "
          f"layer {a.layer} {cc[a.layer]:.6f}, min over layers 0-{layers[-2]} {min(cc[:-1]):.6f}, layer {layers[-1]} {cc[-1]:.4f}")

def _with(cm, f):
    with cm: return f()

if __name__ == '__main__':
    warnings.filterwarnings('ignore', message='.*To copy construct from a tensor.*')
    main()
