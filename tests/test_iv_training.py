"""Instruction-vector-guided training (`editlab.iv_training`) and part 1's head ranking: schedules, the KL term, the
guided loop (loss falls, model bitwise unchanged, also on error), the stage driver, bad input, and a planted head that
must rank first by AIE. Tiny random models only."""
import pytest
import torch

from editlab.models import tiny_model, adapter
from editlab.hooks import forward, intervene
from editlab.evaluate import pad_batch, encode_prompt, encode_target
from editlab.finetune import prompt_end_fns, finetune
from editlab.instruction_vectors import (QUERY_TEMPLATE, icl_pairs, mean_head_acts, head_aie, top_aie_heads,
                                         iv_intervention, all_heads)
from editlab.iv_training import SCHEDULES, iv_schedule, iv_kl, iv_finetune, task_probe, continual_finetune

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')

PROMPTS = ["Q: ab\nA:", "Q: cde\nA:", "Q: f\nA:", "Q: gh\nA:"]
TARGETS = ["xy", "z", "uvw", "st"]
KW = dict(params='model.layers.*.mlp.down_proj.weight', steps=12, lr=1e-2, progress=False)

@pytest.fixture(scope='module')
def tm(): return tiny_model('llama', n_layers=2)

@pytest.fixture(scope='module')
def iv(tm):
    torch.manual_seed(0); return iv_intervention(tm[0], torch.randn(adapter(tm[0]).d_model), 0)

def _params(m): return {n: p.detach().clone() for n, p in m.named_parameters()}
def _same(m, ref): return all(torch.equal(p, ref[n]) for n, p in m.named_parameters())

@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_schedules_start_at_one_end_at_zero(name):
    s = iv_schedule(name)
    assert s(0, 20) == 1.0 and s(19, 20) == 0.0
    vals = [s(i, 20) for i in range(20)]
    assert all(0 <= v <= 1 for v in vals) and all(a >= b for a, b in zip(vals, vals[1:]))  # never rises
    assert s(0, 1) == 1.0   # one step: only the start

def test_schedule_bad_names_and_callables():
    for bad in ('exp', 'Linear', ''):
        with pytest.raises(ValueError, match='unknown schedule'): iv_schedule(bad)
    with pytest.raises(ValueError, match='`at` must be'): iv_schedule('step', at=1.5)
    f = lambda s, n: 0.3
    assert iv_schedule(f) is f

def _batch(m, tok, iv, scale=1.0, idx=(0, 1, 2, 3)):
    P = [encode_prompt(tok, PROMPTS[i]) for i in idx]; T = [encode_target(tok, TARGETS[i]) for i in idx]
    ids, mask = pad_batch([p + t for p, t in zip(P, T)], tok.pad_token_id, 'right')
    n_p = [len(p) for p in P]
    with torch.no_grad(), intervene(m, {} if iv is None else prompt_end_fns(iv, n_p, scale)): lg = forward(m, ids, mask).logits
    return dict(idx=list(idx), ids=ids, mask=mask, n_prompt=n_p, n_target=[len(t) for t in T], logits=lg)

@pytest.mark.parametrize('tokens', ['last', 'all'])
def test_kl_zero_when_models_agree(tm, iv, tokens):
    m, tok = tm
    assert float(iv_kl(m, tok, PROMPTS, TARGETS, iv, tokens=tokens)(m, 0, _batch(m, tok, iv))) == pytest.approx(0, abs=1e-5)
    assert float(iv_kl(m, tok, PROMPTS, TARGETS, None, tokens=tokens)(m, 0, _batch(m, tok, None, idx=(2, 0)))) == pytest.approx(0, abs=1e-5)
    k = float(iv_kl(m, tok, PROMPTS, TARGETS, iv, tokens=tokens)(m, 0, _batch(m, tok, None)))
    assert k > 1e-4   # student without the vector differs from the teacher with it
    assert float(iv_kl(m, tok, PROMPTS, TARGETS, iv, weight=0.0, tokens=tokens)(m, 0, _batch(m, tok, None))) == 0.0

def test_kl_bad_input(tm, iv):
    m, tok = tm
    for w in (-1e-3, -1, float('nan'), float('inf'), True, '1'):
        with pytest.raises(ValueError, match='KL weight must be'): iv_kl(m, tok, PROMPTS, TARGETS, iv, weight=w)
        with pytest.raises(ValueError, match='KL weight must be'): iv_finetune(m, tok, PROMPTS, TARGETS, iv, kl_weight=w, **KW)
    with pytest.raises(ValueError, match="'last' or 'all'"): iv_kl(m, tok, PROMPTS, TARGETS, iv, tokens='first')
    with pytest.raises(ValueError, match='as many targets'): iv_kl(m, tok, PROMPTS, TARGETS[:2], iv)

def test_guided_loop_runs_loss_falls_model_unchanged(tm, iv):
    m, tok = tm
    ref = _params(m)
    d, c = iv_finetune(m, tok, PROMPTS, TARGETS, iv, schedule='cosine', kl_weight=0.2, **KW)
    assert _same(m, ref) and all(p.grad is None for p in m.parameters())
    assert list(c.columns) == ['step', 'loss', 'ce', 'reg', 'strength']
    assert c.strength.iloc[0] == 1.0 and c.strength.iloc[-1] == 0.0 and c.reg.iloc[0] == pytest.approx(0, abs=1e-5)
    assert c.ce.iloc[-1] < c.ce.iloc[0] - 0.1
    assert 'IV cosine + KL 0.2' in d.meta['method'] and d.meta['hparams']['regularizer'].startswith('iv_kl')
    d0, c0 = iv_finetune(m, tok, PROMPTS, TARGETS, schedule=None, **KW)   # plain: the same loop
    assert list(c0.columns) == ['step', 'loss'] and c0.loss.iloc[-1] < c0.loss.iloc[0] and _same(m, ref)
    d1, _ = finetune(m, tok, PROMPTS, TARGETS, **KW)
    for n in d0.deltas: assert torch.equal(d0.dense(n), d1.dense(n))   # plain iv_finetune is finetune

def test_kl_without_iv_is_the_stay_close_control(tm, iv):
    # kl_iv=False: the teacher is the frozen model without the vector, so the KL starts at 0 and the vector is not used
    m, tok = tm
    ref = _params(m)
    d, c = iv_finetune(m, tok, PROMPTS, TARGETS, iv, schedule=None, kl_weight=0.5, kl_iv=False, **KW)
    _, c_none = iv_finetune(m, tok, PROMPTS, TARGETS, None, schedule=None, kl_weight=0.5, kl_iv=False, **KW)
    _, c_iv = iv_finetune(m, tok, PROMPTS, TARGETS, iv, schedule=None, kl_weight=0.5, **KW)
    assert c.reg.iloc[0] == pytest.approx(0, abs=1e-5) and c_iv.reg.iloc[0] > 1e-4
    assert c.reg.tolist() == pytest.approx(c_none.reg.tolist(), abs=1e-6) and c.reg.iloc[-1] > 0
    assert 'KL 0.5 (no IV)' in d.meta['method'] and c.ce.iloc[-1] < c.ce.iloc[0]
    assert _same(m, ref)

def test_bad_input_leaves_model_untouched(tm, iv):
    m, tok = tm
    ref = _params(m)
    with pytest.raises(ValueError, match='unknown schedule'): iv_finetune(m, tok, PROMPTS, TARGETS, iv, schedule='warmup', **KW)
    with pytest.raises(ValueError, match='needs the vector'): iv_finetune(m, tok, PROMPTS, TARGETS, None, kl_weight=1.0, schedule=None, **KW)
    with pytest.raises(ValueError, match='needs the vector'): iv_finetune(m, tok, PROMPTS, TARGETS, None, **KW)
    other, _ = tiny_model('gpt2', n_layers=2)
    with pytest.raises(Exception): iv_finetune(m, tok, PROMPTS, TARGETS, iv_intervention(other, torch.zeros(adapter(other).d_model), 0), **KW)
    assert _same(m, ref)

def test_interrupted_training_and_stages_restore_weights(tm, iv):
    m, tok = tm
    ref = _params(m)
    def boom(model, step, batch):
        if step == 3: raise KeyboardInterrupt
        return batch['logits'].sum() * 0
    with pytest.raises(KeyboardInterrupt): finetune(m, tok, PROMPTS, TARGETS, regularizer=boom, intervention=iv, **KW)
    assert _same(m, ref)
    items = [dict(input=c, output=c.upper()) for c in 'abcdefghij']
    st = [dict(name=f's{k}', prompts=PROMPTS, targets=TARGETS, iv=iv) for k in range(2)]
    calls = []
    def probe(model):
        calls.append(1)
        if len(calls) == 3: raise RuntimeError('probe failed')
        return task_probe(model, tok, items[:3], items[3:], iv)
    with pytest.raises(RuntimeError, match='probe failed'): continual_finetune(m, tok, st, probe, **{**KW, 'steps': 3})
    assert _same(m, ref)
    sc, ds, cv = continual_finetune(m, tok, st, lambda mm: {'x': 1.0}, base_scores={'x': 0.0}, schedule='step', **{**KW, 'steps': 3})
    assert list(sc.x) == [0.0, 1.0, 1.0] and len(ds) == 2 and _same(m, ref)
    with pytest.raises(ValueError, match='lacks'): continual_finetune(m, tok, [dict(name='a')], probe)

def test_planted_head_ranks_first_by_aie():
    # every head is silenced (o_proj zero) except (1, 2), whose o_proj maps the clean-minus-corrupted direction of its
    # own output onto the answers' unembedding direction (the bias cancels the corrupted mean): patching its clean mean
    # into a corrupted prompt raises P(answer), and no other head can change anything
    m, tok = tiny_model('llama', n_layers=2, attention_bias=True)
    ad = adapter(m)
    items = [dict(input=w, output=o) for w, o in zip(['cat', 'dog', 'sun', 'car', 'tree', 'fish', 'book', 'rain'],
                                                     ['red', 'blue', 'green', 'gold', 'pink', 'gray', 'teal', 'navy'])]
    pairs = icl_pairs(items, items, n_demos=3, seed=0)
    L, h = 1, 2
    with torch.no_grad():
        for l in range(ad.n_layers): ad.o_proj(l).weight.zero_(); ad.o_proj(l).bias.zero_()
        zc = mean_head_acts(m, tok, list(pairs.clean))[L, h]
        zx = mean_head_acts(m, tok, list(pairs.corrupt))[L, h]
        u = (zc - zx) / (zc - zx).norm()**2
        ans = torch.tensor([encode_target(tok, a)[0] for a in pairs.answer])
        d = m.lm_head.weight[ans].mean(0); d = d / d.norm()
        ad.o_proj(L).weight[:, h*ad.head_dim:(h+1)*ad.head_dim] = 5 * d[:, None] * u[None, :]
        ad.o_proj(L).bias.copy_(-5 * d * (u @ zx))
    aie = head_aie(m, tok, pairs, mean_head_acts(m, tok, list(pairs.clean)))
    assert top_aie_heads(aie, 1) == [(L, h)]
    rest = aie[(aie['layer'] != L) | (aie['head'] != h)]
    assert float(rest.aie.abs().max()) < 1e-6 and float(aie.aie.max()) > 1e-3
