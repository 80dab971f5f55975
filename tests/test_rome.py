"ROME: the update's algebra on real keys, bad inputs, and that nothing is left half-applied"
import warnings
import pytest, torch
from editlab.models import tiny_model, adapter
from editlab.hooks import forward
from editlab import rome as R
from helpers import weights as _weights, same as _same, no_hooks as _no_hooks

PREFIXES = ['hello there', 'a b c', 'big world']
REC = dict(prompt='the big world is', subject='big world', target_new='hello', target_true='there')

@pytest.fixture(scope='module')
def stats(llama, tmp_path_factory):
    m, tok = llama
    corpus = tmp_path_factory.mktemp('c') / 'c.txt'
    corpus.write_text(' '.join(f"word{i % 37} hello there big world" for i in range(400)))
    import os; os.environ['EDITLAB_CACHE'] = str(tmp_path_factory.mktemp('cache'))
    return R.layer_stats(m, tok, 0, corpus, n_tokens=1500, seq_len=64, progress=False)


def test_update_maps_key_to_value(llama, stats):
    "W' k* = v* with v* = W k* + delta, for the averaged key the update was built from"
    m, tok = llama
    ad = adapter(m); W = ad.down(0).weight.detach().double()
    ctx = R.edit_contexts(REC['prompt'], PREFIXES)
    k = R.subject_keys(m, tok, 0, ctx, REC['subject']).mean(0).double()
    delta, target, _ = R.compute_v(m, tok, 0, ctx, REC['subject'], REC['target_new'], steps=3, clamp_norm=100, weight_decay=0)
    torch.testing.assert_close(W @ k, target.double(), atol=1e-5, rtol=1e-4)        # the clean value is W k* (no bias)
    d = R.rome(m, tok, REC, 0, stats=stats, prefixes=PREFIXES, steps=3, clamp_norm=100, weight_decay=0)
    dW = d.dense(ad.param_name(0, 'down')).double()
    torch.testing.assert_close((W + dW) @ k, target.double() + delta.double(), atol=1e-4, rtol=1e-3)
    u = torch.linalg.solve(stats, k)
    k2 = torch.randn(len(k), dtype=torch.float64); k2 -= (u @ k2) / (u @ u) * u     # (C⁻¹k*)ᵀ k2 = 0
    torch.testing.assert_close((W + dW) @ k2, W @ k2, atol=1e-5, rtol=1e-4)

def test_apply_undo_bitwise(llama, stats):
    m, tok = llama
    before = _weights(m)
    d = R.rome(m, tok, REC, 0, stats=stats, prefixes=PREFIXES, steps=2)
    assert _same(before, _weights(m))                       # computing an edit never writes the weights
    h = d.apply(m)
    assert not torch.equal(adapter(m).down(0).weight, before[adapter(m).param_name(0, 'down')])
    h.undo()
    assert _same(before, _weights(m))
    assert d.meta['method'] == 'ROME' and d.meta['delta_norm'] > 0 and set(d.meta['seconds']) == {'key', 'value', 'update'}

def test_failure_mid_edit_leaves_model_as_it_was(llama, stats, monkeypatch):
    m, tok = llama
    before = _weights(m); flags = [p.requires_grad for p in m.parameters()]
    calls = {'n': 0}
    orig = R.unembed_logits
    def boom(*a, **k):
        calls['n'] += 1
        if calls['n'] > 3: raise RuntimeError('boom')
        return orig(*a, **k)
    monkeypatch.setattr(R, 'unembed_logits', boom)
    with pytest.raises(RuntimeError, match='boom'): R.rome(m, tok, REC, 0, stats=stats, prefixes=PREFIXES, steps=5)
    assert _same(before, _weights(m)) and flags == [p.requires_grad for p in m.parameters()] and _no_hooks(m)

@pytest.mark.parametrize('rec, err', [
    (dict(REC, subject='moon'), 'does not occur'),
    (dict(REC, target_new=' '), 'empty'),
    (dict(REC, target_new='there'), 'equals target_true'),
    ({k: v for k, v in REC.items() if k != 'subject'}, 'needs'),
])
def test_bad_requests(llama, stats, rec, err):
    m, tok = llama
    with pytest.raises((ValueError, KeyError), match=err): R.rome(m, tok, rec, 0, stats=stats, prefixes=PREFIXES)

def test_bad_layer_and_stats(llama, stats):
    m, tok = llama
    with pytest.raises(IndexError, match='out of range'): R.rome(m, tok, REC, 5, prefixes=PREFIXES)
    with pytest.raises(ValueError, match='another model or layer'): R.rome(m, tok, REC, 0, stats=stats[:4, :4], prefixes=PREFIXES)

def test_subject_error_says_how_it_tokenized(llama):
    m, tok = llama
    with pytest.raises(ValueError, match=r"tokenizes as \["): R.rome(m, tok, dict(REC, subject='moon'), 0, prefixes=PREFIXES)

def test_singular_stats_regularised_with_warning(llama):
    m, tok = llama
    C = torch.zeros(adapter(m).d_mlp, adapter(m).d_mlp, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        d = R.rome(m, tok, REC, 0, stats=C, prefixes=PREFIXES, steps=2)
    assert any('ridge' in str(x.message) for x in w) and len(d) == 1

def test_conv1d_gpt2():
    "GPT-2 stores the down projection as [in, out]: the delta has the parameter's shape and applies"
    m, tok = tiny_model('gpt2', n_layers=2)
    ad = adapter(m); name = ad.param_name(0, 'down')
    d = R.rome(m, tok, REC, 0, prefixes=PREFIXES, steps=2)
    assert tuple(d.dense(name).shape) == tuple(dict(m.named_parameters())[name].shape)
    with d.apply(m): pass

def test_sequential_edits_undo_in_order(llama, stats):
    m, tok = llama
    before = _weights(m)
    d1 = R.rome(m, tok, REC, 0, stats=stats, prefixes=PREFIXES, steps=2)
    h1 = d1.apply(m)
    d2 = R.rome(m, tok, dict(REC, target_new='world'), 0, stats=stats, prefixes=PREFIXES, steps=2)
    h2 = d2.apply(m)
    with pytest.raises(RuntimeError, match='reverse order'): h1.undo()
    h2.undo(); h1.undo()
    assert _same(before, _weights(m))

def test_stats_cache_keyed_by_weights(llama):
    "Statistics of a different model are never reused: the key hashes the weights the keys depend on"
    m, tok = llama
    m2, _ = tiny_model('llama', n_layers=2, seed=1)
    k1 = R.stats_key(m, 0, 'x', 10, 8)
    assert R.stats_key(m2, 0, 'x', 10, 8) != k1
    assert R.stats_key(m, 1, 'x', 10, 8) != k1 and R.stats_key(m, 0, 'y', 10, 8) != k1 and R.stats_key(m, 0, 'x', 11, 8) != k1

def test_update_never_a_silent_no_op():
    "A non-finite update is refused; one that is zero, or below the resolution of float16 weights, warns (naming the weight)"
    W = torch.ones(4, 3, dtype=torch.float16)
    with pytest.raises(ValueError, match='update of w is not finite'):
        R.check_update(W, R.LowRank(torch.full((4, 1), float('inf')), torch.ones(1, 3)), 'w', '')
    with pytest.warns(UserWarning, match='update of w is exactly zero: why'):
        R.check_update(W, R.LowRank(torch.zeros(4, 1), torch.ones(1, 3)), 'w', 'why')
    with pytest.warns(UserWarning, match=r'below the resolution of its torch.float16 weights'):
        R.check_update(W, R.LowRank(torch.full((4, 1), 1e-5), torch.ones(1, 3)), 'w', '')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        R.check_update(W.float(), R.LowRank(torch.full((4, 1), 1e-5), torch.ones(1, 3)), 'w', '')   # float32 holds it

def test_signature_shows_compute_v_settings():
    "rome's signature and docs list compute_v's optimisation settings (not a bare **kwargs); the hook stays ROME's"
    import inspect
    ps = inspect.signature(R.rome).parameters
    assert {'steps', 'lr', 'kl_factor', 'weight_decay', 'clamp_norm', 'stop_nll', 'kl_prompts', 'use_cache'} <= set(ps)
    assert 'kwargs' not in ps and 'hook' not in ps
    assert ps['steps'].default == inspect.signature(R.compute_v).parameters['steps'].default
