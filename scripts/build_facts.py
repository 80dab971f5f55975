"""Build `editlab/assets/facts.json` from `editlab/assets/facts_candidates.json`.

Each candidate is scored with the embedded SmolLM2-135M-Instruct model (GGUF, dequantised to float32)
as a plain base LM (no chat template).  A target's score is the *summed* log-prob of its tokens under
teacher forcing, where the prompt and `" " + target` are tokenized SEPARATELY (add_special_tokens=False)
and the ids concatenated.  A candidate is kept iff

  * on the prompt, the paraphrase and the neighborhood prompt: log P(target_true) > log P(target_new), and
  * on the prompt, the greedy next token equals the first token of `" " + target_true`.

To keep the set small and balanced, at most `MAX_PER_RELATION` passing records are kept per relation (the
ones with the largest minimum true-vs-new margin over the three prompts, i.e. the most robust), and no
relation may hold more than 40% of the records (if one does, its least robust records are dropped until the
cap holds).  Kept records are written in candidate-file order with ids 0..N-1.  Deterministic; run with `.venv/bin/python scripts/build_facts.py`.
"""
import json, math, os, sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT/"editlab"/"assets"
CANDS, OUT = ASSETS/"facts_candidates.json", ASSETS/"facts.json"
MAX_FRAC = 0.4
MAX_PER_RELATION = 5


def load_model():
    "The embedded model through editlab's own loader (cached safetensors after the first load)."
    from editlab.models import load_model as _load
    model, tok = _load()
    return tok, model


def enc(tok, s): return tok(s, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def score(tok, model, prompt, targets):
    "Summed log-prob of each target after `prompt` (editlab's scorer: separate tokenization), plus greedy next token id."
    from editlab.evaluate import target_logprobs, encode_prompt
    out = target_logprobs(model, tok, [prompt]*len(targets), list(targets)).tolist()
    greedy = int(model(torch.tensor([encode_prompt(tok, prompt)])).logits[0, -1].argmax())
    return out, greedy


def check(tok, model, c):
    r = {}
    for k in ("prompt", "paraphrase", "neighborhood"):
        (lt, ln), g = score(tok, model, c[k], [c["target_true"], c["target_new"]])
        r[k] = (lt, ln, g)
    first = enc(tok, " " + c["target_true"])[0]
    ok = all(lt > ln for lt, ln, _ in r.values()) and r["prompt"][2] == first
    return ok, r, first


def cap_relations(kept, margins, max_per=MAX_PER_RELATION, max_frac=MAX_FRAC):
    "Keep the `max_per` most robust records per relation, then enforce the `max_frac` share; preserves order."
    order = sorted(range(len(kept)), key=lambda i: -margins[i])  # stable: ties keep file order
    seen, keep = Counter(), set()
    for i in order:
        if seen[kept[i]["relation"]] < max_per: keep.add(i); seen[kept[i]["relation"]] += 1
    while keep:
        cnt = Counter(kept[i]["relation"] for i in keep)
        rel, m = cnt.most_common(1)[0]
        if m <= max_frac*len(keep): break
        keep.remove(min((i for i in keep if kept[i]["relation"] == rel), key=lambda i: margins[i]))
    return [kept[i] for i in sorted(keep)]


def main():
    torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("EDITLAB_THREADS", "1")))
    cands = json.loads(CANDS.read_text())
    tok, model = load_model()
    kept, margins, fails = [], [], Counter()
    for i, c in enumerate(cands):
        for k in ("prompt", "paraphrase", "neighborhood"):
            assert not c[k].endswith(" "), c
        assert c["subject"] in c["prompt"] and c["subject"] in c["paraphrase"], c
        ok, r, first = check(tok, model, c)
        tag = "KEEP" if ok else "drop"
        why = [k for k, (lt, ln, _) in r.items() if not lt > ln]
        if r["prompt"][2] != first: why.append(f"greedy={tok.decode([r['prompt'][2]])!r}")
        for w in why: fails[w.split("=")[0]] += 1
        print(f"{tag} {c['relation']:<18} {c['subject'][:28]:<28} {c['target_true']!r:>22} vs {c['target_new']!r:<20} "
              + " ".join(f"{k[:4]}:{lt-ln:+.2f}" for k, (lt, ln, _) in r.items()) + ("  " + ",".join(why) if why else ""))
        if ok: kept.append(c); margins.append(min(lt-ln for lt, ln, _ in r.values()))
    n_pass, kept_all = len(kept), list(kept)
    kept = cap_relations(kept, margins)
    recs = [dict(id=i, **{k: c[k] for k in ("relation", "subject", "prompt", "target_true", "target_new", "paraphrase", "neighborhood")})
            for i, c in enumerate(kept)]
    OUT.write_text(json.dumps(recs, indent=1, ensure_ascii=False) + "\n")
    pc = Counter(c["relation"] for c in kept_all)
    print(f"\ncandidates: {len(cands)}  passed filter: {n_pass}  "
          f"kept after caps (<= {MAX_PER_RELATION}/relation, <= {MAX_FRAC:.0%} share): {len(recs)}")
    print("failure reasons (a candidate can have several):", dict(fails))
    cc, kc = Counter(c["relation"] for c in cands), Counter(r["relation"] for r in recs)
    for rel in cc: print(f"  {rel:<20} candidates {cc[rel]:>3}  passed {pc.get(rel,0):>3}  kept {kc.get(rel,0):>3}")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__": main()
