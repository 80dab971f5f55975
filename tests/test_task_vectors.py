"""Task vectors: construction from models / state dicts / checkpoint folders (checks naming the first mismatch), the
algebra as hypothesis properties on real task vectors of tiny models, apply_to / undo (bitwise), bad input (empty list,
non-finite or overflowing alpha, folders without weights, pickle checkpoints, other vocabularies or architectures),
compression and the PEFT LoRA round trip. Tiny random models only."""
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import save_file

from editlab.models import tiny_model, tiny_tokenizer
from editlab.artifacts import LowRank, WeightDelta
from editlab.task_vectors import (TaskVector, analogy, checkpoint_layout, combine, low_rank, reconstruction_error,
                                  sparsify_topk, to_peft_lora, greedy_match, skill_score)

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

@pytest.fixture(scope='module')
def models():
    return [tiny_model('llama', seed=s)[0] for s in range(4)]

@pytest.fixture(scope='module')
def tvs(models):
    b = models[0]
    return [TaskVector.from_models(b, m) for m in models[1:]]

def _params(m): return {n: p.detach().clone() for n, p in m.named_parameters()}
def _same(m, ref): return all(torch.equal(p, ref[n]) for n, p in m.named_parameters())
def _close(a, b, tol=1e-5):
    assert set(a.deltas) == set(b.deltas)
    for n in a.deltas: torch.testing.assert_close(a.dense(n), b.dense(n), atol=tol, rtol=tol)

# ---------------------------------------------------------------------------------------------- construction

def test_from_models_is_the_difference(models):
    b, t = models[0], models[1]
    tv = TaskVector.from_models(b, t)
    pb, pt = dict(b.named_parameters()), dict(t.named_parameters())
    assert set(tv.deltas) == set(pb)
    assert all(torch.equal(tv[n], pt[n].float() - pb[n].float()) for n in tv.deltas)
    assert tv.meta['fingerprint']

def test_state_dicts_skip_integer_buffers(models):
    a = {**models[0].state_dict(), 'counter': torch.tensor([1, 2]), 'mask': torch.ones(3, dtype=torch.bool)}
    b = {**models[1].state_dict(), 'counter': torch.tensor([5, 6]), 'mask': torch.zeros(3, dtype=torch.bool)}
    tv = TaskVector.from_state_dicts(a, b)
    assert 'counter' not in tv.deltas and 'mask' not in tv.deltas
    assert tv.meta['skipped'] == ['counter', 'mask']

def test_checkpoints_equal_models_and_one_tensor_at_a_time(models, tmp_path):
    tok = tiny_tokenizer()
    for name, m in (('a', models[0]), ('b', models[1])):
        m.save_pretrained(tmp_path/name); tok.save_pretrained(tmp_path/name)
    tv = TaskVector.from_checkpoints(tmp_path/'a', tmp_path/'b')
    ref = TaskVector.from_models(models[0], models[1])
    assert all(torch.equal(tv[n], ref[n]) for n in ref.deltas)
    lay = checkpoint_layout(tmp_path/'a')
    assert all(len(v) == 3 and isinstance(v[1], tuple) for v in lay.values())

def test_sharded_checkpoint(models, tmp_path):
    sd = {n: p.detach().contiguous() for n, p in models[0].named_parameters()}
    names = list(sd); half = len(names)//2
    (tmp_path/'s').mkdir()
    save_file({k: sd[k] for k in names[:half]}, str(tmp_path/'s'/'model-00001-of-00002.safetensors'))
    save_file({k: sd[k] for k in names[half:]}, str(tmp_path/'s'/'model-00002-of-00002.safetensors'))
    (tmp_path/'s'/'model.safetensors.index.json').write_text(json.dumps({'weight_map': {
        k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(names)}}))
    models[1].save_pretrained(tmp_path/'t')
    tv = TaskVector.from_checkpoints(tmp_path/'s', tmp_path/'t')
    assert len(tv) == len(names)

# ---------------------------------------------------------------------------------------------- bad input

def test_different_shapes_or_architecture(models, tmp_path):
    other = tiny_model('llama', intermediate_size=80)[0]
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.gate_proj.weight' has shape \(96, 64\)"):
        TaskVector.from_models(models[0], other)
    deeper = tiny_model('llama', n_layers=3)[0]
    with pytest.raises(ValueError, match=r"model.layers.2.* is in the tuned but not in the base"):
        TaskVector.from_models(models[0], deeper)
    gpt2 = tiny_model('gpt2')[0]
    models[0].save_pretrained(tmp_path/'l'); gpt2.save_pretrained(tmp_path/'g')
    with pytest.raises(ValueError, match="different architectures"): TaskVector.from_checkpoints(tmp_path/'l', tmp_path/'g')

def test_dtype_mismatch(models):
    a = {n: p.detach() for n, p in models[0].named_parameters()}
    b = {n: p.detach().half() if n == 'model.norm.weight' else p.detach() for n, p in models[1].named_parameters()}
    with pytest.raises(ValueError, match="'model.norm.weight' is float32 in the base and float16"):
        TaskVector.from_state_dicts(a, b)

def test_different_vocabularies(models, tmp_path):
    t1, t2 = tiny_tokenizer(), tiny_tokenizer()
    t2.add_tokens(['<extra>'])
    with pytest.raises(ValueError, match="token id 259 is None in the base and '<extra>'"):
        TaskVector.from_models(models[0], models[1], t1, t2)
    models[0].save_pretrained(tmp_path/'a'); t1.save_pretrained(tmp_path/'a')
    models[1].save_pretrained(tmp_path/'b'); t2.save_pretrained(tmp_path/'b')
    with pytest.raises(ValueError, match="tokenizers differ"): TaskVector.from_checkpoints(tmp_path/'a', tmp_path/'b')
    TaskVector.from_checkpoints(tmp_path/'a', tmp_path/'b', check_tokenizer=False)   # opt out

def test_no_weights_and_pickle_refused(models, tmp_path):
    models[0].save_pretrained(tmp_path/'a')
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='holds no weights'): TaskVector.from_checkpoints(tmp_path/'a', tmp_path/'empty')
    (tmp_path/'pk').mkdir()
    torch.save({'x': torch.ones(1)}, tmp_path/'pk'/'pytorch_model.bin')
    with pytest.raises(ValueError, match='never unpickles'): TaskVector.from_checkpoints(tmp_path/'a', tmp_path/'pk')
    with pytest.raises(FileNotFoundError, match='not a folder'): TaskVector.from_checkpoints(tmp_path/'a', tmp_path/'nope')

def test_empty_list_and_bad_alpha(models, tvs):
    with pytest.raises(ValueError, match='no task vectors'): combine([])
    m = models[0]; ref = _params(m)
    for bad in (float('nan'), float('inf'), -float('inf')):
        with pytest.raises(ValueError, match='alpha must be finite'): tvs[0].apply_to(m, bad)
    with pytest.raises(TypeError): tvs[0].apply_to(m, True)
    with pytest.raises(ValueError, match='overflows'): tvs[0].apply_to(m, 1e42)
    assert _same(m, ref) and not getattr(m, '_editlab_edits', [])

def test_alpha_overflow_in_half_precision(models):
    m = tiny_model('llama', seed=0)[0].half()
    tv = TaskVector.from_models(models[0], models[1])
    ref = _params(m)
    with pytest.raises(ValueError, match='in float16'): tv.apply_to(m, 1e6, strict=False)   # fine in fp32, not in fp16
    assert _same(m, ref)
    with tv.apply_to(m, 1.0, strict=False): assert not _same(m, ref)
    assert _same(m, ref)

# ---------------------------------------------------------------------------------------------- algebra (hypothesis)

coef = st.floats(-3, 3, allow_nan=False, allow_infinity=False)

@SETTINGS
@given(i=st.integers(0, 2), j=st.integers(0, 2), k=st.integers(0, 2))
def test_add_associative_commutative(tvs, i, j, k):
    a, b, c = tvs[i], tvs[j], tvs[k]
    _close((a + b) + c, a + (b + c))
    _close(a + b, b + a, tol=0)   # float addition is commutative exactly

@SETTINGS
@given(i=st.integers(0, 2))
def test_negation_cancels(tvs, i):
    a = tvs[i]
    z = (-a) + a
    assert all(torch.equal(z[n], torch.zeros_like(z[n])) for n in z.deltas)
    _close(a - a, z, tol=0)

@SETTINGS
@given(i=st.integers(0, 2), j=st.integers(0, 2), x=coef, y=coef)
def test_scalar_distributivity(tvs, i, j, x, y):
    a, b = tvs[i], tvs[j]
    _close(x * (a + b), x * a + x * b, tol=1e-4)
    _close((x + y) * a, x * a + y * a, tol=1e-4)

@SETTINGS
@given(i=st.integers(0, 2), j=st.integers(0, 2), k=st.integers(0, 2))
def test_analogy(tvs, i, j, k):
    _close(analogy(tvs[i], tvs[j], tvs[k]), tvs[i] + tvs[k] - tvs[j], tol=1e-5)

@SETTINGS
@given(i=st.integers(0, 2), alpha=coef)
def test_apply_undo_bitwise(models, tvs, i, alpha):
    m = models[0]; ref = _params(m)
    h = tvs[i].apply_to(m, alpha)
    if abs(alpha) > 1e-3: assert not _same(m, ref)   # tiny alphas can round to no change
    h.undo()
    assert _same(m, ref)

def test_apply_gives_the_tuned_model(models, tvs):
    m = models[0]
    x = torch.randint(0, 250, (2, 6))
    with tvs[0].apply_to(m): got = m(x).logits
    torch.testing.assert_close(got, models[1](x).logits, atol=1e-5, rtol=1e-4)

def test_save_load_roundtrip(tvs, tmp_path):
    p = tvs[0].save(tmp_path/'tv.safetensors')
    back = TaskVector.load(p)
    assert all(torch.equal(back[n], tvs[0][n]) for n in tvs[0].deltas)

# ---------------------------------------------------------------------------------------------- compression, LoRA

def test_low_rank_and_topk(tvs):
    tv = tvs[0]
    e = [reconstruction_error(tv, low_rank(tv, rank=r)) for r in (1, 4, 16)]
    assert e[0] > e[1] > e[2] >= 0
    assert reconstruction_error(tv, low_rank(tv, energy=1.0)) < 1e-5
    s = sparsify_topk(tv, 0.1)
    n = 'model.layers.0.mlp.up_proj.weight'
    assert abs(float((s[n] != 0).float().mean()) - 0.1) < 0.01
    assert isinstance(low_rank(tv, rank=2).deltas[n], LowRank)

def test_peft_lora_round_trip(models, tmp_path):
    peft = pytest.importorskip('peft')
    b = tiny_model('llama', seed=0)[0]
    lin = [n for n, p in b.named_parameters() if p.dim() == 2 and 'embed' not in n and 'lm_head' not in n]
    tv = low_rank(TaskVector.from_models(b, models[2], names=lin), rank=3)
    x = torch.randint(0, 250, (2, 9))
    with tv.apply_to(b): want = b(x).logits
    d = to_peft_lora(tv, b, tmp_path/'lora')
    pm = peft.PeftModel.from_pretrained(tiny_model('llama', seed=0)[0], str(d)).eval()
    got = pm(x).logits
    assert float((got - want).abs().max()) < 1e-4
    with pytest.raises(ValueError, match='nn.Linear'):
        to_peft_lora(TaskVector.from_models(b, models[2], names=['model.embed_tokens.weight']), b, tmp_path/'bad')

def test_greedy_match_agrees_with_generation():
    from editlab.finetune import finetune
    from editlab.evaluate import encode_prompt, encode_target
    m, tok = tiny_model('llama', seed=0)
    tv, _ = finetune(m, tok, ['ab'], ['xy'], steps=40, lr=3e-2, progress=False)
    T = encode_target(tok, 'xy')
    with tv.apply_to(m):
        ids = torch.tensor([encode_prompt(tok, 'ab')])
        g = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(T), do_sample=False, pad_token_id=tok.pad_token_id)
        assert g[0, ids.shape[1]:].tolist() == T                      # greedy decoding writes the target ...
        assert greedy_match(m, tok, ['ab', 'ab'], ['xy', 'zq']).tolist() == [True, False]   # ... and so does the score
        assert skill_score(m, tok, [{'input': 'ab', 'output': 'xy'}, {'input': 'ab', 'output': 'q'}], '{}') == 50.0
    assert greedy_match(m, tok, ['ab'], ['xy']).tolist() == [False]   # not before the fine-tune
