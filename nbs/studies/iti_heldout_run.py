"""ITI held out on every shared TruthfulQA question: the measurements behind `iti_heldout.ipynb`.

    OMP_NUM_THREADS=1 python iti_heldout_run.py [--model HF_ID] [--stage base|tune|heldout|all] [--variants ...] [--check]

`--model` reruns the whole study on any Hugging Face causal LM (default: the embedded SmolLM2-135M-Instruct); its
files then carry the model's name (iti_heldout_<name>_*.csv).

The 408 shared questions (ITI/LoFiT fold 0: 326 train + 82 val, one group per question) are cut into N_OUTER seeded
folds. For each outer fold, every choice (probe ranking, directions, K and alpha) is made on the other folds only: heads
ranked by probes fit on a seeded 80% of those questions and scored on the other 20%, K and alpha by a grouped N_INNER-fold
cross-validation on them (MC2 on S_TUNE questions of each inner fold). The chosen setting is then applied to the outer
fold's questions, which no choice saw. Every question is thus scored once, held out.

Resumable; writes under results/:
- iti_heldout_base.csv: per question, unsteered MC1/MC2;
- iti_heldout_tune.csv: per (outer, inner, K, alpha, question) the tuning-split scores (never a held-out question);
- iti_heldout_items.csv: per (outer fold, variant, question) the held-out scores with the setting applied.
Head activations of the unsteered model are computed once (in the base pass) and cached in editlab's cache folder.
Data come from the `editlab.data` loaders (`$EDITLAB_DATA`).
"""
import os, sys
os.environ.setdefault('OMP_NUM_THREADS', '1')
if os.environ.get('MALLOC_MMAP_THRESHOLD_') is None:   # logits of varying size fragment glibc's heap
    os.environ['MALLOC_MMAP_THRESHOLD_'] = '65536'; os.execv(sys.executable, [sys.executable] + sys.argv)
import argparse, random, time, resource
from dataclasses import replace
from pathlib import Path
import numpy as np, pandas as pd, torch
from editlab.models import load_model, adapter, cache_dir
from editlab.data import load_truthfulqa, split
from editlab.hooks import capture, forward, hook_name
from editlab.evaluate import encode_prompt, encode_target, pad_batch, mc_scores, QA_TEMPLATE
from editlab.artifacts import Intervention
from editlab.iti import fit_head_probes, iti_intervention

RES = Path(__file__).resolve().parent/'results'
BASE, TUNE, HELD = (RES/f'iti_heldout_{s}.csv' for s in ('base', 'tune', 'items'))
ACTS = 'acts.pt'   # in editlab's cache folder

def use_model(name:str|None):
    "Point the result files at `name`'s own (the embedded model keeps the plain names)"
    global BASE, TUNE, HELD, ACTS
    if name is None: return
    slug = ''.join(c if c.isalnum() else '-' for c in name.split('/')[-1]).lower()
    BASE, TUNE, HELD = (RES/f'iti_heldout_{slug}_{s}.csv' for s in ('base', 'tune', 'items'))
    ACTS = f'acts_{slug}.pt'
N_OUTER, N_INNER, S_TUNE = 2, 2, 16
DTYPE = torch.bfloat16   # the checkpoint's own dtype; about twice as fast as float32 on this CPU (bf16 matrix units)
KS, ALPHAS = (8, 16, 32), (2.5, 5.0, 10.0)
# variant -> (direction, position rule); positions, for a question whose prompt has P tokens:
#   all    every token, prompt and answer;
#   answer tokens P-1 on (the last prompt token and every answer token): the positions whose outputs predict the answer,
#          i.e. what a shift of every generated token does in generation;
#   last   token P-1 only (the last prompt token).
VARIANTS = {'mass-mean/all': ('mass_mean', 'all'), 'mass-mean/answer': ('mass_mean', 'answer'),
            'probe/all': ('probe', 'all'), 'mass-mean/last': ('mass_mean', 'last')}

def questions()->list[dict]:
    "The shared questions, each with a unique key (ids restart at 0 in each file)"
    return [dict(it, key=f'{sub}-{it["id"]}') for sub in ('train', 'val') for it in load_truthfulqa(sub)]

def outer_folds(keys:list[str], n:int=N_OUTER, seed:int=0)->dict:
    "question key -> outer fold (seeded, one group per question)"
    ks = sorted(keys); random.Random(seed).shuffle(ks)
    return {k: i % n for i, k in enumerate(ks)}

def rule(pos:str, P:int):
    "The position rule of variant position `pos` for a prompt of P tokens"
    return {'all': 'all', 'answer': P - 1, 'last': [P - 1]}[pos]

def score_question(model, tok, it:dict, iv:Intervention|None=None, pos:str='all', names:list|None=None):
    """Log-prob of every choice of one question, the prompt run once and its KV cache shared by the choices;
    with `names`, also each choice's per-head outputs at its last token (the activations ITI probes)"""
    p = encode_prompt(tok, QA_TEMPLATE.format(question=it['question']))
    choices = list(dict.fromkeys(list(it['mc1_choices']) + list(it['mc2_choices'])))
    T = [encode_target(tok, c) for c in choices]
    a, am = pad_batch(T, tok.pad_token_id, 'right')
    mask = torch.cat([torch.ones(len(T), len(p), dtype=am.dtype), am], 1)
    h = Intervention([replace(t, positions=rule(pos, len(p))) for t in iv.terms], iv.meta).apply(model) if iv else None
    try:
        out = forward(model, torch.tensor([p]), use_cache=True, logits_to_keep=1)
        first = out.logits[0, -1].float().log_softmax(-1)           # predicts each choice's first token
        cache = out.past_key_values; cache.batch_repeat_interleave(len(T))
        if names:
            with capture(model, names, positions='last') as c: o2 = forward(model, a, mask, past_key_values=cache)
            acts = torch.stack([c[n].float() for n in names], 1)    # [n_choices, L, H, d]
        else: o2, acts = forward(model, a, mask, past_key_values=cache), None
    finally:
        if h is not None: h.undo()
    lp2 = o2.logits.float().log_softmax(-1)
    s = {}
    for j, (c, t) in enumerate(zip(choices, T)):
        s[c] = float(first[t[0]]) + sum(float(lp2[j, i-1, t[i]]) for i in range(1, len(t)))
    mc1 = float(all(s[it['mc1_choices'][0]] > s[c] for c in it['mc1_choices'][1:]))
    p2 = torch.softmax(torch.tensor([s[c] for c in it['mc2_choices']], dtype=torch.float64), 0)
    mc2 = float(p2[torch.tensor(it['mc2_labels'], dtype=torch.bool)].sum())
    labels = torch.tensor([int(c in it['correct']) for c in choices])
    return mc1, mc2, acts, labels

def append(path:Path, rows:list[dict]):
    if rows: pd.DataFrame(rows).to_csv(path, mode='a', header=not path.exists(), index=False)

def rss_gb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

def base_pass(model, tok, qs):
    "Unsteered scores of every question and the head activations ITI needs, in one pass"
    f = cache_dir('iti_heldout')/ACTS
    if f.exists() and BASE.exists(): return torch.load(f, weights_only=True)
    names = [hook_name(L, 'attn.hook_z') for L in range(adapter(model).n_layers)]
    acts, rows, t0 = {}, [], time.time()
    for i, it in enumerate(qs):
        mc1, mc2, A, y = score_question(model, tok, it, names=names)
        acts[it['key']] = (A.half(), y); rows.append(dict(key=it['key'], mc1=mc1, mc2=mc2))
        if i % 50 == 0: print(f'base {i}/{len(qs)} {time.time()-t0:.0f}s rss {rss_gb():.2f} GB', flush=True)
    if BASE.exists(): BASE.unlink()
    append(BASE, rows); torch.save(acts, f)
    return acts

def directions(acts:dict, keys:list[str]):
    "Heads ranked on `keys` (probes fit on a seeded 80% of the questions, ranked on the other 20%); activations and labels of all"
    fit, rank = split(sorted(keys), 0.2, seed=0)
    X = lambda ks: torch.cat([acts[k][0] for k in ks]).float()
    Y = lambda ks: torch.cat([acts[k][1] for k in ks])
    ranking = fit_head_probes(X(fit), Y(fit), X(rank), Y(rank))
    return ranking, X(sorted(keys)), Y(sorted(keys))

def tune(model, tok, qs, acts, folds):
    "Inner grouped CV on each outer fold's training questions: MC2 of every (K, alpha) on S_TUNE questions per inner fold"
    done = set(map(tuple, pd.read_csv(TUNE)[['outer', 'inner']].drop_duplicates().values)) if TUNE.exists() else set()
    byk = {it['key']: it for it in qs}
    for o in range(N_OUTER):
        train = sorted(k for k, f in folds.items() if f != o)
        inner = outer_folds(train, N_INNER, seed=1 + o)
        for j in range(N_INNER):
            if (o, j) in done: continue
            t0 = time.time()
            ranking, X, Y = directions(acts, [k for k in train if inner[k] != j])
            ev = [k for k in train if inner[k] == j]; random.Random(o * 10 + j).shuffle(ev); ev = sorted(ev[:S_TUNE])
            rows = []
            for K in KS:
                for a in ALPHAS:
                    iv = iti_intervention(X, Y, ranking, K, a)
                    for k in ev:
                        mc1, mc2, _, _ = score_question(model, tok, byk[k], iv)
                        rows.append(dict(outer=o, inner=j, k=K, alpha=a, key=k, mc1=mc1, mc2=mc2))
            append(TUNE, rows)
            print(f'tune outer {o} inner {j}: {time.time()-t0:.0f}s rss {rss_gb():.2f} GB', flush=True)

def chosen(o:int)->tuple[int, float]:
    "(K, alpha) with the best mean tuning MC2 of outer fold o; ties go to the smaller alpha, then the smaller K"
    t = pd.read_csv(TUNE); t = t[t.outer == o].groupby(['k', 'alpha']).mc2.mean().reset_index()
    best = t.sort_values(['mc2', 'alpha', 'k'], ascending=[False, True, True]).iloc[0]
    return int(best.k), float(best.alpha)

def heldout(model, tok, qs, acts, folds, variants):
    "Each outer fold's questions scored with the setting chosen without them, for each variant"
    done = set(map(tuple, pd.read_csv(HELD)[['outer', 'variant']].drop_duplicates().values)) if HELD.exists() else set()
    byk = {it['key']: it for it in qs}
    main, rest = variants[:1], variants[1:]
    order = [(v, o) for v in main for o in range(N_OUTER)] + [(v, o) for o in range(N_OUTER) for v in rest]
    for v, o in order:   # the main variant on every fold first, then the others fold by fold
        direction, pos = VARIANTS[v]
        if (o, v) in done: continue
        t0 = time.time(); K, a = chosen(o)
        ranking, X, Y = directions(acts, sorted(k for k, f in folds.items() if f != o))
        iv = iti_intervention(X, Y, ranking, K, a, direction=direction)
        rows = []
        for k in sorted(k for k, f in folds.items() if f == o):
            mc1, mc2, _, _ = score_question(model, tok, byk[k], iv, pos)
            rows.append(dict(outer=o, variant=v, k=K, alpha=a, key=k, mc1=mc1, mc2=mc2,
                             heads=' '.join(f'{l}.{h}' for l, h in iv.meta['heads'])))
        append(HELD, rows)
        print(f'heldout {v} outer {o} (K={K}, alpha={a}): {time.time()-t0:.0f}s rss {rss_gb():.2f} GB', flush=True)

def check(model, tok, qs, acts):
    "The prefix-shared scorer agrees with `editlab.evaluate.mc_scores`, unsteered and steered at every position"
    ranking, X, Y = directions(acts, list(acts)[:60]) if acts else (None, None, None)
    for iv in [None] + ([iti_intervention(X, Y, ranking, 16, 5.0)] if acts else []):
        ref = (iv.apply(model) if iv else None)
        try: m = mc_scores(model, tok, qs[100:104])
        finally:
            if ref: ref.undo()
        mine = [score_question(model, tok, it, iv)[:2] for it in qs[100:104]]
        print('mc_scores', m[['mc1', 'mc2']].values.round(5).tolist(), '\nprefix   ', np.round(mine, 5).tolist())
        assert np.allclose(m[['mc1', 'mc2']].values, np.array(mine), atol=2e-4)

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--stage', default='all'); ap.add_argument('--check', action='store_true')
    ap.add_argument('--variants', default=','.join(VARIANTS)); ap.add_argument('--model', default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False); RES.mkdir(exist_ok=True); use_model(args.model)
    model, tok = load_model(args.model, dtype=DTYPE); qs = questions()
    if args.check:
        f = cache_dir('iti_heldout')/ACTS
        check(model, tok, qs, torch.load(f, weights_only=True) if f.exists() else None); sys.exit()
    acts = base_pass(model, tok, qs)
    folds = outer_folds(list(acts))
    if args.stage in ('tune', 'all'): tune(model, tok, qs, acts, folds)
    if args.stage in ('heldout', 'all'): heldout(model, tok, qs, acts, folds, args.variants.split(','))
