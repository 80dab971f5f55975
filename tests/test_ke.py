"KE: the gated-gradient update, nothing half-applied, the training loop and its multiplier, bad inputs, save/load and the cache"
import pytest, torch
from editlab.models import tiny_model, adapter
from editlab.artifacts import LowRank, WeightDelta
from editlab.hooks import forward
from editlab.evaluate import pad_batch
from editlab import ke as K, mend as M
from helpers import weights as _weights, same as _same, no_hooks, REQS, BAD_EDIT_REQUESTS

TRAIN = [dict(r, paraphrases=[p], neighborhood=['hello world'], neighborhood_true=['again'])
         for r, p in zip(REQS, ['so the big world is', 'one small cat is'])]
KW = dict(steps=20, edit_lr=1.0, lr=3e-3, progress=False)   # tiny random models have small gradients: a larger unit λ₀

@pytest.fixture(scope='module')
def tiny3(): return tiny_model('llama', n_layers=3)

def _clean(m): return no_hooks(m) and all(not p.requires_grad or p.grad is None for p in m.parameters())

def test_start_is_a_gradient_step(tiny3):
    "At initialisation ΔW = -λ₀/4 ∇W (no shift); the rank is the gradient tokens plus one per edit"
    m, tok = tiny3
    ed = K.KnowledgeEditor(m, edit_lr=0.3)
    g, loss, _, pooled, counts = K.edit_pass(m, tok, REQS, ed.targets)
    assert pooled.shape == (2, 2 * adapter(m).d_model) and len(counts) == 2
    d = K.ke_edit(m, tok, REQS, ed)
    for t in ed.targets:
        u, dd = g[t['name']]
        assert d.deltas[t['name']].U.shape[1] == sum(counts) + len(REQS)
        torch.testing.assert_close(d.dense(t['name']), -0.3 / 4 * (dd.T @ u), atol=1e-7, rtol=1e-4)

def test_factors_equal_dense_formula(tiny3):
    "Dᵀ U equals σ(η)(σ(α)(λ₀γ')ᵀ ⊙ ∇W + σ(β)(sφ')ᵀ) for a random head and one edit"
    m, tok = tiny3
    ed = K.KnowledgeEditor(m, edit_lr=0.5, shift_scale=0.2)
    with torch.no_grad():
        for p in ed.parameters(): p.normal_(0, 0.5)
    g, _, _, pooled, counts = K.edit_pass(m, tok, REQS[:1], ed.targets)
    with torch.no_grad():
        fac = ed.factors(g, pooled, counts)
        c = ed.cond(pooled)
    for t, head in zip(ed.targets, ed.heads):
        a, gm, b, f, eta = [x[0] for x in head(c)]
        u, dd = g[t['name']]
        dense = torch.sigmoid(eta) * ((torch.sigmoid(a)[:, None] * 0.5 * gm[None]) * (dd.T @ u) + torch.sigmoid(b)[:, None] * 0.2 * f[None])
        D, U = fac[t['name']]
        torch.testing.assert_close(D.T @ U, dense.detach(), atol=1e-5, rtol=1e-4)

@pytest.mark.parametrize('family', ['llama', 'gpt2'])
def test_edit_is_low_rank_and_matches_hooks(family):
    "The WeightDelta applied to the weights gives the same logits as the hook form used in training (Conv1D transposed)"
    m, tok = tiny_model(family, n_layers=2)
    ed = K.KnowledgeEditor(m, layers=[0, 1], edit_lr=1.0, shift_scale=0.1)
    with torch.no_grad():
        for h in ed.heads: h.fc2.weight.normal_(0, 0.1)                  # a non-trivial shift too
    before = _weights(m)
    d = K.ke_edit(m, tok, REQS, ed)
    assert isinstance(d, WeightDelta) and all(isinstance(x, LowRank) for x in d.deltas.values()) and d.meta['method'] == 'KE'
    assert _same(before, _weights(m)) and _clean(m)
    ids, mask = pad_batch([[5, 6, 7, 8], [9, 10, 11, 12]], tok.pad_token_id, 'right')
    g, _, _, pooled, counts = K.edit_pass(m, tok, REQS, ed.targets)
    with torch.no_grad(), M.low_rank_hooks(m, ed.targets, ed.factors(g, pooled, counts)): hooked = forward(m, ids, mask).logits
    with torch.no_grad(): plain = forward(m, ids, mask).logits
    with d.apply(m): applied = forward(m, ids, mask).logits
    torch.testing.assert_close(hooked, applied, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain, applied)
    assert _same(before, _weights(m)) and _clean(m)

def test_failure_inside_edit_leaves_nothing(tiny3, monkeypatch):
    "An error in the hyper-network: weights bitwise unchanged, no hooks left, requires_grad flags restored"
    m, tok = tiny3
    ed = K.KnowledgeEditor(m)
    before, flags = _weights(m), [p.requires_grad for p in m.parameters()]
    def boom(*a, **k): raise RuntimeError('boom')
    monkeypatch.setattr(K.KEHead, 'forward', boom)
    with pytest.raises(RuntimeError, match='boom'): K.ke_edit(m, tok, REQS, ed)
    with pytest.raises(RuntimeError, match='boom'): K.train_ke(m, tok, TRAIN, steps=1, cache=False, progress=False)
    assert _same(before, _weights(m)) and _clean(m) and flags == [p.requires_grad for p in m.parameters()]

def test_training_loss_falls_and_model_frozen(tiny3, tmp_path, monkeypatch):
    "A few training steps on a tiny model: the post-edit paraphrase loss falls, the model never changes, the cache is reused"
    monkeypatch.setenv('EDITLAB_CACHE', str(tmp_path))
    m, tok = tiny3
    before = _weights(m)
    ed, curve = K.train_ke(m, tok, TRAIN, **KW)
    assert {'step', 'loss', 'edit_loss', 'edit_loss_before', 'loc_kl', 'prompt_loss', 'lam'} <= set(curve.columns) and len(curve) == KW['steps']
    assert curve.edit_loss.iloc[-5:].mean() < curve.edit_loss.iloc[:5].mean()
    assert curve.prompt_loss.iloc[-5:].mean() < curve.prompt_loss.iloc[:5].mean()
    assert _same(before, _weights(m)) and _clean(m)
    files = list((tmp_path/'ke').glob('*.safetensors'))
    assert len(files) == 1
    ed2, curve2 = K.train_ke(m, tok, TRAIN, **KW)        # loaded, not retrained
    assert (curve2.edit_loss.values == curve.edit_loss.values).all()
    for (k, a), b in zip(ed.state_dict().items(), ed2.state_dict().values()): assert torch.equal(a, b), k
    K.train_ke(m, tok, TRAIN, **{**KW, 'steps': 3, 'batch_size': 2}, cache=False)   # batched edits train too, nothing written
    assert len(list((tmp_path/'ke').glob('*.safetensors'))) == 1
    assert _same(before, _weights(m)) and _clean(m)

def test_multiplier_is_gradient_ascent(tiny3):
    "λ moves by lam_lr·(KL - m) each step and never goes below zero: up while the constraint is violated, down to 0 when it holds"
    m, tok = tiny3
    for margin, lam_lr in [(0.0, 50.0), (1.0, 0.3)]:
        c = K.train_ke(m, tok, TRAIN, **{**KW, 'steps': 6}, margin=margin, lam_lr=lam_lr, cache=False)[1]
        want = [max(0.0, l + lam_lr * (k - margin)) for l, k in zip(c.lam.values[:-1], c.loc_kl.values[:-1])]
        assert c.lam.values[1:] == pytest.approx(want)
        if margin == 0: assert c.lam.iloc[-1] > c.lam.iloc[0]
        else: assert c.lam.iloc[-1] == 0

def test_seeded(tiny3):
    m, tok = tiny3
    a = K.train_ke(m, tok, TRAIN, steps=3, seed=1, cache=False, progress=False)[1]
    b = K.train_ke(m, tok, TRAIN, steps=3, seed=1, cache=False, progress=False)[1]
    assert (a.loss.values == b.loss.values).all()

def test_save_load_and_wrong_model(tiny3, tmp_path):
    m, tok = tiny3
    ed = K.KnowledgeEditor(m, edit_lr=0.5)
    with torch.no_grad():
        for h in ed.heads: h.fc2.weight.normal_(0, 0.1)
    p = ed.save(tmp_path/'ke.safetensors')
    ed2 = K.load_ke(p, m)
    name = ed.targets[0]['name']
    assert torch.equal(K.ke_edit(m, tok, REQS, ed2).dense(name), K.ke_edit(m, tok, REQS, ed).dense(name))
    before = _weights(m)
    other, _ = tiny_model('llama', n_layers=3, intermediate_size=80)
    with pytest.raises(ValueError, match='this KE editor was trained for .*train_ke'): K.load_ke(p, other)
    with pytest.raises(ValueError, match='trained for'): K.ke_edit(other, tok, REQS, ed)
    shallow, _ = tiny_model('llama', n_layers=2)
    with pytest.raises(ValueError, match='trained for'): K.ke_edit(shallow, tok, REQS, ed)
    wider, _ = tiny_model('llama', n_layers=3, hidden_size=48)
    with pytest.raises(ValueError, match='trained for'): K.load_ke(p, wider)
    reseeded, _ = tiny_model('llama', n_layers=3, seed=1)
    with pytest.raises(ValueError, match='other weights'): K.ke_edit(reseeded, tok, REQS, ed)
    K.ke_edit(reseeded, tok, REQS, ed, strict=False)
    for mm in (other, shallow, wider): assert no_hooks(mm)
    assert _same(before, _weights(m))
    WeightDelta.save(K.ke_edit(m, tok, REQS, ed), tmp_path/'delta.safetensors')
    with pytest.raises(ValueError, match='does not hold a KE editor'): K.load_ke(tmp_path/'delta.safetensors', m)
    M.MendEditor(m).save(tmp_path/'mend.safetensors')
    with pytest.raises(ValueError, match='does not hold a KE editor'): K.load_ke(tmp_path/'mend.safetensors', m)

@pytest.mark.parametrize('recs, err', BAD_EDIT_REQUESTS)
def test_bad_edit_requests(tiny3, recs, err):
    m, tok = tiny3
    ed = K.KnowledgeEditor(m); before = _weights(m)
    with pytest.raises((ValueError, KeyError), match=err): K.ke_edit(m, tok, recs, ed)
    assert _same(before, _weights(m)) and _clean(m)

@pytest.mark.parametrize('recs, err', [
    ([TRAIN[0], {k: v for k, v in TRAIN[1].items() if k != 'paraphrases'}], "record 1 .* has no paraphrase: KE's training"),
    ([dict(TRAIN[0], paraphrases=[])], 'record 0 .* has no paraphrase'),
    ([dict(TRAIN[0], neighborhood=[])], "record 0 .* has no neighborhood prompt: KE's locality"),
    ([TRAIN[0], {k: v for k, v in TRAIN[1].items() if k != 'prompt'}], "record 1 has no 'prompt'"),
    ([TRAIN[0], dict(TRAIN[1], target_new='hello', target_true='hello')], 'record 1: .* nothing to edit'),
])
def test_bad_training_data(tiny3, recs, err, tmp_path, monkeypatch):
    "Training data missing a field (or with nothing to edit) is refused before any work, the record named; nothing is cached, weights untouched"
    monkeypatch.setenv('EDITLAB_CACHE', str(tmp_path))
    m, tok = tiny3
    before = _weights(m)
    with pytest.raises((ValueError, KeyError), match=err): K.train_ke(m, tok, recs, steps=1, progress=False)
    assert not (tmp_path/'ke').exists() or not list((tmp_path/'ke').iterdir())
    assert _same(before, _weights(m)) and _clean(m)
