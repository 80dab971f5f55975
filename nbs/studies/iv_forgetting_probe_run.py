"""The head ranking, the layer choice and the α sweep behind `studies/iv_forgetting` (no fine-tuning).

    OMP_NUM_THREADS=1 EDITLAB_DATA=... python iv_forgetting_probe_run.py

On the full function-vector files of present-past, singular-plural, antonym and english-french, each split once 50/50
(seed 0) as in the notebook, it writes under results/:
- iv_forgetting_tasks.csv: each task's number of pairs and the sizes of its two halves;
- iv_forgetting_aie.csv: the AIE of every head (layer, head, aie, sem) on the first 12 training queries of present-past
  with 5 demonstrations, kept where the model answers the clean prompt correctly (n_prompts, n_tried);
- iv_forgetting_layers.csv: one row per (task, training query, layer), zero-shot, with each task's vector (the top 20
  heads' mean outputs over 24 of its 5-shot training prompts) added at the last token of layer 13, 15, 17 or 19
  (α = 1): top1 and p with the vector, top1_base and p_base without it; the queries are training queries 24-71;
- iv_forgetting_alpha.csv: one row per (task, held-out query, α), the first 100 held-out queries, the vector at the
  task's layer (the best of the sweep above) scaled by α.
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
import time
from pathlib import Path
import pandas as pd, torch
from editlab.models import load_model
from editlab.data import load_icl_task, split
from editlab.instruction_vectors import (QUERY_TEMPLATE, answer_probs, icl_pairs, mean_head_acts, head_aie, top_aie_heads,
                                         instruction_vector, iv_intervention, keep_correct)

RES = Path(__file__).resolve().parent/'results'
OLD, NEW = ['present-past', 'singular-plural'], ['antonym', 'english-french']
LAYERS, ALPHAS, K = [13, 15, 17, 19], [0, 0.5, 1, 1.5, 2, 3], 20

def scores(model, tok, items, iv=None):
    "Per query: zero-shot top1 and p(first answer token), with `iv` applied if given"
    P, A = [QUERY_TEMPLATE.format(input=q['input']) for q in items], [q['output'] for q in items]
    if iv is None: return answer_probs(model, tok, P, A)
    with iv.apply(model): return answer_probs(model, tok, P, A)

def main():
    torch.set_num_threads(1); torch.set_grad_enabled(False)
    RES.mkdir(exist_ok=True)
    model, tok = load_model()
    tasks = {t: split(load_icl_task(t), 0.5, seed=0) for t in OLD + NEW}
    pd.DataFrame([dict(task=t, n_pairs=len(a) + len(b), n_train=len(a), n_heldout=len(b)) for t, (a, b) in tasks.items()]
                 ).to_csv(RES/'iv_forgetting_tasks.csv', index=False)
    t0 = time.time()
    tr = tasks['present-past'][0]
    tried = icl_pairs(tr, tr[:12], 5, seed=0)
    pairs = keep_correct(model, tok, tried)
    aie = head_aie(model, tok, pairs, mean_head_acts(model, tok, list(pairs.clean)), batch_size=136)
    aie.assign(n_prompts=len(pairs), n_tried=len(tried)).to_csv(RES/'iv_forgetting_aie.csv', index=False)
    heads = top_aie_heads(aie, K)
    print(f"AIE on {len(pairs)} of {len(tried)} prompts ({time.time()-t0:.0f} s); top 5 {heads[:5]}", flush=True)
    vec = {t: instruction_vector(model, mean_head_acts(model, tok, list(icl_pairs(tasks[t][0], tasks[t][0][:24], 5, seed=0).clean)), heads)
           for t in OLD + NEW}
    rows, layer = [], {}
    for t in OLD + NEW:
        qs = tasks[t][0][24:72]
        base = scores(model, tok, qs)
        for L in LAYERS:
            s = scores(model, tok, qs, iv_intervention(model, vec[t], L))
            rows.append(pd.DataFrame(dict(task=t, query=range(24, 24 + len(qs)), input=[q['input'] for q in qs],
                                          output=[q['output'] for q in qs], layer=L, top1=s.top1, p=s.p,
                                          top1_base=base.top1, p_base=base.p)))
        acc = rows[-len(LAYERS):]
        layer[t] = LAYERS[max(range(len(LAYERS)), key=lambda i: (acc[i].top1.mean(), -i))]
    pd.concat(rows, ignore_index=True).to_csv(RES/'iv_forgetting_layers.csv', index=False)
    print(f"layers {layer} ({time.time()-t0:.0f} s)", flush=True)
    rows = []
    for t in OLD + NEW:
        qs = tasks[t][1][:100]
        for a in ALPHAS:
            s = scores(model, tok, qs, iv_intervention(model, vec[t], layer[t], alpha=a))
            rows.append(pd.DataFrame(dict(task=t, query=range(len(qs)), input=[q['input'] for q in qs],
                                          output=[q['output'] for q in qs], layer=layer[t], alpha=a, top1=s.top1, p=s.p)))
    pd.concat(rows, ignore_index=True).to_csv(RES/'iv_forgetting_alpha.csv', index=False)
    print(f"alpha sweep ({time.time()-t0:.0f} s)", flush=True)

if __name__ == '__main__': main()
