"MEMIT and sequential editing: nothing half-applied, bad inputs, the update's least-squares property"
import pytest, torch
from editlab.models import tiny_model, adapter
from editlab.artifacts import LowRank
from editlab import memit as M
from editlab import sequential as S
from helpers import weights as _weights, same as _same, no_hooks as _no_hooks

P = ['hello there', 'a b c']
REQS = [dict(prompt='the big world is', subject='big world', target_new='hello', target_true='there'),
        dict(prompt='a small cat is', subject='small cat', target_new='there', target_true='world')]

@pytest.fixture(scope='module')
def tiny3(): return tiny_model('llama', n_layers=3)


def test_memit_leaves_model_and_undoes_bitwise(tiny3):
    m, tok = tiny3
    before = _weights(m)
    d = M.memit(m, tok, REQS, [0, 1], prefixes=P, progress=False, steps=2)
    assert _same(before, _weights(m)) and _no_hooks(m)
    assert all(isinstance(x, LowRank) for x in d.deltas.values()) and d.meta['n_edits'] == 2
    with d.apply(m): assert not _same(before, _weights(m))
    assert _same(before, _weights(m))

def test_failure_between_layers_restores_weights(tiny3, monkeypatch):
    "An error after the first layer's update was applied (to measure the next layer) leaves the weights bitwise as they were"
    m, tok = tiny3
    before = _weights(m)
    calls = {'n': 0}; orig = M.solve_psd
    def boom(*a, **k):
        calls['n'] += 1
        if calls['n'] > 1: raise RuntimeError('boom')
        return orig(*a, **k)
    monkeypatch.setattr(M, 'solve_psd', boom)
    with pytest.raises(RuntimeError, match='boom'): M.memit(m, tok, REQS, [0, 1], prefixes=P, progress=False, steps=2)
    assert calls['n'] == 2 and _same(before, _weights(m)) and _no_hooks(m)

@pytest.mark.parametrize('reqs, layers, err', [
    ([], [0], 'no edit requests'),
    (REQS, [9], 'out of range'),
    ([dict(REQS[0], subject='moon')], [0], 'does not occur'),
    ([dict(REQS[0], target_new='there')], [0], 'equals target_true'),
])
def test_bad_inputs(tiny3, reqs, layers, err):
    m, tok = tiny3
    with pytest.raises((ValueError, IndexError, KeyError), match=err): M.memit(m, tok, reqs, layers, prefixes=P, progress=False)

def test_stats_shape_checked(tiny3):
    m, tok = tiny3
    with pytest.raises(ValueError, match='shape'): M.memit(m, tok, REQS, [0], stats={0: torch.eye(3)}, prefixes=P, progress=False)

def test_least_squares_with_strong_prior_is_small(tiny3):
    "A huge lambda keeps the layer's values: the update shrinks towards zero as lambda grows"
    m, tok = tiny3
    small = M.memit(m, tok, REQS, [0], lam=1e-3, prefixes=P, progress=False, steps=2).norms().iloc[0]
    big = M.memit(m, tok, REQS, [0], lam=1e6, prefixes=P, progress=False, steps=2).norms().iloc[0]
    assert big < 1e-2 * small

def test_sequential_restores_and_reports(tiny3):
    m, tok = tiny3
    before = _weights(m)
    recs = [dict(r, paraphrases=[r['prompt']], neighborhood=['hello there'], neighborhood_true=['world']) for r in REQS]
    tot, curve = S.sequential_edits(m, tok, recs, lambda mm, tt, b: M.memit(mm, tt, b, [0], prefixes=P, progress=False, steps=2),
                              every=1, text='hello there big world', progress=False)
    assert _same(before, _weights(m)) and list(curve.n_edits) == [1, 2]
    assert {'es', 'ps', 'ns', 'es_first', 'delta_norm', 'ppl', 'collapsed'} <= set(curve.columns)
    with pytest.raises(ValueError, match='no edit requests'): S.sequential_edits(m, tok, [], lambda *a: None)

def test_statistics_of_layers_not_edited(tiny3):
    "Statistics for more layers than are edited are used for the edited ones only, and only those are recorded; an edited layer without statistics is an error"
    m, tok = tiny3
    C = torch.eye(adapter(m).d_mlp, dtype=torch.float64)
    d = M.memit(m, tok, REQS, [0], stats={0: C, 1: C * 2}, prefixes=P, progress=False, steps=2)
    assert d.meta['hparams']['stats'] == [0]
    with pytest.raises(ValueError, match=r'not for the edited layer\(s\) \[1\]'):
        M.memit(m, tok, REQS, [0, 1], stats={0: C}, prefixes=P, progress=False, steps=2)

def test_contradicting_requests(tiny3):
    m, tok = tiny3
    with pytest.raises(ValueError, match="requests 0 and 2 contradict: subject 'big world'"):
        M.memit(m, tok, REQS + [dict(REQS[0], target_new='green')], [0], prefixes=P, progress=False)
    d = M.memit(m, tok, REQS + [dict(REQS[0])], [0], prefixes=P, progress=False, steps=2)   # a repeated request is no contradiction
    assert d.meta['n_edits'] == 3

def test_signature_shows_compute_v_settings():
    "`memit`'s signature and docs show `compute_v`'s settings (fastcore `delegates`), with MEMIT's own clamp_norm default"
    import inspect
    from editlab.rome import compute_v
    sig, cv = inspect.signature(M.memit).parameters, inspect.signature(compute_v).parameters
    for k in ('steps', 'lr', 'kl_factor', 'weight_decay', 'kl_prompts', 'stop_nll', 'use_cache'):
        assert sig[k].default == cv[k].default, k
    assert sig['clamp_norm'].default == 0.75 != cv['clamp_norm'].default
    assert 'hook' not in sig and not any(p.kind == p.VAR_KEYWORD for p in sig.values())

def test_default_lambda_agrees_with_registry():
    "The function's default λ is the registry's (one value, chosen in 33_memit)"
    import inspect
    from editlab.registry import get_method
    assert inspect.signature(M.memit).parameters['lam'].default == get_method('MEMIT').defaults['lam']
