"""Load time of the embedded model: from the GGUF (dequantize, done once) vs from editlab's safetensors cache.

    python bench/load_time.py [--fresh]   # --fresh uses an empty temporary cache, so the GGUF path is timed too
Target: a cached load under 2 s.
"""
import argparse, os, subprocess, sys, tempfile, time

CODE = "import time; t=time.perf_counter(); from editlab.models import load_model; m,t2=load_model(); print(time.perf_counter()-t)"

def run(env):
    out = subprocess.run([sys.executable, '-c', CODE], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--fresh', action='store_true'); ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ)
    if a.fresh:
        env['EDITLAB_CACHE'] = tempfile.mkdtemp()
        print(f"first load (GGUF -> float32 -> safetensors cache): {run(env):.2f} s")
    ts = [run(env) for _ in range(a.repeats)]
    print(f"cached load, new process each time (incl. imports), {a.repeats} runs: " + ", ".join(f"{t:.2f} s" for t in ts))
    print(f"best {min(ts):.2f} s  (target < 2 s)")

if __name__ == '__main__': main()
