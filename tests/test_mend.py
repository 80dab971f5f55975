"MEND: the rank-1 gradient identity, nothing half-applied, the training loop, bad inputs, save/load and the cache"
import pytest, torch
from editlab.models import tiny_model, adapter
from editlab.artifacts import LowRank, WeightDelta
from editlab.hooks import forward
from editlab.evaluate import pad_batch
from editlab import mend as M
from helpers import weights as _weights, same as _same, REQS, BAD_EDIT_REQUESTS

TRAIN = [dict(r, paraphrases=[p], neighborhood=['hello world'], neighborhood_true=['again'])
         for r, p in zip(REQS, ['so the big world is', 'one small cat is'])]

@pytest.fixture(scope='module')
def tiny3(): return tiny_model('llama', n_layers=3)

def _clean(m): return all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules()) and \
                      all(not p.requires_grad or p.grad is None for p in m.parameters())

@pytest.mark.parametrize('family', ['llama', 'gpt2', 'opt'])
def test_rank_one_identity(family):
    "sum_t δ_t u_tᵀ built from the recorded factors equals autograd's weight gradient (Conv1D transposed)"
    m, tok = tiny_model(family, n_layers=2)
    tg = M.mend_targets(m, layers=[0, 1])
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    g, loss, _ = M.edit_grads(m, tok, REQS, tg)
    assert flags == {n: p.requires_grad for n, p in m.named_parameters()}
    P = dict(m.named_parameters())
    seqs, n_p, n_t = M.edit_seqs(tok, [r['prompt'] for r in REQS], [r['target_new'] for r in REQS])
    ids, mask = pad_batch(seqs, tok.pad_token_id, 'right')
    with torch.enable_grad(), M._grad_on([P[t['name']] for t in tg]):
        ref = torch.autograd.grad(M.target_nll(forward(m, ids, mask).logits, ids, n_p, n_t).sum(), [P[t['name']] for t in tg])
    for t, W in zip(tg, ref):
        u, d = g[t['name']]
        G = d.T @ u
        torch.testing.assert_close(G.T if t['conv1d'] else G, W, atol=1e-5, rtol=1e-4)
    assert _clean(m)

@pytest.mark.parametrize('family', ['llama', 'gpt2'])
def test_edit_is_low_rank_and_matches_hooks(family):
    "The WeightDelta applied to the weights gives the same logits as the differentiable hook form used in training"
    m, tok = tiny_model(family, n_layers=2)
    ed = M.MendEditor(m, layers=[0, 1], edit_lr=1e-2)
    before = _weights(m)
    d = M.mend_edit(m, tok, REQS, ed)
    assert isinstance(d, WeightDelta) and all(isinstance(x, LowRank) for x in d.deltas.values())
    assert _same(before, _weights(m)) and _clean(m)
    ids, mask = pad_batch([[5, 6, 7, 8], [9, 10, 11, 12]], tok.pad_token_id, 'right')
    g, _, _ = M.edit_grads(m, tok, REQS, ed.targets)
    with torch.no_grad(), M.low_rank_hooks(m, ed.targets, ed.pseudo(g)): hooked = forward(m, ids, mask).logits
    with d.apply(m): applied = forward(m, ids, mask).logits
    torch.testing.assert_close(hooked, applied, atol=1e-4, rtol=1e-4)
    assert _same(before, _weights(m)) and _clean(m)

def test_failure_inside_edit_leaves_nothing(tiny3, monkeypatch):
    "An error in the editor networks: weights bitwise unchanged, no hooks left, requires_grad flags restored"
    m, tok = tiny3
    ed = M.MendEditor(m)
    before, flags = _weights(m), [p.requires_grad for p in m.parameters()]
    def boom(*a, **k): raise RuntimeError('boom')
    monkeypatch.setattr(M.EditorNet, 'forward', boom)
    with pytest.raises(RuntimeError, match='boom'): M.mend_edit(m, tok, REQS, ed)
    assert _same(before, _weights(m)) and _clean(m) and flags == [p.requires_grad for p in m.parameters()]

def test_training_loss_falls_and_model_frozen(tiny3, tmp_path, monkeypatch):
    "A few training steps on a tiny model: the post-edit paraphrase loss falls, the model never changes, the cache is reused"
    monkeypatch.setenv('EDITLAB_CACHE', str(tmp_path))
    m, tok = tiny3
    before = _weights(m)
    kw = dict(steps=30, edit_lr=1e-3, lr=1e-3, lr_lr=1e-3, progress=False)
    ed, curve = M.train_mend(m, tok, TRAIN, **kw)
    assert list(curve.columns[:4]) == ['step', 'loss', 'edit_loss', 'loc_kl'] and len(curve) == 30
    assert curve.edit_loss.iloc[-5:].mean() < curve.edit_loss.iloc[:5].mean()
    assert _same(before, _weights(m)) and _clean(m)
    files = list((tmp_path/'mend').glob('*.safetensors'))
    assert len(files) == 1
    ed2, curve2 = M.train_mend(m, tok, TRAIN, **kw)       # loaded, not retrained
    assert (curve2.edit_loss.values == curve.edit_loss.values).all()
    for (k, a), b in zip(ed.state_dict().items(), ed2.state_dict().values()): assert torch.equal(a, b), k
    ed3, _ = M.train_mend(m, tok, TRAIN, **{**kw, 'steps': 3, 'batch_size': 2}, cache=False)   # batched edits train too
    assert len(list((tmp_path/'mend').glob('*.safetensors'))) == 1

def test_seeded(tiny3):
    m, tok = tiny3
    a = M.train_mend(m, tok, TRAIN, steps=3, seed=1, cache=False, progress=False)[1]
    b = M.train_mend(m, tok, TRAIN, steps=3, seed=1, cache=False, progress=False)[1]
    assert (a.loss.values == b.loss.values).all()

def test_save_load_and_wrong_model(tiny3, tmp_path):
    m, tok = tiny3
    ed = M.MendEditor(m, edit_lr=1e-2)
    p = ed.save(tmp_path/'ed.safetensors')
    ed2 = M.load_editor(p, m)
    torch.testing.assert_close(M.mend_edit(m, tok, REQS, ed2).dense(ed.targets[0]['name']), M.mend_edit(m, tok, REQS, ed).dense(ed.targets[0]['name']))
    other, _ = tiny_model('llama', n_layers=3, intermediate_size=80)
    with pytest.raises(ValueError, match='trained for'): M.load_editor(p, other)
    with pytest.raises(ValueError, match='trained for'): M.mend_edit(other, tok, REQS, ed)
    shallow, _ = tiny_model('llama', n_layers=2)
    with pytest.raises(ValueError, match='trained for'): M.mend_edit(shallow, tok, REQS, ed)
    reseeded, _ = tiny_model('llama', n_layers=3, seed=1)
    with pytest.raises(ValueError, match='other weights'): M.mend_edit(reseeded, tok, REQS, ed)
    M.mend_edit(reseeded, tok, REQS, ed, strict=False)
    WeightDelta.save(M.mend_edit(m, tok, REQS, ed), tmp_path/'delta.safetensors')
    with pytest.raises(ValueError, match='does not hold a MEND editor'): M.load_editor(tmp_path/'delta.safetensors', m)

@pytest.mark.parametrize('recs, err', BAD_EDIT_REQUESTS)
def test_bad_edit_requests(tiny3, recs, err):
    m, tok = tiny3
    ed = M.MendEditor(m); before = _weights(m)
    with pytest.raises((ValueError, KeyError), match=err): M.mend_edit(m, tok, recs, ed)
    assert _same(before, _weights(m)) and _clean(m)

def test_same_request_twice_is_fine(tiny3):
    m, tok = tiny3
    d = M.mend_edit(m, tok, [REQS[0], dict(REQS[0])], M.MendEditor(m))
    assert d.meta['n_edits'] == 2

@pytest.mark.parametrize('recs, err', [
    ([TRAIN[0], {k: v for k, v in TRAIN[1].items() if k != 'paraphrases'}], 'record 1 .* has no paraphrase'),
    ([dict(TRAIN[0], paraphrases=[])], 'record 0 .* has no paraphrase'),
    ([dict(TRAIN[0], neighborhood=[])], 'record 0 .* has no neighborhood'),
    ([TRAIN[0], {k: v for k, v in TRAIN[1].items() if k != 'prompt'}], "record 1 has no 'prompt'"),
])
def test_bad_training_data(tiny3, recs, err, tmp_path, monkeypatch):
    monkeypatch.setenv('EDITLAB_CACHE', str(tmp_path))
    m, tok = tiny3
    with pytest.raises((ValueError, KeyError), match=err): M.train_mend(m, tok, recs, steps=1, progress=False)
    assert not (tmp_path/'mend').exists() or not list((tmp_path/'mend').iterdir())

def test_targets_and_roles(tiny3):
    m, tok = tiny3
    assert [t['layer'] for t in M.mend_targets(m)] == [0, 0, 1, 1, 2, 2]
    assert [t['role'] for t in M.mend_targets(m, [-1], roles=('down',))] == ['down']
    with pytest.raises(IndexError, match='out of range'): M.mend_targets(m, [5])
    with pytest.raises(ValueError, match="'up' and/or 'down'"): M.mend_targets(m, roles=('o_proj',))
    ed = M.MendEditor(m)
    assert len(ed.nets) == 2 and ed.modes == [0, 0, 1, 1, 2, 2]

def test_locality_kl_at_answer_positions(tiny3):
    "The locality KL counts only the positions that predict the neighbourhood answer: zero when the models agree, and a change there weighs fully"
    m, tok = tiny3
    seq, p = M.loc_seq(tok, TRAIN[0])
    n = len(seq); assert n > p                                   # prompt + true answer
    mask = M.answer_mask([n], [p], n + 2)                       # two pad columns
    assert mask[0].tolist() == [0.] * (p - 1) + [1.] * (n - p) + [0.] * 3   # logits at p-1 .. n-2 predict the answer tokens
    assert M.answer_mask([p], [p], p)[0].tolist() == [0.] * (p - 1) + [1.]   # no answer: the last prompt token
    base = torch.randn(1, n + 2, 11)
    assert M.masked_kl(base, base.clone(), mask) == 0
    at_answer, elsewhere = base.clone(), base.clone()
    at_answer[0, p - 1, 3] += 5; elsewhere[0, 0, 3] += 5          # the same change, at the answer position or at the first token
    assert M.masked_kl(base, elsewhere, mask) == 0 < M.masked_kl(base, at_answer, mask)
    uniform = torch.ones(1, n + 2)                               # the old all-token average dilutes the same change
    assert M.masked_kl(base, at_answer, uniform) < M.masked_kl(base, at_answer, mask)
