"""Built-in sets, the loaders of the public data sets (CounterFact in both formats, zsRE, TruthfulQA, ICL tasks, known
facts, RepE facts, WikiText-2) with their resolution order, checked downloads and shipped samples, and the grouped, seeded
`split`. Everything here runs offline with no `$EDITLAB_DATA`: downloads are served by a local HTTP server or `file://`
URLs; the few checks of the full files run only when `$EDITLAB_DATA` is set."""
import csv, dataclasses, hashlib, http.server, io, json, os, threading, warnings, zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import editlab.data as D
from editlab.data import (DATA_FILES, DataNotFound, Source, builtin_facts, data_cache, data_file, icl_task, icl_tasks,
                          load_counterfact, load_icl_task, load_known, load_repe_facts, load_truthfulqa, load_wikitext,
                          load_zsre, samples_dir, sentiment_pairs, split)

def _data(name):
    "A full data file from $EDITLAB_DATA (checked against editlab's checksum), else skip"
    if D.data_dir() is None: pytest.skip("$EDITLAB_DATA is not set: the full data sets are not on this machine")
    return data_file(name, download=False)

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
    p = _data('counterfact/counterfact-dev-500.json')
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
    p = _data(f'truthfulqa/fold_0_{fold}.csv')
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
    files = [_data(f'icl_tasks/{t}.json') for t in D.ICL_TASKS]
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
    p = _data('known/known_1000.json')
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

# ------------------------------------------------------------------------------------------------ samples, resolution, downloads

@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    "No $EDITLAB_DATA, an empty data cache, and DATA_FILES restored afterwards"
    monkeypatch.delenv('EDITLAB_DATA', raising=False)
    monkeypatch.setenv('EDITLAB_DATA_CACHE', str(tmp_path/'cache'))
    saved = dict(DATA_FILES)
    yield tmp_path
    DATA_FILES.clear(); DATA_FILES.update(saved)

def _serve(name, url, sha=None):
    "Point DATA_FILES[name]'s download at `url` (same raw file name and zip member), with a pinned checksum or none"
    spec = DATA_FILES[name]
    DATA_FILES[name] = dataclasses.replace(spec, source=dataclasses.replace(spec.source, url=url, sha256=sha))

class _Handler(http.server.BaseHTTPRequestHandler):
    files, lie = {}, {}                        # path -> bytes; path -> Content-Length to claim (a truncated body)
    def do_GET(self):
        body = self.files.get(self.path)
        if body is None: self.send_error(404); return
        self.send_response(200)
        self.send_header('Content-Length', str(self.lie.get(self.path, len(body)))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass

@pytest.fixture
def server():
    "An HTTP server on 127.0.0.1 in a thread, serving `_Handler.files`"
    _Handler.files, _Handler.lie = {}, {}
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown(); srv.server_close()

def _no_partial_files(root:Path): return [p for p in root.rglob('*') if p.name.endswith('.part')]

def test_samples_load_with_no_env(sandbox):
    assert D.data_dir() is None
    assert len(load_counterfact(sample=True)) == 40 and len(load_counterfact('train-2000', sample=True)) == 100
    ids = json.loads((D.assets_dir()/'counterfact_ids.json').read_text())
    assert [r['case_id'] for r in load_counterfact(sample=True)] == ids['dev-500'][100:140]
    assert not set(ids['dev-500']) & set(ids['train-2000']) and (len(ids['dev-500']), len(ids['train-2000'])) == (500, 2000)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); assert len(load_zsre('dev-200', sample=True)) == 49
    assert len(load_zsre('train-800', sample=True)) > 40
    assert (len(load_truthfulqa('train', sample=True)), len(load_truthfulqa('val', sample=True))) == (60, 20)
    for t in D.ICL_TASKS: assert len(load_icl_task(t, sample=True)) >= 80, t
    assert len(load_known(sample=True)) == 60 and set(load_repe_facts(sample=True).label) == {0, 1}
    assert load_wikitext(sample=True).startswith(' \n = Homarus gammarus = ')
    total = sum(p.stat().st_size for p in samples_dir().rglob('*') if p.is_file())
    assert total < 400_000, total                                        # a few hundred KB in all
    assert not (sandbox/'cache').exists() or not any((sandbox/'cache').iterdir())   # a sample never touches the cache

def test_offline_no_copy_names_dataset_source_and_env(sandbox):
    name = 'counterfact/counterfact-dev-500.json'
    _serve(name, 'http://127.0.0.1:9/counterfact.json')                # nothing listens on port 9
    with pytest.raises(DataNotFound) as e: load_counterfact('dev-500')
    msg = str(e.value)
    assert 'CounterFact' in msg and 'http://127.0.0.1:9/counterfact.json' in msg and '$EDITLAB_DATA' in msg and 'sample=True' in msg
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(DataNotFound, match='download=False'): load_known(download=False)
    assert _no_partial_files(sandbox) == []

def test_canonical_sources_are_the_papers_addresses():
    src = {n: f.source.url for n, f in DATA_FILES.items()}
    assert src['counterfact/counterfact-dev-500.json'] == 'https://rome.baulab.info/data/dsets/counterfact.json'
    assert src['known/known_1000.json'] == 'https://rome.baulab.info/data/dsets/known_1000.json'
    assert src['zsre/zsre-dev-200.json'] == 'https://rome.baulab.info/data/dsets/zsre_mem_eval.json'
    assert src['icl_tasks/antonym.json'].endswith('ericwtodd/function_vectors/main/dataset_files/abstractive/antonym.json')
    assert len([n for n in DATA_FILES if n.startswith('icl_tasks/')]) == 11
    assert all(f.sha256 and len(f.sha256) == 64 for f in DATA_FILES.values())   # every copy in $EDITLAB_DATA is checked

def test_download_trust_on_first_use_then_cache(sandbox, server):
    name = 'known/known_1000.json'
    body = (samples_dir()/name).read_bytes()
    _Handler.files['/known_1000.json'] = body
    _serve(name, server + '/known_1000.json')
    with pytest.warns(UserWarning, match='trust on first use'): ks = load_known()
    assert len(ks) == 60 and data_file(name) == data_cache()/name
    rec = data_cache()/'raw/known_1000.json.sha256'
    assert rec.read_text() == hashlib.sha256(body).hexdigest()
    _Handler.files.clear()                                              # the source goes away: the cache still serves
    assert load_known() == ks
    (data_cache()/name).unlink(); (data_cache()/'raw/known_1000.json').unlink()
    _Handler.files['/known_1000.json'] = body[:-1] + b' '               # the source changes: refused, nothing written
    with pytest.raises(ValueError, match='does not match the recorded checksum'): load_known()
    assert not (data_cache()/name).exists() and not (data_cache()/'raw/known_1000.json').exists()
    assert _no_partial_files(sandbox) == []

def test_download_pinned_checksum_mismatch(sandbox, server):
    name = 'truthfulqa/fold_0_val.csv'
    _Handler.files['/val.csv'] = (samples_dir()/name).read_bytes()
    _serve(name, server + '/val.csv', sha='0' * 64)
    with pytest.raises(ValueError, match="does not match the pinned checksum"): load_truthfulqa('val')
    assert not (data_cache()/'raw').exists() or not any((data_cache()/'raw').iterdir())
    _serve(name, server + '/val.csv', sha=hashlib.sha256(_Handler.files['/val.csv']).hexdigest())
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                  # a pinned checksum: no trust-on-first-use warning
        assert len(load_truthfulqa('val')) == 20

def test_download_truncated(sandbox, server):
    name = 'repe/facts_true_false.csv'
    body = (samples_dir()/name).read_bytes()
    _Handler.files['/facts.csv'] = body; _Handler.lie['/facts.csv'] = len(body) + 1000
    _serve(name, server + '/facts.csv')
    with pytest.raises(ValueError, match='truncated'): load_repe_facts()
    assert not (data_cache()/name).exists() and _no_partial_files(sandbox) == []

def test_download_derives_counterfact_subset(sandbox, monkeypatch):
    "A download is ROME's full file: the loader keeps editlab's case ids, checks their subjects, and reads ROME's format"
    sample = json.loads((samples_dir()/'counterfact/counterfact-dev-500.json').read_text())
    rome = [{'case_id': r['case_id'], 'requested_rewrite': {'prompt': r['prompt'].replace(r['subject'], '{}'), 'subject': r['subject'],
             'relation_id': 'P0', 'target_new': {'str': r['target_new']}, 'target_true': {'str': r['ground_truth']}},
             'paraphrase_prompts': [r['rephrase_prompt']], 'neighborhood_prompts': [r['locality_prompt']]} for r in sample]
    rome = rome[::-1] + [{**rome[0], 'case_id': 10**6}]                 # other order, one extra case
    full = sandbox/'srv/counterfact.json'; full.parent.mkdir(); full.write_text(json.dumps(rome))
    ids = [r['case_id'] for r in sample]
    real_asset = D._asset
    monkeypatch.setattr(D, '_asset', lambda n: {'dev-500': ids} if n == 'counterfact_ids.json' else real_asset(n))
    monkeypatch.setitem(D.CF_SUBJECTS_SHA, 'dev-500', D._subjects_sha(sample))
    _serve('counterfact/counterfact-dev-500.json', full.as_uri())
    with pytest.warns(UserWarning, match='trust on first use'): cf = load_counterfact('dev-500')
    assert [r['case_id'] for r in cf] == ids and cf[0]['subject'] == sample[0]['subject'] and cf[0]['relation'] == 'P0'
    assert [r['target_new'] for r in cf] == [r['target_new'] for r in load_counterfact(sample=True)]
    # a source whose ids name other subjects is an error, and nothing is written
    (data_cache()/'counterfact/counterfact-dev-500.json').unlink()
    monkeypatch.setitem(D.CF_SUBJECTS_SHA, 'dev-500', '1' * 64)
    with pytest.raises(ValueError, match='other subjects'): load_counterfact('dev-500')
    assert not (data_cache()/'counterfact/counterfact-dev-500.json').exists()

def test_download_wikitext_from_zip(sandbox):
    text = (samples_dir()/'corpus/wikitext-2-valid.txt').read_bytes()
    z = sandbox/'srv/wikitext-2-v1.zip'; z.parent.mkdir()
    with zipfile.ZipFile(z, 'w') as f: f.writestr('wikitext-2/wiki.valid.tokens', text); f.writestr('wikitext-2/wiki.test.tokens', b'x')
    _serve('corpus/wikitext-2-valid.txt', z.as_uri())
    with pytest.warns(UserWarning): assert load_wikitext().encode() == text
    z.write_bytes(b'not a zip'); (data_cache()/'corpus/wikitext-2-valid.txt').unlink(); (data_cache()/'raw/wikitext-2-v1.zip').unlink()
    (data_cache()/'raw/wikitext-2-v1.zip.sha256').unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match='could not build corpus/wikitext-2-valid.txt'): load_wikitext()

def test_resolution_order(sandbox, monkeypatch):
    name = 'known/known_1000.json'
    env = sandbox/'env'; (env/'known').mkdir(parents=True)
    sample = (samples_dir()/name).read_bytes()
    (env/name).write_bytes(sample)
    monkeypatch.setenv('EDITLAB_DATA', str(env))
    with pytest.raises(ValueError, match="does not match editlab's copy"): data_file(name)   # not editlab's full file
    DATA_FILES[name] = dataclasses.replace(DATA_FILES[name], sha256=hashlib.sha256(sample).hexdigest())
    assert data_file(name) == env/name                                  # $EDITLAB_DATA before the cache
    cached = data_cache()/name; cached.parent.mkdir(parents=True, exist_ok=True); cached.write_bytes(sample)
    assert data_file(name) == env/name
    explicit = sandbox/'mine.json'; explicit.write_text(json.dumps(json.loads(sample)[:3]))
    assert data_file(name, path=explicit) == explicit and len(load_known(explicit)) == 3    # an explicit path first
    with pytest.raises(FileNotFoundError, match='mine2.json not found'): load_known(sandbox/'mine2.json')
    monkeypatch.delenv('EDITLAB_DATA')
    assert data_file(name) == cached                                    # then the cache (no record: as written by hand)
    (data_cache()/f'{name}.sha256').write_text('0' * 64)
    with pytest.raises(ValueError, match='recorded when it was written'): data_file(name)
    with pytest.raises(ValueError, match='either'): load_known(explicit, sample=True)
    with pytest.raises(KeyError, match='unknown data file'): data_file('nothing/here.json')

@pytest.mark.parametrize('loader,text,match', [
    (load_counterfact, '[{"case_id": 1, "prompt": "a', 'corrupt or truncated'),
    (load_counterfact, '[{"case_id": 1, "prompt": "x is", "subject": "x"}]', r"record 0 is malformed"),
    (load_zsre, '[{"subject": "x", "src": "q?"}]', r"record 0 lacks \['rephrase'"),
    (load_icl_task, '{"input": 1}', 'JSON list'),
    (load_known, '[{"known_id": 0, "subject": "x"}]', r"known_1000 record 0 is malformed \(KeyError: 'prompt'\)"),
])
def test_bad_json_names_file_and_problem(tmp_path, loader, text, match):
    p = tmp_path/'bad.json'; p.write_text(text)
    with pytest.raises((ValueError, KeyError), match=match) as e: loader(p)
    assert 'bad.json' in str(e.value)

def test_bad_csv_names_file_and_problem(tmp_path):
    good = (samples_dir()/'truthfulqa/fold_0_val.csv').read_text(encoding='utf-8')
    p = tmp_path/'tqa.csv'; p.write_text(good[:len(good)//2].rsplit('\n', 1)[0].rsplit(',', 3)[0] + '\n', encoding='utf-8')
    with pytest.raises(ValueError, match='tqa.csv: row .* fewer fields than the header'): load_truthfulqa(p)
    p.write_text('Question,Answer\nq,a\n')
    with pytest.raises(ValueError, match=r"tqa.csv: not a TruthfulQA CSV, columns \['Best Answer'"): load_truthfulqa(p)
    f = tmp_path/'facts.csv'; f.write_text('statement,label\nThe sky is blue.,1\nGrass is red.,\n')
    with pytest.raises(ValueError, match='facts.csv: labels must be 0 or 1'): load_repe_facts(f)
    f.write_text('text,label\nx,1\n')
    with pytest.raises(ValueError, match=r"facts.csv: columns \['statement'\] missing"): load_repe_facts(f)

def test_full_files_match_samples():
    "With $EDITLAB_DATA set, every sample is the documented slice of editlab's full file"
    if D.data_dir() is None: pytest.skip("$EDITLAB_DATA is not set")
    assert load_counterfact('dev-500')[100:140] == load_counterfact(sample=True)
    assert load_counterfact('train-2000', n=100) == load_counterfact('train-2000', sample=True)
    assert load_known(n=60) == load_known(sample=True)
    assert load_wikitext().startswith(load_wikitext(sample=True))
    for t in D.ICL_TASKS:
        s = load_icl_task(t, sample=True); assert load_icl_task(t)[:len(s)] == s, t
    assert [q['question'] for q in load_truthfulqa('val')[:20]] == [q['question'] for q in load_truthfulqa('val', sample=True)]
