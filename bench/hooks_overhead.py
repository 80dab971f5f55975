"""Hook overhead during generation: plain HF vs editlab with a no-op hook vs an additive steering vector.

Same process, same prompt, interleaved rounds (so drift in machine load hits all arms alike); prints tokens/s per arm
and the overhead ratio against plain HF. Target: <= 2% for the additive intervention.

    python bench/hooks_overhead.py [--rounds 5] [--new-tokens 64] [--layer 10]
"""
import argparse, statistics, time
import torch
from editlab.models import load_model, adapter
from editlab.hooks import intervene, add_vector, encode
from editlab.artifacts import Intervention

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=9); ap.add_argument('--new-tokens', type=int, default=64)
    ap.add_argument('--layer', type=int, default=10); ap.add_argument('--threads', type=int, default=0)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    model, tok = load_model(); A = adapter(model)
    b = encode(tok, ["The history of the city begins with"])
    hook = f'blocks.{a.layer}.hook_resid_post'
    vec = torch.randn(A.d_model, generator=torch.Generator().manual_seed(0))
    steer = Intervention.from_vectors({hook: vec}, positions=0)
    gen = lambda: model.generate(**b, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
    arms = {
        'plain HF': lambda: gen(),
        'editlab no-op hook': lambda: _with(intervene(model, {hook: lambda x, c: None}), gen),
        'editlab additive (Intervention)': lambda: _with(steer.apply(model), gen),
    }
    gen()  # warm-up
    times = {k: [] for k in arms}
    for r in range(a.rounds):
        for k, f in arms.items():
            t = time.perf_counter(); f(); times[k].append(time.perf_counter() - t)
    base = statistics.median(times['plain HF'])
    print(f"generate {a.new_tokens} new tokens, {a.rounds} interleaved rounds, torch threads {torch.get_num_threads()}")
    bmin = min(times['plain HF'])
    print(f"{'arm':34s} {'tok/s (median)':>15s} {'overhead (median)':>18s} {'overhead (best)':>16s}")
    for k, ts in times.items():
        m = statistics.median(ts)
        print(f"{k:34s} {a.new_tokens/m:15.2f} {100*(m/base-1):+17.2f}% {100*(min(ts)/bmin-1):+15.2f}%")
    print("per-forward cost on the prompt, blocks of 10 forwards interleaved:")
    forward_overhead(model, b, hook, steer)

def forward_overhead(model, b, hook, steer, blocks=20, reps=10):
    "Per-forward time on the prompt (no generation loop): the hooks' own cost, with less noise than tokens/s"
    from editlab.hooks import forward
    arms = {'plain HF': lambda: forward(model, **b),
            'editlab additive (Intervention)': lambda: _with(steer.apply(model), lambda: [forward(model, **b) for _ in range(reps)])}
    ts = {k: [] for k in arms}
    for _ in range(blocks):
        t = time.perf_counter(); [forward(model, **b) for _ in range(reps)]; ts['plain HF'].append((time.perf_counter() - t)/reps)
        t = time.perf_counter(); arms['editlab additive (Intervention)'](); ts['editlab additive (Intervention)'].append((time.perf_counter() - t)/reps)
    base = min(ts['plain HF'])
    for k, v in ts.items():
        print(f"  forward, {k:32s} best {1000*min(v):7.2f} ms   median {1000*statistics.median(v):7.2f} ms   "
              f"overhead (best) {100*(min(v)/base-1):+.2f}%")

def _with(cm, f):
    with cm: return f()

if __name__ == '__main__': main()
