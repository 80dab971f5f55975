"""Bad input to the public API, one table: every case must fail (or warn) with a message that names the problem, and leave
the model exactly as it was: parameters and buffers bitwise, requires_grad flags, train/eval mode, no hook and no weight
edit left behind (`helpers.changes`). Tiny random models built from configs; nothing is downloaded."""
import json
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from editlab.models import adapter, fingerprint, tiny_model
from editlab.hooks import capture, encode, forward, get_activations, hook_names, intervene, add_vector, resolve_hooks
from editlab.artifacts import Intervention, WeightDelta
from editlab.evaluate import edit_scores, target_logprobs, token_scores
from editlab.steering import contrastive_vectors, direction, steering
from editlab.finetune import finetune
from editlab import artifacts as A, rome as R, memit as M
from helpers import changes, snapshot

P = ['hello there', 'a b c']   # context prefixes: no generation in these tests
REC = dict(prompt='the big world is', subject='big world', target_new='hello', target_true='there')
REC2 = dict(prompt='a small cat is', subject='small cat', target_new='there', target_true='world')
DOWN0 = 'model.layers.0.mlp.down_proj.weight'

@pytest.fixture(scope='module')
def models():
    "One model per kind, shared by the cases (each case must leave its model as it found it)"
    train, tok = tiny_model('llama', seed=2)
    train.train()                                                       # a model in train mode, with some weights frozen
    for n, p in train.named_parameters(): p.requires_grad_('layers.1' not in n)
    return dict(llama=tiny_model('llama')[0], llama3=tiny_model('llama', n_layers=3)[0], other=tiny_model('llama', seed=1)[0],
                half=tiny_model('llama')[0].half(), bf16=tiny_model('llama')[0].to(torch.bfloat16),
                gpt2=tiny_model('gpt2')[0], train=train, tok=tok)

@dataclass
class Case:
    id: str            # what is wrong
    model: str         # which model of `models` the case runs on (and must leave unchanged)
    run: Callable      # run(m, tok, env) does the bad call
    exc: type|None     # the exception expected; a Warning subclass: a warning; None: must succeed
    match: str = ''    # a piece of the message that names the problem (a regular expression)

# ------------------------------------------------------------------------------------------------------------- helpers

def delta(m, v=0.01, **meta):
    "A dense delta on layer 0's down projection, with the model's fingerprint"
    return WeightDelta({DOWN0: torch.full(tuple(adapter(m).down(0).weight.shape), v)}, dict(method='test', fingerprint=fingerprint(m), **meta))

def vec(m, v=1.0, hook='blocks.0.hook_resid_post'):
    return Intervention.from_vectors({hook: torch.full((adapter(m).d_model,), v)}, meta=dict(fingerprint=fingerprint(m)))

def written(env, m, name='t.safetensors', tensors=None, **md):
    "A WeightDelta file for `m` with some metadata fields replaced (None removes a field)"
    d = delta(m)
    meta = {'editlab_kind': 'WeightDelta', 'meta': json.dumps(d.meta), 'layout': json.dumps({DOWN0: 'dense'}), **md}
    p = env['tmp'] / name
    save_file(tensors if tensors is not None else {f'D:{DOWN0}': d.dense(DOWN0)}, str(p), metadata={k: v for k, v in meta.items() if v is not None})
    return p

def saved(env, m, art=None, name='ok.safetensors'): return (art if art is not None else delta(m)).save(env['tmp'] / name)

def raising(exc, after=0):
    "wrap(orig): a function that passes `after` calls through to `orig`, then raises `exc`"
    def wrap(orig):
        n = [0]
        def f(*a, **k):
            n[0] += 1
            if n[0] > after: raise exc
            return orig(*a, **k)
        return f
    return wrap

def patched(env, obj, name, wrap, call):
    "Run `call()` with obj.name replaced by wrap(obj.name)"
    env['mp'].setattr(obj, name, wrap(getattr(obj, name)))
    try: return call()
    finally: env['mp'].undo()

def wrong_undo_order(m):
    d = delta(m); h1 = d.apply(m); h2 = (1 * d).apply(m)
    try: h1.undo()
    finally: h2.undo(); h1.undo()

def twice(m):
    d = delta(m); h1 = d.apply(m); h2 = (1 * d).apply(m)   # a copy stacks; the same artifact twice is refused (below)
    h2.undo(); h1.undo()                           # reverse order restores bitwise
    h1.undo()                                      # a second undo is an error (the model is already as it was)

def apply_twice(m, make):
    a = make(m); h = a.apply(m)
    try: a.apply(m)                                # refused: already applied
    finally: h.undo()

def raise_inside(ctx, exc):
    with ctx: raise exc

def kbd_in_hook(m, tok):
    def f(x, c): raise KeyboardInterrupt
    with intervene(m, {'blocks.1.hook_resid_post': f}): forward(m, **encode(tok, ['hello']))

def steer_forward(m, tok, iv):
    with iv.apply(m): forward(m, **encode(tok, ['hello there']))

def fp16_hook_vector(m, tok):
    v = add_vector(torch.full((adapter(m).d_model,), 1e5), what='vector at blocks.0.hook_resid_post')
    with intervene(m, {'blocks.0.hook_resid_post': v}): forward(m, **encode(tok, ['hello']))

def corpus(env):
    p = env['tmp'] / 'corpus.txt'; p.write_text(' '.join(f"word{i % 37} hello there big world" for i in range(200))); return p

def ft(m, tok, **kw): return finetune(m, tok, kw.pop('prompts', ['ab', 'cd']), kw.pop('targets', ['xy', 'zz']), **{'steps': 2, 'progress': False, **kw})
def rome(m, tok, rec=REC, **kw): return R.rome(m, tok, rec, kw.pop('layer', 0), prefixes=P, **{'steps': 2, **kw})
def memit(m, tok, reqs=(REC, REC2), layers=(0,), **kw): return M.memit(m, tok, list(reqs), list(layers), prefixes=P, progress=False, **{'steps': 2, **kw})
def eye(m, v=None): C = torch.eye(adapter(m).d_mlp, dtype=torch.float64); return C if v is None else C.fill_(v)
def acts(n=4, d=8, seed=0): return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))

NAN, INF = float('nan'), float('inf')
W2 = torch.ones(64, 96)   # a delta for a [64, 96] down projection

# ------------------------------------------------------------------------------------------------------------- the table

CASES = [
    # hook names
    Case('unknown hook kind', 'llama', lambda m, t, e: resolve_hooks(m, 'blocks.0.hook_foo'), KeyError, "unknown hook point 'blocks.0.hook_foo'"),
    Case('hook name without layer', 'llama', lambda m, t, e: capture(m, 'hook_resid_post').__enter__(), KeyError, 'unknown hook point'),
    Case('glob matching nothing', 'llama', lambda m, t, e: intervene(m, {'blocks.*.hook_nothing': lambda x, c: x}).__enter__(), KeyError, 'matches no hook point'),
    Case('hook names of wrong type', 'llama', lambda m, t, e: get_activations(m, t, ['hi'], None), TypeError, 'hook names must be'),
    Case('intervention at an unknown hook', 'llama', lambda m, t, e: Intervention.from_vectors({'blocks.0.resid': torch.ones(64)}).apply(m), KeyError, "unknown hook point 'blocks.0.resid'"),
    Case('intervene value not a function', 'llama', lambda m, t, e: intervene(m, {'blocks.0.hook_resid_post': torch.ones(64)}).__enter__(), TypeError, 'must be a function'),
    # layers
    Case('hook layer out of range', 'llama', lambda m, t, e: capture(m, 'blocks.9.hook_resid_post').__enter__(), IndexError, 'layer 9 out of range'),
    Case('intervention layer out of range', 'llama', lambda m, t, e: vec(m, hook='blocks.5.hook_resid_post').apply(m), IndexError, 'layer 5 out of range'),
    Case('ROME layer out of range', 'llama', lambda m, t, e: rome(m, t, layer=7), IndexError, 'layer 7 out of range'),
    Case('ROME layer of wrong type', 'llama', lambda m, t, e: rome(m, t, layer='1'), IndexError, 'out of range'),
    Case('MEMIT no layers', 'llama', lambda m, t, e: memit(m, t, layers=[]), ValueError, 'no layers to edit'),
    Case('statistics layer out of range', 'llama', lambda m, t, e: R.layer_stats(m, t, -9, corpus(e), n_tokens=100, progress=False, cache=False), IndexError, 'out of range'),
    Case('hook_names layer True', 'llama', lambda m, t, e: hook_names(m, layers=[True]), IndexError, 'out of range'),
    # shapes
    Case('steering vector of wrong width', 'llama', lambda m, t, e: Intervention.from_vectors({'blocks.0.hook_resid_post': torch.ones(5)}).apply(m), ValueError, r'shape \(5,\), this hook point needs \(64,\)'),
    Case('per-head vector of wrong shape', 'llama', lambda m, t, e: Intervention.from_vectors({'blocks.0.attn.hook_z': torch.ones(64)}).apply(m), ValueError, r'needs \(4, 24\)'),
    Case('neuron vector of wrong width', 'llama', lambda m, t, e: steer_forward(m, t, Intervention.from_vectors({'blocks.0.mlp.hook_post': torch.ones(64)})), ValueError, r'needs \(96,\)'),
    Case('delta of wrong shape', 'llama', lambda m, t, e: WeightDelta({DOWN0: torch.ones(3, 3)}).apply(m), ValueError, f'delta for {DOWN0} has shape'),
    Case('delta for no parameter', 'llama', lambda m, t, e: WeightDelta({'model.layers.9.mlp.down_proj.weight': torch.ones(3)}).apply(m), KeyError, 'name no parameter'),
    Case('mismatched low-rank factors', 'llama', lambda m, t, e: WeightDelta({DOWN0: (torch.ones(64, 2), torch.ones(3, 128))}), ValueError, 'low-rank factors must be'),
    Case('ROME statistics of wrong shape', 'llama', lambda m, t, e: rome(m, t, stats=torch.eye(3)), ValueError, 'another model or layer'),
    Case('MEMIT statistics of wrong shape', 'llama', lambda m, t, e: memit(m, t, layers=[0], stats={0: torch.eye(3)}), ValueError, 'stats for layer 0 have shape'),
    Case('pca_diff on unpaired sets', 'llama', lambda m, t, e: direction(acts(4), acts(3, seed=1), 'pca_diff'), ValueError, 'paired sets'),
    # dtypes
    Case('integer delta', 'llama', lambda m, t, e: WeightDelta({DOWN0: torch.ones(2, 2, dtype=torch.int64)}), TypeError, 'not floating point'),
    Case('float64 delta infinite in float32', 'llama', lambda m, t, e: WeightDelta({DOWN0: torch.full((64, 96), 1e300, dtype=torch.float64)}).apply(m), ValueError, f'delta for {DOWN0}.*not finite.*torch.float32'),
    Case('finite alpha overflowing float32', 'llama', lambda m, t, e: delta(m, 10.).apply(m, alpha=1e38), ValueError, r'times alpha 1e\+38.*not finite'),
    Case('delta overflowing float16', 'half', lambda m, t, e: delta(m, 7e4).apply(m), ValueError, 'torch.float16 holds at most'),
    Case('second delta overflowing float16 (first rolled back)', 'half', lambda m, t, e: WeightDelta({'model.layers.1.mlp.down_proj.weight': W2, DOWN0: W2 * 1e5}).apply(m), ValueError, DOWN0),
    Case('steering vector overflowing float16', 'half', lambda m, t, e: vec(m, 1e5).apply(m), ValueError, "vector at blocks.0.hook_resid_post overflows the activations' dtype torch.float16"),
    Case('hook vector overflowing float16 at the hook', 'half', lambda m, t, e: fp16_hook_vector(m, t), ValueError, 'blocks.0.hook_resid_post overflows'),
    Case('alpha overflowing a bfloat16 vector', 'bf16', lambda m, t, e: vec(m, 10.).apply(m, alpha=1e39), ValueError, r'times alpha 1e\+39 contains NaN or Inf'),
    Case('alpha as a string', 'llama', lambda m, t, e: delta(m).apply(m, alpha='2'), TypeError, 'alpha must be a real number'),
    Case('alpha as a bool', 'llama', lambda m, t, e: vec(m).apply(m, alpha=True), TypeError, 'alpha must be a real number'),
    Case('artifact scaled by a string', 'llama', lambda m, t, e: delta(m) * 'x', TypeError, 'can only be scaled by a finite number'),
    # NaN / inf
    Case('NaN delta', 'llama', lambda m, t, e: WeightDelta({DOWN0: torch.full((2, 2), NAN)}), ValueError, f'delta for {DOWN0} contains NaN'),
    Case('inf steering vector', 'llama', lambda m, t, e: Intervention.from_vectors({'blocks.0.hook_resid_post': torch.full((64,), INF)}), ValueError, 'vector at blocks.0.hook_resid_post contains NaN or Inf'),
    Case('NaN alpha', 'llama', lambda m, t, e: delta(m).apply(m, alpha=NAN), ValueError, 'alpha must be finite'),
    Case('inf artifact scale', 'llama', lambda m, t, e: vec(m) * INF, TypeError, 'finite number'),
    Case('ROME NaN statistics', 'llama', lambda m, t, e: rome(m, t, stats=eye(m, NAN)), ValueError, 'stats for layer 0 contain NaN'),
    Case('solve with NaN statistics', 'llama', lambda m, t, e: R.solve_psd(eye(m, NAN), torch.ones(96)), ValueError, "key statistics contain 9216 NaN"),
    Case('MEMIT inf statistics', 'llama', lambda m, t, e: memit(m, t, layers=[0], stats={0: eye(m, INF)}), ValueError, 'stats for layer 0 contain NaN or Inf'),
    Case('fine-tune NaN learning rate', 'train', lambda m, t, e: ft(m, t, lr=NAN), ValueError, 'lr must be a finite number > 0, got nan'),
    Case('fine-tune inf learning rate', 'train', lambda m, t, e: ft(m, t, lr=INF), ValueError, 'lr must be a finite number'),
    Case('fine-tune NaN weight decay', 'train', lambda m, t, e: ft(m, t, weight_decay=NAN), ValueError, 'weight_decay must be a finite number'),
    Case('fine-tune NaN max_norm', 'train', lambda m, t, e: ft(m, t, max_norm=NAN), ValueError, 'max_norm must be a finite number'),
    Case('direction from NaN activations', 'llama', lambda m, t, e: direction(acts().fill_(NAN), acts(seed=1)), ValueError, 'NaN or Inf'),
    # empty and unicode prompts
    Case('empty prompt list to encode', 'llama', lambda m, t, e: encode(t, []), ValueError, 'empty prompt list'),
    Case('empty prompt list to get_activations', 'llama', lambda m, t, e: get_activations(m, t, [], 'blocks.0.hook_resid_post'), ValueError, 'empty prompt list'),
    Case('no records to score', 'llama', lambda m, t, e: edit_scores(m, t, []), ValueError, 'no records to score'),
    Case('empty training set', 'train', lambda m, t, e: ft(m, t, prompts=[], targets=[]), ValueError, 'empty training set'),
    Case('no contrast prompts', 'llama', lambda m, t, e: contrastive_vectors(m, t, [], ['x']), ValueError, 'at least one positive and one negative'),
    Case('ROME on an empty prompt', 'llama', lambda m, t, e: rome(m, t, dict(REC, prompt='')), ValueError, "does not occur in prompt ''"),
    Case('unicode subject not in a unicode prompt', 'llama', lambda m, t, e: rome(m, t, dict(REC, prompt='Ünïcödé wörld ist', subject='wörld!')), ValueError, "subject 'wörld!' does not occur"),
    Case('unicode prompt and subject edit', 'llama', lambda m, t, e: rome(m, t, dict(REC, prompt='der große 世界 ist', subject='große 世界')), None),
    Case('emoji target scored', 'llama', lambda m, t, e: edit_scores(m, t, [dict(REC, target_new='🙂 ok')]), None),
    # targets that tokenize to nothing
    Case('ROME blank target', 'llama', lambda m, t, e: rome(m, t, dict(REC, target_new=' ')), ValueError, "target_new ' ' is empty"),
    Case('scoring an empty target', 'llama', lambda m, t, e: edit_scores(m, t, [dict(REC, target_new='')]), ValueError, "target '' is empty"),
    Case('fine-tune on a newline target', 'train', lambda m, t, e: ft(m, t, prompts=['ab'], targets=['\n']), ValueError, r"target '\\n' is empty"),
    Case('log-probs of a blank target', 'llama', lambda m, t, e: target_logprobs(m, t, ['hello'], ['  ']), ValueError, 'is empty'),
    Case('MEMIT target equal to the true one', 'llama', lambda m, t, e: memit(m, t, [dict(REC, target_new='there')]), ValueError, 'equals target_true'),
    # subjects not in the prompt
    Case('ROME subject not in prompt', 'llama', lambda m, t, e: rome(m, t, dict(REC, subject='moon')), ValueError, "subject 'moon' does not occur"),
    Case('ROME subject with other case', 'llama', lambda m, t, e: rome(m, t, dict(REC, subject='Big World')), ValueError, 'does not occur'),
    Case('ROME empty subject', 'llama', lambda m, t, e: rome(m, t, dict(REC, subject=' ')), ValueError, "subject ' ' is empty"),
    Case('MEMIT subject not in prompt', 'llama', lambda m, t, e: memit(m, t, [REC, dict(REC2, subject='dog')]), ValueError, "subject 'dog' does not occur"),
    # missing fields and contradictions
    Case('ROME request without target_new', 'llama', lambda m, t, e: rome(m, t, dict(prompt='the big world is', subject='big world')), KeyError, "needs 'target_new'"),
    Case('scores without target_true', 'llama', lambda m, t, e: edit_scores(m, t, [dict(prompt='the big world is', target_new='hello')]), ValueError, "needs .*'target_true'"),
    Case('token scores without target_new', 'llama', lambda m, t, e: token_scores(m, t, [dict(prompt='the big world is')]), ValueError, "needs .*'target_new'"),
    Case('MEMIT contradicting requests', 'llama', lambda m, t, e: memit(m, t, [REC, REC2, dict(REC, target_new='green')]), ValueError, 'requests 0 and 2 contradict'),
    Case('MEMIT statistics for a layer it does not edit', 'llama', lambda m, t, e: memit(m, t, layers=[1], stats={0: eye(m)}), ValueError, r'stats are given for layer\(s\) \[0\] but not for the edited layer\(s\) \[1\]'),
    Case('identical contrast sets (pca_diff)', 'llama', lambda m, t, e: direction(acts(), acts(), 'pca_diff'), ValueError, 'identical'),
    Case('identical contrast prompts', 'llama', lambda m, t, e: contrastive_vectors(m, t, ['good day'], ['good day'], method='pca_center'), ValueError, 'at blocks.0.hook_resid_post: the positive and negative activations are identical'),
    Case('ROME target already reached: zero update', 'llama', lambda m, t, e: rome(m, t, stop_nll=1e9), UserWarning, f'the update of {DOWN0} is exactly zero'),
    # tampered and truncated files
    Case('truncated file', 'llama', lambda m, t, e: WeightDelta.load(e['tmp'] / 'cut.safetensors'), ValueError, 'cut.safetensors is not a readable safetensors file'),
    Case('not a safetensors file', 'llama', lambda m, t, e: WeightDelta.load(corpus(e)), ValueError, 'corpus.txt is not a readable safetensors file'),
    Case('directory instead of a file', 'llama', lambda m, t, e: WeightDelta.load(e['tmp']), IsADirectoryError, 'is a directory'),
    Case('missing file', 'llama', lambda m, t, e: Intervention.load(e['tmp'] / 'nothing.safetensors'), FileNotFoundError, 'no artifact file at .*nothing.safetensors'),
    Case('meta not JSON', 'llama', lambda m, t, e: WeightDelta.load(written(e, m, meta='{"method": ')), ValueError, "t.safetensors: the 'meta' metadata field is not valid JSON"),
    Case('meta field removed', 'llama', lambda m, t, e: WeightDelta.load(written(e, m, meta=None)), ValueError, "lacks the 'meta' metadata field"),
    Case('layout field removed', 'llama', lambda m, t, e: WeightDelta.load(written(e, m, layout=None)), ValueError, "lacks the 'layout' metadata field"),
    Case('unknown layout', 'llama', lambda m, t, e: WeightDelta.load(written(e, m, layout=json.dumps({DOWN0: 'sparse'}))), ValueError, "unknown layout 'sparse'"),
    Case('layout naming a missing tensor', 'llama', lambda m, t, e: WeightDelta.load(written(e, m, layout=json.dumps({'model.layers.9.x': 'dense'}))), ValueError, "names the tensor 'D:model.layers.9.x', which the file does not hold"),
    Case('intervention term key missing', 'llama', lambda m, t, e: Intervention.load(written(e, m, editlab_kind='Intervention', layout=json.dumps([{'hook': 'blocks.99.hook_resid_post', 'positions': 'all', 'norm_preserve': False}]))), ValueError, "'0:blocks.99.hook_resid_post', which the file does not hold"),
    Case('intervention layout not a list', 'llama', lambda m, t, e: Intervention.load(written(e, m, editlab_kind='Intervention')), ValueError, 'layout is not a list'),
    Case('WeightDelta file loaded as an Intervention', 'llama', lambda m, t, e: Intervention.load(saved(e, m)), ValueError, "holds a 'WeightDelta', not a 'Intervention'"),
    Case('malformed fingerprint', 'llama', lambda m, t, e: WeightDelta.load(written(e, m, meta=json.dumps({'fingerprint': 'abc'}))), ValueError, 'fingerprint .* is not'),
    Case('NaN tensor in the file', 'llama', lambda m, t, e: WeightDelta.load(written(e, m, tensors={f'D:{DOWN0}': torch.full((64, 96), NAN)})), ValueError, f't.safetensors: delta for {DOWN0} contains NaN'),
    Case('tensor of altered shape', 'llama', lambda m, t, e: WeightDelta.load(written(e, m, tensors={f'D:{DOWN0}': torch.ones(3, 3)})).apply(m), ValueError, r'has shape \(3, 3\)'),
    Case('fingerprint stripped', 'llama', lambda m, t, e: WeightDelta.load(written(e, m, meta=json.dumps({'method': 'x'})), model=m), UserWarning, 'has no model fingerprint'),
    # wrong models
    Case('file made on other weights', 'other', lambda m, t, e: WeightDelta.load(saved(e, e['models']['llama']), model=m), ValueError, 'other weights'),
    Case('delta made on another architecture', 'llama3', lambda m, t, e: delta(e['models']['llama']).apply(m), ValueError, 'another architecture'),
    Case('intervention made on other weights', 'other', lambda m, t, e: steering({'blocks.0.hook_resid_post': torch.ones(64)}, model=e['models']['llama']).apply(m), ValueError, 'other weights'),
    Case('llama delta on a GPT-2', 'gpt2', lambda m, t, e: delta(e['models']['llama']).apply(m), ValueError, 'another architecture'),
    Case('unfingerprinted delta on a GPT-2', 'gpt2', lambda m, t, e: WeightDelta({DOWN0: torch.ones(2, 2)}).apply(m), KeyError, 'name no parameter of this model'),
    # double apply / undo, undo order
    Case('undo in the wrong order', 'llama', lambda m, t, e: wrong_undo_order(m), RuntimeError, 'reverse order'),
    Case('double apply, double undo', 'llama', lambda m, t, e: twice(m), RuntimeError, 'already undone'),
    Case('intervention applied twice, undone twice', 'llama', lambda m, t, e: [h.undo() for h in [vec(m).apply(m), vec(m).apply(m)][::-1] * 2], RuntimeError, 'already undone'),
    Case('the same delta applied twice', 'llama', lambda m, t, e: apply_twice(m, delta), RuntimeError, 'already applied'),
    Case('the same intervention applied twice', 'llama', lambda m, t, e: apply_twice(m, vec), RuntimeError, 'already applied'),
    # exceptions and KeyboardInterrupt inside edits
    Case('exception inside an applied delta', 'llama', lambda m, t, e: raise_inside(delta(m).apply(m), RuntimeError('inside')), RuntimeError, 'inside'),
    Case('KeyboardInterrupt inside an applied intervention', 'llama', lambda m, t, e: raise_inside(vec(m).apply(m), KeyboardInterrupt()), KeyboardInterrupt),
    Case('KeyboardInterrupt in a hook', 'llama', lambda m, t, e: kbd_in_hook(m, t), KeyboardInterrupt),
    Case('KeyboardInterrupt while applying a delta', 'llama', lambda m, t, e: patched(e, A, '_check_finite', raising(KeyboardInterrupt, 1), lambda: WeightDelta({DOWN0: W2, 'model.layers.1.mlp.down_proj.weight': W2}).apply(m)), KeyboardInterrupt),
    Case('KeyboardInterrupt in ROME', 'train', lambda m, t, e: patched(e, R, 'unembed_logits', raising(KeyboardInterrupt, 3), lambda: rome(m, t, steps=5)), KeyboardInterrupt),
    Case('KeyboardInterrupt in MEMIT between layers', 'llama3', lambda m, t, e: patched(e, M, 'solve_psd', raising(KeyboardInterrupt, 1), lambda: memit(m, t, layers=(0, 1))), KeyboardInterrupt),
    Case('KeyboardInterrupt in fine-tuning', 'train', lambda m, t, e: ft(m, t, regularizer=raising(KeyboardInterrupt, 1)(lambda *a: torch.zeros(()))), KeyboardInterrupt),
    Case('optimiser failing to start', 'train', lambda m, t, e: patched(e, torch.optim, 'AdamW', raising(RuntimeError('no optimiser')), lambda: ft(m, t)), RuntimeError, 'no optimiser'),
    Case('schedule raising', 'train', lambda m, t, e: ft(m, t, intervention=vec(m), schedule=raising(ValueError('bad schedule'), 1)(lambda s, n: 1.0)), ValueError, 'bad schedule'),
    Case('KeyboardInterrupt in key statistics', 'llama', lambda m, t, e: patched(e, R, 'pad_batch', raising(KeyboardInterrupt, 1), lambda: R.layer_stats(m, t, 0, corpus(e), n_tokens=500, seq_len=16, batch_size=2, progress=False, cache=False)), KeyboardInterrupt),
]

@pytest.fixture(scope='module')
def env(models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('bad')
    delta(models['llama']).save(tmp / 'full.safetensors')
    (tmp / 'cut.safetensors').write_bytes((tmp / 'full.safetensors').read_bytes()[:200])
    return dict(models=models, tmp=tmp)

def test_the_table_is_large_and_named():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert all(c.match for c in CASES if c.exc not in (None, KeyboardInterrupt))   # every error case names its problem

@pytest.mark.filterwarnings('ignore:.*(singular|fingerprint|exactly zero|below the resolution).*:UserWarning')
@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_bad_input(case, env, models, monkeypatch):
    m, tok = models[case.model], models['tok']
    env = dict(env, mp=monkeypatch)
    before = snapshot(m)
    with torch.no_grad():
        if case.exc is None: case.run(m, tok, env)
        elif issubclass(case.exc, Warning):
            with pytest.warns(case.exc, match=case.match): case.run(m, tok, env)
        else:
            with pytest.raises(case.exc, match=case.match or None): case.run(m, tok, env)
    assert changes(m, before) == []
