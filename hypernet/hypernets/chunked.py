"""Chunked hypernetwork (von Oswald, Henning, Sacramento & Grewe, ICLR 2020).

One shared generator `g([cond, c_i]) -> [chunk_size]` is applied to learned
chunk embeddings `c_i`, `i < ceil(P / chunk_size)`; the chunks are concatenated,
the padding cut off and the result unravelled onto the target spec. The number
of hypernetwork parameters no longer scales with `P` times the hidden size, so
the hypernetwork can be smaller than its target (`compression_ratio < 1`).

Initialisation: since one generator serves every leaf, per-leaf variance cannot
be put into the head weights. Instead the generator is initialised for unit
output variance and its output `u` is mapped through a fixed (not learned)
per-value affine map, `w = offset + scale * u`, with `scale_j^2` the hyperfan
variance of value j (`hypernet.init.leaf_variances`) and `offset` the target's
initial value on vector leaves (a small learned parameter, as long as the
biases and scales together). `head_init='target'` zero-initialises the
generator's output layer and learns an offset over every value, starting at a
draw of the target's init (so that mode holds a full copy of the target and
its compression ratio is above 1). `'naive'`, `'torch'` and `'xavier'` (PyTorch's default and
von Oswald et al.'s MNIST init, in every layer) use neither the scale nor the offset: the
generated values are the head's outputs.

Conditional chunk embeddings (`cond_chunk_embs=True`, hypnettorch's `ChunkedHMLP` option of
the same name): each condition brings its own chunk embeddings, passed in `cond` after the
task part, so a task's own parameters are `cond_dim + num_chunks * chunk_emb_dim` values, not
`cond_dim`. With shared chunk embeddings a task can move its generated weights only through a
shift of the trunk's first pre-activation common to every chunk (at most `hidden[0]`
directions); with its own chunk embeddings each chunk gets its own shift. The module then holds
no chunk embeddings, and `cond_size` is the length of `cond`. An option, not a default: in
continual learning on SplitMNIST (one seed, README) it learned later tasks less well than
shared chunk embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hypernet import init as init_lib
from hypernet.hypernets.base import (MLP, check_cond, check_positive, draw_fn, shared_param,
                                     trunk_activation, trunk_init)
from hypernet.layout import ParamLayout, Selection, layout_for
from hypernet.target import PyTree, Target


def _check_chunk_ids(chunk_ids: jax.typing.ArrayLike, num_chunks: int) -> jax.Array:
  chunk_ids = jnp.asarray(chunk_ids)
  if chunk_ids.ndim != 1 or not jnp.issubdtype(chunk_ids.dtype, jnp.integer):
    raise ValueError(f'chunk_ids: expected a 1-d integer array of chunk indices in [0, '
                     f'{num_chunks}), received shape {chunk_ids.shape} dtype {chunk_ids.dtype}.')
  return chunk_ids


def output_scale(layout: ParamLayout, mode: str, gain: float) -> np.ndarray:
  """`[num_generated]` fixed output scale of a chunked hypernetwork (see module doc)."""
  if mode == 'naive' or mode in init_lib.WHOLE_NETWORK_INITS:
    return np.ones(layout.num_generated, np.float32)
  if mode == 'target':
    mode = 'hyperfan_in'
  var = init_lib.leaf_variances(layout, mode, gain)
  return np.sqrt(var).astype(np.float32)


class ChunkedHypernet(nn.Module):
  """`cond [cond_dim] -> target params` through a generator shared by all chunks.

  Attributes:
    target: the `Target`.
    cond_dim: size of the conditioning vector.
    chunk_size: values generated per chunk (> 0).
    chunk_emb_dim: size of the learned chunk embeddings (> 0).
    hidden: generator trunk sizes.
    activation: the trunk's nonlinearity, `'relu'` or `'elu'` (von Oswald et al.'s
      PermutedMNIST generator).
    generate: which target leaves to generate.
    head_init: one of `hypernet.init.HEAD_INITS` (see module doc).
    gain: variance gain.
    cond_second_moment: `E[cond^2]` of the task part; chunk embeddings are N(0, 1) (drawn
      by the caller with `cond_chunk_embs`).
    cond_chunk_embs: False: one set of learned chunk embeddings shared by every condition;
      True: `cond [cond_size]` carries the condition's own, `[num_chunks, chunk_emb_dim]`
      flattened after the `cond_dim` task values (see module doc).
  """
  target: Target
  cond_dim: int
  chunk_size: int
  chunk_emb_dim: int = 8
  hidden: Sequence[int] = (64,)
  generate: Selection = None
  head_init: str = 'hyperfan_in'
  gain: float = 1.0
  cond_second_moment: float = 1.0
  activation: str = 'relu'
  cond_chunk_embs: bool = False

  def __post_init__(self):
    check_positive('chunk_size', self.chunk_size)
    trunk_activation(self.activation)
    check_positive('chunk_emb_dim', self.chunk_emb_dim)
    if not isinstance(self.cond_chunk_embs, bool):
      raise ValueError(f'cond_chunk_embs: expected a bool, received {self.cond_chunk_embs!r}.')
    init_lib.check_init(self.head_init)
    layout_for(self.target, self.generate)
    super().__post_init__()

  @property
  def num_chunks(self) -> int:
    return math.ceil(layout_for(self.target, self.generate).num_generated / self.chunk_size)

  @property
  def cond_size(self) -> int:
    """Length of `cond`: `cond_dim`, plus `num_chunks * chunk_emb_dim` with
    `cond_chunk_embs`."""
    return self.cond_dim + (self.num_chunks * self.chunk_emb_dim if self.cond_chunk_embs else 0)

  @nn.compact
  def __call__(self, cond: jax.Array, chunk_ids: jax.Array | None = None
               ) -> PyTree | jax.Array:
    """One task: `cond [cond_size]` -> params matching `target.param_spec`.

    With `chunk_ids [k]` (ints in `[0, num_chunks)`): only those chunks are generated, as
    `[k, chunk_size]` values in the order of `layout_for(target, generate).flatten` (chunk
    `i` holds values `i * chunk_size` onwards), zeros past the last value. Costs
    `k / num_chunks` of a whole generation: an output regulariser can be estimated from a few
    chunks (`hypernet.continual.HnetMethod.reg_chunks`).
    """
    layout = layout_for(self.target, self.generate)
    cond = check_cond(cond, self.cond_size)
    n = self.num_chunks
    if self.cond_chunk_embs:  # [cond_dim], [C, E]: the condition's own chunk embeddings
      cond, chunk_embs = cond[:self.cond_dim], cond[self.cond_dim:].reshape(n, -1)
    else:
      chunk_embs = self.param('chunk_embeddings', nn.initializers.normal(1.0),
                              (n, self.chunk_emb_dim))  # [C, E]
    if chunk_ids is not None:
      chunk_ids = _check_chunk_ids(chunk_ids, n)
      chunk_embs = chunk_embs[chunk_ids]  # [k, E]
    rows = chunk_embs.shape[0]
    inputs = jnp.concatenate([jnp.broadcast_to(cond, (rows, self.cond_dim)), chunk_embs], -1)
    unscaled = self.head_init == 'naive' or self.head_init in init_lib.WHOLE_NETWORK_INITS
    trunk = MLP(tuple(self.hidden), trunk_activation(self.activation),
                layer_init=trunk_init(self.head_init), name='trunk')
    h = trunk(inputs)  # [C, d]
    d = h.shape[-1]
    m2 = (self.cond_dim * self.cond_second_moment + self.chunk_emb_dim) / (
        self.cond_dim + self.chunk_emb_dim)
    bias_init = nn.initializers.zeros
    if self.head_init == 'target':
      kernel_init = nn.initializers.zeros
    elif self.head_init == 'naive':
      kernel_init = nn.initializers.lecun_normal()
    elif self.head_init in init_lib.WHOLE_NETWORK_INITS:
      kernel_init, bias_init = init_lib.layer_inits(self.head_init, d)
    else:
      kernel_init = init_lib.scaled_normal(1.0 / math.sqrt(d * m2))
    u = nn.Dense(self.chunk_size, kernel_init=kernel_init, bias_init=bias_init,
                 name='head')(h)  # [C, chunk] ([k, chunk] with chunk_ids)
    scale = output_scale(layout, self.head_init, self.gain)  # [P]
    draw = draw_fn(self.target, layout)
    offset = None  # [P], or None: no offset
    if self.head_init == 'target':
      offset = self.param('offset', draw)  # [P]: the whole draw
    elif not unscaled:
      vec_idx = np.flatnonzero(~layout.kernel_mask())  # vector leaves only
      if vec_idx.size:
        vec_offset = self.param('offset', lambda key: draw(key)[vec_idx])  # [V]
        offset = jnp.zeros(layout.num_generated, vec_offset.dtype).at[vec_idx].set(vec_offset)
    if chunk_ids is not None:  # [k, chunk]: padded to whole chunks, then the chosen rows
      per_chunk = lambda v: jnp.pad(v, (0, n * self.chunk_size - v.shape[0])).reshape(n, -1)
      mask = per_chunk(np.ones(layout.num_generated, np.float32))[chunk_ids]
      values = per_chunk(scale)[chunk_ids] * u * mask
      return values if offset is None else values + per_chunk(offset)[chunk_ids]
    flat = scale * u.reshape(-1)[:layout.num_generated]  # [P]
    if offset is not None:
      flat = flat + offset
    return layout.unflatten(flat, shared_param(self, self.target, layout))
