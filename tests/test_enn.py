"ENN: the prefix-cached tail, the second-order inner loop, the training loop, k-step edits, the saved state, bad inputs"
import pytest, torch
from editlab.models import tiny_model, frozen
from editlab.hooks import forward
from editlab.evaluate import pad_batch
from editlab.artifacts import WeightDelta
from editlab import enn as E
from editlab.mend import target_nll
from helpers import weights as _weights, same as _same, no_hooks, REQS, BAD_EDIT_REQUESTS

TRAIN = [dict(r, neighborhood=['hello world'], neighborhood_true=['again']) for r in REQS]
TEXT = 'The quick brown fox jumps over the lazy dog while the big world turns. ' * 40

@pytest.fixture(scope='module')
def tiny3(): return tiny_model('llama', n_layers=3)

def _clean(m): return no_hooks(m) and all(p.grad is None for p in m.parameters())

@pytest.mark.parametrize('family, kw', [('llama', {}), ('gpt2', {}), ('opt', {}), ('gemma2', dict(final_logit_softcapping=0.5))])
def test_prefix_tail_matches_whole_model(family, kw):
    "Blocks after the first edited one, run on the cached prefix, give the whole model's logits (with replaced parameters too)"
    m, tok = tiny_model(family, n_layers=3, **kw)
    names = E.enn_params(m)
    ids, mask = pad_batch([[1, 2, 3, 4, 5], [6, 7, 8]], tok.pad_token_id, 'right')
    P = dict(m.named_parameters())
    torch.manual_seed(0)
    shifted = {n: P[n].detach() + 0.05 * torch.randn_like(P[n]) for n in names}
    fast, slow = E.SubsetForward(m, names, prefix=True), E.SubsetForward(m, names, prefix=False)
    pf, ps = fast.prepare(ids, mask), slow.prepare(ids, mask)
    assert pf.h is not None and ps.h is None
    keep = mask.bool()
    torch.testing.assert_close(fast.logits(pf, shifted)[keep], slow.logits(ps, shifted)[keep], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.logits(pf, {n: P[n] for n in names})[keep], forward(m, ids, mask).logits[keep], atol=1e-4, rtol=1e-4)
    assert no_hooks(m)
    auto = E.SubsetForward(m, names); auto.prepare(ids, mask)
    assert auto.prefix is True

def test_auto_prefix_falls_back_when_the_tail_differs():
    "prefix='auto': a tail that does not reproduce the model's logits is detected once, with a warning, and the whole model runs"
    m, tok = tiny_model('llama', n_layers=3)
    m.config.final_logit_softcapping = 0.01          # Llama ignores it, the rebuilt tail would apply it: a mismatch
    run = E.SubsetForward(m, E.enn_params(m))
    ids, mask = pad_batch([[1, 2, 3, 4, 5]], tok.pad_token_id, 'right')
    with pytest.warns(UserWarning, match='running the whole model'): pre = run.prepare(ids, mask)
    assert run.prefix is False and no_hooks(m)
    P = dict(m.named_parameters())
    torch.testing.assert_close(run.logits(pre, {n: P[n] for n in run.names}), forward(m, ids, mask).logits)

def test_prefix_needs_block_params(tiny3):
    m, tok = tiny3
    with pytest.raises(ValueError, match='inside a block'): E.SubsetForward(m, ['lm_head.weight'], prefix=True)
    assert E.SubsetForward(m, ['lm_head.weight']).prefix is False
    with pytest.raises(KeyError, match='not a parameter'): E.SubsetForward(m, ['nope.weight'])

def test_inner_loop_is_second_order(tiny3):
    "The loss after k differentiable steps has a gradient in θ that differs from the first-order one, and one in η"
    m, tok = tiny3
    names = E.enn_params(m); P = dict(m.named_parameters())
    run = E.SubsetForward(m, names)
    ids, mask, n_p, n_t = E._edit_inputs(tok, REQS)
    with torch.enable_grad(), frozen(m):
        pre = run.prepare(ids, mask)
        theta = {n: P[n].detach().clone().requires_grad_() for n in names}
        eta = torch.tensor(0.5, requires_grad=True)
        phi, losses = E.inner_sgd(run, pre, n_p, n_t, theta, 2, eta, create_graph=True)
        after = target_nll(run.logits(pre, phi), ids, n_p, n_t).mean()
        second = torch.autograd.grad(after, list(theta.values()) + [eta])
        phi1, _ = E.inner_sgd(run, pre, n_p, n_t, {n: t.detach().clone().requires_grad_() for n, t in theta.items()}, 2, 0.5)
        a1 = target_nll(run.logits(pre, phi1), ids, n_p, n_t).mean()
        first = torch.autograd.grad(a1, list(phi1.values()))
    assert len(losses) == 2 and float(after) < float(losses[0])
    torch.testing.assert_close(after, a1, atol=1e-5, rtol=1e-5)
    assert float(second[-1].abs()) > 0
    assert max(float((a - b).abs().max()) for a, b in zip(second, first)) > 1e-6
    assert _clean(m)

def test_edit_leaves_weights_and_lowers_loss(tiny3):
    "k SGD steps: model bitwise unchanged, the returned delta (applied) gives the lower edit loss it reports"
    m, tok = tiny3
    before, flags = _weights(m), [p.requires_grad for p in m.parameters()]
    d = E.enn_edit(m, tok, REQS, k=3, lr=0.5)
    assert isinstance(d, WeightDelta) and set(d.deltas) == set(E.enn_params(m))
    assert _same(before, _weights(m)) and _clean(m) and flags == [p.requires_grad for p in m.parameters()]
    assert d.meta['loss_after'] < d.meta['loss_before'] and len(d.meta['losses']) == 3
    ids, mask, n_p, n_t = E._edit_inputs(tok, REQS)
    with d.apply(m):
        got = float(target_nll(forward(m, ids, mask).logits, ids, n_p, n_t).mean())
    assert abs(got - d.meta['loss_after']) < 1e-4
    assert _same(before, _weights(m))
    d2 = E.enn_edit(m, tok, REQS, k=3, lr=0.5, prefix=False)          # the same edit without the prefix cache
    for n in d.deltas: torch.testing.assert_close(d.dense(n), d2.dense(n), atol=1e-5, rtol=1e-4)

def test_training_loss_falls_and_model_frozen(tiny3, tmp_path, monkeypatch):
    "A few seeded training steps on a tiny model: the objective falls, the model never changes, the cache is reused"
    monkeypatch.setenv('EDITLAB_CACHE', str(tmp_path))
    m, tok = tiny3
    before = _weights(m)
    kw = dict(steps=25, k=1, edit_lr=0.1, lr=1e-2, lr_lr=5e-2, seq_len=32, progress=False)
    st, curve = E.train_enn(m, tok, TRAIN, TEXT, **kw)
    assert list(curve.columns[:6]) == ['step', 'loss', 'base_loss', 'edit_loss_before', 'edit_loss', 'loc_kl'] and len(curve) == 25
    assert curve.loss.iloc[-5:].mean() < curve.loss.iloc[:5].mean()
    assert curve.edit_loss.iloc[-5:].mean() < curve.edit_loss.iloc[:5].mean()
    assert curve.inner_lr.iloc[-1] != curve.inner_lr.iloc[0]               # η is learned
    assert _same(before, _weights(m)) and _clean(m)
    assert len(list((tmp_path/'enn').glob('*.safetensors'))) == 1
    st2, curve2 = E.train_enn(m, tok, TRAIN, TEXT, **kw)                  # loaded, not retrained
    assert (curve2.loss.values == curve.loss.values).all()
    for n in st.names: assert torch.equal(st.delta.dense(n), st2.delta.dense(n))
    st3, _ = E.train_enn(m, tok, TRAIN, TEXT, **{**kw, 'steps': 2, 'k': 2, 'batch_size': 2, 'learn_lr': False}, cache=False)
    assert st3.lr == pytest.approx(0.1) and len(list((tmp_path/'enn').glob('*.safetensors'))) == 1

def test_seeded(tiny3):
    m, tok = tiny3
    kw = dict(steps=3, k=1, seq_len=32, seed=1, cache=False, progress=False)
    a, b = E.train_enn(m, tok, TRAIN, TEXT, **kw)[1], E.train_enn(m, tok, TRAIN, TEXT, **kw)[1]
    assert (a.loss.values == b.loss.values).all()

def test_state_round_trip_and_wrong_model(tiny3, tmp_path):
    m, tok = tiny3
    before = _weights(m)
    st, _ = E.train_enn(m, tok, TRAIN, TEXT, steps=3, k=1, edit_lr=0.1, lr=1e-2, seq_len=32, cache=False, progress=False)
    p = st.save(tmp_path/'enn.safetensors')
    st2 = E.ENNState.load(p, m)
    assert st2.edit_kwargs == st.edit_kwargs and len(st2.curve) == 3
    for n in st.names: assert torch.equal(st.delta.dense(n), st2.delta.dense(n))
    with st2.apply(m):
        for n in st.names: assert not torch.equal(dict(m.named_parameters())[n], before[n])
        with pytest.raises(ValueError, match='already applied'): st.apply(m)
    assert _same(before, _weights(m))
    other, _ = tiny_model('llama', n_layers=3, intermediate_size=80)
    ob = _weights(other)
    with pytest.raises(ValueError, match='trained for model.layers.1.mlp.up_proj.weight'): E.ENNState.load(p, other)
    with pytest.raises(ValueError, match='trained for'): st.apply(other)
    shallow, _ = tiny_model('llama', n_layers=1)
    with pytest.raises(ValueError, match='no such parameter'): st.apply(shallow)
    assert _same(ob, _weights(other))
    WeightDelta({'x': torch.zeros(2)}, dict(method='ROME')).save(tmp_path/'rome.safetensors')
    with pytest.raises(ValueError, match='not an ENN state'): E.ENNState.load(tmp_path/'rome.safetensors')

@pytest.mark.parametrize('recs, err', BAD_EDIT_REQUESTS)
def test_bad_edit_requests(tiny3, recs, err):
    m, tok = tiny3
    before = _weights(m)
    with pytest.raises((ValueError, KeyError), match=err): E.enn_edit(m, tok, recs)
    assert _same(before, _weights(m)) and _clean(m)

@pytest.mark.parametrize('kw, err', [(dict(k=0), 'k must be'), (dict(lr=-1.0), 'lr must be > 0'), (dict(lr=float('nan')), 'finite')])
def test_bad_edit_settings(tiny3, kw, err):
    m, tok = tiny3
    before = _weights(m)
    with pytest.raises(ValueError, match=err): E.enn_edit(m, tok, REQS, **kw)
    assert _same(before, _weights(m))

@pytest.mark.parametrize('recs, text, err', [
    ([TRAIN[0], {k: v for k, v in TRAIN[1].items() if k != 'neighborhood'}], TEXT, 'record 1 .* has no neighborhood'),
    ([dict(TRAIN[0], neighborhood=[])], TEXT, 'record 0 .* has no neighborhood'),
    ([TRAIN[0], {k: v for k, v in TRAIN[1].items() if k != 'target_new'}], TEXT, "record 1 has no 'target_new'"),
    (TRAIN, 'too short', 'fewer than one chunk'),
])
def test_bad_training_data(tiny3, recs, text, err, tmp_path, monkeypatch):
    monkeypatch.setenv('EDITLAB_CACHE', str(tmp_path))
    m, tok = tiny3
    before = _weights(m)
    with pytest.raises((ValueError, KeyError), match=err): E.train_enn(m, tok, recs, text, steps=1, seq_len=32, progress=False)
    assert _same(before, _weights(m)) and _clean(m)
    assert not (tmp_path/'enn').exists() or not list((tmp_path/'enn').iterdir())

def test_failure_inside_training_leaves_nothing(tiny3, monkeypatch, tmp_path):
    "An error mid-training: weights bitwise unchanged, no hooks, flags restored, nothing cached"
    monkeypatch.setenv('EDITLAB_CACHE', str(tmp_path))
    m, tok = tiny3
    before, flags = _weights(m), [p.requires_grad for p in m.parameters()]
    calls = [0]
    real = E.inner_sgd
    def boom(*a, **k):
        calls[0] += 1
        if calls[0] > 1: raise RuntimeError('boom')
        return real(*a, **k)
    monkeypatch.setattr(E, 'inner_sgd', boom)
    with pytest.raises(RuntimeError, match='boom'): E.train_enn(m, tok, TRAIN, TEXT, steps=3, k=1, seq_len=32, progress=False)
    assert _same(before, _weights(m)) and _clean(m) and flags == [p.requires_grad for p in m.parameters()]
    assert not (tmp_path/'enn').exists() or not list((tmp_path/'enn').iterdir())

def test_cost_table(tiny3):
    "enn_cost: one row per (subset, k); the ENN step keeps more for backward than a plain step, and more with larger k"
    m, tok = tiny3
    before = _weights(m)
    c = E.enn_cost(m, tok, TRAIN, TEXT, ks=(1, 3), layer_sets=[[2]], seq_len=32, reps=1)
    assert len(c) == 2 and (c.mb_enn > c.mb_ft).all() and c.mb_enn.iloc[1] > c.mb_enn.iloc[0]
    assert _same(before, _weights(m)) and _clean(m)
