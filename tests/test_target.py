"""Targets from Linen, NNX and plain functions; the BatchNorm policies."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hypernet as hn
from hypernet import meta
from conftest import Conv4, NnxMLP, make_target


@pytest.mark.parametrize('name', ['mlp', 'conv4', 'nnx', 'conv4_bn', 'nnx_bn'])
def test_spec_init_apply_agree(name):
  target, x = make_target(name)
  params = target.init(jax.random.key(1))
  hn.check_tree_matches_spec(params, target.param_spec, 'params')
  assert jax.tree.structure(jax.eval_shape(target.init, jax.random.key(0))) == jax.tree.structure(
      target.param_spec)
  out = jax.jit(target.apply)(params, x)
  assert out.shape[0] == x.shape[0] and bool(jnp.all(jnp.isfinite(out)))
  assert target.num_params == sum(int(np.prod(s.shape)) for s in jax.tree.leaves(target.param_spec))
  # Same key, same draw; another key, another draw.
  chex_equal = jax.tree.map(np.testing.assert_array_equal, params, target.init(jax.random.key(1)))
  del chex_equal
  assert not np.allclose(jax.tree.leaves(params)[-1], jax.tree.leaves(target.init(jax.random.key(2)))[-1])


def test_linen_target_equals_module_apply():
  target, x = make_target('mlp')
  params = target.init(jax.random.key(3))
  from conftest import MLP
  np.testing.assert_allclose(target.apply(params, x), MLP().apply({'params': params}, x))


def test_from_fn_with_default_init():
  spec = {'w': jax.ShapeDtypeStruct((3, 2), jnp.float32), 'b': jax.ShapeDtypeStruct((2,), jnp.float32)}
  target = hn.Target.from_fn(lambda p, x: x @ p['w'] + p['b'], spec)
  params = target.init(jax.random.key(0))
  assert params['w'].shape == (3, 2) and float(jnp.abs(params['b']).max()) == 0
  assert target.apply(params, jnp.ones((4, 3))).shape == (4, 2)
  big = hn.Target.from_fn(lambda p, x: x @ p['w'], {'w': jnp.zeros((400, 300))})
  assert float(jnp.var(big.init(jax.random.key(0))['w'])) == pytest.approx(1 / 400, rel=0.05)


def test_nnx_instance_target_uses_its_own_parameters():
  module = NnxMLP(nnx.Rngs(4))
  target = hn.Target.from_nnx(module)
  x = jnp.ones((2, 16))
  params = target.init(jax.random.key(0))
  np.testing.assert_allclose(target.apply(params, x), module(x), rtol=1e-6)


@pytest.mark.parametrize('name', ['conv4_bn', 'nnx_bn'])
def test_task_batch_statistics_are_per_task_under_vmap(name):
  """'task' policy: each task in a vmapped batch is normalised with its own batch only."""
  target, x = make_target(name)
  params = target.init(jax.random.key(0))
  xs = jnp.stack([x, 3.0 * x + 1.0])  # two tasks with very different statistics
  batched = jax.vmap(target.apply, in_axes=(None, 0))(params, xs)
  for t in range(2):
    np.testing.assert_allclose(batched[t], target.apply(params, xs[t]), rtol=1e-4, atol=1e-5)
  # Batch statistics: each example's output depends on the rest of its batch.
  assert not np.allclose(target.apply(params, x)[:4], target.apply(params, x[:4]), atol=1e-4)


def test_task_policy_refuses_a_module_that_reads_running_averages():
  x = jnp.ones((4, 16, 16, 1))
  with pytest.raises(ValueError, match=r"batch_stats='task'.*running statistics.*train"):
    hn.Target.from_linen(Conv4(batch_norm=True), x, key=jax.random.key(0),
                         apply_kwargs={'train': False})


def test_frozen_policy_uses_stored_statistics():
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 1))
  stats = jax.eval_shape(lambda: Conv4(batch_norm=True).init(jax.random.key(0), x))['batch_stats']
  stats = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), stats)
  target = hn.Target.from_linen(Conv4(batch_norm=True), x, key=jax.random.key(0),
                                batch_stats='frozen', state={'batch_stats': stats},
                                apply_kwargs={'train': False})
  params = target.init(jax.random.key(1))
  # No batch statistics: an example's output does not depend on the rest of the batch.
  np.testing.assert_allclose(target.apply(params, x)[:4], target.apply(params, x[:4]), rtol=1e-5,
                             atol=1e-6)
  ref = Conv4(batch_norm=True).apply({'params': params, 'batch_stats': stats}, x, train=False)
  np.testing.assert_allclose(target.apply(params, x), ref, rtol=1e-6)

  nnx_target = hn.Target.from_nnx(lambda rngs: NnxMLP(rngs, batch_norm=True), key=jax.random.key(0),
                                  batch_stats='frozen')
  xn = jax.random.normal(jax.random.key(2), (8, 16))
  p = nnx_target.init(jax.random.key(0))
  np.testing.assert_allclose(nnx_target.apply(p, xn)[:4], nnx_target.apply(p, xn[:4]), rtol=1e-5,
                             atol=1e-6)


def test_apply_is_pure_under_jit():
  target, x = make_target('nnx_bn')
  params = target.init(jax.random.key(0))
  f = jax.jit(target.apply)
  np.testing.assert_array_equal(f(params, x), f(params, x))


def test_linen_targets_are_values():
  """`Target.value_key`: two Linen targets of the same module, input shapes and policy are
  equal and hash alike (learners built twice share compiled programs); another module or
  input shape is another target; a target from a plain function equals only itself."""
  class MLP(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
      return nn.Dense(1)(nn.relu(nn.Dense(self.width)(x)))

  def mlp(width, inputs=3):
    return hn.Target.from_linen(MLP(width), jnp.zeros((1, inputs)), key=jax.random.key(0))
  a, b = mlp(8), mlp(8)
  assert a is not b and a == b and hash(a) == hash(b)
  assert a != mlp(9) and a != mlp(8, inputs=4)
  maml = lambda t: meta.MAML(target=t, inner_lr=0.1)  # noqa: E731
  assert maml(a) == maml(b) and hash(maml(a)) == hash(maml(b)) and maml(a) != maml(mlp(9))
  f = hn.Target.from_fn(lambda p, x: x @ p['w'], {'w': jnp.zeros((3, 1))})
  g = hn.Target.from_fn(lambda p, x: x @ p['w'], {'w': jnp.zeros((3, 1))})
  assert f == f and f != g
  # A module with an unhashable field (nn.Sequential's list of layers): identity only.
  seq = lambda: hn.Target.from_linen(nn.Sequential([nn.Dense(2)]), jnp.zeros((1, 3)),  # noqa: E731
                                     key=jax.random.key(0))
  assert seq().value_key is None and seq() != seq()
