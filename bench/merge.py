"""TIES merge of 3 checkpoints of the embedded model onto its base: editlab's streaming `merge_checkpoints` vs mergekit.

Same inputs for both arms: TIES, density 0.2, weight 1 for each model, normalize (disjoint mean), lambda 1, fp32.
Each arm runs in its own subprocess under a small wrapper that reports the wall time of the whole process and its peak
RSS (resource.getrusage(RUSAGE_CHILDREN) in the wrapper sees that arm only). The arms alternate over --rounds, and the
two outputs are compared tensor by tensor (max abs diff) where the method definitions agree (with equal weights they do:
see nbs/11_merging.ipynb for where they differ).

    bash bench/mergekit_env.sh                       # once: mergekit in .venv-mergekit
    source scripts/env.sh && python bench/merge.py [--rounds 1] [--threads 1] [--ckpts /tmp/editlab-merge-bench]

The checkpoints are made once (in a subprocess) under --ckpts: `base` is the embedded model as cached by editlab, and
`ft1..ft3` are the base plus a seeded dense Gaussian perturbation of every float tensor (std 1% of that tensor's std)
plus, for ft1 and ft2, the cached antonym / English-French task vectors of nbs/10_task_vectors when they exist.
"""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRAP = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter(); r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
print(json.dumps(dict(rc=r.returncode, wall=wall, maxrss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                      err=r.stderr[-3000:])))
"""

def make_checkpoints(d:Path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from editlab.models import _cache_embedded, cache_dir
    from editlab.artifacts import WeightDelta
    torch.set_num_threads(1)
    src = _cache_embedded()
    (d/'base').mkdir(parents=True, exist_ok=True)
    for f in src.iterdir(): shutil.copy2(f, d/'base'/f.name)
    cfg = json.loads((d/'base'/'config.json').read_text())
    cfg.setdefault('architectures', ['LlamaForCausalLM'])   # the GGUF-derived config lacks it; mergekit needs it
    (d/'base'/'config.json').write_text(json.dumps(cfg, indent=2))
    cached = sorted(cache_dir('task_vectors').glob('*.safetensors'))
    skills = {k: next((f for f in cached if f.name.startswith(k + '-')), None) for k in ('antonym', 'english-french')}
    with safe_open(str(src/'model.safetensors'), framework='pt') as h: base = {k: h.get_tensor(k) for k in h.keys()}
    for i, skill in zip((1, 2, 3), ('antonym', 'english-french', None)):
        tv = WeightDelta.load(skills[skill]) if skill and skills[skill] else None
        g = torch.Generator().manual_seed(i)
        out = {}
        for k, w in base.items():
            x = w + 0.01 * float(w.float().std()) * torch.randn(w.shape, generator=g) if w.numel() > 1 else w.clone()
            if tv is not None and k in tv.deltas: x = x + tv.dense(k)
            out[k] = x.contiguous()
        (d/f'ft{i}').mkdir(exist_ok=True)
        for f in (d/'base').iterdir():
            if f.name != 'model.safetensors': shutil.copy2(f, d/f'ft{i}'/f.name)
        save_file(out, str(d/f'ft{i}'/'model.safetensors'), metadata={'format': 'pt'})
        print(f"made {d/f'ft{i}'} ({'with ' + skill + ' task vector' if tv is not None else 'perturbation only'})", flush=True)

def run_arm(cmd:list, env:dict)->dict:
    r = subprocess.run([sys.executable, '-c', WRAP] + cmd, capture_output=True, text=True, env=env)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if res['rc'] != 0: raise SystemExit(f"arm failed: {' '.join(cmd)}\n{res['err']}")
    return res

def compare(a:Path, b:Path, base:Path, models:list, density:float)->dict:
    "Max |a - b| over common tensors; entries that differ are checked against magnitude ties at a model's top-k threshold"
    import torch
    from editlab.task_vectors import checkpoint_layout, read_tensor
    la, lb = checkpoint_layout(a), checkpoint_layout(b)
    common = [k for k in la if k in lb]
    worst, name, n_diff, n_tie, total = 0.0, None, 0, 0, 0
    for k in common:
        x, y = read_tensor(la[k][0], k).float(), read_tensor(lb[k][0], k).float()
        diff = (x - y).abs(); total += diff.numel()
        d = float(diff.max())
        if d > worst: worst, name = d, k
        bad = diff > 1e-5
        if bad.any():
            n_diff += int(bad.sum())
            bt = read_tensor(base/'model.safetensors', k).float()
            tie = torch.zeros_like(bad)
            for m in models:   # an entry whose |delta| equals that model's k-th largest |delta|, shared by >1 entries
                dm = (read_tensor(m/'model.safetensors', k).float() - bt).abs().reshape(-1)
                kk = max(1, int(density * dm.numel()))
                thr = dm.kthvalue(dm.numel() - kk + 1).values
                if int((dm >= thr).sum()) > kk: tie |= (dm == thr).view(bad.shape)
            n_tie += int((bad & tie).sum())
    return dict(common=len(common), only_editlab=sorted(set(la) - set(lb)), only_mergekit=sorted(set(lb) - set(la)),
                max_abs_diff=worst, worst_tensor=name, entries=total, entries_differing=n_diff, differing_at_threshold_ties=n_tie)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ckpts', default='/tmp/editlab-merge-bench', help='where the base and 3 checkpoints are made/kept')
    ap.add_argument('--rounds', type=int, default=1)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--density', type=float, default=0.2)
    ap.add_argument('--make', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args()
    d = Path(a.ckpts)
    if a.make: make_checkpoints(d); return
    env = {**os.environ, 'OMP_NUM_THREADS': str(a.threads), 'MKL_NUM_THREADS': str(a.threads), 'HF_HUB_OFFLINE': '1',
           'TOKENIZERS_PARALLELISM': 'false'}
    if not (d/'ft3'/'model.safetensors').exists():
        subprocess.run([sys.executable, __file__, '--make', '--ckpts', str(d)], check=True, env=env)
    mk = ROOT/'.venv-mergekit'/'bin'/'mergekit-yaml'
    if not mk.exists(): raise SystemExit("mergekit is not installed: run `bash bench/mergekit_env.sh` first")
    models = [d/f'ft{i}' for i in (1, 2, 3)]
    cfg = d/'ties.yml'
    cfg.write_text("merge_method: ties\nbase_model: {}\nmodels:\n{}parameters:\n  normalize: true\n  lambda: 1.0\ndtype: float32\n".format(
        d/'base', ''.join(f"  - model: {m}\n    parameters:\n      density: {a.density}\n      weight: 1.0\n" for m in models)))
    out_e, out_m = d/'out-editlab', d/'out-mergekit'
    ed = [sys.executable, '-c',
          "import sys, torch; torch.set_num_threads(int(sys.argv[1])); from editlab.merging import merge_checkpoints; "
          "merge_checkpoints(sys.argv[3], sys.argv[5:], sys.argv[4], 'ties', density=float(sys.argv[2]), overwrite=True, progress=False)",
          str(a.threads), str(a.density), str(d/'base'), str(out_e)] + [str(m) for m in models]
    mkc = [str(mk), str(cfg), str(out_m), '--lazy-unpickle', '--allow-crimes', '--no-cuda', '-j', str(a.threads)]
    model_mb = sum(f.stat().st_size for f in (d/'base').glob('*.safetensors')) / 2**20
    rows = []
    for r in range(a.rounds):
        for arm, cmd in (('editlab', ed), ('mergekit', mkc)):
            out = out_e if arm == 'editlab' else out_m
            if out.exists(): shutil.rmtree(out)
            res = run_arm(cmd, env)
            rows.append(dict(round=r, arm=arm, wall_s=res['wall'], peak_rss_mb=res['maxrss_mb']))
            print(f"round {r} {arm:9s} wall {res['wall']:6.1f} s   peak RSS {res['maxrss_mb']:7.0f} MB", flush=True)
    import statistics as st
    med = {arm: dict(wall=st.median(x['wall_s'] for x in rows if x['arm'] == arm),
                     rss=st.median(x['peak_rss_mb'] for x in rows if x['arm'] == arm)) for arm in ('editlab', 'mergekit')}
    cmp = compare(out_e, out_m, d/'base', models, a.density)
    summary = dict(model_mb=model_mb, threads=a.threads, density=a.density, rounds=a.rounds, runs=rows, median=med,
                   time_ratio_editlab_over_mergekit=med['editlab']['wall'] / med['mergekit']['wall'],
                   rss_ratio_editlab_over_mergekit=med['editlab']['rss'] / med['mergekit']['rss'],
                   editlab_rss_over_model=med['editlab']['rss'] / model_mb, mergekit_rss_over_model=med['mergekit']['rss'] / model_mb,
                   agreement=cmp)
    print(f"\none model: {model_mb:.0f} MB (fp32 safetensors); {a.threads} thread(s); TIES density {a.density}, weight 1, normalize")
    print(f"editlab : wall {med['editlab']['wall']:.1f} s, peak RSS {med['editlab']['rss']:.0f} MB = {summary['editlab_rss_over_model']:.2f}x one model")
    print(f"mergekit: wall {med['mergekit']['wall']:.1f} s, peak RSS {med['mergekit']['rss']:.0f} MB = {summary['mergekit_rss_over_model']:.2f}x one model")
    print(f"ratios editlab/mergekit: time {summary['time_ratio_editlab_over_mergekit']:.2f}, peak RSS {summary['rss_ratio_editlab_over_mergekit']:.2f}")
    print(f"outputs: {cmp['common']} common tensors, max |editlab - mergekit| = {cmp['max_abs_diff']:.3g} (at {cmp['worst_tensor']}); "
          f"only in editlab: {cmp['only_editlab']}, only in mergekit: {cmp['only_mergekit']}")
    print(f"         {cmp['entries_differing']} of {cmp['entries']:,} entries differ by > 1e-5, of which {cmp['differing_at_threshold_ties']} "
          "sit at a tie of a model's top-k threshold (editlab keeps every entry >= the threshold, mergekit's argsort keeps "
          "exactly k, picking among equal magnitudes arbitrarily)")
    res_dir = ROOT/'bench'/'results'; res_dir.mkdir(exist_ok=True)
    (res_dir/'merge.json').write_text(json.dumps(summary, indent=2))

if __name__ == '__main__': main()
