"SERAC: routing, bitwise out-of-scope logits, counterfactual logits, memory rules (later wins, delete, empty), save / load, training, frozen weights"
import json, pytest, torch
from editlab.models import tiny_model, adapter, fingerprint
from editlab.hooks import forward, encode
from editlab.evaluate import encode_prompt, edit_scores, generate
from editlab.serac import ScopeClassifier, SeracModel, train_scope, edit_statement, best_edit, route_metrics, pool_prefixes
from helpers import weights as _weights, same as _same, no_hooks as _no_hooks

A = dict(prompt='the big world is very large and', target_new='hello', target_true='there')
B = dict(prompt='a cat sat on', target_new='mat', target_true='dog')
OTHER = 'zz qq ww ee rr'


def _serac(m, tok, threshold=0.9999):
    "An untrained classifier with a threshold so high that only a prefix equal to an edit's prompt is in scope"
    torch.manual_seed(0)
    return SeracModel(m, tok, ScopeClassifier(adapter(m).d_model, layer=1, dim=16, threshold=threshold))

def _base(m, b):
    with torch.no_grad(): return forward(m, **b).logits

def test_empty_memory_is_the_unedited_model(llama):
    m, tok = llama
    s = _serac(m, tok)
    b = encode(tok, [A['prompt'], OTHER], 'left')
    assert torch.equal(s(**b).logits, _base(m, b))
    assert s.query([A['prompt']]).edit.tolist() == [-1]
    assert generate(s, tok, [A['prompt'], OTHER], 5) == generate(m, tok, [A['prompt'], OTHER], 5)
    assert len(s) == 0 and len(s.table()) == 0

@pytest.mark.parametrize('side', ['left', 'right'])
def test_routing_bitwise_out_of_scope(llama, side):
    m, tok = llama
    s = _serac(m, tok).edit([A, B])
    P = [A['prompt'], OTHER, B['prompt'] + ' x', 'the big world']
    b = encode(tok, P, side)
    base, z = _base(m, b), s(**b).logits
    sel, cos = s.route(**b)
    last = b['attention_mask'].shape[1] - 1 - b['attention_mask'].flip(-1).argmax(-1)
    assert sel[torch.arange(4), last].tolist() == [0, -1, -1, -1]      # 'b x' and a prefix of A are not the edits' prompts
    for r in (1, 3): assert torch.equal(z[r], base[r])                  # out of scope: bitwise the unedited model's logits
    assert torch.equal(z[2][~sel[2].ge(0)], base[2][~sel[2].ge(0)])
    j = int(sel[2].eq(1).nonzero()[0, 0])                               # B's prompt is a prefix of row 2: that position is routed to B
    assert not torch.equal(z[2, j], base[2, j])
    assert not torch.equal(z[0, last[0]], base[0, last[0]])
    # the in-scope logits are the base model's on [template + statement] + prompt, read at the prompt's last token
    ids = encode_prompt(tok, s.template.format(statement=edit_statement(A))) + encode_prompt(tok, A['prompt'])
    ref = _base(m, dict(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)))[0, -1]
    torch.testing.assert_close(z[0, last[0]], ref, atol=1e-4, rtol=1e-4)
    assert _no_hooks(m)

def test_left_equals_right_padding(llama):
    m, tok = llama
    s = _serac(m, tok).edit(A)
    P = [A['prompt'], OTHER]
    zl, zr = s(**encode(tok, P, 'left')).logits, s(**encode(tok, P, 'right')).logits
    n = len(encode_prompt(tok, A['prompt']))
    torch.testing.assert_close(zl[0, -n:], zr[0, :n], atol=1e-4, rtol=1e-4)

def test_generate(llama):
    m, tok = llama
    s = _serac(m, tok).edit(A)
    P = [A['prompt'], OTHER, 'hello there friend']
    g, g0 = generate(s, tok, P, 6), generate(m, tok, P, 6)
    assert g[1:] == g0[1:]                                             # out of scope: the unedited model's tokens
    cf = tok.decode(encode_prompt(tok, s.template.format(statement=edit_statement(A))) + encode_prompt(tok, A['prompt']))
    assert g[0] == generate(m, tok, [cf], 6)[0]                        # in scope: the model prompted with the edit
    b = encode(tok, P, 'left')                                         # first generated token = argmax of forward's last logits
    assert tok.decode(s(**b).logits[0, -1].argmax()) == tok.decode(tok(g[0])['input_ids'][:1]) or g[0] == ''
    with pytest.raises(ValueError, match='greedy only'): s.generate(**b, do_sample=True)
    with pytest.raises(ValueError, match='left-padded'): s.generate(**encode(tok, P, 'right'))
    with pytest.raises(NotImplementedError, match='no KV cache'): s(**b, use_cache=True)

def test_same_fact_later_wins(llama):
    m, tok = llama
    s = _serac(m, tok).edit([A, B])
    b = encode(tok, [A['prompt']], 'left')
    z1 = s(**b).logits
    s.edit(dict(A, target_new='again'))
    assert len(s) == 2 and s.edits[0]['target_new'] == 'again' and s.log[-1]['action'] == 'replace'
    z2 = s(**b).logits
    assert not torch.equal(z1[0, -1], z2[0, -1])
    assert s.query([A['prompt']]).target.tolist() == ['again']
    s.edit(dict(A, prompt='  The big world is very  large and', target_new='fourth'))  # the same fact, other spacing and case
    assert len(s) == 2 and s.edits[0]['target_new'] == 'fourth' and s.log[-1]['action'] == 'replace'
    # a second edit in one call of the same prompt: the later wins too
    s2 = _serac(m, tok).edit([A, dict(A, target_new='third')])
    assert len(s2) == 1 and s2.edits[0]['target_new'] == 'third'
    # two entries with equal keys: the lookup takes the later
    assert best_edit(torch.tensor([[.7, .7, .1]]))[0].tolist() == [1]

def test_delete_and_bad_inputs(llama):
    m, tok = llama
    s = _serac(m, tok).edit([A, B])
    b = encode(tok, [A['prompt'], B['prompt']], 'left')
    both = s(**b).logits
    s.delete(0)
    assert len(s) == 1 and s.edits[0]['prompt'] == B['prompt'] and s.keys.shape[0] == 1
    one = s(**b).logits
    assert torch.equal(one[0], _base(m, b)[0])                          # the deleted edit is gone: bitwise the base model
    torch.testing.assert_close(one[1], both[1], atol=1e-5, rtol=1e-5)  # the other still works (its counterfactual batch is smaller now)
    with pytest.raises(IndexError, match='no edit 5'): s.delete(5)
    with pytest.raises(TypeError, match='must be an int'): s.delete('0')
    s.delete(-1)
    with pytest.raises(IndexError, match='holds 0 edits'): s.delete(0)
    with pytest.raises(ValueError, match='no edits given'): s.edit([])
    with pytest.raises(ValueError, match="needs 'prompt' and 'target_new'"): s.edit([dict(prompt='a b')])
    with pytest.raises(ValueError, match='empty'): s.edit([dict(prompt='a b', target_new=' ')])
    assert len(s) == 0                                                 # nothing half-applied
    with pytest.raises(ValueError, match='statement'): SeracModel(m, tok, s.classifier, template='no slot')
    with pytest.raises(ValueError, match='another model'): SeracModel(m, tok, ScopeClassifier(32))
    with pytest.raises(IndexError, match='out of range'): SeracModel(m, tok, ScopeClassifier(adapter(m).d_model, layer=5))
    assert len(s.clear()) == 0

def test_save_load_roundtrip(llama, tmp_path):
    m, tok = llama
    s = _serac(m, tok).edit([A, B])
    p = s.save(tmp_path / 's.safetensors')
    s2 = SeracModel.load(p, m, tok)
    assert s2.edits == s.edits and torch.equal(s2.keys, s.keys) and s2.template == s.template
    assert s2.classifier.threshold == s.classifier.threshold and s2.classifier.layer == 1
    b = encode(tok, [A['prompt'], OTHER], 'left')
    assert torch.equal(s2(**b).logits, s(**b).logits)
    m2, _ = tiny_model('llama', n_layers=2, seed=1)
    with pytest.raises(ValueError, match='other weights'): SeracModel.load(p, m2, tok)
    SeracModel.load(p, m2, tok, strict=False)
    assert s.meta['fingerprint'] == fingerprint(m) and s.kind == 'SeracModel'
    from editlab.artifacts import WeightDelta
    WeightDelta({'x': torch.zeros(2)}).save(tmp_path / 'wd.safetensors')
    with pytest.raises(ValueError, match="not a 'SeracModel'"): SeracModel.load(tmp_path / 'wd.safetensors', m, tok)

def test_tampered_file_is_refused_naming_it(llama, tmp_path):
    "A SERAC memory file whose keys, edits or bytes were altered: a ValueError naming the file, no model built"
    from safetensors import safe_open
    from safetensors.torch import save_file
    m, tok = llama
    p = _serac(m, tok).edit([A, B]).save(tmp_path / 's.safetensors')
    with safe_open(str(p), framework='pt') as f: md, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    bad = tmp_path / 'keys.safetensors'
    save_file({**t, 'keys': t['keys'][:1]}, str(bad), metadata=md)             # one key dropped
    with pytest.raises(ValueError, match=f"{bad.name}.*keys have shape"): SeracModel.load(bad, m, tok)
    lay = json.loads(md['layout']); lay['edits'] = lay['edits'][:1]
    bad2 = tmp_path / 'edits.safetensors'
    save_file(t, str(bad2), metadata={**md, 'layout': json.dumps(lay)})       # one edit dropped
    with pytest.raises(ValueError, match=f"{bad2.name}.*keys have shape"): SeracModel.load(bad2, m, tok)
    bad3 = tmp_path / 'cut.safetensors'
    bad3.write_bytes(p.read_bytes()[:-40])                                      # truncated
    with pytest.raises(ValueError, match=f"{bad3.name}.*truncated or damaged"): SeracModel.load(bad3, m, tok)

def test_harness_and_frozen_weights(llama):
    m, tok = llama
    before, flags = _weights(m), [p.requires_grad for p in m.parameters()]
    s = _serac(m, tok).edit([A, B])
    df = edit_scores(s, tok, [dict(A, paraphrases=[OTHER], neighborhood=['the cat'])], generated=True)
    assert {'es', 'ps', 'ns', 'es_gen', 'ps_gen'} <= set(df.columns)
    base = edit_scores(m, tok, [dict(A, paraphrases=[OTHER], neighborhood=['the cat'])])
    assert df.ns_mag.iloc[0] == base.ns_mag.iloc[0] and df.ps_mag.iloc[0] == base.ps_mag.iloc[0]   # out of scope: same numbers
    assert df.logp_new.iloc[0] != base.logp_new.iloc[0]
    assert _same(before, _weights(m)) and _no_hooks(m) and [p.requires_grad for p in m.parameters()] == flags

def test_train_scope_and_cache(llama, tmp_path, monkeypatch):
    m, tok = llama
    monkeypatch.setenv('EDITLAB_CACHE', str(tmp_path))
    words = ['red', 'blue', 'green', 'black', 'white', 'pink', 'gold', 'grey', 'brown', 'cyan', 'lime', 'navy']
    recs = [dict(prompt=f'the {w} house is in', paraphrases=[f'people say the {w} house is in'], neighborhood=[f'the {w} car is in'],
                 target_new='x', target_true='y') for w in words]
    before = _weights(m)
    clf = train_scope(m, tok, recs, layer=1, dim=8, steps=15, progress=False)
    assert isinstance(clf.threshold, float) and clf.meta['n_train'] == 11 and clf.meta['n_val'] == 1
    assert len(list(tmp_path.glob('serac/scope-*.safetensors'))) == 1
    clf2 = train_scope(m, tok, recs, layer=1, dim=8, steps=15, progress=False)           # from the cache
    assert clf2.threshold == clf.threshold and torch.equal(clf2.proj.weight, clf.proj.weight)
    assert _same(before, _weights(m)) and all(not p.requires_grad or True for p in m.parameters())
    with pytest.raises(ValueError, match='at least 10'): train_scope(m, tok, recs[:3], layer=1)
    with pytest.raises(ValueError, match="needs 'prompt', 'paraphrases'"): train_scope(m, tok, [dict(prompt='a')] * 10, layer=1)

def test_pool_and_metrics():
    x = torch.randn(2, 5, 4); mk = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    p = pool_prefixes(x, mk)
    torch.testing.assert_close(p[0, 2], torch.nn.functional.normalize(x[0, 2], dim=-1))
    torch.testing.assert_close(p[1, 4], torch.nn.functional.normalize(x[1, 1:], dim=-1).mean(0))
    r = route_metrics(torch.tensor([[.9, .1], [.1, .2]]), torch.tensor([0, -1]), 0.5)
    assert (r['precision'], r['recall'], r['routed']) == (1.0, 1.0, 1)
