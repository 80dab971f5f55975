"ITI: batched probes find planted heads, the intervention shifts only the chosen heads, bad inputs are refused."
import pytest, torch
from editlab.iti import fit_head_probes, iti_intervention, head_activations, qa_pairs
from editlab.hooks import encode, forward, capture

def _planted(seed=0, n=240):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, 4, 24, generator=g); y = (torch.rand(n, generator=g) > 0.5).float()
    X[:, 1, 3, :2] += 2.5 * (2*y[:, None] - 1)
    return X, y

def test_probes_rank_the_planted_head_first():
    X, y = _planted()
    r = fit_head_probes(X[:160], y[:160], X[160:], y[160:])
    assert (r.layer[0], r['head'][0]) == (1, 3) and r.val_acc[0] > 0.9
    assert len(r) == 8 and r.val_acc.is_monotonic_decreasing

def test_ranking_uses_validation_labels_only_for_scoring():
    X, y = _planted()
    r1 = fit_head_probes(X[:160], y[:160], X[160:], y[160:])
    r2 = fit_head_probes(X[:160], y[:160], X[160:], 1 - y[160:])      # flipped validation labels
    assert r2.set_index(['layer', 'head']).val_acc[(1, 3)] < 0.1      # the same probe, now judged wrong
    assert (r1.train_acc.sort_values().values == r2.train_acc.sort_values().values).all()   # training untouched

def test_intervention_touches_only_topk_heads(llama):
    m, tok = llama
    X, y = _planted(); X = X[..., :24]
    r = fit_head_probes(X[:160], y[:160], X[160:], y[160:])
    iv = iti_intervention(X, y, r, k=1, alpha=3.0, model=m)
    b = encode(tok, ["Q: hi\nA: yes"])
    with capture(m, 'blocks.1.attn.hook_z') as c0: forward(m, **b)
    with iv.apply(m), capture(m, 'blocks.1.attn.hook_z') as c1: forward(m, **b)
    d = (c1['blocks.1.attn.hook_z'] - c0['blocks.1.attn.hook_z']).abs().sum((0, 1, 3))
    assert d[3] > 0 and d[:3].sum() == 0
    assert iv.meta['heads'] == [[1, 3]]

@pytest.mark.parametrize('k,alpha,msg', [(0, 1.0, 'k must be'), (9, 1.0, 'k must be'), (1, float('nan'), 'alpha must be finite')])
def test_bad_k_alpha(k, alpha, msg):
    X, y = _planted(); r = fit_head_probes(X[:160], y[:160], X[160:], y[160:])
    with pytest.raises(ValueError, match=msg): iti_intervention(X, y, r, k=k, alpha=alpha)

def test_bad_training_data():
    X, y = _planted()
    with pytest.raises(ValueError, match='one class'): fit_head_probes(X[:50], torch.ones(50), X[50:], y[50:])
    with pytest.raises(ValueError, match='empty'): fit_head_probes(X[:0], y[:0], X, y)
    with pytest.raises(ValueError, match='no question-answer pairs'): qa_pairs([dict(question='q', correct=[], incorrect=[])])

def test_head_activations_shape(llama):
    m, tok = llama
    P, A, y, g = qa_pairs([dict(question='sky?', correct=['blue'], incorrect=['green', 'red'])])
    X = head_activations(m, tok, P, A, batch_size=2)
    assert X.shape == (3, 2, 4, 24) and y == [1, 0, 0] and g == [0, 0, 0]
    with pytest.raises(ValueError, match='2 prompts but 1 answers'): head_activations(m, tok, P[:2], A[:1])
