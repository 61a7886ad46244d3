"""The seed sketch, expressed with this library.

The project began from a TensorFlow sketch::

    hypernet = Sequential([Dense(64, activation='relu'), Dense(output_size)])
    target = Dense(output_size, use_bias=False)
    y = target(x) * hypernet(x)

i.e. a hypernetwork whose output multiplies, elementwise, the output of a
bias-free Dense target on the same input. Multiplying the output units is
scaling the kernel's columns, `(x W) * gamma(x) = x (W diag(gamma(x)))`, so the
sketch is an input-conditioned FiLM (scale only) modulation of the target's
weights: `InputConditioned(ModulationHypernet(kind='film', film_scale_offset=0))`.
`literal_sketch` computes the sketch's formula directly from the same
parameters, and the tests check that both agree.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hypernet.hypernets.dynamic import InputConditioned
from hypernet.hypernets.modulation import ModulationHypernet
from hypernet.target import PyTree, Target


def seed_sketch(input_dim: int, output_dim: int, hidden: int = 64, *,
                key: jax.Array) -> tuple[Target, InputConditioned]:
  """The sketch as `(target, model)`; `model.apply(vars, x [N, input_dim]) -> [N, output_dim]`.

  Args:
    input_dim: size of x.
    output_dim: size of the target's output.
    hidden: width of the hypernetwork's ReLU layer (64 in the sketch).
    key: key used to read the target's spec.
  """
  target = Target.from_linen(nn.Dense(output_dim, use_bias=False), jnp.zeros((1, input_dim)),
                             key=key, name='bias-free Dense')
  hnet = ModulationHypernet(target=target, cond_dim=input_dim, kind='film', hidden=(hidden,),
                            init_scale=1.0, film_scale_offset=0.0)
  return target, InputConditioned(hypernet=hnet, target=target)


def literal_sketch(variables: PyTree, x: jax.Array) -> jax.Array:
  """`target(x) * hypernet(x)` written out from `seed_sketch`'s variables. `x [N, d] -> [N, out]`."""
  p = variables['params']['hypernet']
  (w,) = p['base']  # the target's kernel [d, out]
  h = nn.relu(x @ p['trunk']['dense_0']['kernel'] + p['trunk']['dense_0']['bias'])  # [N, 64]
  head = p['gamma[kernel]']
  return (x @ w) * (h @ head['kernel'] + head['bias'])
