"""Checks shared by the tests: weights bitwise unchanged, no hooks left behind, the whole model state unchanged
(`snapshot` / `changes`); the learned editors' edit requests"""
import torch

def weights(m): return {n: p.detach().clone() for n, p in m.named_parameters()}
def same(a, b): return all(torch.equal(a[n], b[n]) for n in a)

def no_hooks(m):
    "No forward (pre-)hook on any module, and no editlab hook still counted on the model"
    st = getattr(m, '_editlab_state', None)
    return all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules()) and (st is None or st.users == 0)

def snapshot(m):
    "Everything an edit must leave as it was: parameters and buffers (bitwise, with dtype), requires_grad, each module's train/eval mode"
    return dict(params=weights(m), buffers={n: b.detach().clone() for n, b in m.named_buffers()},
                grad={n: p.requires_grad for n, p in m.named_parameters()}, modes={n: mod.training for n, mod in m.named_modules()})

def changes(m, snap)->list[str]:
    "What differs from `snapshot` (empty when nothing does), plus any hook or weight edit left behind"
    now, out = snapshot(m), []
    for part in ('params', 'buffers'):
        a, b = snap[part], now[part]
        if a.keys() != b.keys(): out.append(f"{part}: names differ")
        out += [f"{part}: {n} changed" for n in a if n in b and (a[n].dtype != b[n].dtype or not torch.equal(a[n], b[n]))]
    out += [f"requires_grad of {n} changed" for n in snap['grad'] if snap['grad'][n] != now['grad'].get(n)]
    out += [f"train/eval mode of {n or 'the model'} changed" for n in snap['modes'] if snap['modes'][n] != now['modes'].get(n)]
    if not no_hooks(m): out.append("a hook is left")
    if getattr(m, '_editlab_edits', None): out.append(f"{len(m._editlab_edits)} weight edit(s) still applied")
    return out

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
