"Instruction vectors: batched per-head patching equals one head at a time, a clean mean patched into its own prompt is a no-op, the vector is the sum of o_proj slices, too few prompts warned about, the position rule stated by the artifact, grouped splits, bad inputs refused, no hooks left."
import pytest, torch
from editlab.instruction_vectors import (icl_pairs, answer_probs, mean_head_acts, head_patch_fns, patched_probs, all_heads,
                                         keep_correct, head_aie, top_aie_heads, head_outputs, instruction_vector,
                                         iv_intervention, iv_layer_sweep, correct_pairs, task_splits, iv_heldout,
                                         function_vector)
from editlab.hooks import forward, encode
from editlab.models import adapter, tiny_model

ITEMS = [dict(input=w, output=w[::-1]) for w in ['ab', 'cd', 'ef', 'gh', 'ij', 'kl']]
PROMPT, ANSWER = "Q: ab\nA: ba\n\nQ: cd\nA: dc\n\nQ: ef\nA:", "fe"

def _hooks_left(m): return sum(len(mod._forward_pre_hooks) + len(mod._forward_hooks) for mod in m.modules())

def test_batched_patching_equals_one_head_at_a_time(llama):
    m, tok = llama
    heads = [None] + all_heads(m)
    vals = torch.randn(len(heads), adapter(m).head_dim) * 3
    batched = patched_probs(m, tok, PROMPT, ANSWER, heads, vals, batch_size=3)   # KV-cache path, uneven chunks
    single = torch.tensor([answer_probs(m, tok, [PROMPT], [ANSWER], fns=head_patch_fns(m, [h], vals[i:i+1])).p[0]
                           for i, h in enumerate(heads)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    assert (batched[1:] - batched[0]).abs().max() > 1e-6   # the patches do something
    assert _hooks_left(m) == 0

def test_patching_in_gpt2_without_the_fast_path_matches():
    m, tok = tiny_model('gpt2', n_layers=2)
    heads = [None, (0, 1), (1, 2)]
    vals = torch.randn(3, adapter(m).head_dim)
    got = patched_probs(m, tok, PROMPT, ANSWER, heads, vals, batch_size=2)
    want = torch.tensor([answer_probs(m, tok, [PROMPT], [ANSWER], fns=head_patch_fns(m, [h], vals[i:i+1])).p[0] for i, h in enumerate(heads)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)

def test_own_clean_mean_changes_nothing(llama):
    m, tok = llama
    mz = mean_head_acts(m, tok, [PROMPT])       # one prompt: the mean is that prompt's activation
    heads = all_heads(m)
    p = patched_probs(m, tok, PROMPT, ANSWER, [None] + heads, torch.cat([torch.zeros(1, mz.shape[-1]), torch.stack([mz[L, h] for L, h in heads])]))
    torch.testing.assert_close(p[1:], p[0].expand(len(heads)), atol=1e-6, rtol=1e-5)
    pairs = icl_pairs(ITEMS, ITEMS[2:3], n_demos=2)
    pairs.loc[0, 'corrupt'] = pairs.loc[0, 'clean']
    aie = head_aie(m, tok, pairs, mean_head_acts(m, tok, list(pairs.clean)))
    assert aie.aie.abs().max() < 1e-6

@pytest.mark.parametrize('arch', ['llama', 'gpt2'])
def test_vector_is_sum_of_o_proj_slices(arch):
    m, _ = tiny_model(arch, n_layers=2); ad = adapter(m)
    mz = torch.randn(ad.n_layers, ad.n_heads, ad.head_dim)
    heads = [(0, 0), (1, 2), (1, 3)]
    want = torch.zeros(ad.d_model)
    for L, h in heads:
        z = torch.zeros(ad.n_heads * ad.head_dim); z[h*ad.head_dim:(h+1)*ad.head_dim] = mz[L, h]
        o = ad.o_proj(L)
        want += (o(z[None]) - o(torch.zeros_like(z)[None]))[0]
    torch.testing.assert_close(instruction_vector(m, mz, heads), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(head_outputs(m, mz, heads).sum(0), want, atol=1e-5, rtol=1e-4)

def test_intervention_adds_at_last_token_only(llama):
    m, tok = llama
    vec = torch.randn(adapter(m).d_model)
    iv = iv_intervention(m, vec, 0, 'hook_resid_post')
    assert iv.terms[0].hook == 'blocks.0.hook_resid_post' and iv.terms[0].positions == 'last'
    b = encode(tok, [PROMPT])
    base = forward(m, **b).logits
    with iv.apply(m): got = forward(m, **b).logits
    assert torch.equal(got[:, :-1], base[:, :-1]) and not torch.equal(got[:, -1], base[:, -1])
    assert _hooks_left(m) == 0
    sw = iv_layer_sweep(m, tok, torch.zeros_like(vec), ITEMS, layers=[0, 1])
    assert (sw.acc == sw.acc_base).all() and (sw.p == sw.p_base).all()

def test_bad_inputs(llama):
    m, tok = llama; ad = adapter(m)
    mz = mean_head_acts(m, tok, [PROMPT])
    pairs = icl_pairs(ITEMS, ITEMS[:2], n_demos=2)
    aie = head_aie(m, tok, pairs, mz)
    with pytest.raises(ValueError, match='k must be in'): top_aie_heads(aie, 0)
    with pytest.raises(ValueError, match='k must be in'): top_aie_heads(aie, ad.n_layers*ad.n_heads + 1)
    assert len(top_aie_heads(aie, ad.n_layers*ad.n_heads)) == ad.n_layers*ad.n_heads
    with pytest.raises(ValueError, match='empty prompt list'): mean_head_acts(m, tok, [])
    with pytest.raises(ValueError, match='empty prompt list'): answer_probs(m, tok, [], [])
    with pytest.raises(ValueError, match='no prompts'): head_aie(m, tok, pairs.iloc[:0], mz)
    with pytest.raises(ValueError, match='besides the query'): icl_pairs(ITEMS, ITEMS[:1], n_demos=6)
    with pytest.raises(ValueError, match='no queries'): icl_pairs(ITEMS, [], n_demos=2)
    with pytest.raises(ValueError, match='n_demos'): icl_pairs(ITEMS, ITEMS[:1], n_demos=0)
    with pytest.raises(IndexError, match='out of range'): iv_intervention(m, torch.zeros(ad.d_model), ad.n_layers)
    with pytest.raises(IndexError, match='out of range'): iv_layer_sweep(m, tok, torch.zeros(ad.d_model), ITEMS, layers=[99])
    with pytest.raises(IndexError, match='out of range'): instruction_vector(m, mz, [(0, ad.n_heads)])
    with pytest.raises(ValueError, match='no heads'): instruction_vector(m, mz, [])
    with pytest.raises(ValueError, match='mean activations have shape'): instruction_vector(m, mz[:1], [(0, 0)])
    with pytest.raises(ValueError, match='kind must be'): iv_intervention(m, torch.zeros(ad.d_model), 0, 'attn.hook_z')
    with pytest.raises(ValueError, match='hook point needs'): iv_intervention(m, torch.zeros(3), 0).apply(m)
    with pytest.raises(ValueError, match='empty'): answer_probs(m, tok, [PROMPT], [' '])   # answer tokenizes to nothing
    with pytest.raises(ValueError, match='expected'): head_patch_fns(m, [(0, 0)], torch.zeros(2, ad.head_dim))
    assert _hooks_left(m) == 0

def test_too_few_prompts_warn_with_count_and_fix(llama):
    m, tok = llama
    pairs = icl_pairs(ITEMS, ITEMS[:3], n_demos=2)
    mz = mean_head_acts(m, tok, list(pairs.clean))
    with pytest.warns(UserWarning, match=r'only 3 prompts \(fewer than 20\).*correct_pairs'): head_aie(m, tok, pairs, mz)
    with pytest.warns(UserWarning, match='only 0 of 6 prompts answered correctly'): out = correct_pairs(m, tok, ITEMS, n_min=20, n_demos=2)
    assert len(out) == 0 and out.attrs['n_tried'] == 6
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        head_aie(m, tok, pairs, mz, min_prompts=3)   # enough for the caller's threshold: silent

def test_artifact_states_its_position_rule(llama, tmp_path):
    m, tok = llama; ad = adapter(m)
    mz = mean_head_acts(m, tok, [PROMPT])
    iv = function_vector(m, mz, [(0, 0), (1, 1)], 1)
    assert iv.meta['positions'] == 'last' and 'every generated token' in iv.meta['fires'] and 'every generated token' in repr(iv)
    assert 'every generated token' in repr(2 * iv)
    from editlab.artifacts import Intervention
    back = Intervention.load(iv.save(tmp_path/'iv.safetensors'), m)
    assert back.meta['fires'] == iv.meta['fires']
    one = iv_intervention(m, torch.randn(ad.d_model), 0, positions=[3])
    assert 'never a generated token' in one.meta['fires']
    b = encode(tok, [PROMPT]); base = forward(m, **b).logits
    with one.apply(m): got = forward(m, **b).logits
    assert torch.equal(got[:, :3], base[:, :3]) and not torch.equal(got[:, 3], base[:, 3])

def test_task_splits_keep_reversed_pairs_and_repeats_together():
    items = [dict(input=f"w{i}", output=f"w{i ^ 1}") for i in range(80)] + [dict(input='w0', output='x')]
    parts = task_splits(items, n_test=20, n_dev=10)
    side = {}
    for k, part in enumerate(parts):
        for d in part:
            for w in (d['input'], d['output']): assert side.setdefault(w, k) == k or w == 'x'
    assert 0 < len(parts[2]) <= 20 and 0 < len(parts[1]) <= 10 and len(parts[0]) > 40   # test and dev capped; the rest builds
    with pytest.raises(ValueError, match='too small'): task_splits(items[:6])

def test_heldout_refuses_a_task_with_no_correct_prompt(llama):
    m, tok = llama
    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match='no build prompt answered correctly'):
            iv_heldout(m, tok, [dict(input=f"{i}", output=f"{i+3}") for i in range(30)], n_demos=2)
