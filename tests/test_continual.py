"""Continual learning (`hypernet.continual`, `experiments.continual`): the output regulariser,
EWC, SI, the metrics, protection of earlier tasks, van de Ven & Tolias's protocol config, and
smoke runs of the experiment.

The smoke runs use the real MNIST files where `data_sources.staged_root` finds them
(`$HYPERNET_DATA_DIR` or `../shared/data`), otherwise small files generated in the real IDX
format (read with `data.verify=False`, since their sha256 cannot match the published one).
"""

import dataclasses
import gzip
import json
import struct

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import hypernet as hn
from experiments import continual, events, outputs
from experiments.configs import continual as continual_config
from hypernet import continual as cl
from hypernet.data import mnist as mn

import data_sources
import run_lists

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


class _MLP(nn.Module):
  out: int = 3

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.out)(nn.relu(nn.Dense(16)(x)))


def _hnet_method(beta: float, num_tasks: int = 3, lookahead_lr: float = 0.0,
                 reg_samples: int = 0) -> cl.HnetMethod:
  target = hn.Target.from_linen(_MLP(), jnp.zeros((1, 8)), key=jax.random.key(0))
  module = hn.FullHypernet(target, 4, hidden=(16,))
  return cl.HnetMethod(target, module, num_tasks, 4, beta, lookahead_lr,
                       reg_samples=reg_samples)


# ------------------------------------------------------------------ regulariser
def test_regularizer_zero_at_stored_outputs_positive_away():
  method = _hnet_method(beta=0.1)
  params = jax.jit(method.init)(jax.random.key(0))
  outputs = jax.jit(method.outputs)
  stored = outputs(params['hnet'], params['embeddings'])  # [T, P], what end_task stores
  np.testing.assert_array_equal(
      stored, method.end_task(params, None, 0, None, None)['stored'])
  for task in range(3):
    assert float(cl.output_regularizer(stored, stored, task, 0.1)) == 0.0
  moved = jax.tree.map(lambda p: p + 0.01, params['hnet'])
  outs2 = outputs(moved, params['embeddings'])
  assert float(cl.output_regularizer(outs2, stored, 0, 0.1)) == 0.0  # no earlier task
  reg = float(cl.output_regularizer(outs2, stored, 2, 0.1))
  want = 0.1 / 2 * float(jnp.sum((outs2[:2] - stored[:2]) ** 2))  # beta / (T - 1) * sum
  assert reg > 0 and reg == pytest.approx(want, rel=1e-5)
  # The loss adds it; only the current task's embedding gets a gradient.
  x, y = jnp.ones((5, 8)), jnp.zeros(5, jnp.int32)
  grads, m = jax.jit(jax.grad(method.loss, has_aux=True))(
      {'hnet': moved, 'embeddings': params['embeddings']}, {'stored': stored}, 2, x, y)
  assert float(m['reg']) == pytest.approx(reg, rel=1e-5)
  g = np.asarray(grads['embeddings'])
  assert np.all(g[:2] == 0) and np.any(g[2] != 0)


@pytest.mark.parametrize('lookahead_lr', [0.0, 0.1])
def test_sampled_regularizer_is_an_unbiased_estimate_of_the_full_one(lookahead_lr):
  """`reg_samples=k`: k earlier tasks drawn per step; exact with one earlier task, 0 at task
  0, the full regulariser on average over keys; the same cross-entropy and gradients to the
  same parameters (the earlier embeddings get none)."""
  full = _hnet_method(beta=0.1, num_tasks=4, lookahead_lr=lookahead_lr)
  sampled = _hnet_method(beta=0.1, num_tasks=4, lookahead_lr=lookahead_lr, reg_samples=2)
  assert full != sampled and hash(full) != hash(sampled)  # separate compiled programs
  params = jax.jit(full.init)(jax.random.key(0))
  memory = {'stored': jax.jit(full.outputs)(params['hnet'], params['embeddings'])}
  params = {**params, 'hnet': jax.tree.map(lambda p: p + 0.02, params['hnet'])}
  x, y = jnp.ones((5, 8)), jnp.zeros(5, jnp.int32)
  loss_full = jax.jit(full.loss)
  loss_sampled = jax.jit(jax.vmap(sampled.loss, in_axes=(None, None, None, None, None, 0)))
  keys = jax.random.split(jax.random.key(1), 4000)
  for task in (0, 1, 3):
    _, m_full = loss_full(params, memory, task, x, y)
    _, m = loss_sampled(params, memory, task, x, y, keys)
    np.testing.assert_allclose(m['ce'], float(m_full['ce']), rtol=1e-6)
    if task < 2:  # no earlier task, or exactly one: every draw gives the full value
      np.testing.assert_allclose(m['reg'], float(m_full['reg']), rtol=1e-5)
    else:  # three earlier tasks of different distance: the mean over draws
      assert float(jnp.std(m['reg'])) > 0
      assert float(jnp.mean(m['reg'])) == pytest.approx(float(m_full['reg']), rel=0.03)
  grads, _ = jax.jit(jax.grad(sampled.loss, has_aux=True))(params, memory, 3, x, y, keys[0])
  g = np.asarray(grads['embeddings'])
  assert np.all(g[:3] == 0) and np.any(g[3] != 0)
  with pytest.raises(ValueError, match='key: expected a PRNG key with reg_samples=2'):
    sampled.loss(params, memory, 3, x, y)
  with pytest.raises(ValueError, match=r'reg_samples: expected an int >= 0, received -1'):
    _hnet_method(beta=0.1, reg_samples=-1)


def test_chunk_sampled_regularizer_is_an_unbiased_estimate_of_the_full_one():
  """`reg_chunks=m` with a chunked hypernetwork: each drawn task's distance from m of its
  chunks, scaled by num_chunks / m. Zero at the stored outputs for every draw (the chunks'
  values are compared with the right stored ones), the full regulariser on average over
  keys; the same tasks drawn as without it; refused where it cannot apply."""
  target = hn.Target.from_linen(_MLP(), jnp.zeros((1, 8)), key=jax.random.key(0))
  module = hn.ChunkedHypernet(target, 4, chunk_size=20, chunk_emb_dim=3, hidden=(16,))
  assert module.num_chunks == 10 and target.num_params == 195  # the last chunk padded
  full = cl.HnetMethod(target, module, 4, 4, 0.1)
  rows_only = cl.HnetMethod(target, module, 4, 4, 0.1, reg_samples=2)
  chunks = cl.HnetMethod(target, module, 4, 4, 0.1, reg_samples=2, reg_chunks=3)
  params = jax.jit(full.init)(jax.random.key(0))
  memory = {'stored': jax.jit(full.outputs)(params['hnet'], params['embeddings'])}
  x, y = jnp.ones((5, 8)), jnp.zeros(5, jnp.int32)
  keys = jax.random.split(jax.random.key(1), 4000)
  loss_chunks = jax.jit(jax.vmap(chunks.loss, in_axes=(None, None, None, None, None, 0)))
  _, m = loss_chunks(params, memory, 3, x, y, keys[:50])
  at_stored = np.asarray(m['reg'])  # rounding only: a subset computed apart from the whole
  # Moved: chunks of different distance (the head's bias moves the last chunk's padding too).
  moved = {**params, 'hnet': jax.tree.map(lambda p: p * 1.05 + 0.02, params['hnet'])}
  _, m_full = jax.jit(full.loss)(moved, memory, 3, x, y)
  _, m = loss_chunks(moved, memory, 3, x, y, keys)
  _, m_rows = jax.jit(jax.vmap(rows_only.loss, in_axes=(None, None, None, None, None, 0)))(
      moved, memory, 3, x, y, keys)
  np.testing.assert_allclose(m['ce'], float(m_full['ce']), rtol=1e-6)
  assert np.max(at_stored) < 1e-9 * float(m_full['reg']), (at_stored, m_full['reg'])
  assert float(jnp.std(m['reg'] - m_rows['reg'])) > 0
  assert float(jnp.mean(m['reg'])) == pytest.approx(float(m_full['reg']), rel=0.03)
  # One earlier task, every chunk drawn once: exact (chunk draws with replacement, so a draw
  # of 10 covering all 10 chunks is found among the keys).
  every = cl.HnetMethod(target, module, 4, 4, 0.1, reg_samples=1, reg_chunks=10)
  _, m_full1 = jax.jit(full.loss)(moved, memory, 1, x, y)
  _, m1 = jax.jit(jax.vmap(every.loss, in_axes=(None, None, None, None, None, 0)))(
      moved, memory, 1, x, y, keys)
  ids = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 1), (1, 10), 0, 10))(keys)
  covering = np.flatnonzero([len(set(np.asarray(i).ravel())) == 10 for i in ids])
  assert covering.size
  np.testing.assert_allclose(np.asarray(m1['reg'])[covering], float(m_full1['reg']), rtol=1e-5)
  with pytest.raises(ValueError, match=r'reg_chunks: expected 0 with reg_samples=0 .*received 3'):
    cl.HnetMethod(target, module, 4, 4, 0.1, reg_chunks=3)
  with pytest.raises(ValueError, match=r'reg_chunks: expected 0 unless hnet is a ChunkedHypernet'
                     r'.*received 3 with FullHypernet'):
    cl.HnetMethod(target, hn.FullHypernet(target, 4, hidden=(16,)), 4, 4, 0.1, reg_samples=2,
                  reg_chunks=3)
  with pytest.raises(ValueError, match=r'reg_chunks: expected an int >= 0, received -1'):
    cl.HnetMethod(target, module, 4, 4, 0.1, reg_samples=2, reg_chunks=-1)


def test_regularizer_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match='outputs, stored'):
    cl.output_regularizer(jnp.zeros((3, 4)), jnp.zeros((3, 5)), 1, 0.1)


def _tasks(num_tasks: int = 2, n: int = 256):
  """Synthetic 3-class tasks in 8 dims: labels by a random linear map per task."""
  key = jax.random.key(1)
  xs, ys = [], []
  for t in range(num_tasks):
    kx, kw = jax.random.split(jax.random.fold_in(key, t))
    x = jax.random.normal(kx, (n, 8))
    ys.append(jnp.argmax(x @ jax.random.normal(kw, (8, 3)), -1))
    xs.append(x)
  return xs, ys


def _two_tasks(method, steps=150):
  """Trains task 0, stores, trains task 1 (Adam); returns task 0's generated weights `[P]`
  before and after task 1, and the accuracy on task 1. One jitted program."""
  xs, ys = _tasks()
  tx = optax.adam(1e-2)

  def train(params, memory, task):
    def body(carry, _):
      params, opt = carry
      g, _ = jax.grad(method.loss, has_aux=True)(params, memory, task, xs[task], ys[task])
      u, opt = tx.update(g, opt, params)
      return (optax.apply_updates(params, u), opt), None
    return jax.lax.scan(body, (params, tx.init(params)), None, length=steps)[0][0]

  @jax.jit
  def run(key):
    params = method.init(key)
    memory = method.init_memory(params)
    params = train(params, memory, 0)
    memory = method.end_task(params, memory, 0, None, None)
    before = ravel_pytree(method.generate(params, 0))[0]
    params = train(params, memory, 1)
    after = ravel_pytree(method.generate(params, 0))[0]
    acc1 = jnp.mean(jnp.argmax(method.predict(params, 1, xs[1]), -1) == ys[1])
    return before, after, acc1

  return run(jax.random.key(0))


# Bound on the relative change ||w0_after - w0_before|| / ||w0_before|| of task 0's generated
# weights while task 1 is learned with the regulariser (beta = 1). Measured on CPU: 8.5e-5
# (2.1e-4 with the lookahead), against 0.65 without the regulariser.
REL_CHANGE_BOUND = 0.005


def test_earlier_generated_weights_move_less_than_bound():
  changes = {}
  for beta, lookahead_lr in ((0.0, 0.0), (1.0, 0.0), (1.0, 1e-2)):
    before, after, acc1 = _two_tasks(_hnet_method(beta, num_tasks=2, lookahead_lr=lookahead_lr))
    changes[beta, lookahead_lr] = float(jnp.linalg.norm(after - before) / jnp.linalg.norm(before))
    assert float(acc1) > 0.8, (beta, lookahead_lr, float(acc1))  # task 1 is learned anyway
  for with_reg in ((1.0, 0.0), (1.0, 1e-2)):
    assert changes[with_reg] < REL_CHANGE_BOUND, changes
    assert changes[with_reg] < 0.05 * changes[0.0, 0.0], changes


# ------------------------------------------------------------------ EWC
def test_ewc_penalty_zero_at_anchor_positive_away():
  p = 6
  anchor = jnp.arange(p, dtype=jnp.float32)
  memory = cl.update_ewc_memory(cl.init_ewc_memory(p), jnp.ones(p), anchor, gamma=None)
  assert float(cl.ewc_penalty(anchor, memory, 10.0)) == 0.0
  theta = anchor + 0.5
  assert float(cl.ewc_penalty(theta, memory, 10.0)) == pytest.approx(0.5 * 10 * p * 0.25)
  assert float(cl.ewc_penalty(theta, cl.init_ewc_memory(p), 10.0)) == 0.0  # no task yet
  # Online EWC: the Fisher accumulates with decay gamma, centred on the latest anchor.
  online = cl.init_ewc_memory(p)
  online = cl.update_ewc_memory(online, jnp.ones(p), theta, gamma=0.5)
  online = cl.update_ewc_memory(online, jnp.ones(p), theta + 1, gamma=0.5)
  np.testing.assert_allclose(online['precision'], 1.5 * np.ones(p))
  assert float(cl.ewc_penalty(theta + 1, online, 1.0)) == 0.0


def test_merged_ewc_memory_equals_one_quadratic_per_task():
  """The memory merges the tasks' quadratics into one: the penalty and its gradient equal
  `lambda / 2 * sum_k F_k (theta - theta*_k)^2` summed task by task, with Fishers that are
  zero in places (no precision there), at any theta."""
  p, tasks = 50, 4
  keys = jax.random.split(jax.random.key(0), 3)
  fishers = jnp.square(jax.random.normal(keys[0], (tasks, p)))
  fishers = fishers.at[:2, :10].set(0.0).at[:, :3].set(0.0)
  anchors = jax.random.normal(keys[1], (tasks, p))
  memory = cl.init_ewc_memory(p)
  for k in range(tasks):
    memory = cl.update_ewc_memory(memory, fishers[k], anchors[k], gamma=None)
    seen = k + 1

    def by_task(theta, seen=seen):
      return 0.5 * 3.0 * jnp.sum(fishers[:seen] * jnp.square(theta[None] - anchors[:seen]))

    for theta in (anchors[0], anchors[k] + 0.1, jax.random.normal(keys[2], (p,))):
      np.testing.assert_allclose(cl.ewc_penalty(theta, memory, 3.0), by_task(theta),
                                 rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(jax.grad(cl.ewc_penalty)(theta, memory, 3.0),
                                 jax.grad(by_task)(theta), rtol=1e-5, atol=1e-6)


def test_fisher_diagonal_nonnegative_and_shaped():
  method = continual.build_method(continual_config.get_config(
      'benchmark=split_mnist1d,method=ewc,smoke'), 40)
  params = jax.jit(method.init)(jax.random.key(0))
  flat = ravel_pytree(params)[0]
  end_task = jax.jit(method.end_task, static_argnums=2)
  mem = end_task(params, method.init_memory(params), 1,
                 jax.random.normal(jax.random.key(2), (100, 40)), jax.random.key(3))
  assert mem['precision'].shape == mem['center'].shape == (flat.size,)
  assert np.all(np.asarray(mem['precision']) >= 0) and float(mem['precision'].sum()) > 0
  # Task 1's head is the only one it reads: the other heads' weights get no precision.
  kernel = ravel_pytree(params)[1](mem['precision'])['Dense_1']['kernel']  # [16, 3 tasks x 2]
  assert float(jnp.sum(kernel[:, 2:4])) > 0
  assert float(jnp.sum(kernel[:, :2])) == 0 and float(jnp.sum(kernel[:, 4:])) == 0
  np.testing.assert_array_equal(mem['center'], flat)  # one task: centred on its anchor
  assert float(mem['offset']) == 0


def test_fisher_argmax_labels_use_the_most_probable_class():
  w = jax.random.normal(jax.random.key(0), (8, 3))
  x = jax.random.normal(jax.random.key(1), (100, 8))
  log_probs = lambda p, xb: jax.nn.log_softmax(xb @ p.reshape(8, 3), -1)
  flat = w.reshape(-1)
  fisher = cl.fisher_diagonal(log_probs, flat, x, None, labels='argmax')
  top = jnp.argmax(log_probs(flat, x), -1)
  per_example = jax.vmap(jax.grad(lambda p, xi, yi: log_probs(p, xi[None])[0, yi]),
                         in_axes=(None, 0, 0))(flat, x, top)
  np.testing.assert_allclose(fisher, jnp.mean(jnp.square(per_example), 0), rtol=1e-5, atol=1e-8)
  with pytest.raises(ValueError, match=r"labels: expected one of .*received 'true'"):
    cl.fisher_diagonal(log_probs, flat, x, None, labels='true')


@pytest.mark.parametrize('labels', ['argmax', 'sample'])
def test_dense_fisher_equals_the_per_example_fisher(labels):
  """One backward pass per chunk gives the mean of the per-example squared gradients of
  every Dense kernel and bias, head selection included (the unread heads get 0)."""
  mlp = continual.MLP((12, 8), 3 * 4)
  params = mlp.init(jax.random.key(0), jnp.zeros((1, 10)))['params']
  x = jax.random.normal(jax.random.key(1), (300, 10))
  log_probs = lambda p, xb: jax.nn.log_softmax(
      cl.select_head(mlp.apply({'params': p}, xb), 1, 4), -1)
  flat, unravel = ravel_pytree(params)
  per_example = cl.fisher_diagonal(lambda f, xb: log_probs(unravel(f), xb), flat, x,
                                   jax.random.key(2), labels=labels)
  dense = jax.jit(lambda p, xx: cl.dense_fisher_diagonal(log_probs, p, xx, jax.random.key(2),
                                                          chunk=100, labels=labels))(params, x)
  assert jax.tree.structure(dense) == jax.tree.structure(params)
  np.testing.assert_allclose(ravel_pytree(dense)[0], per_example, rtol=1e-4, atol=1e-7)
  assert float(jnp.sum(dense['Dense_2']['kernel'][:, 4:8])) > 0
  assert float(jnp.sum(dense['Dense_2']['kernel'][:, :4])) == 0  # head 0 is not read


def test_dense_fisher_refuses_what_it_cannot_compute():
  class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Conv(2, (3,))(x[..., None]).reshape(x.shape[0], -1)
      return nn.Dense(3)(x)

  class Shared(nn.Module):
    @nn.compact
    def __call__(self, x):
      d = nn.Dense(4)
      return d(d(x))

  x = jnp.ones((100, 4))
  for module, match in ((ConvNet(), r'belong to no Dense layer'),
                        (Shared(), r'called more than once')):
    params = module.init(jax.random.key(0), x)['params']
    fn = lambda p, xb, m=module: jax.nn.log_softmax(m.apply({'params': p}, xb), -1)
    with pytest.raises(cl.NotDenseError, match=match):
      cl.dense_fisher_diagonal(fn, params, x, None, chunk=50, labels='argmax')
  with pytest.raises(ValueError, match=r'x: expected a number of examples divisible by '
                                       r'chunk=64, received 100'):
    cl.dense_fisher_diagonal(fn, params, x, None, chunk=64, labels='argmax')


# ------------------------------------------------------------------ SI
def _si_gradient_descent(loss, params, memory, eta, steps, c, path_grad):
  """`steps` of plain gradient descent (lr `eta`) on `loss + SI penalty`; the path integral
  uses the gradient of that total (`'total'`) or of `loss` alone (`'task'`)."""
  total = lambda p: loss(p) + cl.si_penalty(p, memory, c)

  def body(carry, _):
    p, mem = carry
    g_total = jax.grad(total)(p)
    g = g_total if path_grad == 'total' else jax.tree.map(
        jnp.subtract, g_total, cl.si_penalty_grad(p, mem, c))
    new = jax.tree.map(lambda a, b: a - eta * b, p, g_total)
    return (new, cl.accumulate_path_integral(mem, p, new, g)), None

  return jax.lax.scan(body, (params, memory), None, length=steps)[0]


def test_si_path_integral_matches_closed_form_on_quadratics():
  """GD with lr eta on `0.5 * A * (theta - m)^2`: `theta_t - m = (theta_0 - m) r^t`,
  `r = 1 - eta A`, so `omega = sum_t eta g_t^2 = A (theta_0 - m)^2 (1 - r^(2n)) / (2 - eta A)`."""
  eta, n, xi, c = 0.05, 30, 0.1, 0.7
  a = jnp.array([0.5, 2.0, 8.0, 0.0])  # per-parameter curvature; the last never moves
  theta0 = {'w': jnp.array([1.0, -2.0, 0.5, 3.0])}
  closed = lambda big_a, d0: big_a * d0 ** 2 * (1 - (1 - eta * big_a) ** (2 * n)) / (
      2 - eta * big_a)

  # Task 1: L1 = 0.5 a theta^2, no penalty yet (Omega = 0).
  memory = cl.init_si_memory(theta0)
  params, memory = jax.jit(lambda p, m: _si_gradient_descent(
      lambda q: 0.5 * jnp.sum(a * q['w'] ** 2), p, m, eta, n, c, 'total'))(theta0, memory)
  omega1 = closed(a, theta0['w'])
  np.testing.assert_allclose(memory['omega']['w'], omega1, rtol=1e-5)
  np.testing.assert_allclose(params['w'], theta0['w'] * (1 - eta * a) ** n, rtol=1e-5)
  memory = cl.update_si_memory(memory, params, xi)
  delta1 = params['w'] - theta0['w']
  big_omega1 = omega1 / (delta1 ** 2 + xi)
  np.testing.assert_allclose(memory['importance']['w'], big_omega1, rtol=1e-5)
  assert float(memory['importance']['w'][3]) == 0.0  # no path, no importance
  np.testing.assert_array_equal(memory['omega']['w'], np.zeros(4))
  np.testing.assert_array_equal(memory['anchor']['w'], params['w'])

  # The penalty c * sum Omega (theta - theta*)^2 and its gradient.
  theta = {'w': params['w'] + jnp.array([0.3, -0.1, 0.2, 5.0])}
  expected = c * jnp.sum(big_omega1 * (theta['w'] - params['w']) ** 2)
  assert float(cl.si_penalty(theta, memory, c)) == pytest.approx(float(expected), rel=1e-5)
  np.testing.assert_allclose(cl.si_penalty_grad(theta, memory, c)['w'],
                             jax.grad(lambda p: cl.si_penalty(p, memory, c))(theta)['w'],
                             rtol=1e-5)

  # Task 2: L2 = 0.5 a2 (theta - b)^2 with the penalty; the total is 0.5 A (theta - m)^2 +
  # const with A = a2 + 2 c Omega1, m = (a2 b + 2 c Omega1 theta*) / A.
  a2, b = a.at[3].set(1.0), jnp.array([2.0, 1.0, -1.0, 1.0])  # the last parameter moves now
  loss2 = lambda q: 0.5 * jnp.sum(a2 * (q['w'] - b) ** 2)
  big_a = a2 + 2 * c * big_omega1
  m = (a2 * b + 2 * c * big_omega1 * params['w']) / big_a
  run2 = jax.jit(_si_gradient_descent, static_argnums=(0, 4, 6))
  params2, memory2 = run2(loss2, params, memory, eta, n, c, 'total')
  omega2 = closed(big_a, params['w'] - m)
  np.testing.assert_allclose(memory2['omega']['w'], omega2, rtol=1e-4, atol=1e-7)
  memory2 = cl.update_si_memory(memory2, params2, xi)
  np.testing.assert_allclose(
      memory2['importance']['w'], big_omega1 + omega2 / ((params2['w'] - params['w']) ** 2 + xi),
      rtol=1e-4, atol=1e-7)  # Omega accumulates over tasks

  # Zenke et al.'s convention: the task loss's gradient only, checked against a plain loop.
  _, memory_task = run2(loss2, params, memory, eta, n, c, 'task')
  th, want = np.asarray(params['w'], np.float64), np.zeros(4)
  for _ in range(n):
    g_task = np.asarray(a2) * (th - np.asarray(b))
    new = th - eta * np.asarray(big_a) * (th - np.asarray(m))
    want -= g_task * (new - th)
    th = new
  np.testing.assert_allclose(memory_task['omega']['w'], want, rtol=1e-4, atol=1e-7)
  assert not np.allclose(want, omega2)


# ------------------------------------------------------------------ metrics
def test_accuracy_matrix_metrics_and_entropy_inference():
  acc = np.array([[0.9, 0.8, 0.7], [0.1, 0.95, 0.85], [0.2, 0.3, 1.0]])
  assert cl.average_accuracy(acc) == pytest.approx((0.7 + 0.85 + 1.0) / 3)
  assert cl.backward_transfer(acc) == pytest.approx(((0.7 - 0.9) + (0.85 - 0.95)) / 2)
  assert cl.learning_accuracy(acc) == pytest.approx((0.9 + 0.95 + 1.0) / 3)
  # LA and BWT split the final average: final = LA + (T - 1) / T * BWT.
  assert cl.average_accuracy(acc) == pytest.approx(
      cl.learning_accuracy(acc) + 2 / 3 * cl.backward_transfer(acc))
  with pytest.raises(ValueError, match='acc'):
    cl.average_accuracy(np.zeros((2, 3)))
  logits = jnp.array([[[0.0, 0.0], [5.0, 0.0]], [[9.0, 0.0], [0.0, 0.1]]])  # [K=2, N=2, C=2]
  task, chosen = cl.entropy_task_inference(logits)
  assert list(np.asarray(task)) == [1, 0]
  np.testing.assert_allclose(chosen, [[9.0, 0.0], [5.0, 0.0]])


# ------------------------------------------------------------------ the experiment
def _idx_bytes(a: np.ndarray) -> bytes:
  return struct.pack('>I', 0x0800 | a.ndim) + struct.pack(f'>{a.ndim}I', *a.shape) + a.tobytes()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """`(data_dir, verify)`: the real files if staged, else generated ones in the IDX format."""
  staged = data_sources.staged_root('mnist', *(f.name for f in mn.MNIST_FILES['train']
                                               + mn.MNIST_FILES['test']))
  if staged is not None:
    return str(staged), True
  root = tmp_path_factory.mktemp('data')
  rng = np.random.default_rng(0)
  (root / 'mnist').mkdir()
  for split, n in (('train', 2000), ('test', 500)):
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = (rng.random((n, 28, 28)) < 0.1 + 0.05 * y[:, None, None]).astype(np.uint8) * 255
    for f, a in zip(mn.MNIST_FILES[split], (x, y)):
      (root / 'mnist' / f.name).write_bytes(gzip.compress(_idx_bytes(a)))
  return str(root), False


def _smoke(data_dir, method='hnet', benchmark='split_mnist', plots=False):
  config = continual_config.get_config(f'benchmark={benchmark},method={method},smoke')
  config.data.dir, config.data.verify = data_dir
  config.plots = plots
  return config


def test_smoke_run_outputs(data_dir, tmp_path):
  config = _smoke(data_dir, plots=True)
  config.keep_checkpoints = 1
  results = continual.train_and_evaluate(config, str(tmp_path))
  t = config.data.num_tasks
  # One checkpoint after each task, the newest `keep_checkpoints` kept: the last task's.
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == [str(t)]
  acc = np.array(results['accuracy_matrix'])
  assert acc.shape == (t, t) and np.all((acc >= 0) & (acc <= 1))
  with open(tmp_path / 'results.json') as f:
    on_disk = json.load(f)
  assert on_disk['accuracy_matrix'] == results['accuracy_matrix']
  for name in ('final_avg_accuracy', 'bwt', 'learning_accuracy'):
    assert set(on_disk[name]) == {'mean', 'ci95', 'n'} and on_disk[name]['n'] == 1
  assert on_disk['learning_accuracy']['mean'] == pytest.approx(np.diag(acc).mean())
  assert on_disk['final_avg_accuracy']['mean'] == pytest.approx(acc[:, -1].mean())
  assert on_disk['num_trainable_params'] > 0 and on_disk['compression_ratio'] > 0
  assert 0 <= on_disk['inferred_task']['accuracy']['mean'] <= 1
  assert (tmp_path / 'accuracy_matrix.png').read_bytes().startswith(PNG_MAGIC)
  table = (tmp_path / 'accuracy_matrix.md').read_text()
  assert len(table.strip().splitlines()) == 2 + t
  assert json.loads((tmp_path / 'config.json').read_text())['method'] == 'hnet'
  # TensorBoard scalars at the global step task * steps + step, as in metrics.jsonl.
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  scalars = events.read_scalars(str(tmp_path / events.EVENTS_DIR))
  steps = config.train.steps_per_task
  assert [s for s, _ in scalars['loss']] == [r['task'] * steps + r['step'] for r in records]
  assert 'task' not in scalars and 'step' not in scalars


@pytest.mark.parametrize('method', ['hnet_chunked', 'ewc', 'online_ewc', 'si'])
def test_smoke_methods(data_dir, tmp_path, method):
  benchmark = 'permuted_mnist' if method in ('online_ewc', 'si') else 'split_mnist'
  config = _smoke(data_dir, method, benchmark)
  config.eval.infer_task = False  # one program less to compile
  results = continual.train_and_evaluate(config, str(tmp_path))
  assert np.array(results['accuracy_matrix']).shape == (3, 3)
  assert 'inferred_task' not in results


def test_conditional_chunk_embeddings_belong_to_each_task():
  """`hnet.cond_chunk_embs=True`: every task's embedding row carries its own chunk embeddings,
  counted in the compression ratio; a step on task 1 moves row 1 (both parts) only."""
  config = continual_config.get_config('benchmark=split_mnist,method=hnet_chunked,smoke')
  config.hnet.cond_chunk_embs = True
  continual.validate_config(config)
  method = continual.build_method(config, 784)
  h, n = config.hnet, method.hnet.num_chunks
  params = method.init(jax.random.key(0))
  assert params['embeddings'].shape == (config.data.num_tasks, h.emb_dim + n * h.chunk_emb_dim)
  assert 'chunk_embeddings' not in params['hnet']['params']
  # Counted in the compression ratio: T sets of chunk embeddings in place of the one shared.
  config.hnet.cond_chunk_embs = False
  shared = jax.eval_shape(continual.build_method(config, 784).init, jax.random.key(0))
  assert hn.count_params(params) - hn.count_params(shared) == (
      (config.data.num_tasks - 1) * n * h.chunk_emb_dim)
  config.hnet.cond_chunk_embs = True
  x = jax.random.normal(jax.random.key(1), (8, 784))
  y = jnp.arange(8) % 2
  memory = method.end_task(params, method.init_memory(params), 0, x, None)
  grads = jax.grad(lambda p: method.loss(p, memory, 1, x, y)[0])(params)['embeddings']
  assert not np.any(grads[0]) and not np.any(grads[2:])
  assert np.any(grads[1, :h.emb_dim]) and np.any(grads[1, h.emb_dim:])
  config.hnet.cond_chunk_embs = None
  with pytest.raises(ValueError, match=r"config.hnet.cond_chunk_embs: expected True or False, "
                     r"received None"):
    continual.validate_config(config)


def test_init_with_prev_emb_starts_a_task_from_the_previous_tasks_weights():
  """`begin_task` copies the previous task's embedding row (none for task 0, nothing without
  the flag), so the new task's generated weights start as the previous task's."""
  method = _hnet_method(beta=0.1, num_tasks=4)
  warm = dataclasses.replace(method, init_with_prev_emb=True)
  params = method.init(jax.random.key(0))
  emb = np.asarray(params['embeddings'])
  assert len({tuple(row) for row in emb}) == 4  # distinct draws
  assert method.begin_task(params, 2) is params and warm.begin_task(params, 0) is params
  started = warm.begin_task(params, 2)
  np.testing.assert_array_equal(started['embeddings'][2], emb[1])
  np.testing.assert_array_equal(np.delete(np.asarray(started['embeddings']), 2, 0),
                                np.delete(emb, 2, 0))
  assert started['hnet'] is params['hnet']
  chex.assert_trees_all_equal(warm.generate(started, 2), warm.generate(params, 1))
  with pytest.raises(ValueError, match=r'init_with_prev_emb: expected True or False, '
                     r'received 1'):
    dataclasses.replace(method, init_with_prev_emb=1)


@pytest.mark.parametrize('init_with_prev_emb', [False, True])
def test_resume_after_interruption_gives_same_result(data_dir, tmp_path, monkeypatch,
                                                     init_with_prev_emb):
  """With `init_with_prev_emb`, the resumed run's next task starts from the restored
  embedding of the task before it, as the uninterrupted run's did."""
  config = _smoke(data_dir)
  config.hnet.init_with_prev_emb = init_with_prev_emb
  ref = continual.train_and_evaluate(config, str(tmp_path / 'ref'))
  if not init_with_prev_emb:
    again = continual.train_and_evaluate(_smoke(data_dir), str(tmp_path / 'again'))
    assert again['accuracy_matrix'] == ref['accuracy_matrix']  # same seed, same result

  class Interrupt(Exception):
    pass

  real_end_task = continual.programs(config, 784).end_task

  def end_task(params, memory, data, task_id, key):
    if int(task_id) == 2:
      raise Interrupt
    return real_end_task(params, memory, data, task_id, key)

  prog = continual.programs(config, 784)
  monkeypatch.setattr(prog, 'end_task', end_task)
  with pytest.raises(Interrupt):
    continual.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert not (tmp_path / 'cut' / 'results.json').exists()
  monkeypatch.setattr(prog, 'end_task', real_end_task)
  resumed = continual.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert resumed['resumed_after_task'] == 1
  assert resumed['accuracy_matrix'] == ref['accuracy_matrix']


def test_si_vandeven_protocol_smoke_carries_adam_state_and_resumes(data_dir, tmp_path,
                                                                   monkeypatch):
  """`protocol=vandeven` (32 x 32 padded inputs, one Adam state through all tasks, one head per
  task) with SI: an interrupted run resumes to the uninterrupted result."""
  def config():
    c = continual_config.get_config('benchmark=permuted_mnist,method=si,protocol=vandeven,smoke')
    c.data.dir, c.data.verify = data_dir
    c.plots, c.eval.infer_task = False, False
    return c

  ref = continual.train_and_evaluate(config(), str(tmp_path / 'ref'))
  assert ref['protocol'] == 'vandeven' and ref['heads'] == 'one per task'
  assert ref['scenario'].startswith('task-incremental')
  assert ref['num_target_params'] == 1024 * 16 + 16 + 17 * 30  # 32 x 32 inputs, 3 heads of 10
  prog = continual.programs(config(), 1024)
  real_end_task = prog.end_task

  class Interrupt(Exception):
    pass

  def end_task(params, memory, data, task_id, key):
    if int(task_id) == 2:
      raise Interrupt
    return real_end_task(params, memory, data, task_id, key)

  monkeypatch.setattr(prog, 'end_task', end_task)
  with pytest.raises(Interrupt):
    continual.train_and_evaluate(config(), str(tmp_path / 'cut'))
  monkeypatch.setattr(prog, 'end_task', real_end_task)
  resumed = continual.train_and_evaluate(config(), str(tmp_path / 'cut'))
  assert resumed['resumed_after_task'] == 1
  assert resumed['accuracy_matrix'] == ref['accuracy_matrix']


@pytest.mark.parametrize('benchmark,hidden,lr,steps,tasks,pad,fisher', [
    ('permuted_mnist', (1000, 1000), 1e-4, 5000, 10, 2, 60000),
    ('split_mnist', (400, 400), 1e-3, 2000, 5, 0, 12000),
])
def test_vandeven_protocol_config_matches_stated_sizes(benchmark, hidden, lr, steps, tasks, pad,
                                                       fisher):
  """van de Ven & Tolias (2019): MLP 2 x 1000 (permuted, 32 x 32 inputs) or 2 x 400 (split),
  Adam at a constant lr, one state through all tasks, 5000 / 2000 steps of batch 128."""
  for method in ('finetune', 'ewc', 'online_ewc', 'si', 'hnet'):
    for scenario in (('task', 'domain') if method != 'hnet' else ('task',)):
      config = continual_config.get_config(
          f'benchmark={benchmark},method={method},protocol=vandeven,scenario={scenario}')
      continual.validate_config(config)
      assert config.protocol == 'vandeven'
      assert tuple(config.target.hidden) == hidden and config.target.init == 'torch'
      assert config.optimizer.learning_rate == lr and config.optimizer.schedule == 'constant'
      assert config.train.steps_per_task == steps and config.train.batch_size == 128
      assert config.data.num_tasks == tasks and config.data.pad == pad
      assert config.optimizer.reset_per_task is False
      assert config.multi_head == (scenario == 'task')
      strengths = continual_config.VANDEVEN_STRENGTHS[benchmark, scenario]
      if method in ('ewc', 'online_ewc'):
        assert config.ewc.fisher_labels == 'argmax' and config.ewc.fisher_samples == fisher
      if method == 'ewc':
        assert config.ewc.strength == strengths['ewc']
      if method == 'online_ewc':  # their penalty scales the accumulated Fisher by gamma again
        assert config.ewc.gamma == strengths['gamma']
        assert config.ewc.strength == pytest.approx(strengths['online_ewc'] * strengths['gamma'])
      if method == 'si':
        assert config.si.c == strengths['si'] and config.si.xi == 0.1
        assert config.si.path_grad == 'total'
  d, (h1, h2) = (28 + 2 * pad) ** 2, hidden
  method = continual.build_method(continual_config.get_config(
      f'benchmark={benchmark},method=finetune,protocol=vandeven,scenario=task'), d)
  classes = 10 if benchmark == 'permuted_mnist' else 2
  assert method.target.num_params == d * h1 + h1 + h1 * h2 + h2 + (h2 + 1) * tasks * classes
  assert continual_config.VANDEVEN_STRENGTHS.keys() >= {(benchmark, 'task'), (benchmark, 'domain')}


def test_vandeven_permuted_chunked_hypernetwork_is_von_oswalds_and_compressive():
  """The PermutedMNIST hypernetwork of the protocol: von Oswald et al.'s sizes, fewer trainable
  values than its 2 x 1000 target (32 x 32 inputs)."""
  config = continual_config.get_config(
      'benchmark=permuted_mnist,method=hnet_chunked,protocol=vandeven')
  continual.validate_config(config)
  h = config.hnet
  assert (h.emb_dim, h.chunk_emb_dim, tuple(h.hidden), h.chunk_size, h.beta) == (
      24, 8, (25, 25), 78000, 0.1)
  assert config.train.steps_per_task == 5000 and tuple(config.target.hidden) == (1000, 1000)
  method = continual.build_method(config, 32 * 32)
  params = jax.eval_shape(method.init, jax.random.key(0))
  assert method.target.num_params == 2036010
  # The hypernetwork (chunk embeddings included) and the task embeddings over the target.
  ratio = hn.compression_ratio(params['hnet'], method.target, params['embeddings'])
  assert ratio == pytest.approx(hn.count_params(params) / 2036010) and ratio < 1, ratio


@pytest.mark.parametrize('workdir, target_params, trainable', [
    ('permuted_task_hnet_chunked_d200_beta0001_cosine_s0', 2036010, 2010472),
    ('permuted100_task_hnet_chunked_cos_s0', 113610, 109526),
])
def test_vandeven_permuted_chunked_hypernetworks_are_compressive(workdir, target_params,
                                                                  trainable):
  """The README's compressive hypernetworks, each config read from the run list
  (`experiments/continual_vandeven.sh`): PermutedMNIST-10's 200-200 trunk emitting chunks of
  9,750 values for the 2 x 1000 target, PermutedMNIST-100's 100-100 trunk emitting chunks of
  900 for the 2 x 100 one (100 task embeddings), each with fewer trainable values (task
  embeddings counted) than its target."""
  config = run_lists.listed_config('continual_vandeven.sh', continual_config,
                                   f'workdirs/continual_vandeven/{workdir}')
  continual.validate_config(config)
  method = continual.build_method(config, 32 * 32)
  params = jax.eval_shape(method.init, jax.random.key(0))
  assert method.target.num_params == target_params
  ratio = hn.compression_ratio(params['hnet'], method.target, params['embeddings'])
  assert hn.count_params(params) == trainable
  assert ratio == pytest.approx(trainable / target_params) and ratio < 1, ratio


def test_protocol_and_si_config_errors():
  with pytest.raises(ValueError, match=r"config benchmark: expected one of .*protocol=vandeven, "
                     r"received 'split_mnist1d'"):
    continual_config.get_config('benchmark=split_mnist1d,protocol=vandeven')
  with pytest.raises(ValueError, match=r"config scenario: expected task .*received 'domain'"):
    continual_config.get_config('method=hnet,scenario=domain')
  with pytest.raises(ValueError, match=r"config protocol: expected one of .*received 'zenke'"):
    continual_config.get_config('protocol=zenke')
  config = continual_config.get_config('benchmark=split_mnist,method=si,smoke')
  assert 'ewc' not in config and 'hnet' not in config


def test_workdirs_recorded_under_old_key_names_resume(tmp_path):
  """`config.json` files written before the continual keys took the meta-learning experiments'
  names (`data.data_dir`, `train.learning_rate`, ...; `rundir.RENAMED_KEYS`) and before
  `hnet.reg_samples` existed are read under the new names: the same run is accepted, a
  changed value is refused under its new name."""
  from experiments import rundir  # pylint: disable=g-import-not-at-top
  config = continual_config.get_config('benchmark=split_mnist1d,method=hnet,smoke')
  old = json.loads(config.to_json())
  old['data']['data_dir'] = old['data'].pop('dir')
  opt = old.pop('optimizer')
  old['train'].update(learning_rate=opt['learning_rate'], lr_schedule=opt['schedule'])
  del old['hnet']['reg_samples']  # absent: 0; optimizer.reset_per_task absent: True
  outputs.write_json(str(tmp_path / 'config.json'), old)
  rundir.check_workdir(config, str(tmp_path))
  config.optimizer.learning_rate = 0.5
  with pytest.raises(ValueError, match=r'optimizer.learning_rate: 0.001 -> 0.5'):
    rundir.check_workdir(config, str(tmp_path))


def test_finetune_refused_workdir_and_non_finite_loss(data_dir, tmp_path, monkeypatch):
  config = _smoke(data_dir, 'finetune')
  results = continual.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['compression_ratio'] == 1.0 and results['heads'] == 'one per task'
  other = _smoke(data_dir, 'finetune')
  other.optimizer.learning_rate = 0.5
  with pytest.raises(ValueError, match='optimizer.learning_rate'):
    continual.train_and_evaluate(other, str(tmp_path / 'run'))

  prog = continual.programs(config, 784)
  real_chunk = prog.train_chunk

  class NanAtSecondStep:  # the compiled chunk, its second step's loss made NaN
    def timed(self, *args):
      (params, opt_state, memory, metrics), seconds = real_chunk.timed(*args)
      metrics = {**metrics, 'loss': metrics['loss'].at[1].set(jnp.nan)}
      return (params, opt_state, memory, metrics), seconds

  monkeypatch.setattr(prog, 'train_chunk', NanAtSecondStep())
  with pytest.raises(FloatingPointError, match=r"'loss' is nan .* task 0, step 2"):
    continual.train_and_evaluate(config, str(tmp_path / 'nan'))


@pytest.mark.parametrize('key,value,match', [
    ('train.steps_per_call', 7, r'config.train.steps_per_call: expected a divisor of '
     r'train.steps_per_task=20, received 7'),
    ('hnet.beta', -1.0, r'config.hnet.beta: expected a finite number >= 0, received -1.0'),
    ('hnet.kind', 'dense', r"config.hnet.kind: expected one of \('full', 'chunked'\), "
     r"received 'dense'"),
    ('hnet.activation', 'tanh', r"config.hnet.activation: expected one of \('relu', 'elu'\), "
     r"received 'tanh'"),
    ('hnet.head_init', 'glorot', r"config.hnet.head_init: expected one of "
     r"\('hyperfan_in', .*received 'glorot'"),
    ('hnet.init_with_prev_emb', None, r"config.hnet.init_with_prev_emb: expected True or "
     r"False, received None"),
    ('data.num_tasks', 6, r'config.data.num_tasks: expected at most 5 .*received 6'),
    ('optimizer.schedule', 'step', r"config.optimizer.schedule: expected one of .*'step'"),
    ('train.batch_size', 0, r'config.train.batch_size: expected an integer >= 1, received 0'),
    ('si.xi', 0.0, r'config.si.xi: expected a finite number > 0, received 0.0'),
    ('si.c', -1.0, r'config.si.c: expected a finite number >= 0, received -1.0'),
    ('si.path_grad', 'unreg', r"config.si.path_grad: expected one of \('total', 'task'\), "
     r"received 'unreg'"),
])
def test_config_errors_name_key_expected_received(key, value, match):
  method = 'si' if key.startswith('si.') else 'hnet'
  config = continual_config.get_config(f'benchmark=split_mnist,method={method},smoke')
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=match):
    continual.validate_config(config)


def test_reg_chunks_config_errors():
  config = continual_config.get_config('benchmark=split_mnist,method=hnet_chunked,smoke')
  config.hnet.reg_chunks = 2
  with pytest.raises(ValueError, match=r'config.hnet.reg_chunks: expected 0 with '
                     r'hnet.reg_samples=0 .*received 2'):
    continual.validate_config(config)
  config.hnet.reg_samples, config.hnet.reg_chunks = 2, -1
  with pytest.raises(ValueError, match=r'config.hnet.reg_chunks: expected an integer >= 0, '
                     r'received -1'):
    continual.validate_config(config)
  config.hnet.reg_chunks = 2
  continual.validate_config(config)
  assert continual.build_method(config, 784).reg_chunks == 2
  assert 'reg_chunks' not in continual_config.get_config('benchmark=split_mnist,method=hnet').hnet


def test_config_argument_errors():
  with pytest.raises(ValueError, match=r"config method: expected one of .*received 'sgd'"):
    continual_config.get_config('method=sgd')
  with pytest.raises(ValueError, match=r"config benchmark: expected one of .*'cifar'"):
    continual_config.get_config('benchmark=cifar')
  with pytest.raises(ValueError, match=r"received 'fast'"):
    continual_config.get_config('fast')
  config = continual_config.get_config('method=finetune')
  assert 'hnet' not in config and 'ewc' not in config  # keys that do not apply are absent
  config.lock()
  with pytest.raises(AttributeError, match='steps_per_tsk'):
    config.train.steps_per_tsk = 5


def test_continual_table_from_results_files(tmp_path):
  from experiments import continual_table  # pylint: disable=g-import-not-at-top
  acc = [[0.9, 0.8], [0.1, 0.95]]

  def write(name, method, final, protocol='default', seed=0, benchmark='split_mnist',
            num_tasks=2, steps=10, **config):
    (tmp_path / name).mkdir()
    outputs.write_json(str(tmp_path / name / 'results.json'), {
        'benchmark': benchmark, 'method': method, 'num_tasks': num_tasks,
        'steps_per_task': steps,
        'protocol': protocol, 'scenario': 'task-incremental (task identity given)',
        'accuracy_matrix': acc, 'heads': 'one per task',
        'final_avg_accuracy': outputs.summary([final]), 'bwt': outputs.summary([-0.1]),
        'num_trainable_params': 1000, 'compression_ratio': 0.5, 'train_time_s': 60.0})
    outputs.write_json(str(tmp_path / name / 'config.json'), {
        'benchmark': benchmark, 'method': method, 'protocol': protocol, 'seed': seed,
        'data': {'data_dir': f'/somewhere/{seed}', 'num_tasks': num_tasks}, **config})

  write('split_mnist_hnet', 'hnet', 0.875)
  write('split_mnist_ewc_strong', 'ewc', 0.875, ewc={'strength': 10.0})
  sizes = continual_config.VANDEVEN['split_mnist']
  for seed, final in enumerate((0.97, 0.98, 0.99)):  # three seeds of one setup: one row
    write(f'split_task_ewc_s{seed}', 'ewc', final, protocol='vandeven', seed=seed,
          num_tasks=sizes['num_tasks'], steps=sizes['steps_per_task'])
  write('split_task_ewc_lam_s0', 'ewc', 0.5, protocol='vandeven', ewc={'strength': 1.0},
        num_tasks=sizes['num_tasks'], steps=sizes['steps_per_task'])
  # A longer sequence than the protocol's: its own table, no published figure beside it.
  write('permuted100_task_ewc_s0', 'ewc', 0.9, protocol='vandeven', benchmark='permuted_mnist',
        num_tasks=100, steps=2000)
  text = continual_table.tables(continual_table.load_runs(str(tmp_path / '*')))
  # LA from the matrix's diagonal: (0.9 + 0.95) / 2.
  assert '| hnet | 87.50 | — | -10.00 | 92.50 | — | 1,000 | 0.500 |' in text
  assert '| ewc (split_mnist_ewc_strong) | 87.50 | — |' in text
  published = continual_config.VANDEVEN_PUBLISHED['split_mnist', 'task']['ewc']
  # mean 98.00, half-width t(2) * 1 / sqrt(3) = 4.303 / 1.732 = 2.48
  assert f'| ewc | 98.00 ± 2.48 | *{published:.2f}* | -10.00 ± 0.00 | 92.50 ± 0.00 |' in text
  assert text.count('| ewc |') == 2 and '| ewc (split_task_ewc_lam) | 50.00 |' in text
  assert "protocol: van de Ven & Tolias (2019)" in text and 'Published: ' in text
  assert '**PermutedMNIST-100**, task-incremental (task identity given), 100 tasks' in text
  assert '| ewc | 90.00 | — |' in text.split('**PermutedMNIST-100**')[1]
  # min_seeds=3: the single runs are set apart under each table, the 3-seed row stays.
  split = continual_table.tables(continual_table.load_runs(str(tmp_path / '*')), min_seeds=3)
  blocks = ['**' + b for b in split.split('\n**')]  # caption and table of each
  main = [b for b in blocks if '| ewc | 98.00 ± 2.48 |' in b]
  assert len(main) == 1 and 'fewer than' not in main[0] and '_lam' not in main[0]
  few = blocks[blocks.index(main[0]) + 1]
  assert 'van de Ven' in few.splitlines()[0] and 'setups with fewer than 3 seeds' in few
  assert '| ewc (split_task_ewc_lam) | 50.00 |' in few
  assert split.count('setups with fewer than 3 seeds') == 3  # default, vandeven, 100 tasks
  with pytest.raises(ValueError, match='min_seeds: expected an integer >= 1, received 0'):
    continual_table.tables(continual_table.load_runs(str(tmp_path / '*')), min_seeds=0)
  start, end = continual_table.markers('default')
  readme = f'a\n{start}\nold\n{end}\nb\n'
  assert continual_table.replace_section(readme, text) == f'a\n{start}\n{text}{end}\nb\n'
  start, end = continual_table.markers('vandeven')
  assert start == '<!-- results:continual_vandeven:start -->'
  with pytest.raises(ValueError, match="section: expected one of .*received 'x'"):
    continual_table.markers('x')
  with pytest.raises(ValueError, match='runs'):
    continual_table.tables([])
  png = tmp_path / 'final.png'
  continual_table.plot_final_accuracy(str(png), continual_table.load_runs(str(tmp_path / '*')))
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
