"""Bad input to the hook API gives clear errors that name the problem (tiny random models, no downloads)."""
import pytest
import torch
import transformers

from editlab.models import ARCHS, ArchSpec, adapter, check_layer, register_arch, tiny_model
from editlab.hooks import (HOOK_KINDS, add_vector, capture, check_vector, encode, forward, get_activations, hook_name,
                           hook_names, hook_shape, intervene, position_mask, resolve_hooks, FwdCtx)

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')

@pytest.fixture
def batch(llama):
    return encode(llama[1], ["hello", "hi"], 'left')  # 5 and 2 tokens: row 1 has 3 pads

from helpers import no_hooks as _no_hooks

# ------------------------------------------------------------------------------------------------------ hook names

@pytest.mark.parametrize('name', ['blocks.0.hook_foo', 'resid_post', 'blocks.x.hook_resid_post', 'blocks.0.attn.hook_q',
                                  'blocks.0.hook_z', 'hook_resid_post', ''])
def test_unknown_hook_name_lists_valid_kinds(llama, name):
    m, _ = llama
    with pytest.raises(KeyError) as e: resolve_hooks(m, name)
    msg = str(e.value)
    assert repr(name) in msg and all(k in msg for k in HOOK_KINDS) and '0..1' in msg
    with pytest.raises(KeyError, match='unknown hook point'):
        with intervene(m, {name: lambda a, ctx: a}): pass
    with pytest.raises(KeyError, match='unknown hook point'):
        with capture(m, name): pass
    assert _no_hooks(m)

def test_unknown_kind_in_hook_name_and_hook_names(llama):
    m, _ = llama
    with pytest.raises(ValueError, match='valid kinds: hook_resid_pre'): hook_name(0, 'resid')
    with pytest.raises(ValueError, match="unknown hook kind 'foo'"): hook_names(m, kinds='foo')

def test_glob_matching_nothing(llama):
    m, _ = llama
    with pytest.raises(KeyError, match="pattern 'blocks.\\*.hook_nothing' matches no hook point"):
        resolve_hooks(m, 'blocks.*.hook_nothing')
    with pytest.raises(ValueError, match='no hook points selected'): resolve_hooks(m, [])
    with pytest.raises(ValueError, match='no hook points selected'): resolve_hooks(m, lambda n: False)

@pytest.mark.parametrize('L', [2, 7, -3, 100])
def test_layer_out_of_range(llama, L):
    m, _ = llama
    with pytest.raises(IndexError, match=rf"layer {L} out of range: this llama model has layers 0\.\.1"):
        resolve_hooks(m, f'blocks.{L}.hook_resid_post')
    with pytest.raises(IndexError, match='out of range'): hook_names(m, layers=[L])
    with pytest.raises(IndexError, match='out of range'): adapter(m).block(L)

def test_negative_layer_counts_from_end(llama):
    m, _ = llama
    assert resolve_hooks(m, 'blocks.-1.hook_resid_post') == ['blocks.1.hook_resid_post']
    assert hook_shape(m, 'blocks.-1.attn.hook_z') == (4, 24)

@pytest.mark.parametrize('L', [True, '1', 1.0, None])
def test_layer_of_wrong_type(llama, L):
    with pytest.raises(IndexError, match='out of range'): check_layer(adapter(llama[0]), L)

def test_intervene_value_not_callable(llama):
    m, _ = llama
    with pytest.raises(TypeError, match="the value for 'blocks.0.hook_resid_post' must be a function"):
        with intervene(m, {'blocks.0.hook_resid_post': torch.zeros(64)}): pass
    assert _no_hooks(m)

# -------------------------------------------------------------------------------------------------------- positions

def _cap(m, b, positions, name='blocks.0.hook_resid_post'):
    with capture(m, name, positions=positions) as c: forward(m, **b)
    return c[name]

@pytest.mark.parametrize('pos', [torch.tensor([99, 0]), torch.tensor([4, 4]), torch.tensor([[0, 5], [0, 1]])])
def test_capture_position_out_of_range(llama, batch, pos):
    "row 1 ('hi') has positions 0..1 and row 0 has 0..4: a position past a row's end is refused"
    m, _ = llama
    with pytest.raises(IndexError, match='not in this forward'): _cap(m, batch, pos)
    assert _no_hooks(m)

def test_capture_negative_position(llama, batch):
    m, _ = llama
    with pytest.raises(IndexError): _cap(m, batch, torch.tensor([-1, -1]))
    assert _no_hooks(m)

def test_capture_negative_position_never_reads_a_pad(llama):
    m, tok = llama
    b = dict(input_ids=torch.tensor([[0, 70, 71]]), attention_mask=torch.tensor([[0, 1, 1]]))
    with pytest.raises(IndexError, match='negative'): _cap(m, b, torch.tensor([-1]))

def test_capture_int_position(llama, batch):
    m, _ = llama
    torch.testing.assert_close(_cap(m, batch, 1), _cap(m, batch, torch.tensor([1, 1])))

def test_capture_positions_wrong_batch(llama, batch):
    m, _ = llama
    with pytest.raises(ValueError, match='batch'): _cap(m, batch, torch.tensor([0, 1, 1]))

def _ctx():
    am = torch.tensor([[0, 1, 1], [1, 1, 1]])
    pos = (am.cumsum(-1) - 1).masked_fill(am == 0, -1)
    return FwdCtx(pos, am.bool())

@pytest.mark.parametrize('rule, err, match', [
    ('first', ValueError, "unknown position rule 'first'"),
    (True, TypeError, 'position rule must be'),
    (-1, IndexError, 'position -1 is negative'),
    (torch.tensor([0, 1, 2]), ValueError, 'per-example positions for 3 examples, batch has 2'),
    (torch.tensor([[True, False, True]] * 2), TypeError, 'not a boolean mask'),
])
def test_position_mask_bad_rules(rule, err, match):
    with pytest.raises(err, match=match): position_mask(_ctx(), rule)

def test_position_mask_good_rules():
    ctx = _ctx()
    assert position_mask(ctx, 'all').tolist() == [[False, True, True], [True, True, True]]
    assert position_mask(ctx, 'last').tolist() == [[False, False, True], [False, False, True]]
    assert position_mask(ctx, 1).tolist() == [[False, False, True], [False, True, True]]
    assert position_mask(ctx, slice(0, 1)).tolist() == [[False, True, False], [True, False, False]]
    assert position_mask(ctx, [0]).tolist() == [[False, True, False], [True, False, False]]
    assert position_mask(ctx, torch.tensor([1, 2])).tolist() == [[False, False, True], [False, False, True]]

def test_add_vector_negative_position(llama, batch):
    m, _ = llama
    with pytest.raises(IndexError, match='negative'):
        with intervene(m, {'blocks.0.hook_resid_post': add_vector(torch.ones(64), positions=-1)}): forward(m, **batch)
    assert _no_hooks(m)

# ----------------------------------------------------------------------------------------------------------- vectors

@pytest.mark.parametrize('vec', [torch.zeros(63), torch.zeros(65), torch.zeros(1, 64), torch.zeros(()), torch.zeros(4, 16)])
def test_check_vector_wrong_shape(vec):
    with pytest.raises(ValueError, match=r'steering vector has shape .*, this hook point needs \(64,\)'):
        check_vector(vec, (64,), 'steering vector')

@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_check_vector_nan_inf(bad):
    v = torch.zeros(64); v[3] = bad
    with pytest.raises(ValueError, match='NaN or Inf'): check_vector(v, (64,))

def test_check_vector_against_hook_shape(llama):
    m, _ = llama
    check_vector(torch.zeros(4, 24), hook_shape(m, 'blocks.0.attn.hook_z'))
    with pytest.raises(ValueError, match=r'needs \(4, 24\)'): check_vector(torch.zeros(96), hook_shape(m, 'blocks.0.attn.hook_z'))
    with pytest.raises(ValueError, match=r'needs \(96,\)'): check_vector(torch.zeros(64), hook_shape(m, 'blocks.0.mlp.hook_post'))
    assert torch.equal(check_vector([1., 2.], (2,)), torch.tensor([1., 2.]))

@pytest.mark.parametrize('vec', [torch.ones(1), torch.ones(()), torch.ones(5, 64), torch.ones(63),
                                 torch.full((64,), float('nan'))])
def test_add_vector_validates_at_the_hook(llama, batch, vec):
    m, _ = llama
    with pytest.raises(ValueError, match=r'shape|NaN'):
        with intervene(m, {'blocks.0.hook_resid_post': add_vector(vec, positions='all')}): forward(m, **batch)

def test_fn_returning_wrong_shape(llama, batch):
    m, _ = llama
    with pytest.raises(ValueError, match='blocks.0.hook_resid_post'):
        with intervene(m, {'blocks.0.hook_resid_post': lambda a, ctx: a[:, :1]}): forward(m, **batch)

# ------------------------------------------------------------------------------------------------------------ prompts

def test_encode_empty_list(llama):
    with pytest.raises(ValueError, match='empty prompt list'): encode(llama[1], [])

def test_get_activations_empty_list(llama):
    m, tok = llama
    with pytest.raises(ValueError, match='empty prompt list'): get_activations(m, tok, [], 'blocks.0.hook_resid_post')
    assert _no_hooks(m)

@pytest.mark.parametrize('prompts', [[''], ['', 'ab'], ['ab', '']])
def test_prompt_tokenizing_to_nothing(llama, prompts):
    m, tok = llama
    with pytest.raises(ValueError, match='tokenizes to nothing'): encode(tok, prompts)
    with pytest.raises(ValueError, match='tokenizes to nothing'): get_activations(m, tok, prompts, 'blocks.0.hook_resid_post')
    assert _no_hooks(m)

def test_encode_bad_padding_side_keeps_tokenizer(llama):
    tok = llama[1]
    before = tok.padding_side
    with pytest.raises(ValueError, match='middle'): encode(tok, ['ab'], padding_side='middle')
    assert tok.padding_side == before
    encode(tok, ['ab', 'a'], padding_side='right')
    assert tok.padding_side == before  # encode never changes the tokenizer's own setting

def test_encode_single_string(llama):
    b = encode(llama[1], 'abc')
    assert b['input_ids'].shape == (1, 3) and set(b) == {'input_ids', 'attention_mask'}

# ------------------------------------------------------------------------------------------------ architectures

def _bloom():
    cfg = transformers.BloomConfig(vocab_size=259, hidden_size=64, n_layer=2, n_head=4)
    torch.manual_seed(0)
    return transformers.BloomForCausalLM(cfg).eval()

def test_unknown_architecture_mentions_register_arch():
    m = _bloom()
    with pytest.raises(NotImplementedError, match=r"no adapter for model_type 'bloom'.*register_arch"): adapter(m)
    with pytest.raises(NotImplementedError, match='register_arch'): hook_names(m)
    with pytest.raises(NotImplementedError, match='register_arch'):
        with intervene(m, {'blocks.0.hook_resid_post': lambda a, ctx: a}): pass
    assert _no_hooks(m)

def test_register_arch_teaches_a_new_family(monkeypatch):
    spec = ArchSpec(backbone='transformer', layers='transformer.h', embed='transformer.word_embeddings',
                    final_norm='transformer.ln_f', unembed='lm_head', o_proj='self_attention.dense',
                    down='mlp.dense_4h_to_h', qkv='self_attention.query_key_value', up='mlp.dense_h_to_4h',
                    attn='self_attention', mlp='mlp')
    monkeypatch.setitem(ARCHS, 'bloom', spec)  # register_arch writes here; undone after the test
    m = _bloom()
    register_arch('bloom', spec)
    ad = adapter(m)
    assert (ad.n_layers, ad.n_heads, ad.head_dim, ad.d_mlp) == (2, 4, 16, 256)
    ids = torch.tensor([[3, 4, 5, 6]])
    ref = m(input_ids=ids).logits
    with intervene(m, {'blocks.*': lambda a, ctx: a}), capture(m, 'blocks.1.attn.hook_z') as c: out = m(input_ids=ids).logits
    assert torch.equal(out, ref) and c['blocks.1.attn.hook_z'].shape == (1, 4, 4, 16)

def test_unknown_tiny_family():
    with pytest.raises(ValueError, match="unknown tiny family 'bert'; choose from llama"): tiny_model('bert')

# ---------------------------------------------------------------------------------------------- hooks that never fire

class Stop(Exception): pass

def test_hook_never_fired_after_early_exit(llama, batch):
    "A common pattern: stop the forward once the layer you need is reached; later hooks then never fire"
    m, _ = llama
    def stop(a, ctx): raise Stop()
    with pytest.raises(RuntimeError, match=r"never fired during 1 forward\(s\): \['blocks.1.hook_resid_post'\]"):
        with intervene(m, {'blocks.0.hook_resid_post': stop, 'blocks.1.hook_resid_post': lambda a, ctx: a}):
            try: m(**batch)
            except Stop: pass
    assert _no_hooks(m)
    with intervene(m, {'blocks.0.hook_resid_post': stop, 'blocks.1.hook_resid_post': lambda a, ctx: a}, check_fired=False):
        try: m(**batch)
        except Stop: pass
    assert _no_hooks(m)

def test_hook_never_fired_under_layerdrop(batch):
    "OPT's LayerDrop (train mode) skips whole blocks: a hook there never fires, which must not pass silently"
    m, _ = tiny_model('opt', n_layers=2, layerdrop=1.0)
    m.train()
    with pytest.raises(RuntimeError, match='never fired'):
        with intervene(m, {'blocks.1.mlp.hook_out': lambda a, ctx: a * 0}): m(**batch)
    with pytest.raises(RuntimeError, match='never fired'):
        with capture(m, 'blocks.*.hook_resid_post'): m(**batch)
    assert _no_hooks(m)

def test_no_forward_no_fired_check(llama):
    "Attaching and leaving without running a forward is not an error"
    m, _ = llama
    with intervene(m, {'blocks.*': lambda a, ctx: a}) as fired: pass
    assert set(fired.values()) == {0}
    assert _no_hooks(m)

@pytest.mark.parametrize('fam', ['gpt2', 'llama'])
def test_prompt_longer_than_context(fam):
    from editlab.models import tiny_model
    from editlab.hooks import forward
    from editlab.evaluate import generate
    m, tok = tiny_model(fam)
    n = m.config.max_position_embeddings if hasattr(m.config, 'max_position_embeddings') else m.config.n_positions
    with pytest.raises(ValueError, match='context holds'): forward(m, torch.zeros(1, n + 1, dtype=torch.long))
    with pytest.raises(ValueError, match='prompt plus max_new_tokens'): generate(m, tok, ["hello"], max_new_tokens=n)
