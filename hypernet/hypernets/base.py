"""Pieces shared by the hypernetwork families."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hypernet import init as init_lib
from hypernet.layout import ParamLayout
from hypernet.target import Target


TRUNK_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {'relu': nn.relu, 'elu': nn.elu}


def trunk_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The trunk nonlinearity called `name` (one of `TRUNK_ACTIVATIONS`)."""
  if name not in TRUNK_ACTIVATIONS:
    raise ValueError(f'activation: expected one of {tuple(TRUNK_ACTIVATIONS)}, received {name!r}.')
  return TRUNK_ACTIVATIONS[name]


class MLP(nn.Module):
  """ReLU MLP trunk, He-initialised with zero biases (keeps `E[h^2] = E[x^2]`).

  Attributes:
    features: hidden sizes; `()` is the identity.
    activation: the nonlinearity.
    layer_init: `'he'` (the default above), or one of `hypernet.init.WHOLE_NETWORK_INITS`
      (`'torch'`, `'xavier'`) for hypernetworks whose `head_init` is one of those
      (`trunk_init`).
  `[..., d_in] -> [..., features[-1]]` (every layer activated).
  """
  features: Sequence[int]
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  layer_init: str = 'he'

  def __post_init__(self):
    inits = ('he',) + init_lib.WHOLE_NETWORK_INITS
    if self.layer_init not in inits:
      raise ValueError(f'layer_init: expected one of {inits}, received {self.layer_init!r}.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, f in enumerate(self.features):
      if self.layer_init != 'he':
        kernel_init, bias_init = init_lib.layer_inits(self.layer_init, x.shape[-1])
        dense = nn.Dense(f, kernel_init=kernel_init, bias_init=bias_init, name=f'dense_{i}')
      else:
        dense = nn.Dense(f, kernel_init=nn.initializers.he_normal(), name=f'dense_{i}')
      x = self.activation(dense(x))
    return x


def trunk_init(head_init: str) -> str:
  """The `MLP.layer_init` of a hypernetwork's trunk under its `head_init`."""
  return head_init if head_init in init_lib.WHOLE_NETWORK_INITS else 'he'


def check_positive(name: str, value: int) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
    raise ValueError(f'{name}: expected a positive integer, received {value!r}.')


def check_cond(cond: jax.Array, cond_dim: int, name: str = 'cond') -> jax.Array:
  """Checks one task's conditioning vector `[cond_dim]` (at trace time)."""
  cond = jnp.asarray(cond)
  if cond.ndim != 1 or cond.shape[0] != cond_dim:
    hint = (' (a batch of tasks? map the hypernetwork over tasks with jax.vmap)'
            if cond.ndim == 2 and cond.shape[-1] == cond_dim else '')
    raise ValueError(f'{name}: expected shape ({cond_dim},), received {tuple(cond.shape)}{hint}.')
  return cond


def draw_fn(target: Target, layout: ParamLayout) -> Callable[[jax.Array], jax.Array]:
  """`key -> [num_generated]`: a flattened draw of the target's default init."""
  return lambda key: layout.flatten(target.init(key))


def shared_param(module: nn.Module, target: Target, layout: ParamLayout) -> tuple[jax.Array, ...]:
  """The shared (not generated) target leaves, as ordinary learned parameters."""
  if not layout.shared:
    return ()
  return module.param('shared', lambda key: layout.shared_values(target.init(key)))
