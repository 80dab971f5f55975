"""ES / PS / NS of ROME and MEMIT on the built-in facts with the embedded model loaded in float32, bfloat16 and float16.

Each dtype loads the model in that dtype and computes its own key statistics (50,000 WikiText tokens, cached by dtype);
ROME edits each fact on its own (layer 4), MEMIT edits all facts at once (layers 2-4, lam 1e3), the notebooks' settings,
except `--contexts prompt`: the prompt alone as edit context (no prefixes sampled from the model, which differ by dtype;
about 5x faster). Writes the per-record scores to `--out` (CSV, after each dtype) and prints the table of means (%).
Usage: python scripts/half_precision.py [--n 56] [--contexts sampled|prompt] [--out f.csv]"""
import argparse, time
import pandas as pd, torch
from editlab.models import load_model
from editlab.data import builtin_facts
from editlab.evaluate import edit_scores, summarize
from editlab.rome import rome, layer_stats, stats_corpus
from editlab.memit import memit

def half_table(facts:list[dict], dtypes=('float32', 'bfloat16', 'float16'), rome_layer:int=4, memit_layers=(2, 3, 4),
               lam:float=1e3, n_tokens:int=50_000, prefixes:list[str]|None=None, # None: ROME's and MEMIT's sampled prefixes
               log=print, out:str|None=None)->pd.DataFrame:
    "Per-record edit scores of ROME and MEMIT (and the unedited model) for each dtype: columns dtype, method, es, ps, ns, seconds"
    rows = []
    for dt in dtypes:
        model, tok = load_model(dtype=dt); t0 = time.perf_counter()
        C = {l: layer_stats(model, tok, l, stats_corpus(), n_tokens=n_tokens, progress=False) for l in sorted({rome_layer, *memit_layers})}
        log(f"{dt}: statistics {time.perf_counter() - t0:.0f} s")
        rows.append(edit_scores(model, tok, facts).assign(dtype=dt, method='unedited', seconds=0.0))
        t0 = time.perf_counter()
        for r in facts:
            t = time.perf_counter(); d = rome(model, tok, r, rome_layer, stats=C[rome_layer], prefixes=prefixes)
            with d.apply(model): rows.append(edit_scores(model, tok, [r]).assign(dtype=dt, method='ROME', seconds=time.perf_counter() - t))
        log(f"{dt}: ROME {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        d = memit(model, tok, facts, list(memit_layers), stats={l: C[l] for l in memit_layers}, lam=lam, prefixes=prefixes, progress=False)
        with d.apply(model): rows.append(edit_scores(model, tok, facts).assign(dtype=dt, method='MEMIT', seconds=(time.perf_counter() - t0) / len(facts)))
        log(f"{dt}: MEMIT {time.perf_counter() - t0:.0f} s")
        del model
        if out: pd.concat(rows, ignore_index=True).to_csv(out, index=False)
    return pd.concat(rows, ignore_index=True)

def table_of(df:pd.DataFrame)->pd.DataFrame:
    "Means (%) of es / ps / ns by method and dtype"
    t = df.groupby(['method', 'dtype'], sort=False)[['es', 'ps', 'ns']].mean().mul(100).round(1)
    return t.join(df.groupby(['method', 'dtype'], sort=False)['seconds'].mean().round(2).rename('s/edit'))

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--n', type=int, default=None); ap.add_argument('--out', default='half_precision.csv')
    ap.add_argument('--dtypes', default='float32,bfloat16,float16'); ap.add_argument('--contexts', default='sampled', choices=['sampled', 'prompt'])
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    facts = builtin_facts()[:a.n]
    df = half_table(facts, a.dtypes.split(','), prefixes=[] if a.contexts == 'prompt' else None, log=lambda s: print(s, flush=True), out=a.out)
    print(f"{len(facts)} built-in facts"); print(table_of(df).to_string())
