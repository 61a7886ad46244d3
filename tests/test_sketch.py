"""The seed sketch: a Dense-64-ReLU hypernetwork multiplying a bias-free Dense target's output."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hypernet as hn

# Final training MSE must be below this fraction of the targets' variance.
BOUND = 0.05


def test_library_sketch_equals_the_literal_formula():
  target, model = hn.seed_sketch(4, 3, key=jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (7, 4))
  variables = model.init(jax.random.key(2), x)
  np.testing.assert_allclose(model.apply(variables, x), hn.literal_sketch(variables, x),
                             rtol=1e-5, atol=1e-6)
  assert variables['params']['hypernet']['trunk']['dense_0']['kernel'].shape == (4, 64)
  assert target.param_spec['kernel'].shape == (4, 3) and 'bias' not in target.param_spec


def test_sketch_trains_on_a_small_problem():
  """y = (x A) * (1 + tanh(x B)): an input-dependent gain on a linear map, the sketch's class."""
  kx, ka, kb = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (256, 4))
  a = jax.random.normal(ka, (4, 2))
  b = jax.random.normal(kb, (4, 2))
  y = (x @ a) * (1 + jnp.tanh(x @ b))
  _, model = hn.seed_sketch(4, 2, key=jax.random.key(1))
  variables = model.init(jax.random.key(2), x)
  tx = optax.adam(1e-2)

  def loss_fn(v):
    return jnp.mean((model.apply(v, x) - y) ** 2)

  @jax.jit
  def step(carry, _):
    v, opt = carry
    loss, g = jax.value_and_grad(loss_fn)(v)
    updates, opt = tx.update(g, opt, v)
    return (optax.apply_updates(v, updates), opt), loss

  (variables, _), losses = jax.lax.scan(step, (variables, tx.init(variables)), length=600)
  final = float(loss_fn(variables))
  assert final < BOUND * float(jnp.var(y)), (final, float(jnp.var(y)))
  assert final < 0.1 * float(losses[0])
