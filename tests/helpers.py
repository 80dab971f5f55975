"Checks shared by the editor tests: weights bitwise unchanged, no hooks left behind; the learned editors' edit requests"
import torch

def weights(m): return {n: p.detach().clone() for n, p in m.named_parameters()}
def same(a, b): return all(torch.equal(a[n], b[n]) for n in a)
def no_hooks(m): return all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())

# two edit requests on a tiny model's vocabulary, and the malformed batches every learned editor must refuse (MEND, KE, ENN)
REQS = [dict(prompt='the big world is', subject='big world', target_new='hello there', target_true='green'),
        dict(prompt='a small cat is', subject='small cat', target_new='green', target_true='hello')]
BAD_EDIT_REQUESTS = [
    ([], 'no edit requests'),
    ([dict(prompt='the big world is')], "record 0 has no 'target_new'"),
    ([REQS[0], dict(REQS[1], target_new=' ')], 'record 1: target_new'),
    ([REQS[0], dict(REQS[0], target_new='blue')], 'records 0 and 1 contradict'),
    ([dict(REQS[0], target_new='green', target_true='green')], 'nothing to edit'),
]
