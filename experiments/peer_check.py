r"""W3's starting weights, batch and meta-gradient, for the PyTorch peers' numerical check.

`experiments/peers/hnet_torch.py` (a scratch environment's script: hypnettorch and
torch.func) times the benchmark's W3 and W3-chunked meta-steps. It starts from the weights
this module writes and, before timing, checks its meta-loss and meta-gradient against the
library's, so the peers are shown to compute the same function, not merely the same shapes:

    python -m experiments.peer_check --out_dir=workdirs/peers/check

writes `W3.npz` and `W3-chunked.npz` (atomically), each with, in float32:

* `embed [16, 32]`: the task embeddings (`TaskEmbedding`);
* `trunk_w{i} [in, out]`, `trunk_b{i} [out]`: the hypernetwork's ReLU trunk, 32-100-100
  (W3-chunked: `[task embedding (32), chunk embedding (8)]`-100-100);
* `head_w [100, out]`, `head_b [out]`: its linear head (out 89,610 for W3; 7,000 values per
  chunk for W3-chunked, whose `chunks [13, 8]` are the chunk embeddings);
* `x [16, 128, 784]`, `y [16, 128]` (int32): the batch of `benchmark_workloads.w3_batch`;
* `loss []` and `grad_<name>` for every array above but `x`, `y`: the library's meta-loss
  (mean over tasks of the cross-entropy) and its gradient at these weights;
* `target_paths`, `target_shapes` (JSON strings): the generated tensors in the order the head's
  flat output is cut into them, row-major (`hypernet.layout`): `layers_0/bias [100]`,
  `layers_0/kernel [784, 100]`, ... The target is `relu(x @ kernel + bias)` twice, then a
  linear layer to 10 logits. W3-chunked: the 13 chunks' outputs are concatenated and cut to
  89,610 values first.

W3 is the benchmark's module itself (its hyperfan initialisation lives in the values; the
function is trunk and head). W3-chunked is built with `head_init='torch'`, the chunked
hypernetwork without the library's fixed output scale and bias offsets: the minimal form,
which is what the peers implement.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import flags

from experiments import benchmark_workloads as bw
from experiments import cli
from hypernet.layout import layout_for

WORKLOADS = ('W3', 'W3-chunked')


def flat_arrays(meta_params: Any, chunked: bool) -> dict[str, np.ndarray]:
  """The library's W3 meta-parameters under this module's names (see the module doc)."""
  hnet = meta_params['hnet']['params']
  trunk = hnet['trunk']
  out = {'embed': meta_params['embed']['params']['embedding']}
  for i in range(len(trunk)):
    out[f'trunk_w{i}'] = trunk[f'dense_{i}']['kernel']
    out[f'trunk_b{i}'] = trunk[f'dense_{i}']['bias']
  out['head_w'], out['head_b'] = hnet['head']['kernel'], hnet['head']['bias']
  if chunked:
    out['chunks'] = hnet['chunk_embeddings']
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


def check_arrays(workload: str) -> dict[str, np.ndarray]:
  """Everything the npz of `workload` holds (see the module doc)."""
  if workload not in WORKLOADS:
    raise ValueError(f'workload: expected one of {WORKLOADS}, received {workload!r}.')
  chunked = workload == 'W3-chunked'
  loss_fn, meta_params = bw.w3_loss(chunked, head_init='torch' if chunked else 'hyperfan_in')
  hnet = meta_params['hnet']['params']
  expected = {'embed', 'trunk', 'head'} | ({'chunk_embeddings'} if chunked else set())
  if set(hnet) | {'embed'} != expected:  # e.g. offsets: not the minimal form the peers write
    raise ValueError(f'{workload}: expected the hypernetwork parameters {sorted(expected)}, '
                     f'received {sorted(set(hnet) | {"embed"})}.')
  batch = bw.w3_batch()
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(meta_params, batch)
  out = flat_arrays(meta_params, chunked)
  out.update({f'grad_{k}': v for k, v in flat_arrays(grads, chunked).items()})
  _, x, y = batch
  out.update(x=np.asarray(x, np.float32), y=np.asarray(y, np.int32),
             loss=np.asarray(loss, np.float32))
  layout = layout_for(bw.w3_target())
  out['target_paths'] = np.asarray(json.dumps([l.path for l in layout.generated]))
  out['target_shapes'] = np.asarray(json.dumps([list(l.shape) for l in layout.generated]))
  return out


def write(path: str, arrays: dict[str, np.ndarray]) -> None:
  """`np.savez` to `path` atomically (a temporary file, then renamed)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp.{os.getpid()}.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def main(argv: Sequence[str]) -> None:
  del argv
  for workload in WORKLOADS:
    path = os.path.join(flags.FLAGS.out_dir, f'{workload}.npz')
    arrays = check_arrays(workload)
    write(path, arrays)
    print(f'{path}: loss {float(arrays["loss"]):.6f}', flush=True)


if __name__ == '__main__':
  flags.DEFINE_string('out_dir', 'workdirs/peers/check', 'Where W3.npz and W3-chunked.npz go.')
  cli.run(main)
