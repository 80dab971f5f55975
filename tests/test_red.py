"RED: shapes, identity at initialisation, the artifact == the training hook, save/load, fold, undo clean, bad input refused with the model unchanged."
import math
import pytest, torch
from editlab.red import REDIntervention, red_tune, red_fold, _red_fns
from editlab.artifacts import Intervention, Term, WeightDelta
from editlab.hooks import intervene, forward, encode, hook_name, hook_shape
from editlab.lofit import TaskData, completions, preferences
from editlab.models import adapter, fingerprint, tiny_model

CE = completions(["Q: ab\nA:", "Q: cd\nA:", "Q: ef\nA:", "Q: gh\nA:"], ["xy", "zw", "uv", "st"])
PREF = preferences(["Q: sky?\nA:", "Q: grass?\nA:", "Q: snow?\nA:"], ["blue", "green", "white"], ["red", "pink", "black"])

def _hooks_left(m): return sum(len(mod._forward_pre_hooks) + len(mod._forward_hooks) for mod in m.modules())
def _snapshot(m): return {n: p.detach().clone() for n, p in m.named_parameters()}, {n: p.requires_grad for n, p in m.named_parameters()}
def _unchanged(m, snap):
    w, flags = snap
    return all(torch.equal(p, w[n]) for n, p in m.named_parameters()) and all(p.requires_grad == flags[n] for n, p in m.named_parameters())
def _logits(m, tok, prompts=("Q: ab\nA:", "Q: a longer one\nA:")): return forward(m, **encode(tok, list(prompts))).logits
def _real(m, tok, prompts=("Q: ab\nA:", "Q: a longer one\nA:")):
    "logits at the real (non-pad) tokens only: what a padding position holds never reaches a real token"
    b = encode(tok, list(prompts)); return forward(m, **b).logits[b['attention_mask'].bool()]

@pytest.mark.parametrize('hook', ['mlp.hook_out', 'hook_resid_post', 'attn.hook_z'])
def test_shapes_and_counts(llama, hook):
    m, tok = llama
    with torch.enable_grad(): art, curve = red_tune(m, tok, CE, hook=hook, steps=3, batch_size=2, progress=False)
    shape = hook_shape(m, hook_name(0, hook))
    assert art.hooks == [hook_name(L, hook) for L in range(adapter(m).n_layers)]
    assert all(tuple(art.scales[h].shape) == shape and tuple(art.bias(h).shape) == shape for h in art.hooks)
    assert art.n_params == art.meta['n_trainable'] == 2 * adapter(m).n_layers * math.prod(shape)
    assert len(curve) == 3 and art.meta['layers'] == [0, 1] and art.meta['hook'] == hook

def test_identity_at_init_bitwise(llama):
    "ones and zeros leave the logits bit for bit; zero steps of training are not allowed, so build the initial artifact directly"
    m, tok = llama
    base = _logits(m, tok)
    hk = [hook_name(L, 'mlp.hook_out') for L in range(2)]; d = adapter(m).d_model
    ident = REDIntervention([Term(h, torch.zeros(d)) for h in hk], {h: torch.ones(d) for h in hk})
    with ident.apply(m): assert torch.equal(_logits(m, tok), base)
    # and the training hook at its initial values is the identity too: the DPO loss starts at log 2
    with torch.enable_grad(): _, curve = red_tune(m, tok, PREF, steps=1, batch_size=3, progress=False)
    assert abs(curve.loss.iloc[0] - math.log(2)) < 1e-5

@pytest.mark.parametrize('data', [CE, PREF], ids=['ce', 'dpo'])
def test_training_leaves_model_untouched_and_artifact_matches_hook(llama, data):
    m, tok = llama
    snap = _snapshot(m)
    with torch.enable_grad(): art, curve = red_tune(m, tok, data, steps=20, lr=5e-2, batch_size=2, progress=False)
    assert _unchanged(m, snap) and _hooks_left(m) == 0 and not m.training
    assert curve.loss.iloc[-5:].mean() < curve.loss.iloc[:5].mean()
    S = torch.stack([art.scales[h] for h in art.hooks]); B = torch.stack([art.bias(h) for h in art.hooks])
    assert not torch.equal(S, torch.ones_like(S)) and not torch.equal(B, torch.zeros_like(B))
    with intervene(m, _red_fns(art.hooks, S, B)): l_hook = _logits(m, tok)
    with art.apply(m): l_art = _logits(m, tok)
    assert torch.equal(l_hook, l_art) and not torch.equal(l_art, _logits(m, tok))

def test_save_load_round_trip(llama, tmp_path):
    m, tok = llama
    with torch.enable_grad(): art, _ = red_tune(m, tok, CE, steps=5, lr=5e-2, batch_size=2, progress=False)
    p = art.save(tmp_path/'red.safetensors')
    back = REDIntervention.load(p, m)
    assert back.hooks == art.hooks and back.meta['n_trainable'] == art.meta['n_trainable']
    assert all(torch.equal(back.scales[h], art.scales[h]) and torch.equal(back.bias(h), art.bias(h)) for h in art.hooks)
    with art.apply(m): l1 = _logits(m, tok)
    with back.apply(m): l2 = _logits(m, tok)
    assert torch.equal(l1, l2)
    with pytest.raises(ValueError, match="holds a 'REDIntervention'"): Intervention.load(p)
    other, _ = tiny_model('llama', n_layers=2, seed=1)
    with pytest.raises(ValueError, match='other weights'): REDIntervention.load(p, other)

def test_alpha_interpolates_and_undo_is_clean(llama):
    m, tok = llama
    snap, base = _snapshot(m), _logits(m, tok)
    with torch.enable_grad(): art, _ = red_tune(m, tok, CE, steps=5, lr=5e-2, batch_size=2, progress=False)
    with art.apply(m, alpha=0.0): assert torch.allclose(_logits(m, tok), base, atol=1e-6)
    with art.apply(m, alpha=0.5): l_half = _logits(m, tok)
    with (0.5 * art).apply(m): assert torch.equal(_logits(m, tok), l_half)
    h = art.apply(m); assert _hooks_left(m) > 0
    h.undo()
    with pytest.raises(RuntimeError, match='already undone'): h.undo()
    assert _hooks_left(m) == 0 and _unchanged(m, snap) and torch.equal(_logits(m, tok), base)
    with pytest.raises(RuntimeError):
        with art.apply(m): raise RuntimeError('boom')
    assert _hooks_left(m) == 0
    with pytest.raises(TypeError, match='do not add'): art + art
    with art.apply(m):                                            # the same artifact again while applied: refused, nothing added
        on = _logits(m, tok); n = _hooks_left(m)
        with pytest.raises(RuntimeError, match='REDIntervention is already applied'): art.apply(m)
        assert _hooks_left(m) == n and torch.equal(_logits(m, tok), on)
    assert _hooks_left(m) == 0 and torch.equal(_logits(m, tok), base)

def test_fold_matches_hooks(llama):
    m, tok = llama
    snap = _snapshot(m)
    with torch.enable_grad(): art, _ = red_tune(m, tok, CE, steps=10, lr=5e-2, batch_size=2, progress=False)
    wd, biases = red_fold(art, m)
    assert isinstance(wd, WeightDelta) and len(wd) == 2 and all(n.endswith('down_proj.weight') for n in wd.deltas)
    with art.apply(m): l_art = _real(m, tok)
    with wd.apply(m), biases.apply(m): l_fold = _real(m, tok)
    assert torch.allclose(l_fold, l_art, atol=1e-4)
    assert _unchanged(m, snap) and _hooks_left(m) == 0

@pytest.mark.parametrize('kw, err, msg', [
    (dict(layers=[2]), ValueError, 'layer 2 is outside the model'),
    (dict(layers=[-1]), ValueError, 'outside the model'),
    (dict(layers=[0, 0]), ValueError, 'listed twice'),
    (dict(layers=[True]), TypeError, 'must be ints'),
    (dict(dtype=torch.int64), TypeError, 'cannot hold them'),
    (dict(dtype=torch.bfloat16), TypeError, 'use torch.float32'),
    (dict(dtype='float32'), TypeError, 'torch dtype'),
    (dict(hook='resid'), ValueError, 'unknown hook kind'),
    (dict(data=TaskData('dpo', ["Q: a\nA:"], chosen=["b"])), ValueError, "no 'rejected'"),
    (dict(data=TaskData('ce', ["Q: a\nA:", "Q: b\nA:"], targets=["x"])), ValueError, '2 prompts but 1 targets'),
    (dict(data=TaskData('ce', ["Q: a\nA:"], targets=[None])), ValueError, 'no target'),
    (dict(data=[dict(question='q', correct=['a'], incorrect=['b'])]), TypeError, 'tqa_preferences'),
    (dict(data=TaskData('ce', [])), ValueError, 'empty training set'),
    (dict(steps=0), ValueError, 'steps must be >= 1'),
])
def test_bad_input_refused_model_unchanged(llama, kw, err, msg):
    m, tok = llama
    snap = _snapshot(m)
    kw = {'data': CE, **kw}
    with torch.enable_grad(), pytest.raises(err, match=msg):
        red_tune(m, tok, kw.pop('data'), progress=False, **{'steps': 2, **kw})
    assert _unchanged(m, snap) and _hooks_left(m) == 0

def test_artifact_bad_shapes_and_dtypes(llama):
    m, tok = llama
    d = adapter(m).d_model
    with pytest.raises(ValueError, match='the scale has shape'): REDIntervention([Term('blocks.0.mlp.hook_out', torch.zeros(d))], {'blocks.0.mlp.hook_out': torch.ones(3)})
    with pytest.raises(TypeError, match='floating point'): REDIntervention([], {'blocks.0.mlp.hook_out': torch.ones(d, dtype=torch.long)})
    with pytest.raises(ValueError, match='NaN or Inf'): REDIntervention([], {'blocks.0.mlp.hook_out': torch.full((d,), float('nan'))})
    with pytest.raises(ValueError, match='other position rule'): REDIntervention([Term('blocks.0.mlp.hook_out', torch.zeros(d), 'last')], {})
    with pytest.raises((KeyError, IndexError), match='out of range|unknown hook'): REDIntervention([Term('blocks.7.mlp.hook_out', torch.zeros(d))], {}).apply(m)
    assert _hooks_left(m) == 0
    wrong = REDIntervention([Term('blocks.0.mlp.hook_out', torch.zeros(d + 1))], {})
    with pytest.raises(ValueError, match='this hook point needs'): wrong.apply(m)
    mh, _ = tiny_model('llama', n_layers=2); mh = mh.half()
    big = REDIntervention([Term('blocks.1.mlp.hook_out', torch.full((d,), 1e6))], {}, dict(fingerprint=fingerprint(mh)))
    with pytest.raises(ValueError, match='cannot hold'): big.apply(mh)
    assert _hooks_left(mh) == 0

def test_trained_on_gpt2_too():
    "another architecture (Conv1D projections): training and the fold work"
    m, tok = tiny_model('gpt2', n_layers=2)
    with torch.enable_grad(): art, _ = red_tune(m, tok, CE, steps=5, lr=5e-2, batch_size=2, progress=False)
    wd, biases = red_fold(art, m)
    with art.apply(m): l_art = _real(m, tok)
    with wd.apply(m), biases.apply(m): l_fold = _real(m, tok)
    assert torch.allclose(l_fold, l_art, atol=1e-4)

def test_fold_red_gives_a_plain_model(llama):
    "scalings into down_proj, biases into down_proj's bias (editlab.fold): a hook-free copy with the hooked logits; the original untouched"
    from editlab.red import fold_red
    from editlab.fold import fold, FoldError
    m, tok = llama
    snap = _snapshot(m)
    with torch.enable_grad(): art, _ = red_tune(m, tok, CE, steps=10, lr=5e-2, batch_size=2, progress=False)
    folded = fold_red(art, m)
    with art.apply(m): l_art = _real(m, tok)
    l_fold = forward(folded, **encode(tok, ["Q: ab\nA:", "Q: a longer one\nA:"])).logits[encode(tok, ["Q: ab\nA:", "Q: a longer one\nA:"])['attention_mask'].bool()]
    assert torch.allclose(l_fold, l_art, atol=1e-4)
    assert _hooks_left(folded) == 0 and _unchanged(m, snap) and _hooks_left(m) == 0
    with pytest.raises(FoldError, match='overrides apply'): fold(art, m)   # the generic fold refuses scalings
    with torch.enable_grad(): rr, _ = red_tune(m, tok, CE, hook='hook_resid_post', steps=2, progress=False)
    with pytest.raises(ValueError, match='only scalings of a projection'): fold_red(rr, m)
    assert _unchanged(m, snap)

def test_registered():
    from editlab.registry import get_method, methods
    me = get_method('RED')
    assert me.family == 'steering' and me.produces == 'Intervention' and me.fn is red_tune and me.module == 'editlab.red'
    assert 'RED' in methods('steering').index and me.defaults['hook'] == 'mlp.hook_out'
