"""Causal tracing (editlab.tracing): argument checks with clear errors, and invariances on tiny random models of several
families — noise 0 gives the clean score everywhere, the last block at the last token recovers the clean score, the cached
prefix equals full recomputation, the batched grid equals one forward per cell, seeded runs repeat, and no hook survives
an exception."""
import math

import pandas as pd
import pytest
import torch

from editlab.models import tiny_model, adapter
from editlab.hooks import capture, forward, hook_name, intervene
from editlab.evaluate import encode_prompt, subject_span
from editlab.tracing import (TRACE_KINDS, average_effects, noise_level, suggest_layer, token_classes, trace, trace_kinds,
                             window_layers)

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')
P, S = "The capital of Italy is", "Italy"
FAMILIES = ['llama', 'gpt2', 'gemma', 'gemma2', 'opt']

@pytest.fixture(scope='module', params=FAMILIES)
def peaked(request):
    "A tiny model with large random weights (peaked predictions, so restoring a state matters)"
    return request.param, *tiny_model(request.param, n_layers=2, initializer_range=0.3)

def _n_hooks(m): return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())

# ------------------------------------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize('kw, msg', [
    (dict(subject="Paris"), 'does not occur'), (dict(window=0), 'window must be'), (dict(samples=0), 'samples must be'),
    (dict(samples=2.5), 'samples must be'), (dict(batch_size=0), 'batch_size must be'), (dict(noise=-0.1), 'noise must be'),
    (dict(noise=float('nan')), 'noise must be'), (dict(noise=float('inf')), 'noise must be'), (dict(noise=True), 'noise must be'),
    (dict(kind='embed'), 'unknown kind'), (dict(layers=[2]), 'out of range'), (dict(layers=[]), 'no layers'),
    (dict(target=" "), 'empty')])
def test_bad_arguments(llama, kw, msg):
    m, tk = llama
    args = dict(subject=S, noise=1.0, samples=2) | kw
    with pytest.raises((ValueError, IndexError), match=msg): trace(m, tk, P, **args)
    assert _n_hooks(m) == 0

def test_bad_effects_arguments(llama):
    m, tk = llama
    with pytest.raises(ValueError, match='no facts'): average_effects(m, tk, [], progress=False)
    with pytest.raises(ValueError, match='record 1'):
        average_effects(m, tk, [dict(subject=S, prompt=P), dict(subject="Rome", prompt=P)], progress=False)
    with pytest.raises(ValueError, match='unknown kind'): average_effects(m, tk, [dict(subject=S, prompt=P)], kind='x', progress=False)
    with pytest.raises(ValueError, match='finite'): noise_level(m, tk, [S], factor=-1)
    with pytest.raises(ValueError, match='no subjects'): noise_level(m, tk, [])
    with pytest.raises(ValueError, match='does not fit'): token_classes(3, (1, 5))

# ------------------------------------------------------------------------------------------------ invariances

def test_noise_zero_is_clean(peaked):
    fam, m, tk = peaked
    for kind, r in trace_kinds(m, tk, P, S, noise=0.0, samples=2, window=2).items():
        assert torch.allclose(r.scores, torch.full_like(r.scores, r.p_clean), atol=1e-5), (fam, kind)
        assert math.isclose(r.p_corrupted, r.p_clean, abs_tol=1e-5)

def test_last_block_last_token_is_clean(peaked):
    fam, m, tk = peaked
    r = trace(m, tk, P, S, noise=3.0, samples=3)
    assert abs(float(r.scores[-1, -1]) - r.p_clean) < 1e-5, fam
    s, e = subject_span(tk, P, S)
    assert torch.equal(r.scores[:, :s], torch.full((2, s), r.p_corrupted))   # before the subject nothing changes

def test_cached_prefix_equals_full(peaked):
    fam, m, tk = peaked
    a = trace_kinds(m, tk, P, S, noise=2.0, samples=3, window=2, batch_size=5)
    b = trace_kinds(m, tk, P, S, noise=2.0, samples=3, window=2, reuse_prefix=False)
    for k in TRACE_KINDS: assert torch.allclose(a[k].scores, b[k].scores, atol=1e-5), (fam, k)

def test_seeded(peaked):
    fam, m, tk = peaked
    a, b = trace(m, tk, P, S, noise=2.0, samples=2), trace(m, tk, P, S, noise=2.0, samples=2)
    assert torch.equal(a.scores, b.scores) and a.p_corrupted == b.p_corrupted

@pytest.mark.parametrize('kind', list(TRACE_KINDS))
def test_batched_equals_one_forward_per_cell(kind):
    "The naive algorithm, written out: one forward of `samples` rows per (layer, token) cell, all tokens"
    m, tk = tiny_model('llama', n_layers=3, initializer_range=0.3)
    samples, noise, window = 3, 2.0, 2
    ids = encode_prompt(tk, P); s, e = subject_span(tk, P, S); nL, d = adapter(m).n_layers, adapter(m).d_model
    x = torch.tensor([ids])
    eps = torch.randn(samples, e - s, d, generator=torch.Generator().manual_seed(0)) * noise
    def corrupt(a, ctx): a = a.clone(); a[:, s:e] += eps; return a
    with capture(m, f'blocks.*.{TRACE_KINDS[kind]}') as c: ans = int(forward(m, x).logits[0, -1].argmax())
    ref = torch.zeros(nL, len(ids))
    for L in range(nL):
        for t in range(len(ids)):
            fns = {'blocks.0.hook_resid_pre': corrupt}
            for M in ([L] if kind == 'resid' else window_layers(nL, L, window)):
                n = hook_name(M, TRACE_KINDS[kind])
                def restore(a, ctx, n=n, t=t): a = a.clone(); a[:, t] = c[n][0, t]; return a
                fns[n] = restore
            with intervene(m, fns): ref[L, t] = forward(m, x.expand(samples, -1)).logits[:, -1].softmax(-1)[:, ans].mean()
    got = trace(m, tk, P, S, kind=kind, window=window, samples=samples, noise=noise, batch_size=4)
    assert torch.allclose(got.scores, ref, atol=1e-5)
    assert float(ref.max() - ref.min()) > 0.05

@pytest.mark.parametrize('fam', ['llama', 'gpt2'])
def test_hooks_removed_after_exception(fam):
    m, tk = tiny_model(fam, n_layers=2)
    x = torch.tensor([encode_prompt(tk, P)])
    plain = forward(m, x).logits
    def boom(mod, args, out): raise RuntimeError("boom")
    h = adapter(m).block(1).register_forward_hook(boom)
    with pytest.raises(RuntimeError, match='boom'): trace(m, tk, P, S, samples=2, noise=1.0)
    h.remove()
    assert _n_hooks(m) == 0 and m._editlab_state.users == 0
    assert torch.equal(forward(m, x).logits, plain)

# ------------------------------------------------------------------------------------------------ aggregation

def test_average_effects_and_suggest_layer(llama):
    m, tk = llama
    recs = [dict(subject=S, prompt=P), dict(subject="X", prompt="X is located in", target_true="Warsaw")]
    eff = average_effects(m, tk, recs, kind=('resid', 'mlp'), window=2, samples=2, noise=1.0, progress=False)
    assert set(eff.kind) == {'resid', 'mlp'} and len(eff) == 2 * 6 * 2
    assert (eff[eff.kind == 'resid'].window == 1).all() and (eff[eff.kind == 'mlp'].window == 2).all()
    assert eff.attrs['n_facts'] == 2 and eff.attrs['noise'] == 1.0
    r = trace(m, tk, "X is located in", "X", target="Warsaw", samples=2, noise=1.0)
    r0 = trace(m, tk, P, S, samples=2, noise=1.0)
    want = ((r.scores[:, -1] - r.p_corrupted) + (r0.scores[:, -1] - r0.p_corrupted)) / 2
    got = eff[(eff.kind == 'resid') & (eff.token_class == 'last token')].sort_values('layer').aie.to_numpy()
    assert torch.allclose(torch.tensor(got, dtype=torch.float32), want, atol=1e-6)
    assert suggest_layer(eff, 'resid', exclude=()) in (0, 1)
    toy = pd.DataFrame(dict(kind='mlp', token_class='last subject token', layer=range(6), window=1, aie=[.9, .1, .5, .2, 0, 0]))
    assert suggest_layer(toy, exclude=()) == 0 and suggest_layer(toy) == 2
