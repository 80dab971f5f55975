"""Load time of the embedded model: from the GGUF (dequantize, done once) vs from editlab's safetensors cache.

    python bench/load_time.py [--fresh]   # --fresh uses an empty temporary cache, so the GGUF path is timed too
Target: a cached load under 2 s.
"""
import argparse, os, subprocess, sys, tempfile, time

CODE = ("import time; t0=time.perf_counter(); from editlab.models import load_model; t1=time.perf_counter(); "
        "m,tok=load_model(); t2=time.perf_counter(); m,tok=load_model(); print(t1-t0, t2-t1, time.perf_counter()-t2)")

def run(env):
    out = subprocess.run([sys.executable, '-c', CODE], env=env, capture_output=True, text=True, check=True)
    imp, load, again = map(float, out.stdout.strip().splitlines()[-1].split())
    return load, imp, again

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--fresh', action='store_true'); ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ)
    if a.fresh:
        env['EDITLAB_CACHE'] = tempfile.mkdtemp()
        print(f"first load (GGUF -> float32 -> safetensors cache): {run(env)[0]:.2f} s")
    rs = [run(env) for _ in range(a.repeats)]
    print(f"new process each time, {a.repeats} runs (best of each column):")
    print(f"  import editlab.models                                   {min(r[1] for r in rs):.2f} s")
    print(f"  first load_model() from the cache (incl. transformers' lazy imports) {min(r[0] for r in rs):.2f} s")
    print(f"  second load_model() in the same process                 {min(r[2] for r in rs):.2f} s   (target < 2 s)")

if __name__ == '__main__': main()
