"""Modulation of learned base weights.

The hypernetwork holds base weights `theta` (initialised as a draw of the
target's init) and maps `cond` to a modulation of the selected leaves:

* `'additive'`:       `w = theta + delta(cond)`
* `'multiplicative'`: `w = theta * gate(cond)`, `gate = 1 + m(cond)` elementwise on
  kernels (the seed sketch's form, applied to weights); vector leaves get an additive
  delta, since a gate on a zero-initialised bias could never move it;
* `'film'`:           per output unit (last axis) of every selected kernel,
  `W' = W * gamma`, and for its bias `b' = b * gamma + beta`. This *is* FiLM on
  the layer's pre-activation, `gamma * (x W + b) + beta`, expressed on the
  parameters so that any target runs it unchanged. A kernel without a bias gets
  only `gamma`; vector leaves without a kernel beside them (e.g. BatchNorm's
  scale) are not modulated. `gamma = film_scale_offset + m(cond)`.
* `'lowrank'`:        kernels reshaped to `[fan_in, out]` get `theta + U V`,
  `U [fan_in, rank]`, `V [rank, out]` generated (LoRA-style); vector leaves get
  an additive delta.

Initialisation: the generated modulations `m`, `delta`, `U V` start with standard
deviation `init_scale` (relative to the leaf's own init scale `sqrt(1/fan_in)`
for additive and low-rank deltas of kernels); `init_scale=0` starts every task
exactly at `theta`. Leaves that are not selected stay equal to `theta`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np

from hypernet.hypernets.base import MLP, check_cond, check_positive
from hypernet.init import scaled_normal
from hypernet.layout import LeafInfo, Selection, layout_for
from hypernet.target import PyTree, Target

KINDS = ('additive', 'multiplicative', 'film', 'lowrank')


class ModulationHypernet(nn.Module):
  """`cond [cond_dim] -> modulated base weights` (a full target parameter tree).

  Attributes:
    target: the `Target`.
    cond_dim: size of the conditioning vector.
    kind: one of `KINDS` (see module doc).
    hidden: trunk sizes (ReLU).
    generate: which leaves are modulated (others are the base weights as they are).
    rank: rank of the `'lowrank'` delta (> 0).
    init_scale: standard deviation of the initial modulation (see module doc).
    film_scale_offset: `gamma = film_scale_offset + m`; 1 starts at identity,
      0 makes `gamma` the head's raw output (the seed sketch).
    cond_second_moment: `E[cond^2]`.
  """
  target: Target
  cond_dim: int
  kind: str = 'film'
  hidden: Sequence[int] = (64,)
  generate: Selection = None
  rank: int = 4
  init_scale: float = 1e-2
  film_scale_offset: float = 1.0
  cond_second_moment: float = 1.0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'kind: expected one of {KINDS}, received {self.kind!r}.')
    check_positive('rank', self.rank)
    if self.init_scale < 0:
      raise ValueError(f'init_scale: expected >= 0, received {self.init_scale}.')
    layout = layout_for(self.target, self.generate)
    if self.kind == 'film' and not any(l.is_kernel for l in layout.generated):
      raise ValueError('generate: kind="film" needs at least one selected kernel leaf (ndim >= 2); '
                       f'selected {[l.path for l in layout.generated]}.')
    super().__post_init__()

  def _head(self, h: jax.Array, n: int, std: float, name: str) -> jax.Array:
    """`Dense(n)` whose outputs start with standard deviation `std`."""
    init = scaled_normal(std / math.sqrt(h.shape[-1] * self.cond_second_moment))
    return nn.Dense(n, kernel_init=init, name=name)(h)

  @nn.compact
  def __call__(self, cond: jax.Array) -> PyTree:
    """One task: `cond [cond_dim]` -> params matching `target.param_spec`."""
    layout = layout_for(self.target, self.generate)
    cond = check_cond(cond, self.cond_dim)
    base = self.param('base', lambda key: tuple(jax.tree.leaves(self.target.init(key))))
    h = MLP(tuple(self.hidden), name='trunk')(cond)
    out = list(base)
    s = self.init_scale

    def leaf_std(l: LeafInfo) -> float:
      return s / math.sqrt(l.fan_in) if l.is_kernel else s

    def name(l: LeafInfo, what: str) -> str:
      return f'{what}[{l.path.replace("/", ".")}]'

    if self.kind == 'film':
      selected = {l.path for l in layout.generated}
      for l in layout.generated:
        if not l.is_kernel:
          continue
        units = l.shape[-1]
        gamma = self.film_scale_offset + self._head(h, units, s, name(l, 'gamma'))  # [out]
        out[l.index] = (base[l.index] * gamma).astype(l.dtype)
        bias = layout.by_path.get(l.path.rpartition('/')[0] + '/bias')
        if bias is not None and bias.path in selected and bias.shape == (units,):
          beta = self._head(h, units, s, name(l, 'beta'))  # [out]
          out[bias.index] = (base[bias.index] * gamma + beta).astype(bias.dtype)
      return jax.tree.unflatten(layout.treedef, out)

    for l in layout.generated:
      theta = base[l.index]
      if self.kind == 'multiplicative' and l.is_kernel:
        gate = 1.0 + self._head(h, l.size, s, name(l, 'gate')).reshape(l.shape)
        w = theta * gate
      elif self.kind == 'lowrank' and l.is_kernel:
        fan_in, units = int(np.prod(l.shape[:-1])), l.shape[-1]
        std = math.sqrt(leaf_std(l) / math.sqrt(self.rank)) if s else 0.0
        u = self._head(h, fan_in * self.rank, std, name(l, 'U')).reshape(fan_in, self.rank)
        v = self._head(h, self.rank * units, std, name(l, 'V')).reshape(self.rank, units)
        w = theta + (u @ v).reshape(l.shape)  # [fan_in, r] @ [r, out]
      else:  # additive, and the vector leaves of multiplicative and lowrank
        w = theta + self._head(h, l.size, leaf_std(l), name(l, 'delta')).reshape(l.shape)
      out[l.index] = w.astype(l.dtype)
    return jax.tree.unflatten(layout.treedef, out)
