"""ProtoNets on the gated Conv-4 (`Conv4(gate=True)`, the seed sketch's hypernetwork in every
block): the contract of a learner, on small synthetic image episodes."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypernet as hn
from hypernet import meta
from hypernet.models import Conv4
from hypernet.tasks import Task

SHAPE = (16, 16, 1)


def target(gate=True):
  return hn.Target.from_linen(Conv4(filters=4, ways=0, gate=gate, gate_hidden=4,
                                    conv_strategy='xla'),
                              jnp.zeros((1, *SHAPE)), key=jax.random.key(0))


@jax.jit
def perturbed(params, key, scale=0.1):
  """Every leaf moved a little: the zero-initialised gate outputs come alive."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [a + scale * jax.random.normal(k, a.shape, a.dtype)
                                      for a, k in zip(leaves, keys)])


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def episodes(n, ways=5, shots=1, queries=2, seed=0):
  """`n` episodes `[n, ...]`: each class a random image, its examples noisy copies."""
  k_mean, k_noise = jax.random.split(jax.random.key(seed))
  means = jax.random.uniform(k_mean, (n, ways, *SHAPE))
  per = shots + queries
  x = means[:, :, None] + 0.3 * jax.random.normal(k_noise, (n, ways, per, *SHAPE))
  y = jnp.broadcast_to(jnp.arange(ways)[None, :, None], (n, ways, per))
  take = lambda a, s: a[:, :, s].reshape(n, -1, *a.shape[3:])
  return Task(x_support=take(x, slice(0, shots)), y_support=take(y, slice(0, shots)),
              x_query=take(x, slice(shots, per)), y_query=take(y, slice(shots, per)), info={})


@pytest.fixture(scope='module')
def gated():
  """The learner (5-way) and perturbed meta-parameters, built once for the module."""
  learner = meta.ProtoNet(target=target(), ways=5)
  return learner, perturbed(jax.jit(learner.init)(jax.random.key(1)), jax.random.key(7))


def one(batch, i=0):
  return jax.tree.map(lambda a: a[i], batch)


def test_vmapped_meta_loss_equals_a_loop_over_tasks(gated):
  learner, params = gated
  batch = episodes(3)
  loss, _ = jax.jit(lambda p, t: meta.meta_loss(learner, p, t))(params, batch)
  task_loss = jax.jit(lambda p, t: learner.task_loss(p, t)[0])
  loop = [task_loss(params, one(batch, i)) for i in range(3)]
  np.testing.assert_allclose(loss, np.mean(loop), rtol=1e-5)


def test_meta_gradient_reaches_every_parameter_the_gates_included(gated):
  learner, params = gated
  grads = jax.jit(jax.grad(lambda p: meta.meta_loss(learner, p, episodes(2))[0]))(params)
  flat = jax.tree_util.tree_leaves_with_path(grads)
  dead = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g) != 0)]
  assert not dead, f'leaves without gradient: {dead}'
  assert any('Gate_' in jax.tree_util.keystr(p) for p, _ in flat)


def test_predictions_are_equivariant_to_the_label_order(gated):
  learner, params = gated
  task = one(episodes(1, shots=2))
  perm = jnp.array([3, 0, 4, 1, 2])  # new label of old class c is perm[c]
  logits_of = jax.jit(lambda y: learner.predict(
      params, learner.adapt(params, task.x_support, y, 0), task.x_query))
  logits, relabelled = logits_of(task.y_support), logits_of(perm[task.y_support])
  np.testing.assert_allclose(relabelled[:, perm], logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('ways, shots', [(3, 5), (20, 1)])
def test_any_ways_and_shots_at_evaluation(gated, ways, shots):
  learner, params = gated
  other = dataclasses.replace(learner, ways=ways)
  out = meta.evaluate(other, params, episodes(2, ways=ways, shots=shots), [0])[0]
  assert out['accuracy'].shape == (2,)
  assert np.all(np.isfinite(np.asarray(out['loss'])))


def test_the_gates_start_open_so_training_starts_at_plain_protonets():
  gated, plain = meta.ProtoNet(target=target(), ways=5), meta.ProtoNet(target=target(False))
  params = jax.jit(gated.init)(jax.random.key(4))
  base = {k: v for k, v in params.items() if not k.startswith('Gate_')}
  assert jax.tree.structure(base) == jax.tree.structure(jax.jit(plain.init)(jax.random.key(4)))
  task = one(episodes(1))
  logits = lambda m, p: jax.jit(lambda: m.predict(
      p, m.adapt(p, task.x_support, task.y_support, 0), task.x_query))()
  a, b = logits(gated, params), logits(plain, base)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_gates_are_sown_per_example_and_block(gated):
  """`mutable=['intermediates']` returns each block's gates `[N, C]`, in (0, 2), one per example:
  the same image gives the same gates whatever the batch it is in."""
  _, params = gated
  module = Conv4(filters=4, ways=0, gate=True, gate_hidden=4, conv_strategy='xla')
  x = episodes(1, ways=3, shots=1, queries=1).x_query[0]  # [3, 16, 16, 1]
  apply = jax.jit(lambda x: module.apply({'params': params}, x, mutable=['intermediates']))
  _, state = apply(x)
  gates = [state['intermediates'][f'gate_{i}'][0] for i in range(4)]
  assert [g.shape for g in gates] == [(3, 4)] * 4
  assert all(bool(jnp.all((g > 0) & (g < 2))) for g in gates)
  assert not np.allclose(gates[0][0], gates[0][1])  # conditioned on the example
  _, alone = apply(x[1:2])
  np.testing.assert_allclose(alone['intermediates']['gate_3'][0][0], gates[3][1], rtol=1e-5,
                             atol=1e-6)
