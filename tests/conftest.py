"Shared fixtures: one CPU thread and no autograd for tiny-model tests; a tiny Llama."
import pytest, torch
from editlab.models import tiny_model

@pytest.fixture(autouse=True, scope='module')
def _fast_cpu():
    "Tiny models run fastest on one thread (and do not fight other processes for the 2 cores); tests opt in to autograd"
    n, g = torch.get_num_threads(), torch.is_grad_enabled()
    torch.set_num_threads(1); torch.set_grad_enabled(False)
    yield
    torch.set_num_threads(n); torch.set_grad_enabled(g)

@pytest.fixture(scope='module')
def llama():
    "A 2-layer tiny Llama (GQA, head_dim 24 != 64/4) and its byte-level tokenizer"
    return tiny_model('llama', n_layers=2)
