"""ROME and MEMIT costs on the embedded model: key statistics vs a plain forward, ROME time per edit by stage, and how
MEMIT's time and memory grow with the number of edits.

1. Key statistics (`layer_stats`, cache off) over N corpus tokens vs a plain full forward over the same token chunks,
   interleaved; prints tokens/s of each and the ratio (target: statistics >= 80% of the plain forward's throughput).
2. ROME per edit with cached statistics on CounterFact dev records: seconds for k*, v* and the update (median over
   records) and each part's share of the total, v* steps taken (reference: EasyEdit's ROME takes 37-39 s per edit on
   this machine; target a third of that or less).
3. MEMIT growth: 10, 100 and 1,000 edits at once (cached statistics), each size in its own subprocess so that its peak
   memory is its own. Per size: wall time, seconds per edit, the targets (one `compute_v` per request, linear in n)
   against the layer updates (gathering each request's keys and residuals, and the least-squares solves), the process's
   peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`: model and statistics included) and the peak RSS added while `memit`
   ran (RSS sampled every 20 ms), all as ratios to the smallest size. `--memit-steps` caps the target optimisation
   (default: `compute_v`'s 25 steps); one cap for every size keeps the curve's shape honest. The records are the first
   n CounterFact train records with distinct subjects (so that no two requests contradict each other).

    python bench/rome.py [--layer 4] [--tokens 20000] [--edits 10] [--memit 10,100,1000] [--memit-steps 25] [--threads 2]
        [--skip-rome] [--json bench/results/rome.json]
"""
import argparse, json, os, resource, statistics, subprocess, sys, threading, time
from pathlib import Path
import torch

def _rss_mb()->float:
    "Resident set size of this process now, in MB"
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20

def _peak_mb()->float:
    "Peak resident set size of this process so far, in MB (ru_maxrss is in KB on Linux)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def distinct_records(tok, n:int, subset:str='train-2000')->list[dict]:
    "The first `n` CounterFact records of `subset` with distinct subjects that MEMIT accepts (subject found in the prompt)"
    from editlab.data import load_counterfact
    from editlab.evaluate import check_request, subject_span
    out, seen = [], set()
    for r in load_counterfact(subset):
        s = r['subject'].strip()
        if s in seen: continue
        try: check_request(r); subject_span(tok, r['prompt'], r['subject'])
        except (ValueError, KeyError): continue
        seen.add(s); out.append(r)
        if len(out) == n: return out
    raise ValueError(f"CounterFact {subset} has only {len(out)} usable records with distinct subjects; {n} were asked for")

def memit_child(a, n:int):
    "One MEMIT size in this process: prints one JSON line with its times and memory"
    torch.set_num_threads(a.threads); torch.set_grad_enabled(False)
    from editlab.models import load_model
    from editlab.data import wikitext_path
    from editlab import rome as R, memit as M
    model, tok = load_model()
    layers = [int(x) for x in a.memit_layers.split(',')]
    Cs = {l: R.layer_stats(model, tok, l, wikitext_path(), n_tokens=a.tokens, progress=False) for l in layers}   # cached by the parent
    recs = distinct_records(tok, n)
    pre = R.context_prefixes(model, tok, lengths=((10, 5),))    # memit's default contexts, generated once per model (not timed)
    parts = {'keys': 0.0, 'solves': 0.0}
    def timed(f, part):
        def g(*args, **kw):
            s = time.perf_counter(); out = f(*args, **kw); parts[part] += time.perf_counter() - s; return out
        return g
    M._site_acts, M.solve_psd = timed(M._site_acts, 'keys'), timed(M.solve_psd, 'solves')
    rss0, peak0, high, done = _rss_mb(), _peak_mb(), [0.0], threading.Event()
    def sample():
        while not done.wait(0.02): high[0] = max(high[0], _rss_mb())
    th = threading.Thread(target=sample, daemon=True); th.start()
    kw = {} if a.memit_steps is None else dict(steps=a.memit_steps)
    s = time.perf_counter(); d = M.memit(model, tok, recs, layers, stats=Cs, prefixes=pre, progress=False, **kw)
    tot = time.perf_counter() - s
    done.set(); th.join(); high[0] = max(high[0], _rss_mb())
    steps = [len(g) for g in d.targets['logs']]
    print(json.dumps(dict(n=n, seconds=tot, targets=d.meta['seconds']['targets'], update=d.meta['seconds']['update'],
                          keys=parts['keys'], solves=parts['solves'], steps_mean=statistics.mean(steps), steps_max=max(steps),
                          peak_mb=_peak_mb(), peak_before_mb=peak0, rss_before_mb=rss0, memit_extra_mb=high[0] - rss0,
                          p_target=d.meta['p_target'])))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--layer', type=int, default=4); ap.add_argument('--tokens', type=int, default=20000)
    ap.add_argument('--edits', type=int, default=10); ap.add_argument('--memit', default='10,100,1000')
    ap.add_argument('--memit-layers', default='2,3,4'); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--memit-steps', type=int, default=None, help="cap on the targets' optimisation steps (default: compute_v's)")
    ap.add_argument('--skip-rome', action='store_true', help='only the MEMIT growth (section 3)')
    ap.add_argument('--json', default=None, help='write the figures to this file')
    ap.add_argument('--memit-child', type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memit_child is not None: return memit_child(a, a.memit_child)
    torch.set_num_threads(a.threads); torch.set_grad_enabled(False)
    from editlab.models import load_model
    from editlab.hooks import forward
    from editlab.evaluate import pad_batch
    from editlab.data import load_counterfact, wikitext_path
    from editlab import rome as R
    corpus = wikitext_path()
    model, tok = load_model()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, layer {a.layer}", flush=True)
    res = dict(args=vars(a))

    if not a.skip_rome:
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
        ratio = min(t['plain forward'])/min(t['key statistics'])
        print(f"  statistics throughput = {ratio:.2f}x the plain forward's (target >= 0.8x)", flush=True)
        res['statistics'] = dict(plain_s=min(t['plain forward']), stats_s=min(t['key statistics']), ratio=ratio)

        # 2. ROME per edit, cached statistics
        C = R.layer_stats(model, tok, a.layer, corpus, n_tokens=a.tokens, progress=False)
        s = time.perf_counter(); pre = R.context_prefixes(model, tok); t_pre = time.perf_counter() - s
        recs = load_counterfact('dev-500')[:a.edits]
        secs = []
        for r in recs:
            s = time.perf_counter(); d = R.rome(model, tok, r, a.layer, stats=C, prefixes=pre); tot = time.perf_counter() - s
            secs.append(dict(d.meta['seconds'], total=tot, steps=d.meta['v_steps']))
        med = {k: statistics.median(x[k] for x in secs) for k in secs[0]}
        share = {k: sum(x[k] for x in secs) / sum(x['total'] for x in secs) for k in ('key', 'value', 'update')}
        print(f"ROME, {len(recs)} CounterFact dev edits at layer {a.layer} (context prefixes generated once per model: {t_pre:.1f} s, not counted)")
        print(f"  median seconds: k* {med['key']:.2f}, v* {med['value']:.2f} ({med['steps']:.0f} steps), update {med['update']:.3f}, "
              f"total {med['total']:.2f} s per edit  (EasyEdit ROME: 37-39 s; ratio {38/med['total']:.1f}x)")
        print(f"  share of the total time: k* {share['key']:.1%}, v* {share['value']:.1%}, update {share['update']:.1%}; "
              f"v* per step {med['value']/med['steps']:.2f} s", flush=True)
        res['rome'] = dict(n=len(recs), median=med, share=share)

    # 3. MEMIT growth, one subprocess per size (statistics computed here first, so that the children read them from the cache)
    layers = [int(x) for x in a.memit_layers.split(',')]
    for l in layers: R.layer_stats(model, tok, l, corpus, n_tokens=a.tokens, progress=False)
    del model
    rows = []
    for n in [int(x) for x in a.memit.split(',') if x]:
        cmd = [sys.executable, __file__, '--memit-child', str(n), '--tokens', str(a.tokens), '--memit-layers', a.memit_layers,
               '--threads', str(a.threads)] + ([] if a.memit_steps is None else ['--memit-steps', str(a.memit_steps)])
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode: sys.exit(f"MEMIT with {n} edits failed:\n{p.stderr[-3000:]}")
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"MEMIT, {n} edits at once on layers {layers}: {r['seconds']:.1f} s, {r['seconds']/n:.2f} s per edit (targets "
              f"{r['targets']:.1f} s, {r['steps_mean']:.1f} steps on average; layer updates {r['update']:.1f} s: keys {r['keys']:.1f}, "
              f"solves {r['solves']:.2f}); peak RSS {r['peak_mb']:.0f} MB, {r['memit_extra_mb']:.0f} MB added during memit", flush=True)
    if rows:
        b = rows[0]
        print(f"MEMIT growth (ratios to {b['n']} edits; steps cap {a.memit_steps or 'compute_v default'}, {a.threads} thread(s))")
        print(f"  {'n':>6} {'seconds':>9} {'s/edit':>7} {'targets':>8} {'updates':>8} {'keys':>7} {'solves':>7} {'peak MB':>8} "
              f"{'added MB':>8} | {'time':>7} {'s/edit':>7} {'updates':>7} {'peak':>6}")
        for r in rows:
            print(f"  {r['n']:6d} {r['seconds']:9.1f} {r['seconds']/r['n']:7.2f} {r['targets']:8.1f} {r['update']:8.1f} "
                  f"{r['keys']:7.1f} {r['solves']:7.2f} {r['peak_mb']:8.0f} {r['memit_extra_mb']:8.0f} | "
                  f"{r['seconds']/b['seconds']:6.1f}x {(r['seconds']/r['n'])/(b['seconds']/b['n']):6.2f}x "
                  f"{r['update']/b['update']:6.1f}x {r['peak_mb']/b['peak_mb']:5.2f}x")
        res['memit'] = rows
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True); Path(a.json).write_text(json.dumps(res, indent=1))

if __name__ == '__main__': main()
