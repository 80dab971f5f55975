"Checks shared by the editor tests: weights bitwise unchanged, no hooks left behind"
import torch

def weights(m): return {n: p.detach().clone() for n, p in m.named_parameters()}
def same(a, b): return all(torch.equal(a[n], b[n]) for n in a)
def no_hooks(m): return all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())
