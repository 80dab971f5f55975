"""Every tiny architecture through the hook-point vocabulary: shapes, exactness against HF, padding, KV cache, cleanup.

Models are random and built from configs (`editlab.models.tiny_model`), so nothing is downloaded.
"""
import inspect

import pytest
import torch

from editlab.models import TINY_FAMILIES, adapter, tiny_model
from editlab.hooks import (HOOK_KINDS, add_vector, capture, encode, forward, hook_names, intervene)

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')

# expected numbers, written from the tiny configs in editlab.models._TINY, independent of the adapter's logic:
# (n_heads, n_kv_heads, head_dim, d_mlp). GQA and head_dim != 64/4 wherever the family's config allows it.
EXPECT = dict(
    llama=(4, 2, 24, 96), mistral=(4, 2, 24, 96), qwen2=(4, 2, 16, 96), qwen3=(4, 2, 24, 96),
    gemma=(4, 2, 24, 96), gemma2=(4, 2, 24, 96), olmo=(4, 2, 16, 96), granite=(4, 2, 16, 96), phi3=(4, 2, 16, 96),
    gpt2=(4, 4, 16, 96), gpt_neox=(4, 4, 16, 96), gptj=(4, 4, 16, 96), opt=(4, 4, 16, 96))
N_LAYERS = 3
# mixed lengths; the longest (> gemma2's sliding window of 16) exercises the sliding-window mask under padding
PROMPTS = ["hello world, how are you today?", "hi", "a medium prompt"]

families = pytest.mark.parametrize('fam', TINY_FAMILIES)
# OPT's decoder layer flattens hidden states to [batch*pos, d] before fc1/fc2; add_hook unflattens them
families_opt_flat = families

def test_enough_families():
    assert len(TINY_FAMILIES) >= 9
    assert set(EXPECT) == set(TINY_FAMILIES), "add the new family to EXPECT"

_models = {}
def _model(fam):
    "One tiny model per family for the whole module (hooks are always removed, weights never changed)"
    if fam not in _models: _models[fam] = tiny_model(fam, n_layers=N_LAYERS)
    return _models[fam]

def _batch(tok, side='left', prompts=PROMPTS): return encode(tok, prompts, padding_side=side)

def _all_hooks(m):
    "(module name, hook dict name, n) for every hook of any kind left on any module"
    kinds = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks', '_backward_pre_hooks',
             '_forward_hooks_with_kwargs', '_forward_pre_hooks_with_kwargs')
    return [(n, k, len(getattr(mod, k))) for n, mod in m.named_modules() for k in kinds if len(getattr(mod, k, {}))]

# ---------------------------------------------------------------------------------------------------------------- adapter

@families
def test_adapter_numbers(fam):
    m, _ = _model(fam)
    ad = adapter(m)
    H, KV, dh, dm = EXPECT[fam]
    assert (ad.n_layers, ad.d_model, ad.n_heads, ad.n_kv_heads, ad.head_dim, ad.d_mlp) == (N_LAYERS, 64, H, KV, dh, dm)
    assert len(hook_names(m)) == N_LAYERS * len(HOOK_KINDS)
    assert adapter(m) is ad  # cached

# ----------------------------------------------------------------------------------------------------- exactness vs HF

@families
@pytest.mark.parametrize('L', range(N_LAYERS))
def test_hook_z_is_o_proj_input(fam, L):
    m, tok = _model(fam)
    ad = adapter(m)
    seen = []
    h = ad.o_proj(L).register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    try:
        with capture(m, f'blocks.{L}.attn.hook_z') as c: forward(m, **_batch(tok))
    finally: h.remove()
    z = c[f'blocks.{L}.attn.hook_z']
    b, q = _batch(tok)['input_ids'].shape
    assert z.shape == (b, q, ad.n_heads, ad.head_dim)
    assert len(seen) == 1 and torch.equal(z.flatten(-2), seen[0])

@families
def test_resid_matches_hidden_states(fam):
    m, tok = _model(fam)
    ad = adapter(m)
    b = _batch(tok)
    with capture(m, ['blocks.*.hook_resid_pre', 'blocks.*.hook_resid_post']) as c:
        hs = forward(m, **b, output_hidden_states=True).hidden_states
    assert len(hs) == N_LAYERS + 1
    assert torch.equal(c['blocks.0.hook_resid_pre'], hs[0])
    for L in range(N_LAYERS - 1):
        assert torch.equal(c[f'blocks.{L}.hook_resid_post'], hs[L + 1]), L
        assert torch.equal(c[f'blocks.{L+1}.hook_resid_pre'], c[f'blocks.{L}.hook_resid_post']), L
    # HF's last hidden state has the final norm applied (all these families): resid_post of the last block is before it
    last = c[f'blocks.{N_LAYERS-1}.hook_resid_post']
    torch.testing.assert_close(ad.final_norm(last), hs[-1], rtol=0, atol=1e-6)

@families_opt_flat
def test_hook_shapes(fam):
    m, tok = _model(fam)
    ad = adapter(m)
    b = _batch(tok)
    n, q = b['input_ids'].shape
    with capture(m, 'blocks.*') as c: forward(m, **b)
    assert set(c) == set(hook_names(m))
    for L in range(N_LAYERS):
        for k in ('hook_resid_pre', 'hook_resid_post', 'attn.hook_out', 'mlp.hook_out'):
            assert c[f'blocks.{L}.{k}'].shape == (n, q, ad.d_model), k
        assert c[f'blocks.{L}.mlp.hook_post'].shape == (n, q, ad.d_mlp)
        assert c[f'blocks.{L}.attn.hook_z'].shape == (n, q, ad.n_heads, ad.head_dim)
    assert c.mask.shape == (n, q) and torch.equal(c.mask, b['attention_mask'].bool())

@families
def test_attn_and_mlp_out_are_module_outputs(fam):
    "attn.hook_out / mlp.hook_out are the outputs of o_proj / down (raw HF hooks as reference)"
    m, tok = _model(fam)
    ad = adapter(m)
    seen = {}
    hs = [ad.o_proj(1).register_forward_hook(lambda mod, a, o: seen.__setitem__('attn', o.clone())),
          ad.down(1).register_forward_hook(lambda mod, a, o: seen.__setitem__('mlp', o.clone())),
          ad.down(1).register_forward_pre_hook(lambda mod, a: seen.__setitem__('post', a[0].clone()))]
    try:
        with capture(m, 'blocks.1.*') as c: forward(m, **_batch(tok))
    finally:
        for h in hs: h.remove()
    for k, r in (('attn.hook_out', 'attn'), ('mlp.hook_out', 'mlp'), ('mlp.hook_post', 'post')):
        x = c[f'blocks.1.{k}']
        assert torch.equal(x.reshape(seen[r].shape), seen[r]), k  # OPT's MLP runs on [batch*pos, d]: compare values

@families
@pytest.mark.parametrize('ret', ['same', 'clone', 'none'])
def test_identity_hooks_bitwise(fam, ret):
    m, tok = _model(fam)
    b = _batch(tok)
    ref = m(**b).logits
    f = {'same': lambda a, ctx: a, 'clone': lambda a, ctx: a.clone(), 'none': lambda a, ctx: None}[ret]
    with intervene(m, {'blocks.*': f}) as fired:
        out = m(**b).logits
    assert set(fired) == set(hook_names(m)) and all(v == 1 for v in fired.values()), fired
    assert torch.equal(out, ref)
    assert torch.equal(m(**b).logits, ref)  # and nothing is left behind

@families
@pytest.mark.parametrize('kind', HOOK_KINDS)
def test_zero_ablation_acts(fam, kind):
    "Returning a*0 at any hook point (hook_z: all heads of a layer) changes the logits"
    m, tok = _model(fam)
    b = _batch(tok)
    ref = m(**b).logits
    with intervene(m, {f'blocks.1.{kind}': lambda a, ctx: a * 0}): out = m(**b).logits
    real = b['attention_mask'].bool()
    assert not torch.allclose(out[real], ref[real], atol=1e-4)

@families
def test_single_head_ablation_acts_only_on_that_head(fam):
    "Zeroing one head at hook_z changes logits, and o_proj sees zeros exactly in that head's slice"
    m, tok = _model(fam)
    ad = adapter(m)
    b = _batch(tok)
    ref = m(**b).logits
    seen = []
    def zero_head(a, ctx):
        a = a.clone(); a[:, :, 1] = 0; return a
    with intervene(m, {'blocks.0.attn.hook_z': zero_head}):
        h = ad.o_proj(0).register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()), prepend=False)
        try: out = m(**b).logits
        finally: h.remove()
    dh = ad.head_dim
    x = seen[0]
    assert (x[..., dh:2 * dh] == 0).all() and (x[..., :dh] != 0).any() and (x[..., 2 * dh:] != 0).any()
    assert not torch.allclose(out, ref, atol=1e-4)

@families_opt_flat
def test_steering_mlp_out_equals_steering_resid_post(fam):
    "Adding v to the MLP output at some positions is adding v to the block output there (residual stream is linear)"
    m, tok = _model(fam)
    if fam == 'gemma2': pytest.skip("gemma2 normalises the MLP output (post_feedforward_layernorm) before the residual add")
    b = _batch(tok)
    v = torch.randn(adapter(m).d_model, generator=torch.Generator().manual_seed(0))
    with intervene(m, {'blocks.1.mlp.hook_out': add_vector(v, positions=2)}): a = forward(m, **b).logits
    with intervene(m, {'blocks.1.hook_resid_post': add_vector(v, positions=2)}): r = forward(m, **b).logits
    real = b['attention_mask'].bool()
    torch.testing.assert_close(a[real], r[real], rtol=0, atol=1e-5)
    assert not torch.allclose(a[real], forward(m, **b).logits[real], atol=1e-4)

@families_opt_flat
def test_capture_last_at_mlp_hooks(fam):
    "capture(positions='last') at the MLP hooks is the last real token of each row"
    m, tok = _model(fam)
    b = _batch(tok)
    with capture(m, 'blocks.0.mlp.*', positions='last') as c: forward(m, **b)
    with capture(m, 'blocks.0.mlp.*') as full: forward(m, **b)
    for k in ('mlp.hook_post', 'mlp.hook_out'):
        n = f'blocks.0.{k}'
        assert c[n].shape == (3, full[n].shape[-1])
        torch.testing.assert_close(c[n], full[n][:, -1], rtol=0, atol=0)  # left padding: last column is the last token

# ------------------------------------------------------------------------------------------------------------- padding

def _real_logits(m, tok, side, prompts=PROMPTS):
    b = _batch(tok, side, prompts)
    lg = forward(m, **b).logits
    return [lg[i][b['attention_mask'][i].bool()] for i in range(len(prompts))]

@families
def test_padding_side_and_batching_invariance(fam):
    m, tok = _model(fam)
    if 'position_ids' not in inspect.signature(m.forward).parameters:
        pytest.skip(f"{type(m).__name__}.forward takes no position_ids")
    left, right = _real_logits(m, tok, 'left'), _real_logits(m, tok, 'right')
    single = [_real_logits(m, tok, 'left', [p])[0] for p in PROMPTS]
    for i, p in enumerate(PROMPTS):
        assert left[i].shape[0] == len(tok(p)['input_ids'])
        torch.testing.assert_close(left[i], single[i], rtol=0, atol=1e-5)
        torch.testing.assert_close(right[i], single[i], rtol=0, atol=1e-5)

@families
def test_capture_last_and_positions_ignore_padding(fam):
    "capture(positions='last'/absolute positions) reads the same token batched (left or right padded) and alone"
    m, tok = _model(fam)
    name = 'blocks.1.hook_resid_post'
    def run(prompts, side, positions):
        with capture(m, name, positions=positions) as c: forward(m, **_batch(tok, side, prompts))
        return c[name]
    for side in ('left', 'right'):
        last = run(PROMPTS, side, 'last')
        one = run(PROMPTS, side, torch.tensor([1, 1, 1]))
        for i, p in enumerate(PROMPTS):
            torch.testing.assert_close(last[i], run([p], 'left', 'last')[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(one[i], run([p], 'left', torch.tensor([1]))[0], rtol=0, atol=1e-5)

# ----------------------------------------------------------------------------------------------- KV cache and steering

GEN = dict(max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_logits=True)
GEN_PROMPTS = ["hello there", "hi you"]  # left padded: the second row has a pad

def _steer_vec(m, tok, name):
    "A random direction as long as the mean real-token residual at `name` (large enough to matter, not to dominate)"
    b = _batch(tok, 'left', GEN_PROMPTS)
    with capture(m, name) as c: forward(m, **b)
    nrm = c[name].norm(dim=-1)[b['attention_mask'].bool()].mean()
    v = torch.randn(adapter(m).d_model, generator=torch.Generator().manual_seed(1))
    return v / v.norm() * nrm

@families
@pytest.mark.parametrize('p', [2, 13])  # 2: inside every prompt; 13: only generated tokens (prompts are <= 11 long)
def test_cached_equals_uncached_under_steering(fam, p):
    m, tok = _model(fam)
    name = 'blocks.1.hook_resid_post'  # a middle block
    v = _steer_vec(m, tok, name)
    b = _batch(tok, 'left', GEN_PROMPTS)
    assert max(len(tok(s)['input_ids']) for s in GEN_PROMPTS) < 13
    plain = m.generate(**b, **GEN)
    with intervene(m, {name: add_vector(v, positions=p)}):
        cached = m.generate(**b, **GEN, use_cache=True)
        uncached = m.generate(**b, **GEN, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, u in zip(cached.logits, uncached.logits):  # every step steered alike, not only the same argmax
        torch.testing.assert_close(a, u, rtol=0, atol=1e-4)
    if p == 2:  # the first new token is predicted from steered prompt positions: its logits must change
        assert not torch.allclose(cached.logits[0], plain.logits[0], atol=1e-4)
    else:  # steering starts at absolute position 13, after the prompt: the first step is untouched ...
        assert torch.equal(cached.logits[0], plain.logits[0])
        # ... nor any step before the one that feeds absolute position 13 of row 0; that step changes
        first = 13 - len(tok(GEN_PROMPTS[0])['input_ids']) + 1
        assert 0 < first < GEN['max_new_tokens']
        for k in range(first): assert torch.equal(cached.logits[k], plain.logits[k]), k
        assert not torch.allclose(cached.logits[first][0], plain.logits[first][0], atol=1e-4)

@families
def test_norm_preserving_steering_cached_equals_uncached(fam):
    m, tok = _model(fam)
    name = 'blocks.1.hook_resid_pre'
    v = _steer_vec(m, tok, name) * 2
    b = _batch(tok, 'left', GEN_PROMPTS)
    with intervene(m, {name: add_vector(v, positions=1, norm_preserve=True)}):
        cached = m.generate(**b, **GEN, use_cache=True)
        uncached = m.generate(**b, **GEN, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, u in zip(cached.logits, uncached.logits): torch.testing.assert_close(a, u, rtol=0, atol=1e-4)

# ---------------------------------------------------------------------------------------------------- no stale hooks

class Boom(Exception): pass

@families
def test_no_hooks_left_after_errors(fam):
    m, tok = tiny_model(fam, n_layers=2)  # fresh: HF itself keeps hooks on a model once output_hidden_states was used
    b = _batch(tok)
    assert _all_hooks(m) == []
    def boom(a, ctx): raise Boom()
    # an error inside a hook, during the forward
    with pytest.raises(Boom):
        with intervene(m, {'blocks.*': lambda a, ctx: a, 'blocks.1.mlp.hook_post': boom}): m(**b)
    assert _all_hooks(m) == []
    # an error in the with-body, after hooks were attached
    with pytest.raises(Boom):
        with intervene(m, {'blocks.*': lambda a, ctx: a}):
            m(**b); raise Boom()
    assert _all_hooks(m) == []
    # an error while attaching: the second name is bad, the first was already attached
    with pytest.raises(KeyError):
        with intervene(m, {'blocks.0.hook_resid_pre': lambda a, ctx: a, 'blocks.0.hook_nope': lambda a, ctx: a}): m(**b)
    assert _all_hooks(m) == []
    # inside capture (nested in intervene)
    with pytest.raises(Boom):
        with intervene(m, {'blocks.0.attn.hook_z': boom}):
            with capture(m, 'blocks.*'): m(**b)
    assert _all_hooks(m) == []
    # and the model still works, bitwise as before
    ref = m(**b).logits
    with intervene(m, {'blocks.*': lambda a, ctx: a}): out = m(**b).logits
    assert torch.equal(out, ref) and _all_hooks(m) == []
