"GRACE: codebook lookups at each input's own last token, add / expand / split / replace, delete, save / load, bad inputs, frozen weights"
import pytest, torch
from editlab.models import tiny_model
from editlab.hooks import forward, encode, hook_shape, get_activations
from editlab.evaluate import target_logprobs, generate
from editlab.artifacts import WeightDelta
from editlab.grace import Codebook, grace_edit
from helpers import weights as _weights, same as _same, no_hooks as _no_hooks

LONG = dict(prompt='the big world is very large and', target_new='hello', target_true='there')
SHORT = dict(prompt='a cat', target_new='world', target_true='there')

def _last_logits(m, tok, prompts, side='left'):
    b = encode(tok, prompts, side)
    with torch.no_grad(): z = forward(m, **b).logits
    last = b['attention_mask'].shape[1] - 1 - b['attention_mask'].flip(-1).argmax(-1) if side == 'right' else torch.full((len(prompts),), -1)
    return z[torch.arange(len(prompts)), last]

def _manual(m, tok, prompts, layer=1, scale=20.):
    "A codebook whose keys are the prompts' last-token queries and whose values are large random vectors"
    kh = f'blocks.{layer}.mlp.hook_post'
    k = get_activations(m, tok, prompts, kh)[kh]
    torch.manual_seed(0)
    from editlab.models import fingerprint
    return Codebook(layer, k, torch.randn(len(prompts), hook_shape(m, kh.replace('hook_post', 'hook_out'))[0]) * scale,
                    torch.full((len(prompts),), 1e-3), [f't{i}' for i in range(len(prompts))], meta={'fingerprint': fingerprint(m)})

def test_add_expand_split(llama):
    m, tok = llama
    A = dict(prompt='the big world is', target_new='x', target_true='y')
    B = dict(prompt='the big world was', target_new='x', target_true='y')
    C = dict(prompt='a small house is', target_new='z', target_true='y')
    cb = grace_edit(m, tok, [A, B, C], 1, eps=100.0, steps=2, progress=False)
    acts = [e['action'] for e in cb.meta['edits']]
    assert acts == ['add', 'expand', 'split'], acts
    dAB, dC = cb.meta['edits'][1]['distance'], cb.meta['edits'][2]['distance']
    assert len(cb) == 2 and cb.labels == ['x', 'z'] and cb.prompts[0] == [A['prompt'], B['prompt']]
    # expand made entry 0 hold B's ball (d + eps); the split then halved the distance between the two keys
    torch.testing.assert_close(cb.eps, torch.tensor([dC / 2, dC / 2]))
    assert dAB + 100.0 > dC / 2
    q = cb.query(m, tok, [A['prompt'], C['prompt']])
    assert q.entry.tolist() == [0, 1]
    # with small radii nothing interacts: three entries
    cb2 = grace_edit(m, tok, [A, B, C], 1, eps=1e-4, steps=2, progress=False)
    assert [e['action'] for e in cb2.meta['edits']] == ['add'] * 3 and len(cb2) == 3

def test_same_fact_later_wins(llama):
    m, tok = llama
    A1 = dict(prompt='the big world is', target_new='x', target_true='y')
    A2 = dict(prompt='the big world is', target_new='q', target_true='y')
    cb1 = grace_edit(m, tok, [A1], 1, eps=1e-3, steps=20, progress=False)
    cb = grace_edit(m, tok, [A2], 1, eps=1e-3, steps=20, codebook=cb1, progress=False)
    assert len(cb1) == 1 and cb1.labels == ['x']                       # the codebook passed in is not changed
    assert [e['action'] for e in cb.meta['edits']] == ['add', 'replace'] and len(cb) == 1 and cb.labels == ['q']
    assert cb.query(m, tok, [A2['prompt']]).label.tolist() == ['q']
    with cb1.apply(m): lq1 = target_logprobs(m, tok, [A2['prompt']], ['q'])
    with cb.apply(m): lq2 = target_logprobs(m, tok, [A2['prompt']], ['q'])
    assert lq2 > lq1                                                    # the later target is the one trained in

def test_delete_keeps_others(llama):
    m, tok = llama
    P = [LONG['prompt'], SHORT['prompt']]
    base = _last_logits(m, tok, P)
    cb = _manual(m, tok, P)
    with cb.apply(m): both = _last_logits(m, tok, P)
    assert not torch.allclose(both[0], base[0]) and not torch.allclose(both[1], base[1])
    cb.delete(0)
    assert len(cb) == 1 and cb.labels == ['t1']
    with cb.apply(m): one = _last_logits(m, tok, P)
    torch.testing.assert_close(one[0], base[0], atol=1e-5, rtol=1e-5)   # the deleted edit is gone
    torch.testing.assert_close(one[1], both[1], atol=1e-5, rtol=1e-5)   # the other still works
    with pytest.raises(IndexError, match='no entry 3'): cb.delete(3)
    with pytest.raises(TypeError, match='must be an int'): cb.delete(True)
    cb.delete(-1); assert len(cb) == 0 and cb.n_params == 0
    with pytest.raises(IndexError, match='has 0 entries'): cb.delete(0)

def test_each_input_at_its_own_last_token(llama):
    "Edit a long prompt, then a short one: both still hit their own entries (EasyEdit would read the short prompt's index everywhere)"
    m, tok = llama
    cb = grace_edit(m, tok, [LONG, SHORT], 1, eps=1e-3, steps=15, progress=False)
    assert [e['action'] for e in cb.meta['edits']] == ['add', 'add']
    assert len(encode(tok, [LONG['prompt']])['input_ids'][0]) != len(encode(tok, [SHORT['prompt']])['input_ids'][0])
    q = cb.query(m, tok, [LONG['prompt'], SHORT['prompt']])
    assert q.entry.tolist() == [0, 1] and q.label.tolist() == ['hello', 'world']
    P = [LONG['prompt'], SHORT['prompt']]
    base = target_logprobs(m, tok, P, ['hello', 'world'])
    with cb.apply(m):
        ed = target_logprobs(m, tok, P, ['hello', 'world'])
        # batched with padding on either side == one by one
        left, right = _last_logits(m, tok, P, 'left'), _last_logits(m, tok, P, 'right')
        single = torch.cat([_last_logits(m, tok, [p]) for p in P])
    assert (ed > base + 0.5).all(), (ed, base)
    torch.testing.assert_close(left, single, atol=1e-4, rtol=1e-4); torch.testing.assert_close(right, single, atol=1e-4, rtol=1e-4)
    # an input containing neither prompt is untouched
    other = 'zzz qqq www eee rrr ttt yyy'
    with cb.apply(m): o = _last_logits(m, tok, [other])
    torch.testing.assert_close(o, _last_logits(m, tok, [other]))

def test_generation_cached_equals_uncached(llama):
    m, tok = llama
    P = [LONG['prompt'], SHORT['prompt'], 'hello there friend']
    cb = _manual(m, tok, P[:2])
    plain = generate(m, tok, P, max_new_tokens=6)
    with cb.apply(m):
        a = generate(m, tok, P, max_new_tokens=6, use_cache=True)
        b = generate(m, tok, P, max_new_tokens=6, use_cache=False)
    assert a == b
    assert a[0] != plain[0] and a[1] != plain[1] and a[2] == plain[2]
    assert _no_hooks(m)

def test_save_load_roundtrip(llama, tmp_path):
    m, tok = llama
    cb = grace_edit(m, tok, [LONG, SHORT], 1, eps=1e-3, steps=3, progress=False)
    p = cb.save(tmp_path / 'cb.safetensors')
    cb2 = Codebook.load(p, m)
    for a in ('keys', 'values', 'eps'): assert torch.equal(getattr(cb, a), getattr(cb2, a))
    assert (cb2.labels, cb2.prompts, cb2.positions, cb2.layer, cb2.key_hook) == (cb.labels, cb.prompts, cb.positions, cb.layer, cb.key_hook)
    assert cb2.meta['fingerprint'] == cb.meta['fingerprint'] and cb2.meta['method'] == 'GRACE'
    with cb.apply(m): z1 = _last_logits(m, tok, [LONG['prompt']])
    with cb2.apply(m): z2 = _last_logits(m, tok, [LONG['prompt']])
    assert torch.equal(z1, z2)
    empty = Codebook.empty(1, 96, 64); Codebook.load(empty.save(tmp_path / 'e.safetensors'))
    # another model: other weights, other width
    m2, _ = tiny_model('llama', n_layers=2, seed=1)
    with pytest.raises(ValueError, match='other weights'): Codebook.load(p, m2)
    m3, _ = tiny_model('llama', n_layers=2, hidden_size=32, intermediate_size=48)
    with pytest.raises(ValueError, match='another architecture'): Codebook.load(p, m3)
    cb3 = Codebook.load(p); cb3.meta.pop('fingerprint')            # no fingerprint to compare: the widths still refuse
    with pytest.raises(ValueError, match='8 wide|wide but'): cb3.apply(m3)
    assert _no_hooks(m3)
    WeightDelta({'x': torch.zeros(2)}).save(tmp_path / 'wd.safetensors')
    with pytest.raises(ValueError, match="not a 'Codebook'"): Codebook.load(tmp_path / 'wd.safetensors')

def test_bad_inputs(llama):
    m, tok = llama
    with pytest.raises(ValueError, match='no records'): grace_edit(m, tok, [], 1)
    with pytest.raises(ValueError, match="needs 'prompt' and 'target_new'"): grace_edit(m, tok, [dict(prompt='a b')], 1)
    with pytest.raises(ValueError, match='eps must be'): grace_edit(m, tok, [LONG], 1, eps=0)
    with pytest.raises(IndexError, match='out of range'): grace_edit(m, tok, [LONG], 7)
    with pytest.raises(ValueError, match="token must be"): grace_edit(m, tok, [LONG], 1, token='first')
    with pytest.raises(ValueError, match="needs a 'subject'"): grace_edit(m, tok, [LONG], 1, token='subject')
    cb = grace_edit(m, tok, [LONG], 1, eps=1e-3, steps=1, progress=False)
    with pytest.raises(ValueError, match='sits at layer 1'): grace_edit(m, tok, [SHORT], 0, codebook=cb)
    with pytest.raises(TypeError, match='cannot be negated or scaled'): -cb
    with pytest.raises(TypeError, match='cannot be negated or scaled'): 2 * cb
    with pytest.raises(ValueError, match='different sites'): cb + Codebook.empty(0, 96, 64)
    assert len(cb + cb) == 2
    assert _no_hooks(m)

def test_weights_frozen_and_hooks_removed(llama):
    m, tok = llama
    before, flags = _weights(m), [p.requires_grad for p in m.parameters()]
    cb = grace_edit(m, tok, [LONG, SHORT, dict(SHORT, target_new='again')], 1, eps=1e-3, steps=5, progress=False)
    with cb.apply(m): generate(m, tok, [LONG['prompt']], max_new_tokens=3)
    with pytest.raises(RuntimeError):
        with cb.apply(m): raise RuntimeError('boom')
    assert _same(before, _weights(m)) and _no_hooks(m)
    assert [p.requires_grad for p in m.parameters()] == flags

def test_subject_token(llama):
    "token='subject': the key is the subject's last token, so a paraphrase that starts with the subject hits the entry"
    m, tok = llama
    r = dict(prompt='big world is a', subject='big world', target_new='x', target_true='y')
    cb = grace_edit(m, tok, [r], 1, eps=1e-3, steps=2, token='subject', progress=False)
    n_subj = len(encode(tok, ['big world'])['input_ids'][0])
    assert cb.positions == [[n_subj - 1]]
    q = cb.query(m, tok, ['big world'])
    assert q.entry.tolist() == [0]
