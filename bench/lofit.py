"""Training time per epoch: LoFiT (step 1 head selection, step 2 bias tuning), RED and LoRA on the same data, in one process.

Same model (the embedded SmolLM2-135M-Instruct), same examples, same batch size, same loss and the same training loop
(`editlab.lofit.train_params`); only the trainable parameters differ. RED: a scaling and a bias vector at every block's
MLP output (`editlab.red.red_tune`). Arms run interleaved, one epoch each per round, so that
drift in machine load hits all of them alike; prints the median seconds per epoch of the training loop itself, the
ratio to LoRA, the whole call including set-up (LoRA copies the model and injects adapters; DPO reference log-probs are
computed once, before timing, and shared), and the trainable-parameter counts. Step 2 uses the top-K heads of a step-1 run made before timing.

    python bench/lofit.py [--task antonym|truthfulqa] [--n 128] [--k 16] [--rounds 3] [--threads 1]
"""
import argparse, statistics, time
from pathlib import Path
import torch
from editlab.models import load_model, adapter
from editlab.data import load_icl_task, load_truthfulqa
from editlab.lofit import icl_completions, tqa_preferences, reference_logprobs, select_heads, top_heads, bias_tune, lora_tune
from editlab.red import red_tune

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--task', default='antonym', choices=['antonym', 'truthfulqa']); ap.add_argument('--n', type=int, default=128)
    ap.add_argument('--k', type=int, default=16); ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--rank', type=int, default=8); ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--threads', type=int, default=0)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    model, tok = load_model(); ad = adapter(model)
    if a.task == 'antonym': data = icl_completions(load_icl_task('antonym')[:a.n])
    else: data = tqa_preferences(load_truthfulqa('train')[:a.n], max_pairs=1)
    ref = reference_logprobs(model, tok, data) if data.kind == 'dpo' else None
    steps = -(-len(data) // a.batch)   # one epoch
    rank, _ = select_heads(model, tok, data, steps=steps, batch_size=a.batch, ref=ref, progress=False)
    heads = top_heads(rank, a.k)
    print(f"{a.task}: {len(data)} examples ({data.kind} loss), batch {a.batch}, {steps} steps per epoch, {torch.get_num_threads()} thread(s)")
    print(f"step-2 heads (top {a.k}): layers {sorted({L for L, _ in heads})}")
    common = dict(steps=steps, batch_size=a.batch, ref=ref, progress=False)
    arms = {'LoFiT step 1 (scalings, all heads)': lambda: select_heads(model, tok, data, **common),
            f'LoFiT step 2 (bias, {a.k} heads)': lambda: bias_tune(model, tok, data, heads, **common),
            'RED (scale + bias, all MLP outputs)': lambda: red_tune(model, tok, data, **common),
            f'LoRA r={a.rank} (q, v, all layers)': lambda: lora_tune(model, tok, data, r=a.rank, **common)}
    params = {list(arms)[0]: ad.n_layers * ad.n_heads * ad.head_dim, list(arms)[1]: a.k * ad.head_dim}
    loop, total = {k: [] for k in arms}, {k: [] for k in arms}
    for r in range(a.rounds):
        for name, f in arms.items():
            t = time.perf_counter(); out = f(); total[name].append(time.perf_counter() - t)
            loop[name].append(out[1].seconds.iloc[-1])   # the training loop alone: the curve's clock runs from the first step to the end of the last
            if name.startswith(('LoRA', 'RED')): params[name] = out[0].meta['n_trainable']
    lora = statistics.median(loop[list(arms)[-1]])
    print(f"{'arm':38s} {'s/epoch':>8s} {'vs LoRA':>8s} {'call incl. setup':>17s} {'trainable':>10s}   (medians of {a.rounds} rounds)")
    for name in arms:
        med = statistics.median(loop[name])
        print(f"{name:38s} {med:8.2f} {med/lora:7.2f}x {statistics.median(total[name]):16.2f}s {params[name]:10,d}   "
              f"(epochs: {', '.join(f'{t:.1f}' for t in loop[name])})")

if __name__ == '__main__': main()
