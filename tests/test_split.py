"""Models split by an accelerate `device_map` between 'cpu' and 'disk' offload: capture, steering, `WeightDelta`
apply/undo (offloaded weights are edited in accelerate's weights map, never on disk), ROME/MEMIT statistics and edits
give the same numbers as the model in one piece"""
import hashlib, os
import pytest, torch
from editlab.models import tiny_model, load_model, adapter, fingerprint, model_device, offload_slot, param_value
from editlab.hooks import capture, encode, forward
from editlab.artifacts import WeightDelta, Intervention
from editlab import rome as R, memit as M
from helpers import no_hooks

REC = dict(prompt='the big world is', subject='big world', target_new='hello', target_true='there')
PREFIXES = ['hello there', 'a b c']
SPLIT = {'model.embed_tokens': 'cpu', 'model.layers.0': 'cpu', 'model.layers.1': 'cpu', 'model.layers.2': 'disk',
         'model.layers.3': 'disk', 'model.norm': 'cpu', 'model.rotary_emb': 'cpu', 'lm_head': 'cpu'}

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "The reference model, its checkpoint folder, and the same checkpoint loaded with layers 2-3 offloaded to disk"
    d = tmp_path_factory.mktemp('ckpt'); os.environ['EDITLAB_CACHE'] = str(tmp_path_factory.mktemp('cache'))
    m, tok = tiny_model('llama', n_layers=4)
    m.save_pretrained(d); tok.save_pretrained(d)
    sm, _ = load_model(str(d), device_map=SPLIT, offload_folder=str(d/'offload'))
    return m, sm, tok, d

def run(m, b): return forward(m, b['input_ids'], b['attention_mask']).logits

def files_hash(d):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.rglob('*')) if f.is_file()}

DOWN2 = 'model.layers.2.mlp.down_proj.weight'

def test_split_is_real(models):
    "Layers 2-3 are on 'meta' behind accelerate's offload hook; layers 0-1 hold their weights; same logits as the whole model"
    m, sm, tok, _ = models
    assert sm.get_parameter(DOWN2).device.type == 'meta' and offload_slot(sm, DOWN2) is not None
    assert offload_slot(sm, 'model.layers.1.mlp.down_proj.weight') is None
    torch.testing.assert_close(param_value(sm, DOWN2), m.get_parameter(DOWN2), rtol=0, atol=0)
    b = encode(tok, ['hello world', 'big cat'])
    assert torch.equal(run(m, b), run(sm, b))
    assert fingerprint(sm) == fingerprint(m) and model_device(sm) == torch.device('cpu')

def test_capture_and_steering(models):
    m, sm, tok, _ = models
    b = encode(tok, ['hello world', 'big cat'])
    names = ['blocks.1.hook_resid_post', 'blocks.2.mlp.hook_post', 'blocks.3.attn.hook_z']
    caps = []
    for mm in (m, sm):
        with capture(mm, names) as c: run(mm, b)
        caps.append(c)
    for n in names: assert torch.equal(caps[0][n], caps[1][n]), n
    iv = Intervention.from_vectors({'blocks.2.hook_resid_post': torch.randn(64), 'blocks.0.mlp.hook_out': torch.randn(64)})
    outs = []
    for mm in (m, sm):
        with iv.apply(mm): outs.append(run(mm, b))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], run(sm, b)) and no_hooks(sm)

def test_weight_delta_on_offloaded_weights(models):
    "Apply edits the weights map in memory (same logits as the whole model), the disk checkpoint is never written, undo is exact"
    m, sm, tok, d = models
    b = encode(tok, ['hello world', 'big cat'])
    before, disk = run(sm, b), files_hash(d)
    g = torch.Generator().manual_seed(0)
    wd = WeightDelta({n: 0.05 * torch.randn(m.get_parameter(n).shape, generator=g)
                      for n in (DOWN2, 'model.layers.1.mlp.down_proj.weight', 'model.layers.3.self_attn.o_proj.weight')})
    with wd.apply(m): ref = run(m, b)
    with wd.apply(sm):
        assert torch.equal(run(sm, b), ref) and not torch.equal(ref, before)
        assert sm.get_parameter(DOWN2).device.type == 'meta'   # still offloaded, reloaded with the edit at each forward
        with (0.5 * wd).apply(sm): pass                           # nested edits undo in order
        with pytest.raises(RuntimeError, match='reverse order'):
            h2 = (0.5 * wd).apply(sm); sm._editlab_edits.insert(0, sm._editlab_edits.pop()); h2.undo()
        sm._editlab_edits.append(sm._editlab_edits.pop(0)); h2.undo()
    assert torch.equal(run(sm, b), before) and files_hash(d) == disk
    assert torch.equal(param_value(sm, DOWN2), m.get_parameter(DOWN2))
    assert DOWN2 not in offload_slot(sm, DOWN2).source.state_dict   # the map is back to reading the disk

def test_failed_apply_leaves_offloaded_map_unchanged(models):
    m, sm, tok, _ = models
    b = encode(tok, ['hello world']); before = run(sm, b)
    bad = WeightDelta({'model.layers.1.mlp.down_proj.weight': torch.zeros(64, 96), DOWN2: torch.full((64, 96), 1e39, dtype=torch.float64)})
    with pytest.raises(ValueError, match=f'{DOWN2}.*not finite'): bad.apply(sm)
    assert torch.equal(run(sm, b), before) and not getattr(sm, '_editlab_edits', None)
    assert DOWN2 not in offload_slot(sm, DOWN2).source.state_dict

def test_rome_memit_on_offloaded_layers(models):
    "Statistics, ROME and MEMIT at offloaded layers equal the whole model's, bitwise; the edit applies through the map"
    m, sm, tok, d = models
    corpus = d / 'c.txt'; corpus.write_text(' '.join(f"word{i % 37} hello there big world" for i in range(200)))
    for L in (1, 2):
        Ca, Cb = (R.layer_stats(x, tok, L, corpus, n_tokens=400, seq_len=32, progress=False, cache=False) for x in (m, sm))
        assert torch.equal(Ca, Cb), L
    assert R.stats_key(m, 2, 'c', 400, 32) == R.stats_key(sm, 2, 'c', 400, 32)
    torch.manual_seed(0); ra = R.rome(m, tok, REC, 2, stats=Ca, prefixes=PREFIXES, steps=2)
    torch.manual_seed(0); rb = R.rome(sm, tok, REC, 2, stats=Cb, prefixes=PREFIXES, steps=2)
    assert torch.equal(ra.dense(DOWN2), rb.dense(DOWN2)) and rb.dense(DOWN2).abs().max() > 0
    b = encode(tok, [REC['prompt']])
    with ra.apply(m): ref = run(m, b)
    with rb.apply(sm): assert torch.equal(run(sm, b), ref)
    ea, eb = (M.memit(x, tok, [REC], [1, 2], prefixes=PREFIXES, steps=2, progress=False) for x in (m, sm))
    assert set(ea.deltas) == set(eb.deltas) == {'model.layers.1.mlp.down_proj.weight', DOWN2}
    for n in ea.deltas: assert torch.equal(ea.dense(n), eb.dense(n)), n
    assert no_hooks(sm) and not sm._editlab_edits and DOWN2 not in offload_slot(sm, DOWN2).source.state_dict

@pytest.mark.parametrize('how', ['max_memory', 'embedding on disk'])
def test_other_splits(models, tmp_path, how):
    """`max_memory` lets accelerate choose the split (later blocks, the norm and the unembedding go to disk); a map with the
    embedding on disk puts it on 'meta' too: inputs still go to the device that runs the embedding, and edits of it apply"""
    m, _, tok, d = models
    size = sum(p.numel() * p.element_size() for p in m.parameters())
    kw = (dict(device_map='auto', max_memory={'cpu': size // 2}) if how == 'max_memory' else
          dict(device_map={**SPLIT, 'model.embed_tokens': 'disk', 'model.layers.2': 'cpu', 'lm_head': 'disk'}))
    am, _ = load_model(str(d), offload_folder=str(tmp_path), **kw)
    assert set(am.hf_device_map.values()) == {'cpu', 'disk'}, am.hf_device_map
    emb = adapter(m).spec.embed + '.weight'
    assert (am.get_parameter(emb).device.type == 'meta') == (how != 'max_memory')
    assert model_device(am) == torch.device('cpu') and fingerprint(am) == fingerprint(m)
    b = encode(tok, ['hello world', 'big cat'], device=model_device(am))
    assert torch.equal(run(am, b), run(m, b))
    g = torch.Generator().manual_seed(1)
    wd = WeightDelta({n: 0.05 * torch.randn(m.get_parameter(n).shape, generator=g) for n in (emb, 'model.layers.3.mlp.up_proj.weight')})
    with wd.apply(m): ref = run(m, b)
    with wd.apply(am): assert torch.equal(run(am, b), ref)
    assert torch.equal(run(am, b), run(m, b)) and no_hooks(am)

def test_tied_embedding_offloaded(tmp_path):
    "A tied embedding/unembedding on disk is loaded by two hooks under two keys: an edit writes both, undo restores both"
    m, tok = tiny_model('llama', n_layers=2, tie_word_embeddings=True)
    m.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    dm = {'model.embed_tokens': 'disk', 'model.layers.0': 'cpu', 'model.layers.1': 'cpu', 'model.norm': 'cpu',
          'model.rotary_emb': 'cpu', 'lm_head': 'disk'}
    am, _ = load_model(str(tmp_path), device_map=dm, offload_folder=str(tmp_path/'offload'))
    assert am.lm_head.weight is am.model.embed_tokens.weight and am.lm_head.weight.device.type == 'meta'
    b = encode(tok, ['hello world', 'big cat'])
    wd = WeightDelta({'lm_head.weight': 0.1 * torch.randn(m.lm_head.weight.shape, generator=torch.Generator().manual_seed(2))})
    with wd.apply(m): ref = run(m, b)
    with wd.apply(am): assert torch.equal(run(am, b), ref)
    assert torch.equal(run(am, b), run(m, b))

def test_embedded_model_split():
    "SmolLM2-135M-Instruct with its last 10 blocks on disk: logits and captures bitwise equal, an edit of an offloaded block too, undo exact"
    from editlab.models import _cache_embedded
    m, tok = load_model(); ad = adapter(m); n = ad.n_layers
    dm = {'model.embed_tokens': 'cpu', 'model.norm': 'cpu', 'model.rotary_emb': 'cpu', 'lm_head': 'cpu',
          **{f'model.layers.{i}': 'cpu' if i < n - 10 else 'disk' for i in range(n)}}
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        sm, _ = load_model(str(_cache_embedded()), device_map=dm, offload_folder=d)
        b = encode(tok, ['The capital of France is', 'I went to the'])
        hooks = [f'blocks.{n-3}.hook_resid_post', 'blocks.5.mlp.hook_post']
        outs = []
        for mm in (m, sm):
            with capture(mm, hooks) as c: lg = run(mm, b)
            outs.append((lg, c))
        assert torch.equal(outs[0][0], outs[1][0]) and all(torch.equal(outs[0][1][h], outs[1][1][h]) for h in hooks)
        name = ad.param_name(n - 2, 'down'); assert offload_slot(sm, name) is not None
        wd = WeightDelta({name: 0.02 * torch.randn(m.get_parameter(name).shape, generator=torch.Generator().manual_seed(0))})
        with wd.apply(m): ref = run(m, b)
        with wd.apply(sm): assert torch.equal(run(sm, b), ref)
        assert not torch.equal(ref, outs[0][0]) and torch.equal(run(sm, b), outs[0][0])
