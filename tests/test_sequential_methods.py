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
