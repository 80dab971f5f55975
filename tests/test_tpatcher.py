"T-Patcher: the memory loss keeps patches off on memory, patches fire on their edits, frozen weights, hooks removed, save / load, delete, bad inputs, the later edit wins"
import pytest, torch
import editlab.tpatcher as tp
from editlab.models import tiny_model, fingerprint
from editlab.hooks import forward, encode
from editlab.evaluate import target_logprobs
from editlab.tpatcher import PatchSet, tpatch_edit, train_patch, memory_inputs, wikitext_sentences
from helpers import weights as _weights, same as _same, no_hooks as _no_hooks

A = dict(prompt='the big world is very large and', target_new='hello', target_true='there')
B = dict(prompt='a cat', target_new='world', target_true='there')
KW = dict(steps=100, lr=0.1, progress=False)


@pytest.fixture(scope='module')
def setup(llama):
    m, tok = llama
    ws = wikitext_sentences(4, sample=True)   # the WikiText-2 sample shipped with editlab
    mem = memory_inputs(m, tok, ws, 1)
    W = _weights(m)
    ps = tpatch_edit(m, tok, [A, B], layer=1, memory=mem, **KW)
    return m, tok, ws, mem, W, ps

def test_memory_loss_keeps_patch_off(setup):
    m, tok, ws, mem, W, ps = setup
    empty = PatchSet.empty(1, 64, 64)
    torch.manual_seed(0)
    (k, b, v), log = train_patch(m, tok, empty, A, mem, steps=100, lr=0.1)
    assert float((mem @ k + b).max()) < 0 and log.a_mem_max.iloc[-1] < 0           # off on every memory token (ReLU: adds exactly 0)
    (k0, b0, v0), _ = train_patch(m, tok, empty, A, mem, steps=100, lr=0.1, mlc=0.0)
    assert float((mem @ k0 + b0).max()) > 0                                          # without the memory loss it fires on memory
    # with the patch set applied, memory sentences' logits are exactly the unpatched ones
    b_ = encode(tok, ws)
    z0 = forward(m, **b_).logits
    with ps.apply(m): z1 = forward(m, **b_).logits
    assert torch.equal(z0, z1)
    assert ps.activations(m, tok, ws).fires.map(len).sum() == 0

def test_patch_fires_on_its_edit(setup):
    m, tok, ws, mem, W, ps = setup
    a = ps.activations(m, tok, [A['prompt'], B['prompt']])
    assert a.fires.tolist() == [[0], [1]]
    lp0 = target_logprobs(m, tok, [A['prompt'], B['prompt']], ['hello', 'world'])
    with ps.apply(m): lp1 = target_logprobs(m, tok, [A['prompt'], B['prompt']], ['hello', 'world'])
    assert bool((lp1 > lp0 + 0.5).all())
    assert _same(W, _weights(m))                                                     # base weights bitwise unchanged

def test_fast_path_matches_full_forward(llama):
    m, tok = llama
    mem = memory_inputs(m, tok, wikitext_sentences(2, sample=True), 1)
    empty = PatchSet.empty(1, 64, 64)
    (k1, b1, v1), l1 = train_patch(m, tok, empty, A, mem, steps=5, lr=0.1, stop_nll=0)
    fp = tp.fast_path
    tp.fast_path = lambda ad, L: False
    try: (k2, b2, v2), l2 = train_patch(m, tok, empty, A, mem, steps=5, lr=0.1, stop_nll=0)
    finally: tp.fast_path = fp
    assert torch.allclose(torch.tensor(l1.nll.values), torch.tensor(l2.nll.values), atol=1e-4)
    assert torch.allclose(v1, v2, atol=1e-3) and torch.allclose(k1, k2, atol=1e-4)

def test_hooks_removed_on_every_exit(setup, monkeypatch):
    m, tok, ws, mem, W, ps = setup
    with pytest.raises(RuntimeError):
        with ps.apply(m):
            forward(m, **encode(tok, ['a cat']))
            raise RuntimeError('boom')
    assert _no_hooks(m)
    def bad(*a, **k): raise RuntimeError('hook failed')
    monkeypatch.setattr(tp, 'add_hook', bad)
    with pytest.raises(RuntimeError, match='hook failed'): ps.apply(m)
    assert _no_hooks(m)                                                              # the up-projection pre-hook was removed too
    monkeypatch.undo()
    flags = [p.requires_grad for p in m.parameters()]
    def boom(*a, **k): raise ValueError('training failed')
    monkeypatch.setattr(tp, 'patch_losses', boom)
    with pytest.raises(ValueError, match='training failed'): tpatch_edit(m, tok, [A], layer=1, memory=mem, **KW)
    assert _no_hooks(m) and [p.requires_grad for p in m.parameters()] == flags and _same(W, _weights(m))

def test_save_load_delete(setup, tmp_path):
    m, tok, ws, mem, W, ps = setup
    path = ps.save(tmp_path / 'p.safetensors')
    p2 = PatchSet.load(path, m)
    assert torch.equal(p2.keys, ps.keys) and torch.equal(p2.values, ps.values) and torch.equal(p2.bias, ps.bias)
    assert p2.labels == ps.labels and p2.prompts == ps.prompts and p2.act == ps.act
    only_b = PatchSet.load(path, m).delete(0)
    assert only_b.labels == ['world'] and len(ps) == 2
    b_ = encode(tok, [B['prompt']])
    with ps.apply(m): z_both = forward(m, **b_).logits
    with only_b.apply(m): z_b = forward(m, **b_).logits
    assert torch.allclose(z_both, z_b, atol=1e-5)                                    # A's neuron is off on B: deleting it changes nothing there
    with pytest.raises(IndexError, match='no patch 2'): only_b.delete(2)
    with pytest.raises(IndexError, match='no patch -3'): ps.copy().delete(-3)
    with (ps + (-ps)).apply(m): z0 = forward(m, **b_).logits
    assert torch.allclose(z0, forward(m, **b_).logits, atol=1e-5)

def test_bad_inputs(setup, tmp_path):
    m, tok, ws, mem, W, ps = setup
    with pytest.raises(ValueError, match='no records'): tpatch_edit(m, tok, [], layer=1)
    with pytest.raises(ValueError, match="needs 'prompt' and 'target_new'"): tpatch_edit(m, tok, [dict(prompt='x')], layer=1)
    with pytest.raises(ValueError, match=r'memory must be FFN inputs'): tpatch_edit(m, tok, [A], layer=1, memory=torch.zeros(3, 5))
    path = ps.save(tmp_path / 'p.safetensors')
    other, _ = tiny_model('llama', n_layers=2, seed=1)
    with pytest.raises(ValueError, match='other weights'): PatchSet.load(path, other)
    with pytest.raises(ValueError, match='other weights'): ps.apply(other)
    g2, _ = tiny_model('gpt2', n_layers=2)
    with pytest.raises(ValueError, match='another architecture'): ps.apply(g2)
    with pytest.raises(ValueError, match='made for another model'): PatchSet(1, ps.keys[:, :10], ps.bias, ps.values, ps.labels).apply(m)
    assert _no_hooks(m) and _no_hooks(other) and _same(W, _weights(m))

def test_later_edit_of_same_fact_wins(setup):
    m, tok, ws, mem, W, ps = setup
    C = dict(B, target_new='again')
    p2 = tpatch_edit(m, tok, [C], patches=ps, memory=mem, layer=1, **KW)
    assert [e['action'] for e in p2.meta['edits']][-1] == 'replace'
    assert len(p2) == 2 and p2.labels == ['hello', 'again'] and ps.labels == ['hello', 'world']   # the input set is not changed
    with p2.apply(m): lp = target_logprobs(m, tok, [B['prompt']] * 2, ['again', 'world'])
    assert lp[0] > lp[1]
