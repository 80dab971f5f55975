"Knowledge neurons: IG completeness and batching, refinement, suppress/enhance, the KN edit as a WeightDelta, bad inputs, no side effects."
import math
import pytest, torch
import torch.nn.functional as F
from editlab.models import tiny_model, adapter
from editlab.hooks import intervene, capture, forward, hook_name, get_activations
from editlab.evaluate import encode_prompt, encode_target, target_logprobs
from editlab.knowledge_neurons import (integrated_gradients, knowledge_neurons, fact_prompts, scale_neurons, suppress, enhance,
                                       random_neurons, neuron_effects, check_neurons, kn_edit, kn_effects, top1_correct)

PROMPT, TARGET = "the cat sat on the", "mat"
REC = dict(prompt=PROMPT, subject="cat", target_true=TARGET, target_new="hat", paraphrases=["a cat sits on the"])

@pytest.fixture(scope='module')
def gpt2():
    return tiny_model('gpt2', n_layers=2)

def _snapshot(m): return {n: p.detach().clone() for n, p in m.named_parameters()}
def _same(m, snap): return all(torch.equal(snap[n], p) for n, p in m.named_parameters())

def _logp_zeroed(m, tok, L, pos):
    def zero(act, ctx): act = act.clone(); act[:, pos] = 0; return act
    with intervene(m, {hook_name(L, 'mlp.hook_post'): zero}):
        return float(target_logprobs(m, tok, [PROMPT], [TARGET])[0])

@pytest.mark.parametrize('objective', ['prob', 'logprob'])
def test_ig_completeness(llama, objective):
    "With many steps a layer's attributions sum to F(activations) - F(layer zeroed at the last prompt token)"
    m, tok = llama
    pos = len(encode_prompt(tok, PROMPT)) - 1
    lp0 = float(target_logprobs(m, tok, [PROMPT], [TARGET])[0])
    for L in (0, 1):
        lz = _logp_zeroed(m, tok, L, pos)
        want = (math.exp(lp0) - math.exp(lz)) if objective == 'prob' else (lp0 - lz)
        a = integrated_gradients(m, tok, PROMPT, TARGET, layers=[L], steps=300, objective=objective)
        assert abs(float(a[L].sum()) - want) <= 0.01 * abs(want)
        assert a[1 - L].abs().sum() == 0                       # a layer not asked for stays zero

def _reference_ig(m, tok, layers, steps, objective='prob'):
    "One forward per (layer, step), the whole sequence, no KV cache: the definition, step by step"
    P, T = encode_prompt(tok, PROMPT), encode_target(tok, TARGET)
    ids = torch.tensor([P + T[:-1]]); pos = len(P) - 1
    out = torch.zeros(adapter(m).n_layers, adapter(m).d_mlp)
    for L in layers:
        name = hook_name(L, 'mlp.hook_post')
        with capture(m, name) as c: forward(m, ids)
        w = c[name][0, pos].float()
        g_sum = torch.zeros_like(w)
        for k in range(1, steps + 1):
            with torch.enable_grad():
                x = (k / steps * w).requires_grad_()
                def put(act, ctx): new = act.clone(); new[0, pos] = x; return new
                with intervene(m, {name: put}): logits = forward(m, ids).logits
                lp = F.log_softmax(logits[0, pos:pos + len(T)].float(), -1)[torch.arange(len(T)), torch.tensor(T)].sum()
                f = lp.exp() if objective == 'prob' else lp
                g, = torch.autograd.grad(f, x)
            g_sum += g
        out[L] = w * g_sum / steps
    return out

@pytest.mark.parametrize('family', ['llama', 'gpt2'])
def test_batched_steps_equal_reference_loop(family):
    m, tok = tiny_model(family, n_layers=2)
    ref = _reference_ig(m, tok, [0, 1], steps=5, objective='logprob')
    for bs in (3, 7, 100):                                       # chunks inside a layer, across layers, all in one
        got = integrated_gradients(m, tok, PROMPT, TARGET, steps=5, batch_size=bs, objective='logprob')
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-7)
    refp = _reference_ig(m, tok, [1], steps=4, objective='prob')
    torch.testing.assert_close(integrated_gradients(m, tok, PROMPT, TARGET, layers=[1], steps=4), refp, rtol=1e-4, atol=1e-12)

def test_one_token_prompt_has_no_prefix(llama):
    "A one-token prompt has nothing to cache: attributions are still computed"
    m, tok = llama
    a = integrated_gradients(m, tok, "t", TARGET, layers=[1], steps=3, objective='logprob')
    assert a.shape == (2, 96) and torch.isfinite(a).all() and a[1].abs().sum() > 0

def test_refinement_follows_the_rule(llama):
    m, tok = llama
    ps = fact_prompts(REC, min_prompts=4)
    assert ps == [PROMPT, "a cat sits on the", f"Fact: {PROMPT}", f"Here is a well-known fact. {PROMPT}"]
    neurons, table, A = knowledge_neurons(m, tok, ps, TARGET, threshold=0.3, share=0.5, steps=4, return_attributions=True)
    coarse = A > 0.3 * A.flatten(1).max(1).values[:, None, None]
    want = {(L, i) for L, i in (coarse.sum(0) >= 2).nonzero().tolist()}
    assert set(neurons) == want
    assert set(zip(table.layer, table.neuron)) == {(L, i) for L, i in (coarse.sum(0) >= 1).nonzero().tolist()}
    assert table.selected.sum() == len(neurons)

def test_scale_neurons(llama):
    m, tok = llama
    ids = torch.tensor([encode_prompt(tok, PROMPT)]); name = 'blocks.1.mlp.hook_post'
    with capture(m, name) as c0: forward(m, ids)
    with suppress(m, [(1, 2), (1, 5)]), capture(m, name) as c1: forward(m, ids)
    with enhance(m, [(1, 2)]), capture(m, name) as c2: forward(m, ids)
    x0, x1, x2 = (c[name][0] for c in (c0, c1, c2))
    assert x1[:, [2, 5]].abs().sum() == 0 and torch.equal(x1[:, 6:], x0[:, 6:])
    torch.testing.assert_close(x2[:, 2], 2 * x0[:, 2]); assert torch.equal(x2[:, 3:], x0[:, 3:])
    df = neuron_effects(m, tok, [PROMPT], TARGET, [(1, 2)], factors={'same': 1.0})
    assert abs(df.same[0]) < 1e-6                               # x1 changes nothing

def test_random_neurons_match_layers(llama):
    m, _ = llama
    kn = [(0, 1), (1, 4), (1, 9)]
    r = random_neurons(m, kn, seed=3)
    assert sorted(L for L, _ in r) == [0, 1, 1] and not set(r) & set(kn)
    assert r == random_neurons(m, kn, seed=3) and r != random_neurons(m, kn, seed=4)

def test_bad_inputs(llama):
    m, tok = llama
    with pytest.raises(IndexError, match='out of range'): integrated_gradients(m, tok, PROMPT, TARGET, layers=[2])
    with pytest.raises(ValueError, match='empty'): integrated_gradients(m, tok, PROMPT, '  ')
    with pytest.raises(ValueError, match='steps'): integrated_gradients(m, tok, PROMPT, TARGET, steps=0)
    with pytest.raises(ValueError, match='batch_size'): integrated_gradients(m, tok, PROMPT, TARGET, batch_size=0)
    with pytest.raises(ValueError, match='objective'): integrated_gradients(m, tok, PROMPT, TARGET, objective='logit')
    with pytest.raises(ValueError, match='no prompts'): knowledge_neurons(m, tok, [], TARGET)
    with pytest.raises(ValueError, match='threshold'): knowledge_neurons(m, tok, [PROMPT], TARGET, threshold=1.5)
    with pytest.raises(ValueError, match='share'): knowledge_neurons(m, tok, [PROMPT], TARGET, share=0)
    with pytest.raises(IndexError, match='out of range'): check_neurons(m, [(0, 96)])
    with pytest.raises(IndexError, match='out of range'): check_neurons(m, [(-3, 0)])
    with pytest.raises(TypeError, match='pair'): check_neurons(m, [3])
    with pytest.raises(ValueError, match='no neurons'):
        with suppress(m, []): pass
    with pytest.raises(ValueError, match='finite'):
        with scale_neurons(m, [(0, 1)], float('nan')): pass
    with pytest.raises(ValueError, match='nothing to edit'): kn_edit(m, tok, {**REC, 'target_new': TARGET})
    with pytest.raises(ValueError, match='empty'): kn_edit(m, tok, {**REC, 'target_new': ''})
    with pytest.raises(KeyError, match='target_new'): kn_edit(m, tok, {k: v for k, v in REC.items() if k != 'target_new'})
    with pytest.raises(ValueError, match='same token'): kn_edit(m, tok, REC)        # byte-level: both start with the space byte
    with pytest.raises(ValueError, match='no knowledge neurons'): kn_edit(m, tok, REC, neurons=[], answer_tokens='mean')
    with pytest.raises(ValueError, match='lower the threshold'):                     # nothing is above 1.0 x the maximum
        kn_edit(m, tok, REC, threshold=1.0, steps=2, answer_tokens='mean')
    with pytest.raises(IndexError, match='out of range'): kn_edit(m, tok, REC, neurons=[(2, 0)], answer_tokens='mean')
    with pytest.raises(ValueError, match='lambda2'): kn_edit(m, tok, REC, neurons=[(1, 0)], lambda2=float('inf'), answer_tokens='mean')
    with pytest.raises(ValueError, match='embedding'): kn_edit(m, tok, REC, neurons=[(1, 0)], embedding='both', answer_tokens='mean')
    with pytest.raises(ValueError, match='min_prompts'): fact_prompts(REC, min_prompts=20)

def test_weights_bitwise_unchanged(llama):
    m, tok = llama
    snap = _snapshot(m)
    flags = [p.requires_grad for p in m.parameters()]
    integrated_gradients(m, tok, PROMPT, TARGET, steps=3)
    knowledge_neurons(m, tok, [PROMPT, "a cat sits on the"], TARGET, steps=3)
    d = kn_edit(m, tok, REC, steps=3, answer_tokens='mean')
    kn_effects(m, tok, REC, d.meta['neurons'])
    assert _same(m, snap) and [p.requires_grad for p in m.parameters()] == flags
    with d.apply(m): assert not _same(m, snap)
    assert _same(m, snap)                                             # undo is bitwise

def _editlab_hooks(m):
    return sum(len(mod._forward_pre_hooks) + len(mod._forward_hooks) for mod in m.modules())

def test_exceptions_leave_no_hooks_and_no_changes(llama):
    m, tok = llama
    snap = _snapshot(m); n_hooks = _editlab_hooks(m)
    m.lm_head.weight.requires_grad_(True)
    flags = [p.requires_grad for p in m.parameters()]
    def boom(mod, args, out):
        if out.shape[0] > 1: raise RuntimeError("boom")             # only inside the batched IG forward
    h = m.lm_head.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match='boom'): integrated_gradients(m, tok, PROMPT, TARGET, steps=4)
        with pytest.raises(RuntimeError, match='boom'): kn_edit(m, tok, REC, steps=4, answer_tokens='mean')
    finally: h.remove()
    with pytest.raises(RuntimeError, match='inside'):
        with suppress(m, [(0, 1)]), enhance(m, [(1, 1)]): raise RuntimeError('inside')
    assert _editlab_hooks(m) == n_hooks and getattr(m, '_editlab_state').users == 0
    assert [p.requires_grad for p in m.parameters()] == flags and torch.is_grad_enabled() is False
    assert _same(m, snap)
    assert integrated_gradients(m, tok, PROMPT, TARGET, layers=[1], steps=2).abs().sum() > 0   # still usable

def test_kn_edit_rule_llama(llama):
    m, tok = llama
    ad = adapter(m); neurons = [(1, 3), (1, 10), (0, 7)]
    E = ad.embed.weight.detach().float()
    e_old = E[encode_target(tok, TARGET)].mean(0); e_new = E[encode_target(tok, 'hat')].mean(0)
    d = kn_edit(m, tok, REC, neurons=neurons, lambda1=0.5, lambda2=3.0, norm_match=False, sign_aware=False, answer_tokens='mean')
    for L, i in neurons:
        D = d[ad.param_name(L, 'down')]
        torch.testing.assert_close(D[:, i], -0.5 * e_old + 3.0 * e_new)
    assert set((d[ad.param_name(1, 'down')].abs().sum(0) > 0).nonzero()[:, 0].tolist()) == {3, 10}
    assert set((d[ad.param_name(0, 'down')].abs().sum(0) > 0).nonzero()[:, 0].tolist()) == {7}
    # norm matching: each embedding rescaled to the value vector's norm; the sign follows the mean activation
    d2 = kn_edit(m, tok, REC, neurons=neurons, lambda1=1.0, lambda2=1.0, answer_tokens='mean')
    acts = get_activations(m, tok, fact_prompts(REC), [hook_name(1, 'mlp.hook_post')], positions='last')[hook_name(1, 'mlp.hook_post')]
    v = ad.down(1).weight.detach()[:, 3].float()
    s = 1.0 if float(acts[:, 3].mean()) >= 0 else -1.0
    want = s * (-v.norm() / e_old.norm() * e_old + v.norm() / e_new.norm() * e_new)
    torch.testing.assert_close(d2[ad.param_name(1, 'down')][:, 3], want)
    assert d2.meta['method'] == 'KN' and d2.meta['neurons'] == [[0, 7], [1, 3], [1, 10]]

def test_kn_edit_gpt2_conv1d(gpt2):
    "GPT-2 stores the down projection as Conv1D [d_mlp, d_model]: the delta has that shape, with the neurons' rows"
    m, tok = gpt2
    ad = adapter(m); snap = _snapshot(m)
    d = kn_edit(m, tok, REC, neurons=[(1, 3), (1, 40), (0, 5)], answer_tokens='mean')
    params = dict(m.named_parameters())
    for n in d:
        assert d[n].shape == params[n].shape == (96, 64)
    assert set((d[ad.param_name(1, 'down')].abs().sum(1) > 0).nonzero()[:, 0].tolist()) == {3, 40}
    ids = torch.tensor([encode_prompt(tok, PROMPT)])
    before = forward(m, ids).logits
    with d.apply(m): after = forward(m, ids).logits
    assert not torch.equal(before, after) and _same(m, snap)
    d2 = kn_edit(m, tok, REC, steps=3, answer_tokens='mean')          # with the search
    assert all(d2[n].shape == params[n].shape for n in d2)

def test_top1_correct(llama):
    m, tok = llama
    top = int(forward(m, torch.tensor([encode_prompt(tok, PROMPT)])).logits[0, -1].argmax())
    recs = [dict(prompt=PROMPT, target_true=TARGET), dict(prompt="hello", target_true="x")]
    want = [top == encode_target(tok, TARGET)[0], int(forward(m, torch.tensor([encode_prompt(tok, "hello")])).logits[0, -1].argmax()) == encode_target(tok, "x")[0]]
    assert top1_correct(m, tok, recs, batch_size=1) == top1_correct(m, tok, recs) == want
