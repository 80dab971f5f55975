"One registry for every method: the table, name look-ups, editors' factories on a tiny model, studies that name no method"
import io, re, tokenize
from pathlib import Path
import pytest, torch
import editlab
from editlab.registry import REGISTRY, FAMILIES, get_method, load_methods, methods, register
from editlab.models import tiny_model
from editlab.data import builtin_facts
from editlab.artifacts import Intervention, WeightDelta
from editlab.editors import EDIT_METHODS, edit, edit_methods, make_editor
from helpers import weights, same, no_hooks

LIB = Path(editlab.__file__).parent


def test_methods_table():
    df = editlab.methods()
    assert len(df) >= 20, df
    assert set(df.family) == set(FAMILIES)
    assert list(df.columns) == ['family', 'produces', 'paper', 'module', 'defaults', 'doc']
    assert df.index.is_unique and df.paper.str.len().min() > 0 and df.doc.str.len().min() > 0
    fams = df.family.tolist()   # grouped: editing, then steering, then merging
    assert fams == sorted(fams, key=FAMILIES.index)
    # each family's filter is a slice of the whole table; steering and editing rows produce their documented kinds
    assert len(methods('steering')) + len(methods('editing')) + len(methods('merging')) == len(df)
    assert set(methods('steering').produces) == {'Intervention'}
    assert {'WeightDelta', 'Codebook', 'PatchSet', 'CaliNet', 'SeracModel'} <= set(methods('editing').produces)
    # the editing rows are what editors exposes, with the defaults each factory declared
    assert list(edit_methods().index) == list(methods('editing').index)
    assert edit_methods().loc['MEMIT', 'batch'] and not edit_methods().loc['ROME', 'batch']


def test_discovery_reads_the_package():
    "The method modules are found by reading the package folder; the studies and core are not among them"
    mods = load_methods()
    assert {'editlab.rome', 'editlab.merging', 'editlab.steering', 'editlab.serac'} <= set(mods)
    assert not {'editlab.compare', 'editlab.table', 'editlab.sequential', 'editlab.models', 'editlab.hooks'} & set(mods)
    assert {m.module for m in REGISTRY.values()} <= set(mods) | {'__main__'}


def test_typos_suggest_the_closest():
    with pytest.raises(KeyError, match=r"unknown method 'MEMT'; closest: 'MEMIT'"): get_method('MEMT')
    with pytest.raises(KeyError, match=r"closest: 'ROME'"): editlab.get_method('rome')
    with pytest.raises(KeyError, match=r"closest: 'GRACE'"): edit('GRCE', None, None, {})
    with pytest.raises(KeyError, match='a merging method, not editing'): make_editor('ties', None, None)
    with pytest.raises(ValueError, match="unknown merge method 'tie'; closest: 'ties'"):
        from editlab.merging import merge_spec
        merge_spec('tie')
    assert 'ROMEO' not in EDIT_METHODS and 'ROME' in EDIT_METHODS


def test_register_checks_its_input():
    with pytest.raises(ValueError, match="did you mean 'merging'"): register('x', 'merge', 'WeightDelta', 'p')
    with pytest.raises(ValueError, match='produces'): register('x', 'editing', '', 'p')
    with pytest.raises(ValueError, match='paper'): register('x', 'editing', 'WeightDelta', '')
    f = lambda: None
    f.__module__ = 'editlab.somewhere_else'
    with pytest.raises(ValueError, match="'ROME' is already registered by editlab.rome"):
        register('ROME', 'editing', 'WeightDelta', 'p')(f)
    assert get_method('ROME').module == 'editlab.rome'


def _kind(a)->str: return type(a).__name__


@pytest.mark.parametrize('name,hp', [
    ('FT-L', dict(steps=2)),
    ('ROME', dict(n_tokens=200, corpus='model-samples')),   # key statistics from the model's own samples
    ('MEMIT', dict(n_tokens=200, corpus='model-samples')),
    ('GRACE', dict(steps=2)),
    ('GRACE (subject key)', dict(steps=2)),
    ('CaliNET', dict(steps=2, n_slots=4, mlc=0.0)),   # mlc 0: no memory text needed
    ('CaliNET (ReLU)', dict(steps=2, n_slots=4, mlc=0.0)),
])
def test_registered_editor_factories_run(name, hp):
    "Each factory prepares an editor on a tiny model; its artifact is the declared kind, applies, undoes, and the weights are as before"
    m, tok = tiny_model('llama', n_layers=2)
    facts = builtin_facts()[:2]
    w0 = weights(m)
    meth = get_method(name, family='editing')
    arts = edit(name, m, tok, facts, **hp)
    arts = [arts] if meth.batch else arts
    assert len(arts) == (1 if meth.batch else 2)
    for a in arts:
        assert _kind(a) == meth.produces
        with a.apply(m): assert not same(weights(m), w0) or meth.produces != 'WeightDelta'
    assert same(weights(m), w0) and no_hooks(m)


def test_steering_and_merging_entries_run():
    m, tok = tiny_model('llama', n_layers=2)
    iv = get_method('CAA').fn(m, tok, ['good day', 'great'], ['bad day', 'awful'], alpha=2.0, layer=1)
    assert isinstance(iv, Intervention) and [t.hook for t in iv.terms] == ['blocks.1.hook_resid_post']
    from editlab.merging import MergeSpec, merge, MERGE_METHODS
    assert {'task_arithmetic', 'ties', 'dare', 'dare_ties'} <= set(MERGE_METHODS) == set(methods('merging').index)
    assert get_method('ties').fn(**get_method('ties').defaults) == MergeSpec(density=0.2, elect=True, normalize=True)
    tvs = [WeightDelta({'w': torch.tensor([1., -2., 3.])}), WeightDelta({'w': torch.tensor([1., 2., -1.])})]
    torch.testing.assert_close(merge(tvs, 'task_arithmetic').deltas['w'], torch.tensor([2., 0., 2.]))


def test_memory_artifact_speaks_the_protocol():
    "An artifact that routes inputs through a wrapper (SERAC's memory) is scored through its handle's `model`: compare never names it"
    from editlab.serac import ScopeClassifier, SeracModel
    from editlab.compare import applied_model
    from editlab.models import adapter
    m, tok = tiny_model('llama', n_layers=2)
    torch.manual_seed(0)
    s = SeracModel(m, tok, ScopeClassifier(adapter(m).d_model, layer=1, dim=16, threshold=0.9999))
    s.edit(dict(prompt='the big world is', target_new='hello', target_true='there'))
    with applied_model(s, m) as em: assert em is s
    with applied_model(WeightDelta({}), m) as em: assert em is m
    m2, _ = tiny_model('llama', n_layers=2, seed=1)
    with pytest.raises(ValueError, match='routes another model'): s.apply(m2)


def _code_words(path:Path)->set[str]:
    "Identifiers and string literals of a module's code, without its docstring and comments"
    toks = list(tokenize.generate_tokens(io.StringIO(path.read_text(encoding='utf-8')).readline))
    first = next(t for t in toks if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING))
    return {t.string for t in toks if t.type in (tokenize.NAME, tokenize.STRING) and t is not first}


@pytest.mark.parametrize('study', ['compare', 'table', 'sequential'])
def test_studies_name_no_method(study):
    "Evaluation, comparison and the studies never name a method: no registered name, method module or method-specific kind"
    load_methods()
    words = _code_words(LIB/f'{study}.py')
    core_kinds = {'WeightDelta', 'Intervention', 'Artifact'}
    names = set(REGISTRY) | {m.produces for m in REGISTRY.values()} - core_kinds
    hits = sorted(n for n in names if any(re.search(rf'(?<![\w-]){re.escape(n)}(?![\w-])', w) for w in words))
    assert not hits, f"{study}.py names methods: {hits}"
    src = (LIB/f'{study}.py').read_text(encoding='utf-8')
    mods = sorted({m.module.split('.')[-1] for m in REGISTRY.values()} - {'editors'})
    imported = [m for m in mods if re.search(rf'from \.{m} import|import editlab\.{m}\b|from editlab\.{m} import', src)]
    assert not imported, f"{study}.py imports method modules {imported}"
