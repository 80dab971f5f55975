"""Merging: the generalized routine against hand-computed TIES / DARE results and brute-force references, the registry,
the weighted-election rule (mergekit #474), in-memory vs streaming merges of tiny checkpoints (same numbers, loadable
output, nothing left behind on failure), and bad input. Tiny random models only."""
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from transformers import AutoModelForCausalLM

from editlab.models import tiny_model, tiny_tokenizer
from editlab.task_vectors import TaskVector
from editlab.merging import (MERGE_METHODS, MergeSpec, merge, merge_checkpoints, merge_method, merge_spec, merge_tensor,
                             _chunks)
import editlab.merging as M

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

def _rows(ts): return [lambda r0, r1, t=t: t[r0:r1] for t in ts]

def _ties_reference(ts, w, density, weighted=False):
    "Brute-force TIES: exact top-k by argsort (as mergekit), sign of the total, disjoint weighted mean"
    out = []
    for t in ts:
        k = max(1, int(density * t.numel())); m = torch.zeros(t.numel())
        m[torch.argsort(t.abs().reshape(-1), descending=True)[:k]] = 1
        out.append(t * m.view(t.shape))
    D = torch.stack(out); W = torch.tensor(w).view(-1, *[1]*(D.dim()-1))
    votes = (D*W if weighted else D).sum(0)
    sign = torch.where(votes >= 0, 1.0, -1.0)
    agree = (torch.sign(D) == sign).float()
    den = (W*agree).sum(0)
    return torch.where(den != 0, (D*W*agree).sum(0) / torch.where(den != 0, den, 1.0), 0.0)

def test_ties_by_hand():
    T = [torch.tensor([1., -2, 0.5, 3]), torch.tensor([-3., 1, 0.2, 1.5]), torch.tensor([0.5, 1, -4, -0.1])]
    got = merge_tensor('x', (4,), _rows(T), torch.ones(3), merge_spec('ties', density=0.5))
    assert got.tolist() == [-3.0, -2.0, -4.0, 2.25]
    assert merge_tensor('x', (4,), _rows(T), torch.ones(3), merge_spec('ties', density=0.5, lam=0.5)).tolist() == [-1.5, -1.0, -2.0, 1.125]
    ta = merge_tensor('x', (4,), _rows(T), torch.ones(3), merge_spec('task_arithmetic'))
    torch.testing.assert_close(ta, torch.tensor([-1.5, 0., -3.3, 4.4]))

def test_weighted_election_rule():
    T = [torch.tensor([2.]), torch.tensor([-1.])]; w = torch.tensor([0.2, 1.])
    assert merge_tensor('x', (1,), _rows(T), w, merge_spec('ties', density=1)).tolist() == [2.0]      # TIES paper
    assert merge_tensor('x', (1,), _rows(T), w, merge_spec('ties', density=1, weighted_election=True)).tolist() == [-1.0]  # mergekit

@SETTINGS
@given(seed=st.integers(0, 10_000), n=st.integers(1, 4), density=st.sampled_from([0.1, 0.2, 0.5, 1.0]),
       weighted=st.booleans(), rows=st.integers(1, 9), cols=st.integers(1, 7))
def test_ties_matches_brute_force(seed, n, density, weighted, rows, cols):
    g = torch.Generator().manual_seed(seed)
    ts = [torch.randn(rows, cols, generator=g) for _ in range(n)]
    w = (torch.rand(n, generator=g) + 0.1).tolist()
    got = merge_tensor('x', (rows, cols), _rows(ts), torch.tensor(w), merge_spec('ties', density=density, weighted_election=weighted))
    torch.testing.assert_close(got, _ties_reference(ts, w, density, weighted), atol=1e-6, rtol=1e-5)

@SETTINGS
@given(seed=st.integers(0, 10_000), lam=st.floats(-2, 2, allow_nan=False))
def test_task_arithmetic_is_weighted_sum(seed, lam):
    g = torch.Generator().manual_seed(seed)
    ts = [torch.randn(5, 3, generator=g) for _ in range(3)]; w = [0.5, -1.0, 2.0]
    got = merge_tensor('x', (5, 3), _rows(ts), torch.tensor(w), merge_spec('task_arithmetic', lam=lam))
    torch.testing.assert_close(got, lam * sum(wi*t for wi, t in zip(w, ts)), atol=1e-5, rtol=1e-5)

def test_dare_rate_rescale_and_seed():
    one = [lambda r0, r1: torch.ones(20_000)[r0:r1]]
    d = merge_tensor('x', (20_000,), one, torch.ones(1), merge_spec('dare', p=0.9), seed=3)
    assert set(d.unique().tolist()) == {0.0, 10.0}
    assert abs(float((d != 0).float().mean()) - 0.1) < 0.01
    assert torch.equal(d, merge_tensor('x', (20_000,), one, torch.ones(1), merge_spec('dare', p=0.9), seed=3))
    assert not torch.equal(d, merge_tensor('x', (20_000,), one, torch.ones(1), merge_spec('dare', p=0.9), seed=4))
    assert not torch.equal(d, merge_tensor('y', (20_000,), one, torch.ones(1), merge_spec('dare', p=0.9), seed=3))  # per tensor
    nr = merge_tensor('x', (20_000,), one, torch.ones(1), merge_spec('dare', p=0.9, rescale=False), seed=3)
    assert set(nr.unique().tolist()) == {0.0, 1.0}

def test_dare_ties_is_dare_then_ties():
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(50, 8, generator=g) for _ in range(3)]
    spec = merge_spec('dare_ties', p=0.5, density=0.5)
    got = merge_tensor('t', (50, 8), _rows(ts), torch.ones(3), spec, seed=7)
    # DARE alone with the same seed, then TIES of the dropped vectors
    dropped = [M._drop(t, spec, 7, 't', i, 0) for i, t in enumerate(ts)]
    torch.testing.assert_close(got, _ties_reference(dropped, [1., 1., 1.], 0.5), atol=1e-6, rtol=1e-5)

def test_chunking_does_not_change_results(monkeypatch):
    g = torch.Generator().manual_seed(1)
    ts = [torch.randn(40, 6, generator=g) for _ in range(3)]
    for meth, hp in (('ties', dict(density=0.3)), ('dare_ties', dict(p=0.3, density=0.6)), ('task_arithmetic', {})):
        spec = merge_spec(meth, **hp)
        whole = merge_tensor('t', (40, 6), _rows(ts), torch.ones(3), spec, seed=2)
        monkeypatch.setattr(M, 'CHUNK', 12)   # 2 rows per chunk
        assert len(_chunks((40, 6))) == 20
        chunked = merge_tensor('t', (40, 6), _rows(ts), torch.ones(3), spec, seed=2)
        monkeypatch.setattr(M, 'CHUNK', 1 << 22)
        if meth == 'dare_ties': assert chunked.shape == whole.shape   # DARE masks are drawn per chunk (documented)
        else: torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)

def test_registry_and_custom_method():
    assert {'task_arithmetic', 'ties', 'dare', 'dare_ties'} <= set(MERGE_METHODS)
    @merge_method(name='_mean_test')
    def _mean(lam=1.0): return MergeSpec(normalize=True, lam=lam)
    try:
        T = [torch.tensor([1., 3.]), torch.tensor([3., 5.])]
        assert merge_tensor('x', (2,), _rows(T), torch.ones(2), merge_spec('_mean_test')).tolist() == [2.0, 4.0]
    finally: del MERGE_METHODS['_mean_test']

@pytest.mark.parametrize('bad', [dict(p=1.0), dict(p=-0.1), dict(p=float('nan'))])
def test_bad_dare(bad):
    with pytest.raises(ValueError): merge_spec('dare', **bad)

@pytest.mark.parametrize('bad', [dict(density=0), dict(density=1.5), dict(lam=float('inf')), dict(trim='layer')])
def test_bad_ties(bad):
    with pytest.raises(ValueError): merge_spec('ties', **bad)

# ---------------------------------------------------------------------------------------------- on tiny models

@pytest.fixture(scope='module')
def fam():
    base, tok = tiny_model('llama', seed=0)
    others = [tiny_model('llama', seed=s)[0] for s in (1, 2, 3)]
    return base, tok, others, [TaskVector.from_models(base, m) for m in others]

def test_merge_bad_input(fam):
    base, tok, others, tvs = fam
    with pytest.raises(ValueError, match='nothing to merge'): merge([], 'ties')
    with pytest.raises(ValueError, match='3 inputs but 1 weights'): merge(tvs, 'ties', weights=[1])
    with pytest.raises(ValueError, match='weights must be finite'): merge(tvs, 'ties', weights=[1, float('nan'), 1])
    with pytest.raises(ValueError, match='unknown merge method'): merge(tvs, 'slerp')
    bad = TaskVector({'model.norm.weight': torch.zeros(3)})
    with pytest.raises(ValueError, match='shapes'): merge([tvs[0], bad], 'ties')

def test_merge_global_trim(fam):
    tvs = fam[3]
    g = merge(tvs, 'ties', density=0.1, trim='global')
    def thr(t):   # each vector keeps 10% of all its entries, not 10% of each tensor
        a = torch.cat([t.dense(k).reshape(-1) for k in t.deltas]).abs()
        return a.kthvalue(a.numel() - int(0.1*a.numel()) + 1).values
    n = 'model.layers.0.self_attn.q_proj.weight'
    trimmed = [t.dense(n) * (t.dense(n).abs() >= thr(t)) for t in tvs]
    torch.testing.assert_close(g[n], _ties_reference(trimmed, [1., 1., 1.], 1.0), atol=1e-6, rtol=1e-5)

def test_merge_missing_tensor_counts_as_zero(fam):
    tvs = fam[3]
    part = TaskVector({n: tvs[1].dense(n) for n in list(tvs[1].deltas)[:3]})
    m = merge([tvs[0], part], 'task_arithmetic')
    n_last = list(tvs[0].deltas)[-1]
    torch.testing.assert_close(m[n_last], tvs[0][n_last])

def _save(m, tok, d):
    m.save_pretrained(d); tok.save_pretrained(d); return d

@pytest.mark.parametrize('meth,hp', [('ties', dict(density=0.2)), ('task_arithmetic', dict(lam=0.7)),
                                     ('dare', dict(p=0.5)), ('dare_ties', dict(p=0.3, density=0.5))])
def test_streaming_equals_in_memory(fam, tmp_path, meth, hp):
    base, tok, others, tvs = fam
    b = _save(base, tok, tmp_path/'base'); cks = [_save(m, tok, tmp_path/f'm{i}') for i, m in enumerate(others)]
    out = merge_checkpoints(b, cks, tmp_path/'out', meth, weights=[1, 0.5, 2], shard_mb=0.1, progress=False, seed=5, **hp)
    merged = AutoModelForCausalLM.from_pretrained(out)
    mem = merge(tvs, meth, weights=[1, 0.5, 2], seed=5, **hp)
    for n, p in merged.named_parameters():
        ref = dict(base.named_parameters())[n] + mem[n]
        assert float((p - ref).abs().max()) < 1e-6, n
    assert (out/'config.json').exists() and (out/'tokenizer.json').exists() and (out/'editlab_merge.json').exists()
    assert json.loads((out/'model.safetensors.index.json').read_text())['weight_map']

def test_streaming_bad_input_leaves_nothing(fam, tmp_path):
    base, tok, others, _ = fam
    b = _save(base, tok, tmp_path/'base'); a = _save(others[0], tok, tmp_path/'a')
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='holds no weights'):
        merge_checkpoints(b, [a, tmp_path/'empty'], tmp_path/'out', progress=False)
    (tmp_path/'pk').mkdir(); torch.save({'x': torch.ones(1)}, tmp_path/'pk'/'pytorch_model.bin')
    with pytest.raises(ValueError, match='never unpickles'): merge_checkpoints(b, [tmp_path/'pk'], tmp_path/'out', progress=False)
    t2 = tiny_tokenizer(); t2.add_tokens(['<x>'])
    c = _save(others[1], t2, tmp_path/'c')
    with pytest.raises(ValueError, match='tokenizers differ'): merge_checkpoints(b, [a, c], tmp_path/'out', progress=False)
    with pytest.raises(ValueError, match='nothing to merge'): merge_checkpoints(b, [], tmp_path/'out', progress=False)
    with pytest.raises(ValueError, match="trim='global'"): merge_checkpoints(b, [a], tmp_path/'out', trim='global', progress=False)
    assert not (tmp_path/'out').exists()
    assert not [p for p in tmp_path.iterdir() if 'partial' in p.name]   # no half-written folder left

def test_streaming_nonfinite_result_cleans_up(fam, tmp_path, monkeypatch):
    base, tok, others, _ = fam
    b = _save(base, tok, tmp_path/'base'); a = _save(others[0], tok, tmp_path/'a')
    with pytest.raises(ValueError, match='not finite'):
        merge_checkpoints(b, [a], tmp_path/'out', 'task_arithmetic', lam=1e39, progress=False)
    assert not (tmp_path/'out').exists() and not [p for p in tmp_path.iterdir() if 'partial' in p.name]
