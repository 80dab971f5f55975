"""The LoFiT comparison table, measured: trains and scores every row of `lofit_table.ipynb` and appends results as it goes.

    OMP_NUM_THREADS=1 python lofit_table_run.py [--tasks tqa0,antonym,tqa1,tqa2,tqa3,tqa4] [--quick]

Resumable: a (task, fold, method) already in results/lofit_table_runs.csv is skipped. Writes, under results/:
- lofit_table_items.csv: one line per scored item (task, fold, method, item, mc1/mc2 or em) on the held-out split;
- lofit_table_runs.csv: one line per (task, fold, method): trainable numbers, the chosen hyper-parameter, training
  seconds and steps, seconds per epoch;
- lofit_table_tune.csv: every candidate hyper-parameter with its score on the tuning split (never the held-out one);
- lofit_table.csv: the summary (means and 95% bootstrap intervals), rewritten after every row.
Data come from the `editlab.data` loaders (`$EDITLAB_DATA`).
"""
import os, sys
os.environ.setdefault('OMP_NUM_THREADS', '1')
if os.environ.get('MALLOC_MMAP_THRESHOLD_') is None:   # big logits tensors of varying size fragment glibc's heap: RSS grew ~1 GB per 10 questions
    os.environ['MALLOC_MMAP_THRESHOLD_'] = '65536'; os.execv(sys.executable, [sys.executable] + sys.argv)
import argparse, math, random, time, sys
from pathlib import Path
import numpy as np, pandas as pd, torch
from editlab.models import load_model, adapter, cache_dir
from editlab.data import load_truthfulqa, load_icl_task, split
from editlab.evaluate import mc_scores, interval
from editlab.lofit import (tqa_preferences, icl_completions, reference_logprobs, select_heads, top_heads, bias_tune, lora_tune,
                           icl_exact_match)
from editlab.iti import qa_pairs, head_activations, fit_head_probes, iti_intervention
from editlab.repe import reading_vectors
from editlab.steering import steering
from editlab.red import red_tune

RES = Path(__file__).resolve().parent/'results'
ITEMS, RUNS, TUNE, TABLE = (RES/f'lofit_table{s}.csv' for s in ('_items', '_runs', '_tune', ''))
K = 16                                    # heads for LoFiT and ITI (40_lofit's K)
BAND = (12, 14, 16)                       # RepE control layers (21_repe's band)
GRID = dict(lofit=(1e-2, 3e-2), lora=(1e-3, 3e-3), red=(3e-3, 1e-2))   # learning rates tried, chosen on the tuning split
ITI_ALPHAS = dict(antonym=(5.0, 10.0, 15.0), truthfulqa=(5.0,))   # TruthfulQA: notebook 22's choice (made on a tuning split of this train fold)
REPE_ALPHAS = dict(antonym=(4.0, 8.0, 16.0), truthfulqa=(8.0, 16.0))
TUNE_N = dict(antonym=100, truthfulqa=40)   # tuning items scored per candidate (a 2-core machine shared by six jobs)
SKIP = set()   # methods not to run in this call (--only)
METHODS = ['unedited', 'RED', 'LoFiT (own heads)', 'ITI', 'LoFiT (ITI heads)', 'LoRA', 'RepE control']

ITEM_COLS = ['task', 'fold', 'method', 'item', 'mc1', 'mc2', 'em']

def append(path:Path, rows:list[dict], cols:list|None=None):
    "Append rows to a CSV (header on the first write); `cols` fixes the columns so that every line lines up"
    if not rows: return
    df = pd.DataFrame(rows)
    if cols: df = df.reindex(columns=cols)
    elif path.exists(): df = df.reindex(columns=pd.read_csv(path, nrows=0).columns)
    df.to_csv(path, mode='a', header=not path.exists(), index=False)

def done(task:str, fold:int)->set:
    if not RUNS.exists(): return set()
    r = pd.read_csv(RUNS); return set(r[(r.task == task) & (r.fold == fold)].method)

def boot_ci(x:np.ndarray)->tuple[float, float]:
    "95% percentile bootstrap interval of the mean (`evaluate.interval`, seed 0, 2,000 resamples)"
    return interval(x)[1:]

def summarize()->pd.DataFrame:
    "lofit_table.csv: per (task, split, method) the mean of each metric with its 95% interval, trainable numbers, time ratios"
    it, runs = pd.read_csv(ITEMS), pd.read_csv(RUNS)
    rows = []
    for task, metrics in (('truthfulqa', ('mc1', 'mc2')), ('antonym', ('em',))):
        d = it[it.task == task]
        if d.empty: continue
        views = [('fold 0 val' if task == 'truthfulqa' else 'held-out word pairs', d[d.fold == 0])]
        folds = sorted(d.fold.unique())
        if len(folds) > 1:   # pooled over the folds every method has finished
            full = [f for f in folds if set(d[d.fold == f].method) >= set(d[d.fold == 0].method)]
            if len(full) > 1: views.append((f"CV folds {','.join(map(str, full))}", d[d.fold.isin(full)]))
        for view, dv in views:
            for meth in [m for m in METHODS if m in set(dv.method)]:
                x = dv[dv.method == meth]; r = runs[(runs.task == task) & (runs.method == meth) & (runs.fold == 0)]
                row = dict(task=task, split=view, method=meth, n_items=len(x))
                for mt in metrics:
                    lo, hi = boot_ci(x[mt].values); row.update({mt: x[mt].mean(), f'{mt}_lo': lo, f'{mt}_hi': hi})
                if len(r): row.update(trainable=int(r.trainable.iloc[0]), sec_per_epoch=r.sec_per_epoch.iloc[0], chosen=r.chosen.iloc[0])
                rows.append(row)
    out = pd.DataFrame(rows)
    if 'sec_per_epoch' in out:
        lora = out[out.method == 'LoRA'].set_index(['task', 'split']).sec_per_epoch
        out['epoch_vs_lora'] = [r.sec_per_epoch / lora.get((r.task, r.split), np.nan) if pd.notna(r.sec_per_epoch) else np.nan
                                for r in out.itertuples()]
    out.to_csv(TABLE, index=False)
    return out

class Study:
    def __init__(self, quick:bool=False):
        self.model, self.tok = load_model(); self.quick = quick
        self.ad = adapter(self.model)

    # -- one (task, fold): the splits ------------------------------------------------------------------------------------
    def tqa_split(self, fold:int):
        "fold 0: the shipped train/val files; folds 1-4: a fifth of the train file's questions held out, the rest + val trained on"
        tr, va = load_truthfulqa('train'), load_truthfulqa('val')
        for i, x in enumerate(tr): x['id'] = f'tr{i}'
        for i, x in enumerate(va): x['id'] = f'va{i}'
        if fold == 0: train, test = tr, va
        else:
            qs = sorted({x['question'].strip().lower() for x in tr}); random.Random(1).shuffle(qs)
            held = set(qs[fold-1::4])
            train = [x for x in tr if x['question'].strip().lower() not in held] + va
            test = [x for x in tr if x['question'].strip().lower() in held]
        fit, tune = split(train, 0.2, seed=0, groups=[x['question'].strip().lower() for x in train])
        return fit, tune, test

    def ant_split(self):
        ant = load_icl_task('antonym')
        g = lambda ds: ['|'.join(sorted((d['input'], d['output']))) for d in ds]
        ant_train, ant_test = split(ant, 0.2, seed=0, groups=g(ant))      # 40_lofit's split by unordered word pair
        fit, tune = split(ant_train, 0.2, seed=0, groups=g(ant_train))
        return fit[:256], tune[:100], ant_test[:300]

    # -- scoring --------------------------------------------------------------------------------------------------------
    def score(self, task:str, items:list, art=None)->pd.DataFrame:
        m, tok = self.model, self.tok
        def run():
            if task == 'truthfulqa':   # five questions a call, batches of 4: one call over 82 questions grew to 21 GB on this machine
                return pd.concat([mc_scores(m, tok, items[i:i+5], batch_size=4) for i in range(0, len(items), 5)], ignore_index=True)
            e = icl_exact_match(m, tok, items); e['id'] = [f"{x['input']}->{x['output']}" for x in items]; return e[['id', 'em']]
        if art is None: return run()
        with art.apply(m): return run()

    def tune_metric(self, task, items, art)->float:
        s = self.score(task, items, art); return float(s.mc2.mean() if task == 'truthfulqa' else s.em.mean())

    # -- one (task, fold) -----------------------------------------------------------------------------------------------
    def run(self, task:str, fold:int):
        m, tok, q = self.model, self.tok, self.quick
        if task == 'truthfulqa':
            fit, tune, test = self.tqa_split(fold); tune = tune[:TUNE_N[task]]
            data = tqa_preferences(random.Random(0).sample(fit, min(160, len(fit))), max_pairs=1)
            S1 = dict(lam=1e-3, steps=30, lr=5e-3, batch_size=4); S2 = dict(steps=30, batch_size=4)
        else:
            fit, tune, test = self.ant_split()
            data = icl_completions(fit)
            S1 = dict(lam=1e-3, steps=40, lr=5e-3, batch_size=8); S2 = dict(steps=60, batch_size=8)
        if q:
            tune, test, S1, S2 = tune[:8], test[:8], {**S1, 'steps': 2}, {**S2, 'steps': 2}
            data = data.subset(list(range(min(16, len(data)))))
        have = done(task, fold) | SKIP
        print(f"== {task} fold {fold}: fit {len(fit)}, tune {len(tune)}, test {len(test)}, training examples {len(data)}; done {sorted(have)}", flush=True)
        ref = reference_logprobs(m, tok, data) if data.kind == 'dpo' else None
        epoch = math.ceil(len(data) / S2['batch_size'])
        cache = {}

        def record(method, art, chosen='', curve=None, trainable=0, extra_secs=0.0, extra_steps_per_epoch=None):
            t = time.perf_counter(); s = self.score(task, test, art); t_score = time.perf_counter() - t
            s = s.rename(columns={'id': 'item'}); s.insert(0, 'method', method); s.insert(0, 'fold', fold); s.insert(0, 'task', task)
            append(ITEMS, s.to_dict('records'), ITEM_COLS)
            spe = np.nan
            if curve is not None and len(curve):
                spe = curve.seconds.iloc[-1] / len(curve) * epoch + extra_secs
            append(RUNS, [dict(task=task, fold=fold, method=method, trainable=trainable, chosen=chosen, n_train=len(data),
                               steps=0 if curve is None else len(curve), sec_per_epoch=spe, score_seconds=t_score,
                               when=time.strftime('%Y-%m-%d %H:%M:%S'))])
            summarize()
            metr = s[['mc1', 'mc2']].mean().round(3).to_dict() if task == 'truthfulqa' else s[['em']].mean().round(3).to_dict()
            print(f"   {method:20s} {metr} trainable {trainable:,} s/epoch {spe:.1f} ({chosen})", flush=True)

        def choose(method, cands:dict)->tuple:
            "Score every candidate {label: (artifact, curve)} on the tuning split; the best one"
            if len(cands) == 1:   # nothing to choose: no tuning pass
                lab = next(iter(cands)); append(TUNE, [dict(task=task, fold=fold, method=method, candidate=lab, tune_score=np.nan,
                                                            tune_metric='fixed in advance', n_tune=0)])
                return lab, cands[lab]
            rows = []
            for lab, (art, curve) in cands.items():
                rows.append(dict(task=task, fold=fold, method=method, candidate=lab, tune_score=self.tune_metric(task, tune, art),
                                 tune_metric='mc2' if task == 'truthfulqa' else 'em', n_tune=len(tune)))
            append(TUNE, rows)
            best = max(rows, key=lambda r: r['tune_score'])['candidate']
            print(f"   {method}: tune {[(r['candidate'], round(r['tune_score'], 3)) for r in rows]} -> {best}", flush=True)
            return best, cands[best]

        def lofit_step1():
            if 'rank' not in cache: cache['rank'] = select_heads(m, tok, data, ref=ref, progress=False, **S1)
            return cache['rank']

        def iti():
            if 'iti' in cache: return cache['iti']
            if task == 'truthfulqa':
                Pf, Af, yf, _ = qa_pairs(fit, max_per_class=1); Pt, At, yt, _ = qa_pairs(tune, max_per_class=1)
            else:
                rng = random.Random(0)
                items = lambda ds: [dict(question=d['input'], correct=[d['output']], incorrect=[d['input'], rng.choice(fit)['output']]) for d in ds]
                Pf, Af, yf, _ = qa_pairs(items(fit)); Pt, At, yt, _ = qa_pairs(items(tune))
            Xf, Xt = head_activations(m, tok, Pf, Af), head_activations(m, tok, Pt, At)
            rank = fit_head_probes(Xf, torch.tensor(yf), Xt, torch.tensor(yt))
            cands = {f'alpha={a:g}': (iti_intervention(Xf, torch.tensor(yf), rank, K, a, m), None) for a in ITI_ALPHAS[task]}
            cache['iti'] = (rank, cands); return cache['iti']

        if 'unedited' not in have: record('unedited', None)
        if 'LoFiT (own heads)' not in have or 'LoFiT (ITI heads)' not in have:
            rank, c1 = lofit_step1()
            spe1 = c1.seconds.iloc[-1] / len(c1) * math.ceil(len(data) / S1['batch_size'])
        if 'LoFiT (own heads)' not in have:
            heads = top_heads(rank, K)
            cands = {f'lr={lr:g}': bias_tune(m, tok, data, heads, ref=ref, lr=lr, progress=False, **S2) for lr in GRID['lofit']}
            lab, (art, curve) = choose('LoFiT (own heads)', cands)
            record('LoFiT (own heads)', art, lab + ' (+ step 1 in s/epoch)', curve, art.meta['n_trainable'], extra_secs=spe1)
        if 'LoRA' not in have:
            cands = {f'lr={lr:g}': lora_tune(m, tok, data, r=8, ref=ref, lr=lr, progress=False, **S2) for lr in GRID['lora']}
            lab, (art, curve) = choose('LoRA', cands)
            record('LoRA', art, lab, curve, art.meta['n_trainable'])
        if 'RED' not in have:
            cands = {f'lr={lr:g}': red_tune(m, tok, data, ref=ref, lr=lr, progress=False, **S2) for lr in GRID['red']}
            lab, (art, curve) = choose('RED', cands)
            record('RED', art, lab, curve, art.meta['n_trainable'])
        if 'ITI' not in have:
            rank_iti, cands = iti()
            lab, (art, _) = choose('ITI', cands)
            record('ITI', art, lab, None, K * self.ad.head_dim)
        if 'LoFiT (ITI heads)' not in have:
            rank_iti, _ = iti()
            # the learning rate chosen for LoFiT on its own heads (one training instead of a second grid)
            r = pd.read_csv(RUNS); r = r[(r.task == task) & (r.fold == fold) & (r.method == 'LoFiT (own heads)')]
            lrs = [float(r.chosen.iloc[0].split()[0][3:])] if len(r) else GRID['lofit']
            cands = {f'lr={lr:g}': bias_tune(m, tok, data, top_heads(rank_iti, K), ref=ref, lr=lr, progress=False,
                                             method='LoFiT (ITI heads)', **S2) for lr in lrs}
            lab, (art, curve) = choose('LoFiT (ITI heads)', cands)
            record('LoFiT (ITI heads)', art, lab, curve, art.meta['n_trainable'])
        if 'RepE control' not in have:
            if task == 'truthfulqa':
                P, A, y, g = qa_pairs(fit, max_per_class=1); st = [f"{p} {a}" for p, a in zip(P, A)]
            else:
                st = [f"Q: {d['input']}\nA: {a}" for d in fit for a in (d['output'], d['input'])]
                y = [1, 0] * len(fit); g = [i for i in range(len(fit)) for _ in range(2)]
            band = [f'blocks.{L}.hook_resid_post' for L in BAND]
            rv = reading_vectors(m, tok, st, y, hooks=band, groups=g)
            cands = {f'alpha={a:g}': (steering(rv, a, model=m), None) for a in REPE_ALPHAS[task]}
            lab, (art, _) = choose('RepE control', cands)
            record('RepE control', art, lab, None, len(BAND) * self.ad.d_model)

def _rss_guard(limit_gb:float):
    "End this process (rows written so far stay) if its memory passes `limit_gb`: on a shared machine the OOM killer would hit others too"
    import threading, resource
    def watch():
        while True:
            try: rss = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() / 1e9
            except OSError: return
            if rss > limit_gb: print(f"memory {rss:.1f} GB > {limit_gb} GB: stopping (resume by running again)", flush=True); os._exit(3)
            time.sleep(0.5)
    threading.Thread(target=watch, daemon=True).start()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--tasks', default='antonym,tqa0,tqa1,tqa2,tqa3,tqa4'); ap.add_argument('--quick', action='store_true')
    ap.add_argument('--out', default=None, help='results folder (default: results/ beside this file)')
    ap.add_argument('--only', default=None, help='comma-separated methods to run (the others are skipped in this call)')
    ap.add_argument('--fixed', action='store_true', help='no learning-rate search: the first value of each grid (fixed in advance)')
    ap.add_argument('--max-gb', type=float, default=8.0, help='stop when the process holds more memory than this')
    a = ap.parse_args()
    _rss_guard(a.max_gb)
    if a.only: SKIP.update(set(METHODS) - set(a.only.split(',')))
    if a.fixed:
        for k in GRID: GRID[k] = GRID[k][:1]
    global RES, ITEMS, RUNS, TUNE, TABLE
    if a.out: RES = Path(a.out); ITEMS, RUNS, TUNE, TABLE = (RES/f'lofit_table{s}.csv' for s in ('_items', '_runs', '_tune', ''))
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    RES.mkdir(parents=True, exist_ok=True)
    st = Study(a.quick)
    for t in a.tasks.split(','):
        t0 = time.time()
        if t == 'antonym': st.run('antonym', 0)
        else: st.run('truthfulqa', int(t[3:]))
        print(f"== {t} finished in {time.time() - t0:.0f} s", flush=True)

if __name__ == '__main__': main()
