"""The meta-learning core: vmapped meta-loss, MAML's meta-gradient, the meta-step, baselines,
the PRNG key of stochastic learners."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypernet as hn
from hypernet import meta
from hypernet.tasks import Sinusoid, Task, make_family

from experiments import learners, omniglot
from experiments.configs import omniglot as omniglot_config


def linear_target():
  """`y = x w + b` with w `[1, 1]`, b `[1]`: small enough to differentiate by hand."""
  spec = {'w': jax.ShapeDtypeStruct((1, 1), jnp.float32), 'b': jax.ShapeDtypeStruct((1,), jnp.float32)}
  return hn.Target.from_fn(lambda p, x: x @ p['w'] + p['b'], spec)


def mlp_target():
  mlp = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(1)])
  return hn.Target.from_linen(mlp, jnp.zeros((1, 1)), key=jax.random.key(0))


def tasks(n=4, num_points=12, num_support=6, seed=0):
  return Sinusoid().sample_batch(jax.random.key(seed), n, num_points, num_support)


LEARNERS = {
    'maml': lambda t: meta.MAML(target=t, inner_lr=0.01, inner_steps=2),
    'fomaml': lambda t: meta.MAML(target=t, inner_lr=0.01, inner_steps=2, first_order=True),
    'metasgd': lambda t: meta.MetaSGD(target=t, inner_lr=0.01, inner_steps=2),
    'anil': lambda t: meta.ANIL(target=t, inner_lr=0.05, inner_steps=2),
    'reptile': lambda t: meta.Reptile(target=t, inner_lr=0.01, inner_steps=3),
}


@pytest.mark.parametrize('name', LEARNERS)
def test_vmapped_meta_loss_equals_python_loop(name):
  learner = LEARNERS[name](mlp_target())
  meta_params = learner.init(jax.random.key(1))
  batch = tasks()
  loss, _ = jax.jit(lambda p, t: meta.meta_loss(learner, p, t))(meta_params, batch)
  loop = [learner.task_loss(meta_params, jax.tree.map(lambda a, i=i: a[i], batch))[0]
          for i in range(4)]
  np.testing.assert_allclose(loss, np.mean(loop), rtol=1e-5)


@dataclasses.dataclass(frozen=True)
class NoisyMAML(meta.MAML):
  """A stochastic learner (for the key contract): Gaussian noise of scale `noise` on the
  adapted parameters; `key=None` gives the mean (no noise)."""
  noise: float = 0.1

  def adapt(self, meta_params, x_support, y_support, num_steps, key=None):
    adapted = super().adapt(meta_params, x_support, y_support, num_steps)
    if key is None:
      return adapted
    leaves, treedef = jax.tree.flatten(adapted)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([a + self.noise * jax.random.normal(k, a.shape)
                              for a, k in zip(leaves, keys)])


def test_the_key_reaches_a_stochastic_learner_and_deterministic_ones_ignore_it():
  """`meta_loss` / `meta_step` split the batch key into one per task (`task_keys`) and pass it
  to `adapt`: the same key gives the same loss and update, another key another; the vmapped
  loss equals a loop over the tasks with their keys; `key=None` is the learner's mean. Every
  learner of this package ignores the key."""
  batch = tasks()
  learner = NoisyMAML(target=mlp_target(), inner_lr=0.01, inner_steps=1, noise=0.3)
  params = learner.init(jax.random.key(1))
  loss = jax.jit(lambda p, t, k: meta.meta_loss(learner, p, t, key=k)[0])
  k1, k2 = jax.random.key(5), jax.random.key(6)
  assert float(loss(params, batch, k1)) == float(loss(params, batch, k1))
  assert float(loss(params, batch, k1)) != float(loss(params, batch, k2))
  keys = meta.task_keys(k1, batch)
  loop = [learner.task_loss(params, jax.tree.map(lambda a, i=i: a[i], batch), key=keys[i])[0]
          for i in range(4)]
  np.testing.assert_allclose(loss(params, batch, k1), np.mean(loop), rtol=1e-5)
  plain = meta.MAML(target=mlp_target(), inner_lr=0.01, inner_steps=1)
  np.testing.assert_allclose(meta.meta_loss(learner, params, batch)[0],
                             meta.meta_loss(plain, params, batch)[0], rtol=1e-6)
  tx = optax.sgd(0.1)
  step = meta.make_meta_step(learner, tx)
  new = lambda k: step(meta.init_state(learner, tx, jax.random.key(1)), batch, k)[0].meta_params
  chex.assert_trees_all_close(new(k1), new(k1))
  assert not np.allclose(jax.tree.leaves(new(k1))[0], jax.tree.leaves(new(k2))[0])
  for name, make in LEARNERS.items():  # deterministic: the key changes nothing
    det = make(mlp_target())
    p = det.init(jax.random.key(1))
    g1, m1 = det.meta_grad(p, batch)
    g2, m2 = det.meta_grad(p, batch, k1)
    chex.assert_trees_all_close(g1, g2, rtol=1e-6, custom_message=name)
    np.testing.assert_allclose(m1['loss'], m2['loss'], rtol=1e-6, err_msg=name)


def _maml_grad_by_hand(w, b, alpha, task, first_order):
  """MAML's meta-gradient for one step on `y = w x + b`, from the formulas (numpy, float64)."""
  xs, ys = np.asarray(task.x_support[:, 0], np.float64), np.asarray(task.y_support[:, 0], np.float64)
  xq, yq = np.asarray(task.x_query[:, 0], np.float64), np.asarray(task.y_query[:, 0], np.float64)
  rs = w * xs + b - ys
  grad_s = np.array([2 * np.mean(rs * xs), 2 * np.mean(rs)])
  hess_s = 2 * np.array([[np.mean(xs * xs), np.mean(xs)], [np.mean(xs), 1.0]])
  w1, b1 = np.array([w, b]) - alpha * grad_s
  rq = w1 * xq + b1 - yq
  grad_q = np.array([2 * np.mean(rq * xq), 2 * np.mean(rq)])
  return grad_q if first_order else (np.eye(2) - alpha * hess_s) @ grad_q


@pytest.mark.parametrize('first_order', [False, True])
def test_maml_meta_gradient_matches_the_formula(first_order):
  target = linear_target()
  alpha = 0.1
  learner = meta.MAML(target=target, inner_lr=alpha, inner_steps=1, first_order=first_order)
  params = {'init': {'w': jnp.array([[0.7]]), 'b': jnp.array([-0.3])}}
  batch = tasks(n=3)
  grads, _ = jax.jit(learner.meta_grad)(params, batch)
  want = np.mean([_maml_grad_by_hand(0.7, -0.3, alpha, jax.tree.map(lambda a, i=i: a[i], batch),
                                     first_order) for i in range(3)], axis=0)
  g = grads['init']
  np.testing.assert_allclose([g['w'][0, 0], g['b'][0]], want, rtol=1e-4)


def test_first_order_differs_from_second_order():
  target = mlp_target()
  params = {'init': target.init(jax.random.key(0))}
  batch = tasks()
  second = meta.MAML(target=target, inner_lr=0.1, inner_steps=1).meta_grad(params, batch)[0]
  first = meta.MAML(target=target, inner_lr=0.1, inner_steps=1, first_order=True).meta_grad(
      params, batch)[0]
  diff = optax.tree.norm(jax.tree.map(lambda a, b: a - b, second, first))
  assert float(diff) > 1e-3 * float(optax.tree.norm(second))


def test_remat_gives_the_same_meta_gradient():
  target = mlp_target()
  params = {'init': target.init(jax.random.key(0))}
  batch = tasks()
  plain = meta.MAML(target=target, inner_lr=0.05, inner_steps=3).meta_grad(params, batch)[0]
  remat = meta.MAML(target=target, inner_lr=0.05, inner_steps=3, remat=True).meta_grad(
      params, batch)[0]
  chex.assert_trees_all_close(plain, remat, rtol=1e-5, atol=1e-6)


def test_meta_step_traces_once_and_learns():
  learner = meta.MAML(target=mlp_target(), inner_lr=0.01)
  tx = optax.adam(1e-2)
  state = meta.init_state(learner, tx, jax.random.key(0))
  step = meta.make_meta_step(learner, tx)
  held_out = tasks(n=64, num_points=30, num_support=10, seed=99)
  before = float(meta.meta_loss(learner, state.meta_params, held_out)[0])
  for i in range(150):
    state, metrics = step(state, tasks(n=8, seed=i))
  assert step._cache_size() == 1  # one trace and compile across 150 batches
  assert int(state.step) == 150 and set(metrics) == {'loss', 'grad_norm'}
  after = float(meta.meta_loss(learner, state.meta_params, held_out)[0])
  assert after < 0.8 * before, (before, after)


def test_metasgd_learns_its_rates_and_anil_adapts_only_the_head():
  target = mlp_target()
  sgd = meta.MetaSGD(target=target, inner_lr=0.01)
  mp = sgd.init(jax.random.key(0))
  grads, _ = sgd.meta_grad(mp, tasks())
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads['lr']))

  anil = meta.ANIL(target=target, inner_lr=0.1, inner_steps=2)
  params = anil.init(jax.random.key(0))
  t = jax.tree.map(lambda a: a[0], tasks())
  adapted = anil.adapt(params, t.x_support, t.y_support, 2)
  init = params['init']
  np.testing.assert_array_equal(adapted['layers_0']['kernel'], init['layers_0']['kernel'])
  assert not np.allclose(adapted['layers_2']['kernel'], init['layers_2']['kernel'])


def test_reptile_direction_is_params_minus_adapted():
  target = linear_target()
  learner = meta.Reptile(target=target, inner_lr=0.05, inner_steps=2)
  params = {'init': {'w': jnp.array([[0.2]]), 'b': jnp.array([0.1])}}
  batch = tasks(n=2)
  grads, _ = learner.meta_grad(params, batch)
  want = []
  for i in range(2):
    t = jax.tree.map(lambda a, i=i: a[i], batch)
    x = jnp.concatenate([t.x_support, t.x_query])
    y = jnp.concatenate([t.y_support, t.y_query])
    adapted = learner.adapt(params, x, y, 2)
    want.append({'init': jax.tree.map(lambda p, a: p - a, params['init'], adapted)})
  chex.assert_trees_all_close(grads, jax.tree.map(lambda *d: jnp.mean(jnp.stack(d), 0), *want),
                              rtol=1e-5)


def test_evaluate_with_other_step_counts():
  learner = meta.MAML(target=mlp_target(), inner_lr=0.01, inner_steps=1)
  params = learner.init(jax.random.key(0))
  out = meta.evaluate(learner, params, tasks(n=7), steps=[0, 1, 5], batch_size=3)
  assert set(out) == {0, 1, 5} and all(v['loss'].shape == (7,) for v in out.values())
  assert not np.allclose(out[0]['loss'], out[5]['loss'])


def _draw(key, scale):  # make_task of meta.evaluate: one task from one key, y scaled
  task = Sinusoid().sample(key, 20, 10)
  return task.replace(y_support=scale * task.y_support, y_query=scale * task.y_query)


def test_evaluate_makes_tasks_inside_its_program():
  """`make_task(x, data)`: tasks drawn from keys inside the program equal the same tasks
  drawn beforehand; bad arguments are named."""
  learner = meta.MAML(target=mlp_target(), inner_lr=0.01, inner_steps=1)
  params = learner.init(jax.random.key(0))
  keys = jax.random.split(jax.random.key(5), 6)
  drawn = meta.evaluate(learner, params, keys, [0, 2], batch_size=4, make_task=_draw,
                        data=jnp.float32(1.0))
  batch = jax.vmap(lambda k: Sinusoid().sample(k, 20, 10))(keys)
  given = meta.evaluate(learner, params, batch, [0, 2], batch_size=4)
  for k in (0, 2):
    np.testing.assert_allclose(drawn[k]['loss'], given[k]['loss'], rtol=1e-6)
  scaled = meta.evaluate(learner, params, keys, [0], batch_size=4, make_task=_draw,
                         data=jnp.float32(2.0))  # `data` is an argument, not a constant
  assert not np.allclose(scaled[0]['loss'], drawn[0]['loss'])
  with pytest.raises(ValueError, match=r'steps: expected one or more integers >= 0, '
                                       r'received \(-1,\)'):
    meta.evaluate(learner, params, batch, [-1])
  with pytest.raises(ValueError, match=r'batch_size: expected a positive integer, received 0'):
    meta.evaluate(learner, params, batch, [1], batch_size=0)


def test_tasks_are_deterministic_and_checked():
  a = Sinusoid().sample_batch(jax.random.key(3), 5, 20, 10)
  b = Sinusoid().sample_batch(jax.random.key(3), 5, 20, 10)
  chex.assert_trees_all_equal(a, b)
  assert a.x_support.shape == (5, 10, 1) and a.y_query.shape == (5, 10, 1)
  assert float(a.info['amplitude'].min()) >= 0.1 and float(a.x_query.max()) <= 5.0
  np.testing.assert_allclose(a.y_support, a.info['amplitude'][:, None, None] * jnp.sin(
      a.x_support - a.info['phase'][:, None, None]), rtol=1e-5, atol=1e-6)
  for name in ('harmonic', 'polynomial'):
    t = make_family(name).sample_batch(jax.random.key(0), 3, 8, 4)
    assert isinstance(t, Task) and t.x_query.shape == (3, 4, 1)
  with pytest.raises(ValueError, match=r'num_support: expected fewer support shots than the '
                                       r"task's 10 points.*received 10"):
    Sinusoid().sample(jax.random.key(0), 10, 10)
  with pytest.raises(ValueError, match=r'num_support: expected a positive integer, received 0'):
    Sinusoid().sample(jax.random.key(0), 10, 0)
  with pytest.raises(ValueError, match=r"task family: expected one of .*received 'cosine'"):
    make_family('cosine')
  with pytest.raises(ValueError, match=r"unknown options \['amplitude'\]"):
    make_family('sinusoid', amplitude=(1, 2))


def test_bad_learner_settings():
  with pytest.raises(ValueError, match=r'inner_steps: expected an integer >= 0, received -1'):
    meta.MAML(target=mlp_target(), inner_steps=-1)
  with pytest.raises(ValueError, match=r"loss: expected one of \('mse', 'xent'\), received 'l1'"):
    meta.MAML(target=mlp_target(), loss='l1')
  with pytest.raises(TypeError, match='target: expected a hypernet.Target'):
    meta.MAML(target=None)
  with pytest.raises(ValueError, match=r'num_steps: expected an integer >= 0, received -2'):
    meta.inner_sgd(lambda p: p ** 2, 1.0, 0.1, -2)


@pytest.mark.parametrize('algo', learners.CLASSIFICATION_ALGOS)
def test_every_learner_checks_num_steps(algo):
  """The learner contract (`MetaLearner.check_num_steps`): a negative `num_steps` is an error
  naming it in every learner, and so is any step for a learner without an inner loop
  (ProtoNet, SupportMetric), not silently ignored; every learner takes the PRNG `key` and
  checks its task's arrays. Tracing only."""
  config = omniglot_config.get_config(f'algo={algo},ways=3,smoke')
  learner = learners.build_learner(config, omniglot.build_target(config))
  key = jax.random.key(0)
  task = Task(x_support=jnp.zeros((3, 28, 28, 1)), y_support=jnp.arange(3),
              x_query=jnp.zeros((6, 28, 28, 1)), y_query=jnp.arange(6) % 3)
  params = jax.eval_shape(learner.init, key)
  loss = lambda k: jax.eval_shape(lambda p: learner.task_loss(p, task, k), params)  # noqa: E731
  loss(0)
  # The PRNG key argument (ignored by these deterministic learners): the same outputs.
  with_key = jax.eval_shape(lambda p: learner.task_loss(p, task, 0, key), params)
  assert jax.tree.structure(with_key) == jax.tree.structure(loss(0))
  # Inputs checked by every learner (`MetaLearner.check_task`), at trace time.
  bad = lambda t: jax.eval_shape(lambda p: learner.task_loss(p, t, 0), params)  # noqa: E731
  with pytest.raises(ValueError, match=r'task.x_support, task.y_support: expected ONE task'):
    bad(task.replace(y_support=jnp.arange(2)))
  with pytest.raises(ValueError, match=r'task.x_support, task.x_query: expected inputs of one '):
    bad(task.replace(x_query=jnp.zeros((6, 28, 27, 1))))
  with pytest.raises(ValueError, match=r"task.y_query: expected integer class labels \[n\]"):
    bad(task.replace(y_query=jnp.zeros(6)))
  with pytest.raises(ValueError, match=r'num_steps: expected an integer >= 0, received -1'):
    loss(-1)
  # A learned initialisation lives under 'init', with the target's tree.
  assert (meta.INIT_KEY in params) == learner.has_learned_init
  if learner.has_learned_init:
    assert jax.tree.structure(params[meta.INIT_KEY]) == jax.tree.structure(
        jax.eval_shape(learner.target.init, key))
  if learner.has_inner_loop:
    loss(2)
  else:
    with pytest.raises(ValueError, match=rf'num_steps: {type(learner).__name__} has no inner '
                                         r'loop, expected 0, received 1'):
      loss(1)
  # One inner-loop setting (`InnerLoopLearner`): the same fields, meaning and checks in every
  # learner that has an inner loop; none in a learner without one.
  assert isinstance(learner, meta.InnerLoopLearner) == learner.has_inner_loop
  if not learner.has_inner_loop:
    assert learner.inner_loop is None
    return
  assert learner.inner_loop == meta.InnerLoop(learner.inner_steps, getattr(
      learner, 'inner_lr', None), learner.first_order, learner.remat)
  with pytest.raises(ValueError, match=r"remat: expected one of .*received 'always'"):
    dataclasses.replace(learner, remat='always')
  with pytest.raises(ValueError, match=r'first_order: expected True or False, received 1\b'):
    dataclasses.replace(learner, first_order=1)
  if isinstance(learner, meta.SGDInnerLoopLearner):
    with pytest.raises(ValueError, match=r'inner_lr: expected a finite number >= 0, '
                                         r'received -0.1'):
      dataclasses.replace(learner, inner_lr=-0.1)
  else:  # LearnedUpdate: the rule's steps are learned
    assert learner.inner_loop.lr is None
