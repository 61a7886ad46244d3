"""hypernet.nn: Conv's lowerings equal flax.linen.Conv (values, gradients, second order, under
vmap with per-task kernels), the strategy override, and the reshape max-pool."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypernet as hn
from hypernet import meta
from hypernet import nn as hnn
from hypernet.tasks import Task

STRATEGIES = ('xla', 'im2col')
TOL = dict(rtol=2e-5, atol=2e-5)

# (Conv kwargs, input shape): strides, paddings of every form, dilations, groups, 1-D and 3-D.
CASES = {
    'same_3x3': (dict(features=5, kernel_size=(3, 3)), (2, 9, 8, 3)),
    'valid_stride2': (dict(features=4, kernel_size=(3, 2), strides=2, padding='VALID'),
                      (2, 9, 8, 3)),
    'same_stride_2x1': (dict(features=4, kernel_size=(3, 3), strides=(2, 1)), (2, 9, 8, 3)),
    'pairs_kernel_dilation': (dict(features=6, kernel_size=(3, 3), padding=((1, 2), (0, 1)),
                                   kernel_dilation=2), (2, 9, 8, 3)),
    'input_dilation': (dict(features=6, kernel_size=(2, 2), input_dilation=(2, 3),
                            padding=((1, 0), (2, 1))), (2, 6, 5, 3)),
    'groups_circular': (dict(features=6, kernel_size=(3, 3), feature_group_count=3,
                             padding='CIRCULAR'), (2, 7, 8, 3)),
    'int_padding_no_bias': (dict(features=4, kernel_size=(2, 3), padding=1, use_bias=False),
                            (2, 7, 8, 3)),
    'pointwise': (dict(features=4, kernel_size=(1, 1)), (2, 5, 6, 3)),
    'causal_1d': (dict(features=4, kernel_size=3, padding='CAUSAL'), (2, 9, 3)),
    '3d_stride2': (dict(features=4, kernel_size=(2, 3, 2), strides=2), (2, 5, 6, 7, 3)),
    'two_batch_axes_reflect': (dict(features=4, kernel_size=(3, 3), padding='REFLECT'),
                               (4, 2, 7, 8, 3)),
    'no_batch_axis': (dict(features=4, kernel_size=(3, 3)), (7, 8, 3)),
}


def _inputs(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _params_like(module, x, seed=1, scale=0.5):
  """Random parameters with the tree of `module.init` (no init compiled: that is slow on CPU)."""
  spec = jax.eval_shape(module.init, jax.random.key(0), x)
  leaves, tree = jax.tree.flatten(spec)
  return jax.tree.unflatten(tree, [scale * _inputs(leaf.shape, seed + i)
                                   for i, leaf in enumerate(leaves)])


@pytest.mark.parametrize('case', CASES)
def test_param_tree_and_forward_match_flax(case):
  kwargs, shape = CASES[case]
  x = _inputs(shape)
  ref = nn.Conv(**kwargs)
  params = _params_like(ref, x)
  want = ref.apply(params, x)
  for strategy in STRATEGIES:
    layer = hnn.Conv(**kwargs, strategy=strategy)
    chex.assert_trees_all_equal(jax.eval_shape(layer.init, jax.random.key(0), x),
                                jax.eval_shape(ref.init, jax.random.key(0), x))
    chex.assert_trees_all_close(layer.apply(params, x), want, **TOL)


def test_initial_values_equal_flax_in_a_model():
  """Swapping nn.Conv for hypernet.nn.Conv keeps names ('Conv_0', ...) and initial values."""
  x = _inputs((1, 8, 8, 1))
  ref = _Net(nn.Conv).init(jax.random.key(3), x)
  for strategy in STRATEGIES:
    chex.assert_trees_all_equal(_Net(_conv_cls(strategy)).init(jax.random.key(3), x), ref)


@pytest.mark.parametrize('case', ['same_3x3', 'valid_stride2', 'pairs_kernel_dilation',
                                  'input_dilation', 'groups_circular', '3d_stride2'])
def test_gradients_match_flax(case):
  kwargs, shape = CASES[case]
  x = _inputs(shape)
  ref = nn.Conv(**kwargs)
  params = _params_like(ref, x)

  def grads(module):
    loss = lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
    return jax.grad(loss, argnums=(0, 1))(params, x)

  want = grads(ref)
  for strategy in STRATEGIES:
    got = grads(hnn.Conv(**kwargs, strategy=strategy))
    chex.assert_trees_all_close(got, want, **TOL)


class _Net(nn.Module):
  """Two convs (stride 2 'VALID', then 'SAME') and a head; `conv` is `flax.linen.Conv`
  or a `hypernet.nn.Conv` partial."""
  conv: object

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(self.conv(4, (3, 3), strides=2, padding='VALID')(x))
    x = jnp.tanh(self.conv(3, (2, 2), padding='SAME')(x))
    return nn.Dense(2)(x.reshape(x.shape[0], -1))


def _conv_cls(strategy):
  if strategy == 'flax':
    return nn.Conv
  return lambda *a, **k: hnn.Conv(*a, **k, strategy=strategy)


def test_second_order_through_sgd_step_vmapped_over_tasks():
  """MAML's second-order meta-gradient with per-task adapted kernels: each strategy, vmapped
  over tasks, equals a Python loop over tasks with flax.linen.Conv."""
  num_tasks = 3
  xs = _inputs((num_tasks, 4, 8, 8, 2), seed=2)
  xq = _inputs((num_tasks, 5, 8, 8, 2), seed=3)
  ys = _inputs((num_tasks, 4, 2), seed=4)
  yq = _inputs((num_tasks, 5, 2), seed=5)
  params = _params_like(_Net(nn.Conv), xs[0])

  def meta_grad(strategy, batched=True):
    net = _Net(_conv_cls(strategy))

    def task_loss(p, xs, ys, xq, yq):  # one task
      g = jax.grad(lambda q: jnp.mean((net.apply(q, xs) - ys) ** 2))(p)
      adapted = jax.tree.map(lambda w, d: w - 0.3 * d, p, g)  # per-task kernels
      return jnp.mean((net.apply(adapted, xq) - yq) ** 2)

    if batched:
      loss = lambda p: jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, xs, ys, xq, yq))
    else:
      loss = lambda p: jnp.mean(jnp.stack([task_loss(p, xs[t], ys[t], xq[t], yq[t])
                                           for t in range(num_tasks)]))
    return jax.jit(jax.value_and_grad(loss))(params)

  want = meta_grad('flax', batched=False)
  for strategy in STRATEGIES:
    chex.assert_trees_all_close(meta_grad(strategy), want, rtol=1e-4, atol=1e-5)


def test_im2col_under_vmap_has_no_convolution():
  """With per-task kernels, im2col lowers to slices and a batched matmul: no (grouped) conv."""
  x = _inputs((3, 2, 8, 8, 4))
  kernels = _inputs((3, 3, 3, 4, 5), seed=1)

  def f(strategy):
    fn = lambda k, x: hnn.conv(x, k, strategy=strategy)
    return str(jax.make_jaxpr(jax.vmap(jax.grad(lambda k, x: jnp.sum(fn(k, x) ** 2))))(kernels, x))

  assert 'conv_general_dilated' not in f('im2col')
  assert 'feature_group_count=3' in f('xla')  # what the 'xla' lowering turns into
  got = jax.vmap(lambda k, x: hnn.conv(x, k, strategy='im2col'))(kernels, x)
  want = jnp.stack([hnn.conv(x[t], kernels[t], strategy='xla') for t in range(3)])
  np.testing.assert_allclose(got, want, **TOL)


def _resolved_in_jaxpr(layer, x):
  params = {'params': {'kernel': jnp.zeros((3, 3, x.shape[-1], 4)), 'bias': jnp.zeros(4)}}
  text = str(jax.make_jaxpr(layer.apply)(params, x))
  return 'xla' if 'conv_general_dilated' in text else 'im2col'


def test_auto_follows_backend_context_and_environment(monkeypatch):
  monkeypatch.delenv(hnn.ENV_CONV_STRATEGY, raising=False)
  x = _inputs((2, 6, 6, 3))
  layer = hnn.Conv(4, (3, 3))
  backend_default = 'im2col' if jax.default_backend() == 'cpu' else 'xla'
  other = {'xla': 'im2col', 'im2col': 'xla'}[backend_default]
  assert hnn.resolve_conv_strategy() == backend_default
  assert _resolved_in_jaxpr(layer, x) == backend_default
  with hnn.conv_strategy(other):
    assert hnn.resolve_conv_strategy('auto') == other
    assert _resolved_in_jaxpr(layer, x) == other
    # An explicit choice on the layer is not overridden.
    assert _resolved_in_jaxpr(hnn.Conv(4, (3, 3), strategy=backend_default), x) == backend_default
    with hnn.conv_strategy('auto'):  # back to the backend default inside an override
      assert _resolved_in_jaxpr(layer, x) == backend_default
  monkeypatch.setenv(hnn.ENV_CONV_STRATEGY, other)
  assert _resolved_in_jaxpr(layer, x) == other
  with hnn.conv_strategy(backend_default):  # the context wins over the environment
    assert _resolved_in_jaxpr(layer, x) == backend_default


@pytest.mark.skipif(not hasattr(jax, 'make_user_context'), reason='needs jax.make_user_context')
def test_jit_retraces_when_the_override_changes():
  layer = hnn.Conv(4, (3, 3))
  x = _inputs((2, 6, 6, 3))
  params = _params_like(layer, x)
  traces = []

  @jax.jit
  def f(p, x):
    traces.append(hnn.resolve_conv_strategy())
    return layer.apply(p, x)

  with hnn.conv_strategy('xla'):
    a = f(params, x)
  with hnn.conv_strategy('im2col'):
    b = f(params, x)
    f(params, x)
  assert traces == ['xla', 'im2col']
  np.testing.assert_allclose(a, b, **TOL)


def test_bad_strategy_names_raise(monkeypatch):
  with pytest.raises(ValueError, match="strategy.*'fast'"):
    hnn.Conv(4, (3, 3), strategy='fast')
  with pytest.raises(ValueError, match="'gpu'"):
    with hnn.conv_strategy('gpu'):
      pass
  with pytest.raises(ValueError, match="'bogus'"):
    hnn.conv(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 2)), strategy='bogus')
  monkeypatch.setenv(hnn.ENV_CONV_STRATEGY, 'cudnn')
  with pytest.raises(ValueError, match=f"{hnn.ENV_CONV_STRATEGY}.*'cudnn'"):
    hnn.resolve_conv_strategy()


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match='kernel'):
    hnn.conv(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 4)))
  with pytest.raises(ValueError, match='input_dilation'):
    hnn.conv(jnp.zeros((1, 4, 4, 1)), jnp.zeros((2, 2, 1, 2)), input_dilation=2,
             strategy='im2col')


def test_maml_meta_gradient_equal_for_both_strategies():
  """The library path: second-order MAML on a Target built from a Linen CNN with
  hypernet.nn.Conv ('auto') and hypernet.nn.max_pool, switched by `conv_strategy`."""

  class SmallCNN(nn.Module):

    @nn.compact
    def __call__(self, x):
      for _ in range(2):
        x = hnn.max_pool(nn.relu(hnn.Conv(3, (3, 3))(x)), (2, 2), (2, 2))
      return nn.Dense(3)(x.reshape(x.shape[0], -1))

  tasks = Task(x_support=_inputs((2, 3, 8, 8, 1), seed=6),
               y_support=jnp.tile(jnp.arange(3), (2, 1)),
               x_query=_inputs((2, 6, 8, 8, 1), seed=7),
               y_query=jnp.tile(jnp.arange(3).repeat(2), (2, 1)))
  target = hn.Target.from_fn(SmallCNN().apply, _params_like(SmallCNN(), tasks.x_support[0]))
  learner = meta.MAML(target=target, loss='xent', inner_lr=0.4, inner_steps=1)
  # Small weights: with large ones a ReLU input within rounding of 0 flips between lowerings.
  meta_params = {'init': _params_like(SmallCNN(), tasks.x_support[0], scale=0.2)}
  out = {}
  for strategy in STRATEGIES:
    with hnn.conv_strategy(strategy):
      out[strategy] = jax.jit(learner.meta_grad)(meta_params, tasks)
  chex.assert_trees_all_close(out['im2col'], out['xla'], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ max_pool
@pytest.mark.parametrize('shape,window,strides,padding', [
    ((2, 8, 8, 3), (2, 2), (2, 2), 'VALID'),
    ((2, 7, 9, 3), (2, 2), (2, 2), 'VALID'),  # odd sizes: trailing row/column dropped
    ((3, 2, 6, 6, 3), (3, 2), (3, 2), 'VALID'),  # two batch axes
    ((2, 7, 7, 3), (2, 2), None, 'VALID'),  # stride 1 (flax's default): flax's path
    ((2, 7, 7, 3), (2, 2), (2, 2), 'SAME'),  # padded: flax's path
])
def test_max_pool_matches_flax_to_second_order(shape, window, strides, padding):
  x = _inputs(shape, seed=7)  # continuous values: no ties inside a window
  ours = lambda x: hnn.max_pool(x, window, strides, padding)
  flax = lambda x: nn.max_pool(x, window, strides, padding)
  v = _inputs(shape, seed=8)

  @jax.jit
  def derivatives(x):  # value, gradient, and a second-order term d/dx <grad f(x), v>
    out = []
    for pool in (ours, flax):
      f = lambda x, pool=pool: jnp.sum(jnp.sin(pool(x * x)))
      out.append((pool(x), jax.grad(f)(x), jax.grad(lambda x: jnp.vdot(jax.grad(f)(x), v))(x)))
    return out

  (y, g, h), (y_want, g_want, h_want) = derivatives(x)
  np.testing.assert_array_equal(y, y_want)
  np.testing.assert_allclose(g, g_want, **TOL)
  np.testing.assert_allclose(h, h_want, rtol=1e-4, atol=1e-4)


def test_max_pool_reshape_path_has_no_reduce_window():
  x = _inputs((2, 8, 8, 3))
  grad = jax.grad(lambda x: jnp.sum(hnn.max_pool(x, (2, 2), (2, 2)) ** 2))
  text = str(jax.make_jaxpr(grad)(x))
  assert 'reduce_window' not in text and 'select_and' not in text
  with pytest.raises(ValueError, match='smaller than window_shape'):
    hnn.max_pool(jnp.zeros((1, 1, 4, 2)), (2, 2), (2, 2))
