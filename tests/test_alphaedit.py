"AlphaEdit: Conv1D layout, nothing half-applied, bad inputs, the update stays in the null space"
import pytest, torch
from editlab.models import tiny_model, adapter
from editlab.rome import layer_stats
from editlab import alphaedit as A
from helpers import weights as _weights, same as _same, no_hooks as _no_hooks

P = ['hello there', 'a b c']
REQS = [dict(prompt='the big world is', subject='big world', target_new='hello', target_true='there'),
        dict(prompt='a small cat is', subject='small cat', target_new='there', target_true='world')]
KW = dict(prefixes=P, progress=False, steps=5, clamp_norm=100, weight_decay=0)

def _proj(m, tok, layers):
    "Projectors keeping the half of each layer's key space with the smallest eigenvalues"
    out = {}
    for l in layers:
        C = layer_stats(m, tok, l, None, n_tokens=500, seq_len=16, progress=False)
        out[l] = A.null_space(C, float(torch.linalg.eigvalsh(C.double()).median()))
    return out

@pytest.mark.parametrize('family', ['llama', 'gpt2'])
def test_update_shape_null_space_and_undo(family):
    m, tok = tiny_model(family, n_layers=3)
    ad, proj = adapter(m), _proj(m, tok, [0, 1])
    before = _weights(m)
    d = A.alphaedit(m, tok, REQS, [0, 1], proj, l2=1e-5, **KW)
    assert _same(before, _weights(m)) and _no_hooks(m)
    eye = torch.eye(ad.d_mlp, dtype=torch.float64)
    for l in (0, 1):
        W = ad.down(l).weight
        D = d.deltas[ad.param_name(l, 'down')].dense().double()
        assert D.shape == W.shape
        Dm = D.T if D.shape[0] == ad.d_mlp else D          # [d_model, d_mlp] whatever the storage
        assert float((Dm @ (eye - proj[l])).norm()) < 1e-5 * float(Dm.norm())
    with d.apply(m): assert not _same(before, _weights(m))
    assert _same(before, _weights(m))

def test_failure_between_layers_restores_weights(monkeypatch):
    m, tok = tiny_model('llama', n_layers=3)
    proj, before = _proj(m, tok, [0, 1]), _weights(m)
    calls = {'n': 0}; orig = A._mean_acts
    def boom(*a, **k):
        calls['n'] += 1
        if calls['n'] > 1: raise RuntimeError('boom')
        return orig(*a, **k)
    monkeypatch.setattr(A, '_mean_acts', boom)
    with pytest.raises(RuntimeError, match='boom'): A.alphaedit(m, tok, REQS, [0, 1], proj, **KW)
    assert calls['n'] == 2 and _same(before, _weights(m)) and _no_hooks(m)

@pytest.mark.parametrize('reqs, layers, err', [
    ([], [0], 'no edit requests'),
    (REQS, [9], 'out of range'),
    ([dict(REQS[0], subject='moon')], [0], 'does not occur'),
    ([dict(REQS[0], target_new='there')], [0], 'equals target_true'),
    (REQS, [0, 1], r'no projector for the edited layer\(s\) \[1\]'),
    (REQS + [dict(REQS[0], target_new='green')], [0], "requests 0 and 2 contradict: subject 'big world'"),   # one subject and relation, two targets
])
def test_bad_inputs(reqs, layers, err):
    m, tok = tiny_model('llama', n_layers=3)
    proj, before = {0: torch.eye(adapter(m).d_mlp, dtype=torch.float64)}, _weights(m)
    with pytest.raises((ValueError, IndexError, KeyError), match=err): A.alphaedit(m, tok, reqs, layers, proj, **KW)
    assert _same(before, _weights(m)) and _no_hooks(m)

def test_registry_factory_edits():
    from editlab.editors import edit
    m, tok = tiny_model('llama', n_layers=3)
    before = _weights(m)
    d = edit('AlphaEdit', m, tok, REQS, layers=(0, 1), threshold=1e9, corpus='model-samples', n_tokens=200)
    assert d.meta['method'] == 'AlphaEdit' and len(d.deltas) >= 1 and _same(before, _weights(m))
