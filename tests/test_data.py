"""Built-in sets and the loaders of the standard formats (CounterFact in both formats, TruthfulQA, ICL tasks, known
facts), and the grouped, seeded `split`. Loader tests read `../shared/data` and skip cleanly when it is absent."""
import csv, json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from editlab.data import (builtin_facts, icl_task, icl_tasks, load_counterfact, load_icl_task, load_known, load_truthfulqa,
                          sentiment_pairs, split)

DATA = Path(__file__).resolve().parent.parent.parent/'shared'/'data'

def _data(*parts):
    p = DATA.joinpath(*parts)
    if not p.exists(): pytest.skip(f"{p} not found: the shared data sets live in ../shared/data")
    return p

RECORD_KEYS = {'case_id', 'subject', 'relation', 'prompt', 'target_true', 'target_new', 'paraphrases', 'neighborhood',
               'neighborhood_true'}

# ------------------------------------------------------------------------------------------------ built-in sets

def test_builtin_facts():
    fs = builtin_facts()
    assert len(fs) >= 40
    assert len({f['case_id'] for f in fs}) == len(fs)
    for f in fs:
        assert RECORD_KEYS <= set(f), f
        assert f['subject'] and f['subject'] in f['prompt'], f
        assert f['target_true'].strip() and f['target_new'].strip() and f['target_true'] != f['target_new'], f
        assert not f['prompt'].endswith(' ') and f['target_true'] == f['target_true'].strip()
        assert len(f['paraphrases']) == 1 and len(f['neighborhood']) == 1 and f['neighborhood_true'] == [f['target_true']]
        assert all(isinstance(x, str) and x.strip() for x in f['paraphrases'] + f['neighborhood'])
    assert builtin_facts() == fs  # a fresh copy each call, same content

def test_sentiment_pairs():
    ps = sentiment_pairs()
    assert len(ps) >= 40 and len(set(ps)) == len(ps)
    for pos, neg in ps:
        assert isinstance(pos, str) and isinstance(neg, str) and pos.strip() and neg.strip() and pos != neg

def test_icl_tasks():
    names = icl_tasks()
    assert len(names) >= 3 and names == sorted(names)
    for n in names:
        t = icl_task(n)
        assert len(t) >= 20, n
        assert all(set(d) >= {'input', 'output'} and str(d['input']).strip() and str(d['output']).strip() for d in t), n
    with pytest.raises(KeyError) as e: icl_task('no_such_task')
    assert all(n in str(e.value) for n in names)

# ------------------------------------------------------------------------------------------------ CounterFact

ROME_RECORD = {
    "case_id": 0, "pararel_idx": 2796,
    "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
                          "target_new": {"str": "English", "id": "Q1860"}, "target_true": {"str": "French", "id": "Q150"},
                          "subject": "Danielle Darrieux"},
    "paraphrase_prompts": ["Shayna does this and Yossel goes still and dies. Danielle Darrieux, a native",
                           "An album was recorded for Capitol Nashville but never released. Danielle Darrieux spoke the language"],
    "neighborhood_prompts": ["The mother tongue of L\u00e9on Blum is", "The native language of Montesquieu is",
                             "Fran\u00e7ois Bayrou, a native"],
    "attribute_prompts": ["J.\u00a0R.\u00a0R. Tolkien is a native speaker of"],
    "generation_prompts": ["Danielle Darrieux's mother tongue is", "Where Danielle Darrieux is from, people speak the language of"]}

def test_load_counterfact_rome_format(tmp_path):
    p = tmp_path/'cf.json'
    p.write_text(json.dumps([ROME_RECORD, {**ROME_RECORD, 'case_id': 1}]))
    rs = load_counterfact(p)
    assert len(rs) == 2 and len(load_counterfact(p, n=1)) == 1
    r = rs[0]
    assert RECORD_KEYS <= set(r)
    assert r['prompt'] == "The mother tongue of Danielle Darrieux is" and r['subject'] in r['prompt']
    assert (r['target_true'], r['target_new'], r['relation'], r['case_id']) == ('French', 'English', 'P103', 0)
    assert r['paraphrases'] == ROME_RECORD['paraphrase_prompts'] and r['neighborhood'] == ROME_RECORD['neighborhood_prompts']
    assert r['neighborhood_true'] == ['French'] * 3 and r['generation_prompts'] == ROME_RECORD['generation_prompts']
    # plain-string targets are read too
    rw = {**ROME_RECORD['requested_rewrite'], 'target_new': 'English', 'target_true': 'French'}
    p.write_text(json.dumps([{**ROME_RECORD, 'requested_rewrite': rw}]))
    assert load_counterfact(p)[0]['target_new'] == 'English'

def test_load_counterfact_easyedit_format():
    p = _data('counterfact', 'counterfact-dev-500.json')
    raw = json.loads(p.read_text())
    rs = load_counterfact(p)
    assert len(rs) == len(raw) == 500 and len(load_counterfact(p, n=10)) == 10
    for r, x in zip(rs, raw):
        assert RECORD_KEYS <= set(r)
        assert r['subject'] in r['prompt'] and r['prompt'] == x['prompt'] and r['case_id'] == x['case_id']
        assert r['target_true'] == x['ground_truth'] and r['target_new'] == x['target_new']
        assert r['paraphrases'] == [x['rephrase_prompt']]
        assert r['neighborhood'] == [x['locality_prompt']] and r['neighborhood_true'] == [x['locality_ground_truth']]

def test_load_counterfact_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'): load_counterfact(tmp_path/'missing.json')
    p = tmp_path/'bad.json'
    p.write_text(json.dumps([{'question': 'q', 'answer': 'a'}]))
    with pytest.raises(ValueError, match="requested_rewrite"): load_counterfact(p)

# ------------------------------------------------------------------------------------------------ TruthfulQA

@pytest.mark.parametrize('fold', ['train', 'val'])
def test_load_truthfulqa(fold):
    p = _data('truthfulqa', f'fold_0_{fold}.csv')
    with open(p, newline='', encoding='utf-8') as f: raw = list(csv.DictReader(f))
    qs = load_truthfulqa(p)
    assert len(qs) == len(raw) == {'train': 326, 'val': 82}[fold]
    for q, r in zip(qs, raw):
        assert q['question'] == r['Question'].strip() and q['best'] == r['Best Answer'].strip()
        assert q['mc1_choices'][0] == q['best'] and q['mc1_label'] == 0
        assert q['mc1_choices'][1:] == q['incorrect'] and q['incorrect']
        assert q['best'] in q['correct']
        assert len(q['mc2_choices']) == len(q['mc2_labels']) == len(q['correct']) + len(q['incorrect'])
        for c, l in zip(q['mc2_choices'], q['mc2_labels']):
            assert (c in q['correct']) if l == 1 else (c in q['incorrect'])
        assert sum(q['mc2_labels']) == len(q['correct'])
        assert all(a and a == a.strip() for a in q['mc2_choices'])
        assert len(q['correct']) == len([a for a in r['Correct Answers'].split(';') if a.strip()])

def test_load_truthfulqa_best_not_among_correct(tmp_path):
    p = tmp_path/'tqa.csv'
    with open(p, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['Type', 'Category', 'Question', 'Best Answer', 'Correct Answers', 'Incorrect Answers', 'Source'])
        w.writerow(['Adversarial', 'Misc', ' Can pigs fly? ', 'No', 'Pigs cannot fly; Not on their own', 'Yes; Always', 'x'])
    q, = load_truthfulqa(p)
    assert q['question'] == 'Can pigs fly?' and q['correct'] == ['No', 'Pigs cannot fly', 'Not on their own']
    assert q['mc1_choices'] == ['No', 'Yes', 'Always'] and q['mc2_labels'] == [1, 1, 1, 0, 0]
    with pytest.raises(FileNotFoundError): load_truthfulqa(tmp_path/'missing.csv')

# ------------------------------------------------------------------------------------------------ ICL tasks, known facts

def test_load_icl_task_every_file():
    files = sorted(_data('icl_tasks').glob('*.json'))
    assert len(files) == 11
    for f in files:
        t = load_icl_task(f)
        raw = json.loads(f.read_text())
        assert len(t) == len(raw) > 100, f.name
        assert all(set(d) == {'input', 'output'} and isinstance(d['input'], str) and isinstance(d['output'], str) for d in t)
        assert [d['input'] for d in t[:5]] == [str(d['input']) for d in raw[:5]]

def test_load_icl_task_bad_format(tmp_path):
    p = tmp_path/'t.json'
    for bad in ({'input': 'a', 'output': 'b'}, [{'input': 'a'}], [{'x': 1, 'y': 2}]):
        p.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match='input'): load_icl_task(p)
    p.write_text(json.dumps([{'input': 1, 'output': 2.5}]))
    assert load_icl_task(p) == [{'input': '1', 'output': '2.5'}]

def test_load_known():
    p = _data('known', 'known_1000.json')
    ks = load_known(p)
    assert len(ks) == 1209
    for k in ks:
        assert set(k) == {'known_id', 'subject', 'prompt', 'attribute', 'relation_id'}
        assert k['subject'] in k['prompt'] and k['attribute'] == k['attribute'].strip() and k['attribute']
    assert len({k['known_id'] for k in ks}) == 1209

# ------------------------------------------------------------------------------------------------ split

@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 8), min_size=2, max_size=60), st.floats(0.05, 0.95), st.integers(0, 10**6))
def test_split_by_group_property(groups, frac, seed):
    if len(set(groups)) < 2: return
    items = list(range(len(groups)))
    tr, te = split(items, frac, seed, groups)
    assert sorted(tr + te) == items and te                               # a partition with a test side
    assert not {groups[i] for i in tr} & {groups[i] for i in te}         # no group on both sides
    assert (tr, te) == split(items, frac, seed, groups)                  # seeded: deterministic
    assert tr == sorted(tr) and te == sorted(te)                         # original order kept

@pytest.mark.parametrize('groups,frac', [(['a', 'b'], 0.75), (['a', 'a', 'b', 'b', 'c'], 0.9), (['a', 'a', 'a'], 0.2)])
def test_split_never_returns_an_empty_side(groups, frac):
    try: tr, te = split(list(range(len(groups))), frac, 0, groups)
    except ValueError: return                                            # refusing is fine too
    assert tr and te

def test_split_basics():
    items = list(range(100))
    tr, te = split(items, 0.2, seed=0)
    assert len(te) == 20 and len(tr) == 80 and split(items, 0.2, seed=0) == (tr, te)
    assert split(items, 0.2, seed=1) != (tr, te)
    qs = [f"q{i//4}" for i in range(40)]                                  # 10 questions x 4 answers each
    tr, te = split(list(range(40)), 0.3, seed=3, groups=qs)
    assert len(te) == 12 and not {qs[i] for i in tr} & {qs[i] for i in te}
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match='test_frac'): split(items, bad)
    with pytest.raises(ValueError, match='two items'): split([1], 0.5)
    with pytest.raises(ValueError, match='group keys'): split([1, 2, 3], 0.5, groups=['a', 'b'])
