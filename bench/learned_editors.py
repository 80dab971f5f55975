"""Costs of the editors that learn to edit (MEND, KE, ENN) on the embedded model, each against its floor.

1. Time per edit (one CounterFact dev record at a time, median over records), against one forward+backward of the same
   edit request (what MEND's gradient costs on its own) measured in the same loop. Target for MEND: under 1 s.
2. 100 edits as one batch (MEND, KE): wall time and seconds per edit.
3. Training throughput in edit examples per second (MEND, KE, ENN; a few optimizer steps each, cache off), against a
   plain fine-tuning step of the same size on the same matrices (`finetune`, the last three blocks' MLP up/down).

Editor networks are used as initialised (timing does not depend on what they learned); pass --trained to train/load
the registry's editors first (slow on a cold cache).

    python bench/learned_editors.py [--edits 5] [--batch 100] [--steps 5] [--threads 1] [--trained]
"""
import argparse, statistics, time
import torch

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--edits', type=int, default=5); ap.add_argument('--batch', type=int, default=100)
    ap.add_argument('--steps', type=int, default=5); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--trained', action='store_true')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from editlab.models import load_model, adapter
    from editlab.data import load_counterfact, load_wikitext
    from editlab.mend import MendEditor, mend_edit, edit_grads, mend_targets, train_mend
    from editlab.ke import KnowledgeEditor, ke_edit, train_ke
    from editlab.enn import enn_edit, train_enn
    from editlab.editors import make_editor
    from editlab.finetune import finetune
    model, tok = load_model()
    dev = load_counterfact('dev-500')
    train = load_counterfact('train-2000')[:200]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    targets = mend_targets(model)
    if a.trained:
        eds = {n: make_editor(n, model, tok) for n in ('MEND', 'KE', 'ENN')}
        edit = {'MEND': eds['MEND'], 'KE': eds['KE'], 'ENN': eds['ENN']}
    else:
        me, ke = MendEditor(model), KnowledgeEditor(model)
        edit = {'MEND': lambda m, t, r: mend_edit(m, t, r, me), 'KE': lambda m, t, r: ke_edit(m, t, r, ke),
                'ENN': lambda m, t, r: enn_edit(m, t, r, k=3, lr=3e-3)}
    floor = lambda m, t, r: edit_grads(m, t, [r], targets)

    # 1. time per edit, interleaved with the floor
    recs = dev[:a.edits]
    for f in (floor, *edit.values()): f(model, tok, dev[a.edits])   # warm-up, not timed
    t = {k: [] for k in ['forward+backward', *edit]}
    for r in recs:
        for k, f in (('forward+backward', floor), *edit.items()):
            s = time.perf_counter(); f(model, tok, r); t[k].append(time.perf_counter() - s)
    fb = statistics.median(t['forward+backward'])
    print(f"1. seconds per edit, median of {len(recs)} CounterFact dev records")
    for k, v in t.items():
        med = statistics.median(v)
        print(f"  {k:18s} {med:6.2f} s  ({med/fb:4.1f}x one forward+backward)" + ("  target < 1 s: " + ("met" if med < 1 else "NOT met") if k == 'MEND' else ''))

    # 2. one batch of many edits
    batch = [r for r in dev[:a.batch]]
    print(f"2. {len(batch)} edits as one batch")
    for k in ('MEND', 'KE'):
        s = time.perf_counter(); d = edit[k](model, tok, batch); dt = time.perf_counter() - s
        print(f"  {k:4s} {dt:6.1f} s, {dt/len(batch):.3f} s per edit, {d.n_params:,} numbers stored")

    # 3. training throughput
    print(f"3. training throughput, {a.steps} optimizer steps, one edit per step")
    text = load_wikitext(n_chars=60_000)
    names = [t_['name'] for t_ in targets]
    runs = {
        'plain fine-tune': lambda: finetune(model, tok, [r['prompt'] for r in train], [r['target_new'] for r in train], params=names,
                                            steps=a.steps, batch_size=1, progress=False),
        'MEND': lambda: train_mend(model, tok, train, steps=a.steps, batch_size=1, cache=False, progress=False),
        'KE': lambda: train_ke(model, tok, train, steps=a.steps, batch_size=1, cache=False, progress=False),
        'ENN (k=3, last 2 blocks)': lambda: train_enn(model, tok, train, text, steps=a.steps, k=3, cache=False, progress=False),
    }
    base = None
    for k, f in runs.items():
        s = time.perf_counter(); f(); dt = time.perf_counter() - s
        eps = a.steps / dt; base = base or eps
        print(f"  {k:26s} {eps:6.2f} examples/s  ({dt/a.steps:5.2f} s per step, {base/eps:4.1f}x the plain step's time)")

if __name__ == '__main__': main()
