r"""PyTorch peers (hypnettorch and torch.func) for the benchmark's W3 and W3-chunked.

A standalone script for a scratch virtual environment OUTSIDE the project, as
`maml_torch.py` beside it (whose timing protocol and JSON writer it uses). It times one
meta-step of the benchmark's hypernetwork workloads (`experiments/benchmark_workloads.py`):

* `W3`: 16 tasks, each a learned task embedding (32) -> hypernetwork, a ReLU MLP 32-100-100
  and a linear head to all 89,610 weights of the target MLP 784-100-100-10 (ReLU) ->
  cross-entropy on 128 inputs of the task; meta-loss the mean over tasks; Adam 1e-3 on the
  embeddings and the hypernetwork.
* `W3-chunked`: the same with a chunked hypernetwork (von Oswald et al. 2020): the trunk
  reads `[task embedding, chunk embedding (8)]` for each of 13 chunks, the head writes 7,000
  values per chunk, the chunks are concatenated and cut to 89,610.

Implementations (`--impl`):

* `hypnettorch_loop`: hypnettorch's `HMLP` / `ChunkedHMLP` with the 16 task embeddings as its
  conditional embeddings, one `hnet.forward(cond_id=t)` per task in a Python loop, as its
  continual-learning examples call it (its users are told to loop over tasks), then one
  `backward` of the mean loss.
* `hypnettorch_batched`: the same modules, all tasks' weights generated in one
  `hnet.forward(cond_id=[0, ..., 15])` (its batched conditioning); the target network still
  runs once per task, as hypnettorch's main networks take one weight set.
* `torchfunc`: the same computation written for `torch.func`: `functional_call` of an
  `nn.Module` hypernetwork, `torch.vmap` over the tasks (generation and target together),
  `grad_and_value` for the meta-gradient, `torch.optim.Adam`.

The target is `relu(x @ kernel + bias)` twice and a linear layer, written functionally
(hypnettorch's own `mnets.MLP` is `F.linear` in a loop: the same operations), on the
generated tensors in the library's order and layout (`experiments/peer_check.py`), so that one
set of weights serves every implementation.

Same starting weights, checked: `--check` takes the npz that `python -m experiments.peer_check`
writes (the library's starting weights, batch, meta-loss and meta-gradient). The script loads
those weights into the implementation (hypnettorch's trunk reads `[chunk embedding, task
embedding]`, the reverse of the library's order: its first layer's columns are swapped to
match), computes the meta-loss and meta-gradient once, and compares them with the library's:
the largest error of every gradient, relative to that gradient's largest magnitude, must be
below `--check_tol` (else exit status 1, nothing written). Then it times the meta-step from
those weights (`maml_torch.measure`: warm-up, `--windows` windows, median steps/s).

Scratch environment (Python 3.11, on the project's 2-core x86_64 machine; torch 2.13.0 is a
CPU build that pip takes from this machine's disk; hypnettorch 0.0.4 is pure Python):

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch==2.13.0 hypnettorch==0.0.4

Run (from the repository root; `side_by_side.sh` does both steps):

    python -m experiments.peer_check --out_dir=workdirs/peers/check
    /work/torchenv/bin/python experiments/peers/hnet_torch.py --impl=torchfunc --workload=W3 \
        --check=workdirs/peers/check/W3.npz --out=workdirs/peers/torchfunc_W3.json

Output JSON (atomically written): the keys of `maml_torch.py`'s (`impl`, `workload`,
`steps_per_s`, `torch_version`, `threads`, `glibc_tunables`, ...), `hypnettorch_version`
(null for torchfunc), and `check`: `{'loss', 'library_loss', 'max_rel_grad_err', 'tol'}`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import maml_torch  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

LEARNING_RATE = 1e-3
DESCRIPTIONS = {
    'W3': 'task embedding 32 -> hypernet 32-100-100 -> MLP 784-100-100-10, 128 inputs, 16 tasks',
    'W3-chunked': 'W3 with chunks of 7000 and chunk embeddings of 8',
}


# ------------------------------------------------------------------ the check file
class Check:
  """The arrays of `experiments.peer_check`'s npz, as float32 / int64 tensors."""

  def __init__(self, path: str, workload: str):
    try:
      data = np.load(path)
      arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
      raise SystemExit(f'--check: {path!r} is not a readable npz ({e}); write it with '
                       f'python -m experiments.peer_check.') from e
    chunked = workload == 'W3-chunked'
    need = ['embed', 'trunk_w0', 'trunk_b0', 'head_w', 'head_b', 'x', 'y', 'loss',
            'target_paths', 'target_shapes'] + (['chunks'] if chunked else [])
    missing = [k for k in need if k not in arrays]
    if missing or ('chunks' in arrays) != chunked:
      raise SystemExit(f'--check: {path!r} is not the npz of {workload} (missing {missing}, '
                       f"chunk embeddings {'present' if 'chunks' in arrays else 'absent'}).")
    self.chunked = chunked
    self.target_shapes = [tuple(s) for s in json.loads(str(arrays['target_shapes']))]
    self.target_paths = json.loads(str(arrays['target_paths']))
    self.num_trunk = sum(k.startswith('trunk_w') for k in arrays)
    self.loss = float(arrays['loss'])
    self.params = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()
                   if k not in ('x', 'y', 'loss', 'target_paths', 'target_shapes')
                   and not k.startswith('grad_')}
    self.grads = {k[5:]: torch.from_numpy(v.copy()) for k, v in arrays.items()
                  if k.startswith('grad_')}
    self.x = torch.from_numpy(arrays['x'].copy())
    self.y = torch.from_numpy(arrays['y'].astype(np.int64))

  def to(self, dtype: torch.dtype) -> 'Check':
    """A copy with the weights and inputs in `dtype` (the library's values are float32)."""
    out = object.__new__(Check)
    out.__dict__.update(self.__dict__)
    out.params = {k: v.to(dtype) for k, v in self.params.items()}
    out.x = self.x.to(dtype)
    return out

  @property
  def num_outputs(self) -> int:
    return sum(math.prod(s) for s in self.target_shapes)

  @property
  def hidden(self) -> list[int]:
    return [int(self.params[f'trunk_b{i}'].shape[0]) for i in range(self.num_trunk)]


def target_forward(weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
  """The MLP on generated `[b0, k0, b1, k1, b2, k2]` (the library's leaf order): logits."""
  h = x
  layers = len(weights) // 2
  for i in range(layers):
    h = h @ weights[2 * i + 1] + weights[2 * i]
    if i < layers - 1:
      h = F.relu(h)
  return h


def split(flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
  """`[P]` -> the target's tensors, row-major, in order."""
  sizes = [math.prod(s) for s in shapes]
  return [t.reshape(s) for t, s in zip(torch.split(flat, sizes), shapes)]


# ------------------------------------------------------------------ hypnettorch
def hypnettorch_step(check: Check, batched: bool) -> tuple[Callable[[], float], dict, Callable]:
  """`step() -> meta-loss`, hypnettorch's `HMLP` / `ChunkedHMLP` (see the module doc)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  from hypnettorch.hnets import HMLP, ChunkedHMLP  # pylint: disable=g-import-not-at-top
  p = check.params
  tasks, emb = p['embed'].shape
  shapes = [list(s) for s in check.target_shapes]
  default_dtype = torch.get_default_dtype()
  torch.set_default_dtype(p['embed'].dtype)  # hypnettorch makes its tensors in the default
  if check.chunked:
    chunk_emb = p['chunks'].shape[1]
    hnet = ChunkedHMLP(shapes, chunk_size=p['head_w'].shape[1], chunk_emb_size=chunk_emb,
                       cond_in_size=emb, layers=check.hidden, num_cond_embs=tasks,
                       verbose=False)
  else:
    hnet = HMLP(shapes, uncond_in_size=0, cond_in_size=emb, layers=check.hidden,
                num_cond_embs=tasks, verbose=False)
  torch.set_default_dtype(default_dtype)
  # Load the library's weights: the embeddings, then each layer's weight [out, in] and bias.
  metas = [m for m in hnet.param_shapes_meta if m['index'] != -1]
  internal = [hnet.internal_params[m['index']] for m in metas]
  layer_w = [f'trunk_w{i}' for i in range(check.num_trunk)] + ['head_w']
  layer_b = [f'trunk_b{i}' for i in range(check.num_trunk)] + ['head_b']
  w0 = p['trunk_w0']
  if check.chunked:  # hypnettorch reads [chunk embedding, task embedding]; the library the reverse
    w0 = torch.cat([w0[emb:], w0[:emb]], 0)
  weights = [w0] + [p[k] for k in layer_w[1:]]
  emb_i = w_i = b_i = 0
  with torch.no_grad():
    for param, meta in zip(internal, metas):
      if meta['name'] == 'embedding' and list(param.shape) == [emb]:
        param.copy_(p['embed'][emb_i])
        emb_i += 1
      elif meta['name'] == 'embedding':  # the chunk embeddings
        param.copy_(p['chunks'])
      elif meta['name'] == 'weight':
        param.copy_(weights[w_i].T)
        w_i += 1
      else:
        param.copy_(p[layer_b[b_i]])
        b_i += 1
  if (emb_i, w_i, b_i) != (tasks, len(weights), len(layer_b)):
    raise RuntimeError(f'hypnettorch parameters not as expected: {emb_i} embeddings, {w_i} '
                       f'weights, {b_i} biases loaded')
  opt = torch.optim.Adam(hnet.parameters(), LEARNING_RATE)
  x, y = check.x, check.y

  def meta_loss() -> torch.Tensor:
    if batched:
      generated = hnet.forward(cond_id=list(range(tasks)), ret_format='sequential')
      losses = [F.cross_entropy(target_forward(generated[t], x[t]), y[t]) for t in range(tasks)]
    else:
      losses = [F.cross_entropy(target_forward(hnet.forward(cond_id=t), x[t]), y[t])
                for t in range(tasks)]
    return torch.stack(losses).mean()

  def step() -> float:
    opt.zero_grad()
    loss = meta_loss()
    loss.backward()
    opt.step()
    return loss.item()

  def grads() -> tuple[float, dict[str, torch.Tensor]]:
    hnet.zero_grad()
    loss = meta_loss()
    loss.backward()
    out: dict[str, torch.Tensor] = {}
    g_emb, w_g, b_g = [], [], []
    for param, meta in zip(internal, metas):
      if meta['name'] == 'embedding' and list(param.shape) == [emb]:
        g_emb.append(param.grad)
      elif meta['name'] == 'embedding':
        out['chunks'] = param.grad
      elif meta['name'] == 'weight':
        w_g.append(param.grad.T)
      else:
        b_g.append(param.grad)
    out['embed'] = torch.stack(g_emb)
    if check.chunked:
      w_g[0] = torch.cat([w_g[0][chunk_emb:], w_g[0][:chunk_emb]], 0)
    out.update(zip(layer_w, w_g))
    out.update(zip(layer_b, b_g))
    hnet.zero_grad()
    return loss.item(), out

  return step, {'hypnettorch_version': metadata.version('hypnettorch'), 'vmap': False}, grads


# ------------------------------------------------------------------ torch.func
class Hypernet(nn.Module):
  """The hypernetwork of the library's layout: trunk `trunk_w{i}` (ReLU), head, [chunks]."""

  def __init__(self, check: Check):
    super().__init__()
    self.names = sorted(check.params)
    for k in self.names:  # nn.Module names may not contain '.', these do not
      self.register_parameter(k, nn.Parameter(check.params[k].clone()))
    self.num_trunk = check.num_trunk
    self.chunked = check.chunked
    self.num_outputs = check.num_outputs

  def forward(self, task_id: torch.Tensor) -> torch.Tensor:
    """ONE task: its id -> the flat generated weights `[P]`."""
    e = self.embed[task_id]
    if self.chunked:
      e = torch.cat([e.expand(self.chunks.shape[0], -1), self.chunks], -1)  # [C, E + 8]
    h = e
    for i in range(self.num_trunk):
      h = F.relu(h @ getattr(self, f'trunk_w{i}') + getattr(self, f'trunk_b{i}'))
    return (h @ self.head_w + self.head_b).reshape(-1)[:self.num_outputs]


def torchfunc_step(check: Check) -> tuple[Callable[[], float], dict, Callable]:
  """`step() -> meta-loss`: `functional_call` + `vmap` over tasks + `grad_and_value`."""
  from torch.func import functional_call, grad_and_value  # pylint: disable=g-import-not-at-top
  model = Hypernet(check)
  named = dict(model.named_parameters())
  opt = torch.optim.Adam(named.values(), LEARNING_RATE)
  tasks = check.params['embed'].shape[0]
  batch = (torch.arange(tasks), check.x, check.y)
  shapes = check.target_shapes

  def task_loss(params, task_id, x, y):  # ONE task
    flat = functional_call(model, params, (task_id,))
    return F.cross_entropy(target_forward(split(flat, shapes), x), y)

  def meta_loss(params, batch):
    return torch.vmap(task_loss, in_dims=(None, 0, 0, 0))(params, *batch).mean()

  value_and_grad = grad_and_value(meta_loss)

  def step() -> float:
    params = {k: v.detach() for k, v in named.items()}
    g, loss = value_and_grad(params, batch)
    for k, prm in named.items():
      prm.grad = g[k]
    opt.step()
    return loss.item()

  def grads() -> tuple[float, dict[str, torch.Tensor]]:
    g, loss = value_and_grad({k: v.detach() for k, v in named.items()}, batch)
    return loss.item(), dict(g)

  return step, {'hypnettorch_version': None, 'vmap': True}, grads


IMPLS = {
    'hypnettorch_loop': lambda check: hypnettorch_step(check, batched=False),
    'hypnettorch_batched': lambda check: hypnettorch_step(check, batched=True),
    'torchfunc': torchfunc_step,
}


def compare(check: Check, loss: float, grads: dict[str, torch.Tensor], tol: float) -> dict:
  """The meta-loss and every gradient against the library's (relative to its largest value)."""
  if set(grads) != set(check.grads):
    raise SystemExit(f'check: gradients of {sorted(grads)}, the library has '
                     f'{sorted(check.grads)}')
  errors = {}
  for k, ref in check.grads.items():
    got = grads[k]
    if tuple(got.shape) != tuple(ref.shape):
      raise SystemExit(f'check: gradient of {k} has shape {tuple(got.shape)}, the library\'s '
                       f'{tuple(ref.shape)}')
    errors[k] = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
  worst = max(errors, key=errors.get)
  loss_err = abs(loss - check.loss) / max(abs(check.loss), 1e-30)
  out = {'loss': loss, 'library_loss': check.loss, 'loss_rel_err': loss_err,
         'max_rel_grad_err': errors[worst], 'worst_grad': worst, 'rel_grad_err': errors,
         'tol': tol}
  if not (loss_err <= tol and errors[worst] <= tol):
    raise SystemExit(f'check FAILED: meta-loss {loss:.6g} against the library\'s '
                     f'{check.loss:.6g} (relative error {loss_err:.2g}); gradient of {worst}: '
                     f'relative error {errors[worst]:.2g} (tolerance {tol:g}).')
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--impl', choices=sorted(IMPLS), required=True)
  parser.add_argument('--workload', choices=sorted(DESCRIPTIONS), required=True)
  parser.add_argument('--check', required=True,
                      help='the npz of python -m experiments.peer_check for this workload')
  parser.add_argument('--check_tol', type=float, default=1e-5)
  parser.add_argument('--windows', type=int, default=5)
  parser.add_argument('--window_s', type=float, default=2.0)
  parser.add_argument('--threads', type=int, default=None)
  parser.add_argument('--out', default=None, help='JSON path (default: print only)')
  args = parser.parse_args(argv)
  if args.windows < 1 or args.window_s <= 0 or not args.check_tol > 0:
    parser.error('--windows must be >= 1, --window_s > 0 and --check_tol > 0')

  load_average = list(os.getloadavg())
  if args.threads is not None:
    torch.set_num_threads(args.threads)
  check = Check(args.check, args.workload)
  step, info, grads = IMPLS[args.impl](check)
  # The check in float64 (the implementation's function, free of float32 rounding), then the
  # same in float32 (recorded, not checked: torch's float32 CPU kernels are not always as
  # close to the float64 values as XLA's: W3's head gradient measured 2e-3 off here).
  checked = compare(check, *IMPLS[args.impl](check.to(torch.float64))[2](), args.check_tol)
  checked['float32'] = compare(check, *grads(), math.inf)
  for dtype, c in (('float64', checked), ('float32', checked['float32'])):
    print(f'{args.impl} {args.workload} ({dtype}): meta-loss {c["loss"]:.6f} (library '
          f'{c["library_loss"]:.6f}), largest relative gradient error '
          f'{c["max_rel_grad_err"]:.2g} ({c["worst_grad"]})')
  result = maml_torch.measure(step, args.windows, args.window_s)
  if not math.isfinite(result['final_loss']):
    raise FloatingPointError(f'final loss is not finite: {result["final_loss"]}')
  out = {
      'impl': args.impl, 'workload': args.workload, 'description': DESCRIPTIONS[args.workload],
      'torch_version': torch.__version__, 'hypnettorch_version': info['hypnettorch_version'],
      'threads': torch.get_num_threads(), 'interop_threads': torch.get_num_interop_threads(),
      'steps_per_s': result['steps_per_s'], 'window_steps_per_s': result['window_steps_per_s'],
      'steps_per_window': result['steps_per_window'], 'first_step_s': result['first_step_s'],
      'final_loss': result['final_loss'], 'load_average': load_average,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'vmap': info['vmap'], 'check': checked, 'windows': args.windows,
      'window_s': args.window_s, 'python': platform.python_version(),
      'machine': platform.machine(), 'cpu_count': os.cpu_count(),
      'glibc_tunables': os.environ.get('GLIBC_TUNABLES') or None,
  }
  print(f'{args.impl} {args.workload}: {out["steps_per_s"]:.3f} steps/s (windows '
        f'{out["window_steps_per_s"]}), threads {out["threads"]}, load average {load_average}')
  if args.out:
    maml_torch.write_json(args.out, out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
