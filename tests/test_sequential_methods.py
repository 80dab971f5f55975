"Every editor that declares a sequential form runs through `sequential_study` from the registry alone, and leaves the model as it was."
import pytest, torch
from editlab.models import tiny_model
from editlab.data import builtin_facts, data_file, wikitext_path
from editlab.editors import sequential_methods, sequential_editor
from editlab.sequential import sequential_study

def _fast():   # small settings so that each form runs in seconds on a tiny model (the sequential forms themselves are unchanged)
    text = wikitext_path(sample=True)
    stats = dict(n_tokens=300, corpus=text)
    return {'ROME': stats, 'MEMIT': dict(stats, layers=(1,)), 'AlphaEdit': dict(stats, layers=(1,)),
            'GRACE': dict(steps=2), 'T-Patcher': dict(steps=2, n_memory=4, corpus=text),
            'CaliNET (ReLU)': dict(steps=2, n_memory=4, corpus=text),
            'SERAC': dict(n_train=40, train=data_file('counterfact/counterfact-train-2000.json', sample=True))}

def test_the_weight_editors_and_the_editors_beside_the_weights_declare_one():
    assert {'ROME', 'MEMIT', 'AlphaEdit', 'GRACE', 'T-Patcher', 'SERAC', 'CaliNET (ReLU)'} <= set(sequential_methods())

@pytest.mark.parametrize('name', sequential_methods())
def test_sequential_form(name):
    torch.manual_seed(0)
    m, tok = tiny_model('llama')
    w0 = {n: p.detach().clone() for n, p in m.named_parameters()}
    s = sequential_editor(name, m, tok, **_fast().get(name, {}))
    assert set(s) == {'editor', 'incremental', 'batch', 'stem'} and s['batch'] >= 1 and s['stem']
    df = sequential_study(m, tok, builtin_facts()[:4], s['editor'], stages=(2, 4), incremental=s['incremental'],
                          batch=min(s['batch'], 2), progress=False)
    assert df.edits.tolist() == [2, 4]
    assert df[['es', 'ps', 'ns']].notna().all().all()
    assert all(torch.equal(p, w0[n]) for n, p in m.named_parameters())   # every edit undone at the end

def _interrupted(editor, after:int):
    "The editor, stopped (as by Ctrl-C) on call number `after` + 1"
    calls = [0]
    def ed(*a, **k):
        if calls[0] == after: raise KeyboardInterrupt
        calls[0] += 1; return editor(*a, **k)
    return ed

@pytest.mark.parametrize('with_state', [True, False])
def test_alphaedit_resumed_from_a_checkpoint_keeps_the_earlier_keys(tmp_path, with_state):
    "A study stopped after one call and resumed in a fresh process (a fresh editor) edits as the uninterrupted run did, when the keys are kept on disk"
    torch.manual_seed(0)
    m, tok = tiny_model('llama')
    recs, hp = builtin_facts()[:4], _fast()['AlphaEdit']
    def study(ck, editor):
        return sequential_study(m, tok, recs, editor, stages=(2, 4), incremental=True, batch=2, progress=False, checkpoint=ck)
    whole = sequential_editor('AlphaEdit', m, tok, state_dir=tmp_path/'state_whole', **hp)
    study(tmp_path/'whole', whole['editor'])
    first = sequential_editor('AlphaEdit', m, tok, state_dir=tmp_path/'state' if with_state else None, **hp)
    with pytest.raises(KeyboardInterrupt): study(tmp_path/'resumed', _interrupted(first['editor'], 1))
    again = sequential_editor('AlphaEdit', m, tok, state_dir=tmp_path/'state' if with_state else None, **hp)   # a fresh process
    study(tmp_path/'resumed', again['editor'])
    from editlab.artifacts import WeightDelta
    a, b = (WeightDelta.load(tmp_path/f/'delta_00001.safetensors') for f in ('whole', 'resumed'))
    same = all(torch.equal(a.dense(n), b.dense(n)) for n in a.deltas)
    assert same == with_state        # without the keys on disk the second call no longer protects the first call's keys
    if with_state: assert len(list((tmp_path/'state'/'alphaedit').glob('keys_*.safetensors'))) == 2
