"LoFiT: weights untouched and hooks gone on every exit (errors included), one hook per layer, artifact == training-time hook, bad inputs refused."
import math
import pytest, torch
import editlab.lofit as lofit
from editlab.lofit import (TaskData, completions, preferences, tqa_preferences, icl_completions, select_heads, top_heads,
                           bias_tune, lora_tune, reference_logprobs, seq_logprobs, dpo_loss, _bias_fns)
from editlab.artifacts import Intervention
from editlab.hooks import intervene, forward, hook_name
from editlab.evaluate import encode_prompt, encode_target, pad_batch
from editlab.models import adapter, tiny_model

DATA = completions(["Q: ab\nA:", "Q: cd\nA:", "Q: ef\nA:", "Q: gh\nA:"], ["xy", "zw", "uv", "st"])
PREF = preferences(["Q: sky?\nA:", "Q: grass?\nA:", "Q: snow?\nA:"], ["blue", "green", "white"], ["red", "pink", "black"])

def _hooks_left(m):
    return sum(len(mod._forward_pre_hooks) + len(mod._forward_hooks) for mod in m.modules())

def _snapshot(m): return {n: p.detach().clone() for n, p in m.named_parameters()}, {n: p.requires_grad for n, p in m.named_parameters()}

def _unchanged(m, snap):
    w, flags = snap
    return all(torch.equal(p, w[n]) for n, p in m.named_parameters()) and all(p.requires_grad == flags[n] for n, p in m.named_parameters())

@pytest.mark.parametrize('data', [DATA, PREF], ids=['ce', 'dpo'])
def test_both_steps_leave_model_untouched(llama, data):
    m, tok = llama
    snap = _snapshot(m)
    rank, c1 = select_heads(m, tok, data, steps=5, lr=1e-2, batch_size=2, progress=False)
    iv, c2 = bias_tune(m, tok, data, top_heads(rank, 3), steps=5, lr=1e-2, batch_size=2, progress=False)
    assert _unchanged(m, snap) and _hooks_left(m) == 0 and not m.training
    assert list(c1.columns) == ['step', 'loss', 'task_loss', 'penalty', 'seconds'] and len(c2) == 5
    assert isinstance(iv, Intervention) and iv.meta['n_trainable'] == 3 * adapter(m).head_dim

def test_hooks_removed_and_model_restored_on_error_mid_training(llama, monkeypatch):
    m, tok = llama
    m.model.layers[0].self_attn.q_proj.weight.requires_grad_(False)   # a non-default flag must come back too
    snap = _snapshot(m)
    real, calls = lofit.completion_loss, []
    def boom(*a, **k):
        calls.append(1)
        if len(calls) == 3: raise KeyboardInterrupt("stop")
        return real(*a, **k)
    monkeypatch.setattr(lofit, 'completion_loss', boom)
    for run in (lambda: select_heads(m, tok, DATA, steps=10, batch_size=2, progress=False),
                lambda: bias_tune(m, tok, DATA, [(0, 1), (1, 2)], steps=10, batch_size=2, progress=False),
                lambda: lora_tune(m, tok, DATA, r=2, steps=10, batch_size=2, progress=False)):
        calls.clear()
        with pytest.raises(KeyboardInterrupt): run()
        assert _unchanged(m, snap) and _hooks_left(m) == 0
    m.model.layers[0].self_attn.q_proj.weight.requires_grad_(True)

def test_one_hook_per_layer(llama, monkeypatch):
    m, tok = llama
    ad, seen = adapter(m), []
    real = lofit.completion_loss
    def spy(*a, **k):
        seen.append([len(ad.o_proj(L)._forward_pre_hooks) for L in range(ad.n_layers)])
        return real(*a, **k)
    monkeypatch.setattr(lofit, 'completion_loss', spy)
    select_heads(m, tok, DATA, steps=2, batch_size=2, progress=False)
    assert seen[-1] == [1, 1]                          # step 1: all 8 heads' scalings through 2 hooks
    bias_tune(m, tok, DATA, [(1, 0), (1, 3), (1, 2)], steps=2, batch_size=2, progress=False)
    assert seen[-1] == [0, 1]                          # step 2: three heads of layer 1, one hook, none on layer 0

def test_artifact_reproduces_training_logits_and_round_trips(llama, tmp_path):
    m, tok = llama
    heads = [(0, 3), (1, 1), (1, 0)]
    iv, _ = bias_tune(m, tok, DATA, heads, steps=10, lr=5e-2, batch_size=2, progress=False)
    V = torch.stack([next(t.vec for t in iv.terms if t.hook == hook_name(L, 'attn.hook_z'))[h] for L, h in heads])
    ids, mask = pad_batch([encode_prompt(tok, "Q: zz\nA:") + encode_target(tok, "qq"), encode_prompt(tok, "Q: a\nA:")], tok.pad_token_id, 'right')
    with intervene(m, _bias_fns(m, heads, V)): train_logits = forward(m, ids, mask).logits
    back = Intervention.load(iv.save(tmp_path/'lofit.safetensors'), m)
    with back.apply(m): art_logits = forward(m, ids, mask).logits
    assert torch.equal(train_logits, art_logits)
    assert not torch.equal(art_logits, forward(m, ids, mask).logits)
    assert back.meta['heads'] == [list(h) for h in heads] and back.meta['hparams']['loss'] == 'ce'
    # untouched heads get exactly zero
    z = {t.hook: t.vec for t in back.terms}
    assert z[hook_name(0, 'attn.hook_z')][:3].abs().sum() == 0 and z[hook_name(1, 'attn.hook_z')][2:].abs().sum() == 0

def test_training_reduces_loss_and_is_seeded(llama):
    m, tok = llama
    iv1, c = bias_tune(m, tok, DATA, [(1, 0), (1, 1)], steps=40, lr=5e-2, batch_size=4, progress=False)
    iv2, _ = bias_tune(m, tok, DATA, [(1, 0), (1, 1)], steps=40, lr=5e-2, batch_size=4, progress=False)
    assert c.loss.iloc[-5:].mean() < c.loss.iloc[:5].mean() - 0.1
    assert all(torch.equal(a.vec, b.vec) for a, b in zip(iv1.terms, iv2.terms))

def test_l1_penalty_shrinks_scalings(llama):
    m, tok = llama
    r0, _ = select_heads(m, tok, DATA, lam=0.0, steps=20, lr=2e-2, batch_size=4, progress=False)
    r1, c1 = select_heads(m, tok, DATA, lam=1.0, steps=20, lr=2e-2, batch_size=4, progress=False)
    assert r1.score.sum() < 0.5 * r0.score.sum() and (c1.penalty > 0).all()

def test_dpo_pieces(llama):
    m, tok = llama
    rc, rr = reference_logprobs(m, tok, PREF)
    P = [encode_prompt(tok, p) for p in PREF.prompts]; C = [encode_target(tok, c) for c in PREF.chosen]
    ids, mask = pad_batch([p + c for p, c in zip(P, C)], tok.pad_token_id, 'right')
    lp = seq_logprobs(m, ids, mask, list(map(len, P)), list(map(len, C)))
    torch.testing.assert_close(lp, rc, atol=1e-4, rtol=0)
    assert math.isclose(float(dpo_loss(rc, rr, rc, rr)), math.log(2), rel_tol=1e-6)
    assert float(dpo_loss(rc + 1, rr, rc, rr)) < math.log(2)           # chosen up, rejected same: loss falls
    iv, c = bias_tune(m, tok, PREF, [(1, 0), (1, 1), (0, 2)], steps=30, lr=5e-2, batch_size=3, progress=False)
    assert abs(c.loss.iloc[0] - math.log(2)) < 1e-2 and c.loss.iloc[-1] < c.loss.iloc[0]
    with iv.apply(m): pc, pr = reference_logprobs(m, tok, PREF)
    assert ((pc - rc) - (pr - rr)).mean() > 0                         # the bias prefers the chosen answers

@pytest.mark.parametrize('family', ['gpt2', 'qwen2', 'gpt_neox'])
def test_other_architectures(family):
    m, tok = tiny_model(family)
    snap = _snapshot(m)
    rank, _ = select_heads(m, tok, DATA, steps=3, batch_size=2, progress=False)
    iv, c = bias_tune(m, tok, DATA, top_heads(rank, 2), steps=20, lr=5e-2, batch_size=4, progress=False)
    assert _unchanged(m, snap) and _hooks_left(m) == 0 and c.loss.iloc[-1] < c.loss.iloc[0]

def test_lora_baseline(llama):
    m, tok = llama
    snap = _snapshot(m)
    wd, c = lora_tune(m, tok, PREF, r=2, steps=10, lr=1e-2, batch_size=3, progress=False)
    assert _unchanged(m, snap) and abs(c.loss.iloc[0] - math.log(2)) < 1e-4   # B = 0 at init: policy == reference
    assert sorted(wd.deltas) == [f'model.layers.{L}.self_attn.{p}_proj.weight' for L in range(2) for p in 'qv']
    with pytest.raises(ValueError, match='not separate modules'): lora_tune(tiny_model('gpt2')[0], tok, DATA, steps=1)

def test_bad_inputs(llama):
    m, tok = llama
    rank, _ = select_heads(m, tok, DATA, steps=1, progress=False)
    with pytest.raises(ValueError, match=r'k must be in 1..8 \(the model has 8 heads\), got 9'): top_heads(rank, 9)
    with pytest.raises(ValueError, match='k must be in 1..8'): top_heads(rank, 0)
    with pytest.raises(ValueError, match='fractional k'): top_heads(rank, 1.5)
    with pytest.raises(TypeError, match='int or a fraction'): top_heads(rank, True)
    assert len(top_heads(rank, 0.5)) == 4
    with pytest.raises(ValueError, match='9 heads given but the model has 8'): bias_tune(m, tok, DATA, [(i // 4, i % 4) for i in range(8)] + [(0, 0)])
    with pytest.raises(ValueError, match='no heads given'): bias_tune(m, tok, DATA, [])
    with pytest.raises(ValueError, match='does not exist'): bias_tune(m, tok, DATA, [(5, 0)])
    with pytest.raises(ValueError, match='listed twice'): bias_tune(m, tok, DATA, [(0, 0), (0, 0)])
    with pytest.raises(ValueError, match='empty training set'): completions([], [])
    with pytest.raises(ValueError, match='empty training set'): preferences([], [], [])
    with pytest.raises(ValueError, match='empty training set'): select_heads(m, tok, TaskData('ce', [], targets=[]))
    with pytest.raises(ValueError, match='empty training set'): icl_completions([])
    for lam in (-1e-3, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='lam'): select_heads(m, tok, DATA, lam=lam)
    with pytest.raises(ValueError, match='example 1 has no rejected answer'): preferences(["a", "b"], ["x", "y"], ["z", None])
    with pytest.raises(ValueError, match='example 0 has no chosen answer'): preferences(["a"], [" "], ["z"])
    with pytest.raises(ValueError, match='2 prompts but 1 chosen answers'): preferences(["a", "b"], ["x"], ["z", "w"])
    with pytest.raises(ValueError, match='needs one of each'): tqa_preferences([dict(question='q', correct=['a'], incorrect=[])])
    with pytest.raises(ValueError, match='ref must be'): bias_tune(m, tok, PREF, [(0, 0)], ref=(torch.zeros(1), torch.zeros(1)))
    with pytest.raises(ValueError, match='steps must be'): bias_tune(m, tok, DATA, [(0, 0)], steps=0)
    with pytest.raises(TypeError, match='TaskData'): bias_tune(m, tok, [("a", "b")], [(0, 0)])
    assert _hooks_left(m) == 0
