"One artifact protocol: one instance of each artifact kind on a tiny Llama, each protocol point checked the same way"
import pytest, torch
from editlab.models import tiny_model, adapter, fingerprint, in_features
from editlab.hooks import forward, encode
from editlab.artifacts import Artifact, WeightDelta, Intervention, Applied, is_applied
from editlab.compare import artifact_cost
from editlab.grace import Codebook
from editlab.tpatcher import PatchSet
from editlab.calinet import CaliNet
from helpers import weights as _weights, same as _same, no_hooks

@pytest.fixture(scope='module')
def llama(): return tiny_model('llama', n_layers=2)

def _kinds(m):
    ad, g = adapter(m), torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    meta = dict(method='test', fingerprint=fingerprint(m))
    d_in, d_ff = in_features(ad.up(0)), in_features(ad.down(0))
    name = ad.param_name(1, 'down')
    patch = lambda L: PatchSet(L, r(2, d_in), torch.ones(2), r(2, ad.d_model), ['a', 'b'], meta=dict(meta))
    return {
        'WeightDelta': (WeightDelta({name: 0.1 * r(*dict(m.named_parameters())[name].shape)}, dict(meta)), True),
        'Intervention': (Intervention.from_vectors({'blocks.0.hook_resid_post': r(ad.d_model)}, meta=dict(meta)), False),
        'Codebook': (Codebook(1, r(2, d_ff), r(2, ad.d_model), torch.full((2,), 1e3), ['a', 'b'], meta=dict(meta)), False),
        'PatchSet': (patch(1), False),
        'CaliNet': (CaliNet([patch(0), patch(1)], meta=dict(meta)), False)}

KINDS = ['WeightDelta', 'Intervention', 'Codebook', 'PatchSet', 'CaliNet']
SAVED = KINDS + ['SeracModel']   # SERAC's memory saves / loads like the others; its apply and algebra are checked below

def _serac(m, tok):
    "A SERAC memory of one edit whose prompt is one of `_logits`' inputs, so routing changes its logits"
    from editlab.serac import SeracModel, ScopeClassifier
    torch.manual_seed(0)
    return SeracModel(m, tok, ScopeClassifier(adapter(m).d_model, layer=1, dim=16, threshold=0.9999)).edit(
        dict(prompt='the big world is', target_new='hello', target_true='there'))

def _artifact(m, tok, kind): return (_serac(m, tok), False) if kind == 'SeracModel' else _kinds(m)[kind]
def _load(cls, f, m, tok, **kw): return cls.load(f, m, tok, **kw) if issubclass(cls, torch.nn.Module) else cls.load(f, m, **kw)
def _routed(h, m): return getattr(h, 'model', m)   # SERAC's handle carries the routed model; the others change `m` itself

def _logits(m, tok): return forward(m, **encode(tok, ['the big world is', 'a small cat'])).logits

@pytest.mark.parametrize('kind', KINDS)
def test_protocol(llama, kind):
    m, tok = llama
    art, changes_weights = _kinds(m)[kind]
    assert isinstance(art, Artifact) and art.kind == kind and art.meta['method'] == 'test'
    base_w, base = _weights(m), _logits(m, tok)
    # apply: a handle that undoes, and a context manager; the weights move only for a weight delta
    h = art.apply(m)
    assert isinstance(h, Applied)
    assert not torch.equal(_logits(m, tok), base)
    assert _same(base_w, _weights(m)) != changes_weights
    h.undo()
    assert _same(base_w, _weights(m)) and torch.equal(_logits(m, tok), base) and no_hooks(m)
    with pytest.raises(RuntimeError, match='already undone'): h.undo()   # a second undo is an error and changes nothing
    assert not h.active and _same(base_w, _weights(m)) and torch.equal(_logits(m, tok), base)
    with art.apply(m): assert not torch.equal(_logits(m, tok), base)
    assert _same(base_w, _weights(m)) and no_hooks(m)
    # cost: numbers stored, base weights changed
    c = artifact_cost(art, m)
    assert c['n_params'] == art.n_params > 0 and (c['weights_changed'] > 0) == changes_weights

@pytest.mark.parametrize('kind', SAVED)
def test_save_load_with_fingerprint(llama, kind, tmp_path):
    m, tok = llama
    art, _ = _artifact(m, tok, kind)
    f = art.save(tmp_path/f'{kind}.safetensors')
    back = _load(type(art), f, m, tok)
    assert back.meta['fingerprint'] == fingerprint(m) and back.kind == kind
    base = _logits(m, tok)
    with art.apply(m) as h: a = _logits(_routed(h, m), tok)
    with back.apply(m) as h: b = _logits(_routed(h, m), tok)
    assert torch.equal(a, b) and not torch.equal(a, base)
    other, _ = tiny_model('llama', n_layers=2, seed=7)
    with pytest.raises(ValueError, match='other weights'): _load(type(art), f, other, tok)

@pytest.mark.parametrize('kind', SAVED)
def test_damaged_file_named(llama, kind, tmp_path):
    "A truncated file, or one whose metadata lost a field: a ValueError naming the file"
    from safetensors import safe_open
    from safetensors.torch import save_file
    m, tok = llama
    art, _ = _artifact(m, tok, kind)
    f = art.save(tmp_path/f'{kind}.safetensors')
    cut = tmp_path/'cut.safetensors'; cut.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(ValueError, match='cut.safetensors.*truncated or damaged'): _load(type(art), cut, m, tok)
    with safe_open(str(f), framework='pt') as g: md, t = g.metadata(), {k: g.get_tensor(k) for k in g.keys()}
    bad = tmp_path/'bad.safetensors'
    save_file(t, str(bad), metadata={k: v for k, v in md.items() if k != 'layout'})
    with pytest.raises(ValueError, match="bad.safetensors lacks the 'layout'"): _load(type(art), bad, m, tok)

@pytest.mark.parametrize('kind', KINDS)
def test_algebra_or_a_clear_error(llama, kind):
    m, tok = llama
    art, _ = _kinds(m)[kind]
    both = art + art
    assert type(both) is type(art) and both.n_params >= art.n_params
    if kind == 'Codebook':
        with pytest.raises(TypeError, match='cannot be negated or scaled'): -art
        with pytest.raises(TypeError, match='cannot be negated or scaled'): 2 * art
        return
    with (art + (-art)).apply(m) if kind in ('WeightDelta', 'Intervention') else (0 * art).apply(m):
        base_free = _logits(m, tok)
    assert torch.allclose(base_free, _logits(m, tok), atol=1e-5)       # a + (-a), or 0·a, does nothing
    with pytest.raises(TypeError, match='finite number'): art * float('nan')

@pytest.mark.parametrize('kind', SAVED)
def test_applied_twice_is_refused(llama, kind):
    "The same artifact applied again while its handle is active: a clear error, the model as the first apply left it; after undo it applies again"
    m, tok = llama
    art, _ = _artifact(m, tok, kind)
    base_w, base = _weights(m), _logits(m, tok)
    with art.apply(m) as h:
        on_w, on = _weights(m), _logits(_routed(h, m), tok)
        with pytest.raises(RuntimeError, match=f'this {kind} is already applied.*undo it first'): art.apply(m)
        assert _same(on_w, _weights(m)) and torch.equal(_logits(_routed(h, m), tok), on) and is_applied(art, m)
    assert not is_applied(art, m) and _same(base_w, _weights(m)) and no_hooks(m) and torch.equal(_logits(m, tok), base)
    with art.apply(m) as h: assert torch.equal(_logits(_routed(h, m), tok), on)    # a fresh application after the undo
    if kind != 'SeracModel':    # a copy is another artifact: it stacks on purpose
        with art.apply(m), (1 * art if kind != 'Codebook' else art.copy()).apply(m): pass
        assert _same(base_w, _weights(m)) and no_hooks(m)

def test_internal_lookups_reuse_an_active_application(llama):
    "GRACE's query applies its codebook only when it is not applied already: inside the user's own `with` it reuses that one"
    m, tok = llama
    book, _ = _kinds(m)['Codebook']
    alone = book.query(m, tok, ['the big world is'])
    with book.apply(m): inside = book.query(m, tok, ['the big world is'])
    assert alone.equals(inside) and not is_applied(book, m) and no_hooks(m)

def test_serac_memory_speaks_apply_and_refuses_algebra(llama):
    "SERAC's memory: routing attaches at apply time (the handle's model), the base weights and hooks untouched, cost read, algebra a clear error"
    m, tok = llama
    s = _serac(m, tok)
    base_w = _weights(m)
    with s.apply(m) as h: assert h.model is s and h.active
    assert not h.active and _same(base_w, _weights(m)) and no_hooks(m)
    c = artifact_cost(s, m)
    assert c == dict(n_params=16, weights_changed=0)
    for bad in (lambda: s + s, lambda: -s, lambda: 2 * s):
        with pytest.raises(TypeError, match='cannot be added, negated or scaled'): bad()
    m2, _ = tiny_model('llama', n_layers=2, seed=1)
    with pytest.raises(ValueError, match='another model'): s.apply(m2)
