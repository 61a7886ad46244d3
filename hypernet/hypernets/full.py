"""Full-output hypernetwork: one head, unravelled onto the target spec."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from hypernet import init as init_lib
from hypernet.hypernets.base import (MLP, check_cond, draw_fn, shared_param, trunk_activation,
                                     trunk_init)
from hypernet.layout import Selection, layout_for
from hypernet.target import PyTree, Target


class FullHypernet(nn.Module):
  """`cond [cond_dim] -> target params`, through an MLP trunk and one `Dense(P)` head.

  The head has `hidden[-1] * P` weights for `P` generated values: simple and
  expressive, but large for big targets (see `ChunkedHypernet`).

  Attributes:
    target: the `Target` whose parameters are generated.
    cond_dim: size of the conditioning vector (task embedding, set encoding, ...).
    hidden: trunk sizes.
    activation: the trunk's nonlinearity, `'relu'` or `'elu'`.
    generate: which target leaves to generate (`hypernet.layout.Selection`);
      the others are ordinary shared parameters of this module.
    head_init: head initialisation, one of `hypernet.init.HEAD_INITS`.
    gain: variance gain for hyperfan (1: LeCun, Flax's default).
    cond_second_moment: `E[cond^2]` assumed by hyperfan.
  """
  target: Target
  cond_dim: int
  hidden: Sequence[int] = (64,)
  generate: Selection = None
  head_init: str = 'hyperfan_in'
  gain: float = 1.0
  cond_second_moment: float = 1.0
  activation: str = 'relu'

  def __post_init__(self):
    init_lib.check_init(self.head_init)
    trunk_activation(self.activation)
    layout_for(self.target, self.generate)
    super().__post_init__()

  @nn.compact
  def __call__(self, cond: jax.Array) -> PyTree:
    """One task: `cond [cond_dim]` -> params matching `target.param_spec`."""
    layout = layout_for(self.target, self.generate)
    cond = check_cond(cond, self.cond_dim)
    h = MLP(tuple(self.hidden), trunk_activation(self.activation),
            layer_init=trunk_init(self.head_init), name='trunk')(cond)
    kernel_init, bias_init = init_lib.head_inits(
        layout, draw_fn(self.target, layout), init=self.head_init, fan_in=h.shape[-1],
        cond_second_moment=self.cond_second_moment, gain=self.gain)
    flat = nn.Dense(layout.num_generated, kernel_init=kernel_init, bias_init=bias_init,
                    name='head')(h)  # [P]
    return layout.unflatten(flat, shared_param(self, self.target, layout))
