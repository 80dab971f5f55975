"""Instruction vectors on the 11 function-vector tasks, held out: builds each task's vector on its build split, chooses k and
the layer on its dev split, and scores its test split (`editlab.instruction_vectors.iv_heldout`).

    OMP_NUM_THREADS=1 python instruction_vectors_run.py [--tasks antonym,capitalize] [--quick]

Resumable: a task already in results/iv_tasks_runs.csv is skipped. Writes, under results/:
- iv_tasks_items.csv: one line per test item (task, input, answer, first-token accuracy zero-shot, with the vector,
  5-shot clean and 5-shot with shuffled labels, and P(answer) zero-shot with and without the vector);
- iv_tasks_runs.csv: one line per task (split sizes, prompts tried and answered correctly, prompts in the AIE, the chosen
  k and layer, dev accuracies, seconds, the warnings raised);
- iv_tasks_dev.csv: every (k, layer) tried, with its dev accuracy (the only split the choice saw).
Data come from the `editlab.data` loaders (`$EDITLAB_DATA`).
"""
import os, sys, time, argparse, warnings
os.environ.setdefault('OMP_NUM_THREADS', '1')
from pathlib import Path
import pandas as pd, torch
from editlab.models import load_model
from editlab.data import load_icl_task, ICL_TASKS
from editlab.instruction_vectors import iv_heldout

RES = Path(__file__).resolve().parent/'results'
ITEMS, RUNS, DEV = (RES/f'iv_tasks_{s}.csv' for s in ('items', 'runs', 'dev'))

def append(path:Path, df:pd.DataFrame):
    df.to_csv(path, mode='a', header=not path.exists(), index=False)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--tasks', default=','.join(ICL_TASKS))
    ap.add_argument('--quick', action='store_true', help='a smoke run: 3 layers, 20 test items, no CSV')
    a = ap.parse_args()
    torch.set_num_threads(1); torch.set_grad_enabled(False)
    RES.mkdir(exist_ok=True)
    done = set(pd.read_csv(RUNS).task) if RUNS.exists() and not a.quick else set()
    model, tok = load_model()
    for t in a.tasks.split(','):
        if t in done: print(f"{t}: done"); continue
        t0 = time.time()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            kw = dict(layers=[10, 14, 18], n_test=20, n_dev=10) if a.quick else {}
            try: r = iv_heldout(model, tok, load_icl_task(t), **kw)
            except ValueError as e: r = None; err = str(e)
        msgs = ' | '.join(str(x.message) for x in w if issubclass(x.category, UserWarning))
        if r is None:
            print(f"{t}: {err}"); info = dict(error=err)
        else:
            info = r['info']
            print(f"{t}: {info} zero-shot {r['items'].zero_shot.mean():.3f} iv {r['items'].iv.mean():.3f} "
                  f"5-shot {r['items'].few_shot.mean():.3f} shuffled {r['items'].shuffled.mean():.3f} ({time.time()-t0:.0f} s)", flush=True)
        if a.quick: continue
        if r is not None:
            append(ITEMS, r['items'].assign(task=t)[['task'] + list(r['items'].columns)])
            append(DEV, r['sweep'].assign(task=t))
        append(RUNS, pd.DataFrame([dict(task=t, **info, seconds=round(time.time()-t0), warnings=msgs)]))

if __name__ == '__main__': main()
