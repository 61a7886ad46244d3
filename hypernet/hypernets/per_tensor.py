"""Per-tensor hypernetwork (after Ha, Dai & Le 2016, static hypernetworks).

A trunk shared by all generated tensors feeds one small head per target leaf.
With `tensor_emb_dim > 0` each leaf also has a learned tensor embedding `z_j`
(Ha et al.'s layer embeddings) and the shared trunk runs on `[cond, z_j]` for
each leaf, so the trunk learns what is common to all layers and the heads only
their shapes.

`[cond_dim] -> params`; each head is `MLP(head_hidden) -> Dense(leaf.size)`,
hyperfan-initialised for its leaf.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hypernet import init as init_lib
from hypernet.hypernets.base import MLP, check_cond, draw_fn, shared_param, trunk_init
from hypernet.layout import Selection, layout_for
from hypernet.target import PyTree, Target


class PerTensorHypernet(nn.Module):
  """Shared trunk, one head per generated leaf.

  Attributes:
    target: the `Target`.
    cond_dim: size of the conditioning vector.
    hidden: shared trunk sizes.
    head_hidden: hidden sizes inside each per-leaf head (`()`: a linear head).
    tensor_emb_dim: size of learned per-tensor embeddings (0: none).
    generate, head_init, gain, cond_second_moment: as in `FullHypernet`.
  """
  target: Target
  cond_dim: int
  hidden: Sequence[int] = (64,)
  head_hidden: Sequence[int] = ()
  tensor_emb_dim: int = 0
  generate: Selection = None
  head_init: str = 'hyperfan_in'
  gain: float = 1.0
  cond_second_moment: float = 1.0

  def __post_init__(self):
    init_lib.check_init(self.head_init)
    if self.tensor_emb_dim < 0:
      raise ValueError(f'tensor_emb_dim: expected >= 0, received {self.tensor_emb_dim}.')
    layout_for(self.target, self.generate)
    super().__post_init__()

  @nn.compact
  def __call__(self, cond: jax.Array) -> PyTree:
    """One task: `cond [cond_dim]` -> params matching `target.param_spec`."""
    layout = layout_for(self.target, self.generate)
    cond = check_cond(cond, self.cond_dim)
    n = len(layout.generated)
    m2 = self.cond_second_moment
    trunk = MLP(tuple(self.hidden), layer_init=trunk_init(self.head_init), name='trunk')
    if self.tensor_emb_dim:
      embs = self.param('tensor_embeddings', nn.initializers.normal(1.0),
                        (n, self.tensor_emb_dim))  # [L, E]
      h = trunk(jnp.concatenate([jnp.broadcast_to(cond, (n, self.cond_dim)), embs], -1))  # [L, d]
      m2 = (self.cond_dim * m2 + self.tensor_emb_dim) / (self.cond_dim + self.tensor_emb_dim)
    else:
      h = trunk(cond)
      h = jnp.broadcast_to(h, (n, h.shape[-1]))  # [L, d]: the same features for every leaf
    draw = draw_fn(self.target, layout)
    generated = []
    for i, leaf in enumerate(layout.generated):
      name = leaf.path.replace('/', '.')
      e = MLP(tuple(self.head_hidden), layer_init=trunk_init(self.head_init),
              name=f'head_trunk[{name}]')(h[i])
      kernel_init, bias_init = init_lib.head_inits(
          layout, draw, init=self.head_init, fan_in=e.shape[-1], cond_second_moment=m2,
          gain=self.gain, start=leaf.offset, stop=leaf.offset + leaf.size)
      out = nn.Dense(leaf.size, kernel_init=kernel_init, bias_init=bias_init,
                     name=f'head[{name}]')(e)
      generated.append(out.reshape(leaf.shape).astype(leaf.dtype))
    return layout.merge(generated, shared_param(self, self.target, layout))
