"""`finetune`: leaves the model bitwise as it was (even when training raises), returns a `WeightDelta` that lowers the
training loss when applied, respects the L-inf bound, and refuses bad input. Tiny random models only."""
import pytest
import torch

from editlab.models import fingerprint, tiny_model
from editlab.artifacts import WeightDelta
from editlab.evaluate import pad_batch, encode_prompt, encode_target
from editlab.finetune import completion_loss, finetune, select_params

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')

PROMPTS = ["The capital of France is", "The sky is", "Grass is"]
TARGETS = ["Rome", "green", "blue"]
DOWNS = 'model.layers.*.mlp.down_proj.weight'

from helpers import weights as _params, same
def _same_params(m, ref): return same(ref, _params(m))

def _loss(m, tok):
    P = [encode_prompt(tok, p) for p in PROMPTS]; T = [encode_target(tok, t) for t in TARGETS]
    ids, mask = pad_batch([p + t for p, t in zip(P, T)], tok.pad_token_id, 'right')
    with torch.no_grad(): return float(completion_loss(m, ids, mask, [len(p) for p in P], [len(t) for t in T]))

def test_finetune_leaves_model_unchanged_and_delta_lowers_loss(llama):
    m, tok = llama
    ref = _params(m)
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    before = _loss(m, tok)
    d, curve = finetune(m, tok, PROMPTS, TARGETS, params=DOWNS, steps=12, lr=1e-2, progress=False)
    assert _same_params(m, ref) and not m.training
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    assert isinstance(d, WeightDelta) and sorted(d.deltas) == sorted(select_params(m, DOWNS)) and len(d) == 2
    assert list(curve.columns) == ['step', 'loss'] and len(curve) == 12 and curve.loss.iloc[-1] < curve.loss.iloc[0]
    assert d.meta['method'] == 'finetune' and d.meta['fingerprint'] == fingerprint(m)
    assert d.meta['hparams']['steps'] == 12 and d.meta['hparams']['n_examples'] == 3
    assert float(d.norms().min()) > 0
    with d.apply(m):
        after = _loss(m, tok)
    assert after < before - 0.1, (before, after)
    assert _same_params(m, ref)
    assert _loss(m, tok) == before

def test_finetune_is_deterministic_and_restores_training_flags(llama):
    m, tok = llama
    keep = m.model.layers[1].mlp.down_proj.weight
    keep.requires_grad_(False); m.train()
    try:
        a, _ = finetune(m, tok, PROMPTS, TARGETS, params=[DOWNS, 'model.norm.weight'], steps=3, lr=1e-2, progress=False)
        assert m.training and not keep.requires_grad and 'model.layers.1.mlp.down_proj.weight' in a.deltas
        b, _ = finetune(m, tok, PROMPTS, TARGETS, params=lambda n: n.endswith('down_proj.weight') or n == 'model.norm.weight',
                        steps=3, lr=1e-2, progress=False)
        assert set(a.deltas) == set(b.deltas) and b.meta['hparams']['params'] == 'filter'
        for n in a.deltas: assert torch.equal(a.dense(n), b.dense(n)), n
    finally:
        keep.requires_grad_(True); m.eval()

def test_finetune_leaves_no_gradients(llama):
    m, tok = llama
    try:
        finetune(m, tok, PROMPTS, TARGETS, params=DOWNS, steps=2, lr=1e-2, progress=False)
        assert all(p.grad is None for p in m.parameters())
    finally:
        for p in m.parameters(): p.grad = None

@pytest.mark.parametrize('max_norm', [1e-4, 2e-3])
def test_finetune_max_norm_bound(llama, max_norm):
    m, tok = llama
    ref = _params(m)
    d, _ = finetune(m, tok, PROMPTS, TARGETS, params=DOWNS, steps=5, lr=1e-1, max_norm=max_norm, progress=False)
    for n in d.deltas:
        x = d.dense(n)
        assert float(x.abs().max()) <= max_norm * (1 + 1e-4) + 1e-7, n
        assert float(x.abs().max()) >= 0.5 * max_norm, n  # lr 0.1 pushes past the bound: the clamp is active
    assert d.meta['hparams']['max_norm'] == max_norm and _same_params(m, ref)

def test_finetune_errors(llama):
    m, tok = llama
    ref = _params(m)
    with pytest.raises(ValueError, match='empty training set'): finetune(m, tok, [], [], progress=False)
    with pytest.raises(ValueError, match='2 prompts but 1 targets'): finetune(m, tok, ["a", "b"], ["c"], progress=False)
    with pytest.raises(ValueError, match='no parameter matches'): finetune(m, tok, PROMPTS, TARGETS, params='nope.*', progress=False)
    with pytest.raises(ValueError, match='no parameter matches'):
        finetune(m, tok, PROMPTS, TARGETS, params=lambda n: False, progress=False)
    with pytest.raises(ValueError, match='steps'): finetune(m, tok, PROMPTS, TARGETS, steps=0, progress=False)
    with pytest.raises(ValueError, match='lr'): finetune(m, tok, PROMPTS, TARGETS, lr=0, progress=False)
    with pytest.raises(ValueError, match='empty'): finetune(m, tok, PROMPTS, ["Rome", "", "x"], progress=False)
    assert _same_params(m, ref) and all(p.requires_grad for p in m.parameters())

def test_finetune_restores_weights_when_training_raises(llama, monkeypatch):
    m, tok = llama
    ref = _params(m)
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    real_step, calls = torch.optim.AdamW.step, []
    def flaky(self, *a, **k):
        calls.append(1)
        if len(calls) == 3: raise RuntimeError("optimizer exploded")
        return real_step(self, *a, **k)  # the first two steps really change the weights
    monkeypatch.setattr(torch.optim.AdamW, 'step', flaky)
    with pytest.raises(RuntimeError, match='optimizer exploded'):
        finetune(m, tok, PROMPTS, TARGETS, params='*', steps=10, lr=1e-1, max_norm=1.0, progress=False)
    assert len(calls) == 3
    assert _same_params(m, ref)
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags and not m.training

def test_finetune_restores_on_keyboard_interrupt(llama, monkeypatch):
    import editlab.finetune as FT
    m, tok = llama
    ref = _params(m)
    real, calls = FT.completion_loss, []
    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(FT, 'completion_loss', interrupted)
    with pytest.raises(KeyboardInterrupt): finetune(m, tok, PROMPTS, TARGETS, params=DOWNS, steps=5, lr=1e-1, progress=False)
    assert _same_params(m, ref)

def test_finetune_on_tied_model_trains_the_shared_matrix_once():
    m, tok = tiny_model('llama', n_layers=1, tie_word_embeddings=True)
    ref = _params(m)
    d, _ = finetune(m, tok, PROMPTS, TARGETS, params='*', steps=3, lr=1e-2, progress=False)
    assert 'lm_head.weight' not in d.deltas and 'model.embed_tokens.weight' in d.deltas
    assert _same_params(m, ref) and m.lm_head.weight is m.model.embed_tokens.weight
    with d.apply(m): assert m.lm_head.weight is m.model.embed_tokens.weight
    assert _same_params(m, ref)
