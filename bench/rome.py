"""ROME and MEMIT costs on the embedded model: key statistics vs a plain forward, ROME time per edit by stage, MEMIT time.

1. Key statistics (`layer_stats`, cache off) over N corpus tokens vs a plain full forward over the same token chunks,
   interleaved; prints tokens/s of each and the ratio (target: statistics >= 80% of the plain forward's throughput).
2. ROME per edit with cached statistics on CounterFact dev records: seconds for k*, v* and the update (median over
   records), v* steps taken, and the total (reference: EasyEdit's ROME takes 37-39 s per edit on this machine; target
   a third of that or less).
3. MEMIT wall time for batches of 10 and 100 edits (with cached statistics).

    python bench/rome.py [--layer 4] [--tokens 20000] [--edits 10] [--memit 10,100] [--threads 2]
"""
import argparse, statistics, time
from pathlib import Path
import torch

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--layer', type=int, default=4); ap.add_argument('--tokens', type=int, default=20000)
    ap.add_argument('--edits', type=int, default=10); ap.add_argument('--memit', default='10,100')
    ap.add_argument('--memit-layers', default='2,3,4'); ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.set_grad_enabled(False)
    from editlab.models import load_model
    from editlab.hooks import forward
    from editlab.evaluate import pad_batch
    from editlab.data import load_counterfact, wikitext_path
    from editlab import rome as R
    from editlab.memit import memit
    corpus = wikitext_path()
    model, tok = load_model()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, layer {a.layer}")

    # 1. statistics vs plain forward, same chunks, interleaved
    chunks = R._corpus_chunks(tok, corpus, a.tokens, 256)
    def plain():
        for i in range(0, len(chunks), 8):
            ids, mask = pad_batch(chunks[i:i+8], tok.pad_token_id, 'right'); forward(model, ids, mask, use_cache=False)
    stats = lambda: R.layer_stats(model, tok, a.layer, corpus, n_tokens=a.tokens, cache=False, progress=False)
    t = {'plain forward': [], 'key statistics': []}
    for _ in range(2):
        for k, f in (('plain forward', plain), ('key statistics', stats)):
            s = time.perf_counter(); f(); t[k].append(time.perf_counter() - s)
    for k, v in t.items(): print(f"  {k:16s} {a.tokens/min(v):9.0f} tok/s  (best of {len(v)}: {min(v):.2f} s)")
    print(f"  statistics throughput = {min(t['plain forward'])/min(t['key statistics']):.2f}x the plain forward's (target >= 0.8x)")

    # 2. ROME per edit, cached statistics
    C = R.layer_stats(model, tok, a.layer, corpus, n_tokens=a.tokens, progress=False)
    s = time.perf_counter(); pre = R.context_prefixes(model, tok); t_pre = time.perf_counter() - s
    recs = load_counterfact('dev-500')[:a.edits]
    secs = []
    for r in recs:
        s = time.perf_counter(); d = R.rome(model, tok, r, a.layer, stats=C, prefixes=pre); tot = time.perf_counter() - s
        secs.append(dict(d.meta['seconds'], total=tot, steps=d.meta['v_steps']))
    med = {k: statistics.median(x[k] for x in secs) for k in secs[0]}
    print(f"ROME, {len(recs)} CounterFact dev edits at layer {a.layer} (context prefixes generated once per model: {t_pre:.1f} s, not counted)")
    print(f"  median seconds: k* {med['key']:.2f}, v* {med['value']:.2f} ({med['steps']:.0f} steps), update {med['update']:.3f}, "
          f"total {med['total']:.2f} s per edit  (EasyEdit ROME: 37-39 s; ratio {38/med['total']:.1f}x)")

    # 3. MEMIT
    layers = [int(x) for x in a.memit_layers.split(',')]
    Cs = {l: R.layer_stats(model, tok, l, corpus, n_tokens=a.tokens, progress=False) for l in layers}
    for n in [int(x) for x in a.memit.split(',') if x]:
        recs = load_counterfact('dev-500')[:n]
        s = time.perf_counter(); d = memit(model, tok, recs, layers, stats=Cs, progress=False); tot = time.perf_counter() - s
        print(f"MEMIT, {n} edits at once on layers {layers}: {tot:.1f} s (targets {d.meta['seconds']['targets']:.1f} s, "
              f"updates {d.meta['seconds']['update']:.1f} s), {tot/n:.2f} s per edit")

if __name__ == '__main__': main()
