"CaliNET: slots act only through the FFN hook, training lowers the edit loss, frozen weights, hooks removed, save / load, CKA, bad inputs"
import pytest, torch
import torch.nn.functional as F
import editlab.calinet as cn
from editlab.models import tiny_model, fingerprint, adapter
from editlab.hooks import forward, encode, capture, hook_name
from editlab.evaluate import target_logprobs
from editlab.tpatcher import PatchSet
from editlab.calinet import CaliNet, calinet_edit, train_slots, cka_scores, _edit_rows
from helpers import weights as _weights, same as _same, no_hooks as _no_hooks

A = dict(prompt='the big world is very large and', target_new='hello', target_true='there', case_id=1)
B = dict(prompt='a cat', target_new='world', target_true='there', case_id=2)
KW = dict(n_slots=8, steps=60, lr=0.05, prefixes=['one two'], progress=False)


@pytest.fixture(scope='module')
def setup(llama):
    m, tok = llama
    W = _weights(m)
    cal = calinet_edit(m, tok, [A, B], layers=[0, 1], **KW)
    return m, tok, W, cal

def test_slots_act_only_through_the_ffn_hook(setup):
    m, tok, W, cal = setup
    b = encode(tok, ['hello world, a cat', 'x'])
    names = [hook_name(L, k) for L in (0, 1) for k in ('hook_resid_pre', 'mlp.hook_out')]
    one = CaliNet([cal.memories[1]], meta=cal.meta)                      # slots at block 1 only
    rec = {}
    h = adapter(m).up(1).register_forward_pre_hook(lambda mod, args: rec.__setitem__('x', args[0]))
    try:
        with capture(m, names) as c0: forward(m, **b)
    finally: h.remove()
    with one.apply(m), capture(m, names) as c1: forward(m, **b)
    for n in names[:3]: assert torch.equal(c0[n], c1[n])                  # everything before block 1's FFN output is untouched
    s = one.memories[0]
    x = rec['x'].reshape(*b['input_ids'].shape, -1)
    add = F.gelu(x @ s.keys.T + s.bias) @ s.values * b['attention_mask'][..., None]
    assert torch.allclose(c1[names[3]] - c0[names[3]], add, atol=1e-5)  # ... and block 1's FFN output gets exactly act(Kx+b)V
    assert _no_hooks(m) and _same(W, _weights(m))

def test_training_lowers_the_edit_loss(setup):
    m, tok, W, cal = setup
    P = [A['prompt'], B['prompt']]
    lp0 = target_logprobs(m, tok, P, ['hello', 'world'])
    with cal.apply(m): lp1 = target_logprobs(m, tok, P, ['hello', 'world'])
    assert bool((lp1 > lp0 + 0.5).all())
    assert cal.meta['curve'][-1] < cal.meta['curve'][0] - 0.5
    assert _same(W, _weights(m)) and _no_hooks(m)                        # base weights bitwise unchanged

def test_fast_path_matches_full_forward(llama, monkeypatch):
    m, tok = llama
    rows = _edit_rows(tok, [A, B], ['one two'])
    (s1,), l1 = train_slots(m, tok, rows, [1], n_slots=4, steps=5, lr=0.05, stop_nll=0, progress=False)
    monkeypatch.setattr(cn, 'fast_path', lambda ad, L: False)
    (s2,), l2 = train_slots(m, tok, rows, [1], n_slots=4, steps=5, lr=0.05, stop_nll=0, progress=False)
    assert torch.allclose(torch.tensor(l1.nll.values), torch.tensor(l2.nll.values), atol=1e-4)
    assert torch.allclose(s1.values, s2.values, atol=1e-3) and torch.allclose(s1.keys, s2.keys, atol=1e-4)

def test_interrupted_training_leaves_no_trace(llama, monkeypatch):
    m, tok = llama
    W, flags = _weights(m), [p.requires_grad for p in m.parameters()]
    calls = [0]
    real = cn.forward
    def flaky(*a, **k):
        calls[0] += 1
        if calls[0] > 3: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(cn, 'forward', flaky)
    with pytest.raises(KeyboardInterrupt): calinet_edit(m, tok, [A, B], layers=[0, 1], **KW)
    assert _no_hooks(m) and _same(W, _weights(m)) and [p.requires_grad for p in m.parameters()] == flags
    monkeypatch.undo()
    with pytest.raises(FloatingPointError, match='lower lr'): calinet_edit(m, tok, [A], layers=1, amplify=float('inf'), **KW)
    assert _no_hooks(m) and _same(W, _weights(m))

def test_apply_failure_removes_attached_layers(setup, monkeypatch):
    m, tok, W, cal = setup
    real, n = cn.attach_patches, [0]
    def second_fails(*a, **k):
        n[0] += 1
        if n[0] == 2: raise RuntimeError('hook failed')
        return real(*a, **k)
    monkeypatch.setattr(cn, 'attach_patches', second_fails)
    with pytest.raises(RuntimeError, match='hook failed'): cal.apply(m)
    assert _no_hooks(m)

def test_save_load_and_algebra(setup, tmp_path):
    m, tok, W, cal = setup
    path = cal.save(tmp_path / 'c.safetensors')
    c2 = CaliNet.load(path, m)
    assert c2.layers == cal.layers and c2.facts == cal.facts and c2.meta['n_slots'] == 8
    assert all(torch.equal(a.values, b.values) and torch.equal(a.keys, b.keys) for a, b in zip(cal.memories, c2.memories))
    b = encode(tok, ['a cat'])
    with cal.apply(m): z1 = forward(m, **b).logits
    with c2.apply(m): z2 = forward(m, **b).logits
    assert torch.equal(z1, z2)
    z0 = forward(m, **b).logits
    with (cal - cal).apply(m): assert torch.allclose(forward(m, **b).logits, z0, atol=1e-4)
    assert len(cal + c2) == 2 * len(cal) and (cal + c2).layers == [0, 1]
    with pytest.raises(ValueError, match='PatchSet'): PatchSet.load(path)

def test_another_model_is_refused(setup, tmp_path):
    m, tok, W, cal = setup
    path = cal.save(tmp_path / 'c.safetensors')
    g, _ = tiny_model('gpt2')
    with pytest.raises(ValueError, match='another architecture'): cal.apply(g)
    with pytest.raises(ValueError, match='another architecture'): CaliNet.load(path, g)
    m2, _ = tiny_model('llama', n_layers=2, seed=1)                      # same shapes, other weights
    with pytest.raises(ValueError, match='other weights'): cal.apply(m2)
    with cal.apply(m2, strict=False): pass
    assert _no_hooks(m2)

def test_same_fact_twice_later_wins(llama):
    m, tok = llama
    B2 = {**B, 'target_new': 'again', 'case_id': 3}
    cal = calinet_edit(m, tok, [A, B, B2], layers=1, **KW)
    assert [f['target_new'] for f in cal.facts] == ['hello', 'again']
    assert [r['case_id'] for r in cal.meta['replaced']] == [2]
    lp0 = target_logprobs(m, tok, [B['prompt']] * 2, ['again', 'world'])
    with cal.apply(m): lp1 = target_logprobs(m, tok, [B['prompt']] * 2, ['again', 'world'])
    assert float(lp1[0] - lp0[0]) > 0.5 and float(lp1[0] - lp1[1]) > float(lp0[0] - lp0[1])

def test_bad_inputs(llama):
    m, tok = llama
    with pytest.raises(ValueError, match='no records'): calinet_edit(m, tok, [])
    with pytest.raises(ValueError, match="needs 'prompt' and 'target_new'"): calinet_edit(m, tok, [dict(prompt='a')])
    with pytest.raises(ValueError, match='empty'): calinet_edit(m, tok, [dict(prompt='a', target_new='  ')])
    with pytest.raises(ValueError, match='target_true'): calinet_edit(m, tok, [dict(prompt='a', target_new='b')], assess=True)
    with pytest.raises(ValueError, match='act must be'): calinet_edit(m, tok, [A], act='tanh')
    with pytest.raises(ValueError, match='lr must be'): calinet_edit(m, tok, [A], lr=float('nan'))
    with pytest.raises(ValueError, match='n_slots and steps'): calinet_edit(m, tok, [A], n_slots=0)
    with pytest.raises((ValueError, IndexError)): calinet_edit(m, tok, [A], layers=5)
    with pytest.raises(ValueError, match='no records to assess'): cka_scores(m, tok, [])
    with pytest.raises(ValueError, match='one slot set per layer'): CaliNet([PatchSet.empty(0, 64, 64), PatchSet.empty(0, 64, 64)])

def test_cka_and_assess(llama):
    m, tok = llama
    ck = cka_scores(m, tok, [A, B], ['one two'])
    assert list(ck.n_templates) == [2, 2] and torch.allclose(torch.tensor(ck.cka.values), torch.tensor((ck.p_true / ck.p_false).values))
    none = calinet_edit(m, tok, [A, B], layers=1, assess=True, cka_threshold=0.0, **KW)   # every fact counts as known
    assert len(none) == 0 and len(none.meta['skipped']) == 2 and none.facts == []
    b = encode(tok, ['a cat'])
    z0 = forward(m, **b).logits
    with none.apply(m): assert torch.equal(forward(m, **b).logits, z0)
    alle = calinet_edit(m, tok, [A, B], layers=1, assess=True, cka_threshold=float('inf'), **KW)
    assert len(alle.facts) == 2 and alle.meta['skipped'] == []

@pytest.mark.parametrize('family', ['gpt2', 'opt'])
def test_other_families(family):
    m, tok = tiny_model(family, n_layers=2)
    W = _weights(m)
    cal = calinet_edit(m, tok, [A], layers=[0, 1], **{**KW, 'steps': 20})
    lp0 = target_logprobs(m, tok, [A['prompt']], ['hello'])
    with cal.apply(m): lp1 = target_logprobs(m, tok, [A['prompt']], ['hello'])
    assert float(lp1[0]) > float(lp0[0]) and _same(W, _weights(m)) and _no_hooks(m)

def test_locality_term_keeps_memory_prompts(llama, monkeypatch):
    m, tok = llama
    mem = ['a dog', 'the small world is']
    b = encode(tok, mem)
    p0 = F.log_softmax(forward(m, **b).logits[:, -1], -1)
    def kl(cal):
        with cal.apply(m): p1 = F.log_softmax(forward(m, **b).logits[:, -1], -1)
        return float(F.kl_div(p1, p0, log_target=True, reduction='batchmean'))
    free = calinet_edit(m, tok, [A, B], layers=1, **KW)
    kept = calinet_edit(m, tok, [A, B], layers=1, loc_weight=10.0, memory_prompts=mem, **KW)
    assert kl(kept) < kl(free) / 2 and kept.meta['n_memory'] == 2
    with pytest.raises(ValueError, match='memory_prompts'): calinet_edit(m, tok, [A], loc_weight=1.0)
    # the fast path's locality term matches the full forward's
    rows, mrows = _edit_rows(tok, [A], ['one two']), cn._prompt_rows(tok, mem)
    (s1,), l1 = train_slots(m, tok, rows, [1], n_slots=4, steps=4, lr=0.05, memory_rows=mrows, loc_weight=1.0, stop_nll=0, progress=False)
    monkeypatch.setattr(cn, 'fast_path', lambda ad, L: False)
    (s2,), l2 = train_slots(m, tok, rows, [1], n_slots=4, steps=4, lr=0.05, memory_rows=mrows, loc_weight=1.0, stop_nll=0, progress=False)
    assert torch.allclose(torch.tensor(l1.kl.values), torch.tensor(l2.kl.values), atol=1e-4)

def test_memory_term_keeps_slots_off_on_memory(llama):
    "T-Patcher's memory + activation losses: trained slots stay below zero on memory tokens and still write the edit"
    from editlab.tpatcher import memory_inputs
    m, tok = llama
    texts = ['a dog runs in the park', 'the small world is', 'one two three four five']
    x = memory_inputs(m, tok, texts, 1)
    def on(cal):
        p = cal.memories[0]; return float(((x @ p.keys.T + p.bias) > 0).float().mean())
    kw = dict(KW, act='relu', steps=150)
    free = calinet_edit(m, tok, [A, B], layers=1, **kw)
    W = _weights(m)
    kept = calinet_edit(m, tok, [A, B], layers=1, mlc=5.0, alc=1.0, key_init='edit', memory_texts=texts, **kw)
    assert _same(W, _weights(m)) and _no_hooks(m)
    assert on(kept) == 0.0 and on(free) > 0.2 and kept.meta['n_memory_tokens'] == len(x)
    with kept.apply(m): lp = target_logprobs(m, tok, [A['prompt'], B['prompt']], ['hello', 'world'])
    lp0 = target_logprobs(m, tok, [A['prompt'], B['prompt']], ['hello', 'world'])
    assert bool((lp > lp0 + 0.5).all())
    # a precomputed memory gives the same slots; mlc > 0 without any memory is refused in `train_slots`
    again = calinet_edit(m, tok, [A, B], layers=1, mlc=5.0, alc=1.0, key_init='edit', memory=x, **kw)
    assert torch.allclose(again.memories[0].keys, kept.memories[0].keys)
    with pytest.raises(ValueError, match='mlc > 0 needs memory'):
        train_slots(m, tok, _edit_rows(tok, [A], ['one two']), [1], n_slots=4, steps=2, mlc=1.0, progress=False)
    with pytest.raises(ValueError, match='key_init'): calinet_edit(m, tok, [A], layers=1, key_init='zeros', **KW)
