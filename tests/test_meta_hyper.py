"""The hypernetwork meta-learners: Amortised, LatentAdaptation, HyperMAML, LearnedUpdate.

For each learner on a tiny target (a 1-16-1 ReLU MLP) and sinusoid tasks:
`init` is a pure function of its key; the vmapped meta-loss equals a Python
loop over tasks; the meta-gradient is finite and reaches every meta-parameter
leaf; a short training run reduces the held-out query loss, with the jitted
meta-step traced once; `evaluate` works for any number of steps. Then each
learner's adaptation against its definition, and the errors for invalid settings.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypernet as hn
from hypernet import meta
from hypernet.tasks import Sinusoid, Task

LEARNERS = ('amortised', 'latent', 'latent_learn_init', 'hypermaml', 'learned_update')
FAMILY = Sinusoid()
COND_DIM = 8


class TinyMLP(nn.Module):
  """`[N, 1] -> [N, 1]`, one ReLU hidden layer."""
  hidden: int = 16

  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.relu(nn.Dense(self.hidden)(x)))


class TinyClassifier(nn.Module):
  """`[N, 2, 2] -> [N, 3]` logits."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


@functools.cache
def tiny_target(hidden: int = 16) -> hn.Target:
  return hn.Target.from_linen(TinyMLP(hidden), jnp.zeros((1, 1)), key=jax.random.key(0))


def encoder() -> hn.SetEncoder:
  return hn.SetEncoder(features=COND_DIM, hidden=(32,), rho_hidden=(32,))


@functools.cache
def make_learner(name: str) -> meta.MetaLearner:
  target = tiny_target()
  if name == 'amortised':
    return meta.Amortised(target=target, encoder=encoder(),
                          hypernet=hn.FullHypernet(target, COND_DIM, hidden=(32,)))
  if name in ('latent', 'latent_learn_init'):
    film = hn.ModulationHypernet(target, COND_DIM, kind='film', hidden=())
    return meta.LatentAdaptation(target=target, hypernet=film, latent_dim=COND_DIM, inner_lr=1.0,
                                 inner_steps=1, learn_init=name == 'latent_learn_init')
  if name == 'hypermaml':
    return meta.HyperMAML(target=target, encoder=encoder(),
                          hypernet=hn.FullHypernet(target, COND_DIM, hidden=(32,)),
                          inner_steps=1, inner_lr=0.01)
  if name == 'learned_update':  # a larger first step than MAML's 0.01 (300 meta-steps here)
    return meta.LearnedUpdate(target=target, inner_steps=3,
                              rule=hn.WeightConditionedHypernet(target, hidden=(16,),
                                                                init_lr=0.05))
  raise ValueError(name)


def tasks(seed: int, num_tasks: int, num_support: int = 10):
  return FAMILY.sample_batch(jax.random.key(seed), num_tasks, num_support + 10, num_support)


# One held-out batch: the training test and the evaluate test share its compiled evaluations.
HELD_OUT = tasks(10_000, 100)
sample_train = jax.jit(lambda key: FAMILY.sample_batch(key, 8, 20, 10))  # 10-shot, 10 query


# ------------------------------------------------------------ per learner
@pytest.mark.parametrize('name', LEARNERS)
def test_init_is_a_function_of_the_key(name):
  learner = make_learner(name)
  a, b = learner.init(jax.random.key(3)), learner.init(jax.random.key(3))
  chex.assert_trees_all_equal(a, b)
  c = learner.init(jax.random.key(4))
  chex.assert_trees_all_equal_shapes(a, c)
  assert any(not np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(c)))
  assert isinstance(a, dict)


@functools.cache
def loss_and_grads(name: str):
  """(meta_params, tasks, (vmapped meta-loss, metrics), meta-gradient) on 3 tasks, jitted once."""
  learner = make_learner(name)
  meta_params = learner.init(jax.random.key(0))
  batch = tasks(1, 3)
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda p, t: meta.meta_loss(learner, p, t), has_aux=True))
  return meta_params, batch, *value_and_grad(meta_params, batch)


@pytest.mark.parametrize('name', LEARNERS)
def test_vmapped_meta_loss_equals_python_loop(name):
  learner = make_learner(name)
  meta_params, batch, (loss, metrics), _ = loss_and_grads(name)
  task_loss = jax.jit(learner.task_loss)
  loop = [task_loss(meta_params, jax.tree.map(lambda a, i=i: a[i], batch))[0] for i in range(3)]
  np.testing.assert_allclose(loss, np.mean(loop), rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-6)


@pytest.mark.parametrize('name', LEARNERS)
def test_meta_gradient_reaches_every_leaf(name):
  meta_params, _, _, grads = loss_and_grads(name)
  chex.assert_trees_all_equal_shapes(grads, meta_params)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    leaf = jax.tree_util.keystr(path)
    assert np.all(np.isfinite(g)), f'{leaf}: non-finite meta-gradient'
    assert np.any(g != 0), f'{leaf}: zero meta-gradient'


@pytest.mark.parametrize('name', [n for n in LEARNERS if n != 'latent_learn_init'])
def test_short_training_reduces_held_out_query_loss(name):
  """300 Adam steps on 10-shot sinusoids; the jitted meta-step is traced once."""
  learner = make_learner(name)
  adam = optax.adam(3e-3)
  # tx.update runs once per trace of the meta-step: a compile guard across all batches.
  chex.clear_trace_counter()
  tx = optax.GradientTransformation(adam.init, chex.assert_max_traces(adam.update, n=1))
  state = meta.init_state(learner, tx, jax.random.key(0))
  meta_step = meta.make_meta_step(learner, tx)

  def held_out_loss(meta_params):
    k = learner.inner_steps
    return float(np.mean(meta.evaluate(learner, meta_params, HELD_OUT, [k])[k]['loss']))

  before = held_out_loss(state.meta_params)
  train_key = jax.random.key(1)
  for step in range(300):
    state, metrics = meta_step(state, sample_train(jax.random.fold_in(train_key, step)))
  after = held_out_loss(state.meta_params)
  assert np.isfinite(float(metrics['loss']))
  assert int(state.step) == 300
  assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize('name', LEARNERS)
def test_evaluate_after_any_number_of_steps(name):
  learner = make_learner(name)
  meta_params = learner.init(jax.random.key(0))
  out = meta.evaluate(learner, meta_params, HELD_OUT, steps=[0, 1, 3])
  assert sorted(out) == [0, 1, 3]
  for k in out:
    assert out[k]['loss'].shape == (100,)
    assert np.all(np.isfinite(out[k]['loss']))
  assert np.any(out[0]['loss'] != out[3]['loss'])  # the steps do something


# ------------------------------------------------------------ definitions
def test_amortised_finetunes_generated_params_with_sgd():
  learner = make_learner('amortised')
  p = learner.init(jax.random.key(0))
  t = jax.tree.map(lambda a: a[0], tasks(6, 1))
  generated = learner.generate(p, t.x_support, t.y_support)
  chex.assert_trees_all_close(learner.adapt(p, t.x_support, t.y_support, 0), generated)
  loss_fn = lambda q: jnp.mean((learner.target.apply(q, t.x_support) - t.y_support) ** 2)
  want = jax.tree.map(lambda w, g: w - learner.inner_lr * g, generated,
                      jax.grad(loss_fn)(generated))
  chex.assert_trees_all_close(learner.adapt(p, t.x_support, t.y_support, 1), want,
                              rtol=1e-5, atol=1e-6)


def test_latent_adaptation_steps_on_z_from_zero():
  learner = make_learner('latent')
  p = learner.init(jax.random.key(0))
  t = jax.tree.map(lambda a: a[0], tasks(7, 1))
  z0 = learner.adapt_latent(p, t.x_support, t.y_support, 0)
  np.testing.assert_array_equal(z0, np.zeros(COND_DIM))
  loss_fn = lambda z: jnp.mean(
      (learner.target.apply(learner.decode(p, z), t.x_support) - t.y_support) ** 2)
  z1 = learner.adapt_latent(p, t.x_support, t.y_support, 1)
  np.testing.assert_allclose(z1, -learner.inner_lr * jax.grad(loss_fn)(z0), rtol=1e-5, atol=1e-7)
  chex.assert_trees_all_close(learner.adapt(p, t.x_support, t.y_support, 1),
                              learner.decode(p, z1))


def test_hypermaml_updates_only_generated_leaves():
  target = tiny_target()
  hnet = hn.FullHypernet(target, COND_DIM, hidden=(32,), generate='Dense_1')  # the last layer
  learner = meta.HyperMAML(target=target, encoder=encoder(), hypernet=hnet, delta_scale=0.5)
  p = learner.init(jax.random.key(0))
  t = jax.tree.map(lambda a: a[0], tasks(8, 1))
  adapted = learner.adapt(p, t.x_support, t.y_support, 0)
  chex.assert_trees_all_equal(adapted['Dense_0'], p['init']['Dense_0'])
  code = learner.encoder.apply({'params': p['encoder']},
                               *learner._features(p['init'], t.x_support, t.y_support))
  out = learner.hypernet.apply({'params': p['hypernet']}, code)
  chex.assert_trees_all_close(adapted['Dense_1'], jax.tree.map(
      lambda b, o: b + 0.5 * o, p['init']['Dense_1'], out['Dense_1']), rtol=1e-6)


def test_learned_update_applies_the_rule_k_times():
  learner = make_learner('learned_update')
  p = learner.init(jax.random.key(0))
  t = jax.tree.map(lambda a: a[0], tasks(9, 1))
  loss_fn = lambda q: jnp.mean((learner.target.apply(q, t.x_support) - t.y_support) ** 2)
  want, state = p['init'], learner.rule.init_state()  # momenta and step count carried over
  for _ in range(3):
    want, state = learner.rule.apply({'params': p['rule']}, want, jax.grad(loss_fn)(want), state,
                                     method='step')
  chex.assert_trees_all_close(learner.adapt(p, t.x_support, t.y_support, 3), want,
                              rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_equal(learner.adapt(p, t.x_support, t.y_support, 0), p['init'])


def test_classification_traces_with_one_hot_support_features():
  """loss='xent': integer labels, one-hot encoder features; checked by tracing (no compile)."""
  target = hn.Target.from_linen(TinyClassifier(), jnp.zeros((1, 2, 2)), key=jax.random.key(0))
  hnet = hn.FullHypernet(target, COND_DIM, hidden=(8,))
  learners = [
      meta.Amortised(target=target, encoder=encoder(), hypernet=hnet, loss='xent',
                     input_shape=(2, 2)),
      meta.HyperMAML(target=target, encoder=encoder(), hypernet=hnet, loss='xent',
                     input_shape=(2, 2), inner_steps=1),
      meta.LatentAdaptation(target=target, latent_dim=COND_DIM, loss='xent',
                            hypernet=hn.ModulationHypernet(target, COND_DIM, hidden=())),
      meta.LearnedUpdate(target=target, rule=hn.WeightConditionedHypernet(target), loss='xent')]
  task = Task(jnp.zeros((6, 2, 2)), jnp.arange(6) % 3, jnp.zeros((4, 2, 2)), jnp.arange(4) % 3)
  for learner in learners:
    meta_params = jax.eval_shape(learner.init, jax.random.key(0))
    loss, metrics = jax.eval_shape(learner.task_loss, meta_params, task)
    assert loss.shape == () and metrics['accuracy'].shape == ()


# ------------------------------------------------------------ errors
def test_invalid_settings_raise_clear_errors():
  target = tiny_target()
  full = hn.FullHypernet(target, COND_DIM, hidden=(32,))
  with pytest.raises(ValueError, match=r'inner_steps: .*expected 0, received 2'):
    meta.Amortised(target=target, encoder=encoder(), hypernet=full, inner_steps=2)
  with pytest.raises(ValueError, match=r'encoder.features: expected .*cond_dim 8, received 5'):
    meta.Amortised(target=target, encoder=hn.SetEncoder(features=5), hypernet=full)
  with pytest.raises(TypeError, match=r'target: expected a hypernet.Target, received NoneType'):
    meta.Amortised(encoder=encoder(), hypernet=full)
  with pytest.raises(TypeError, match=r'hypernet: expected a flax.linen.Module, received dict'):
    meta.HyperMAML(target=target, encoder=encoder(), hypernet={})
  with pytest.raises(ValueError, match=r'inner_lr: expected a finite number >= 0, received -0.1'):
    meta.Amortised(target=target, encoder=encoder(), hypernet=full, inner_lr=-0.1)
  with pytest.raises(ValueError, match=r'input_shape: expected a non-empty tuple.*received 1'):
    meta.Amortised(target=target, encoder=encoder(), hypernet=full, input_shape=1)
  other = hn.FullHypernet(tiny_target(8), COND_DIM)
  with pytest.raises(ValueError, match=r'hypernet: built for a different target.*Dense_0/kernel'):
    meta.Amortised(target=target, encoder=encoder(), hypernet=other)

  with pytest.raises(ValueError, match=r'hypernet.cond_dim: expected latent_dim 4, received 8'):
    meta.LatentAdaptation(target=target, hypernet=full, latent_dim=4)
  with pytest.raises(ValueError, match=r'latent_dim: expected a positive integer, received 0'):
    meta.LatentAdaptation(target=target, hypernet=full, latent_dim=0)
  with pytest.raises(TypeError, match=r'hypernet: expected a hypernetwork conditioned on a vector'):
    meta.LatentAdaptation(target=target, hypernet=hn.WeightConditionedHypernet(target))
  dead = meta.LatentAdaptation(target=target, hypernet=full, latent_dim=COND_DIM)
  with pytest.raises(ValueError, match=r'hypernet: the decoded target parameters do not depend '
                                       r'on z.*hidden=\(32,\) and learn_init=False'):
    dead.init(jax.random.key(0))
  alive = meta.LatentAdaptation(target=target, hypernet=full, latent_dim=COND_DIM,
                                learn_init=True)
  alive.init(jax.random.key(0))  # z_init ~ N(0, 1): the trunk is not at its kink

  film = hn.ModulationHypernet(target, COND_DIM, kind='additive')
  with pytest.raises(ValueError, match=r'hypernet: expected .* an update .*ModulationHypernet'):
    meta.HyperMAML(target=target, encoder=encoder(), hypernet=film)
  with pytest.raises(ValueError, match=r"hypernet.head_init: .*received 'target'"):
    meta.HyperMAML(target=target, encoder=encoder(),
                   hypernet=hn.FullHypernet(target, COND_DIM, head_init='target'))
  with pytest.raises(ValueError, match=r'delta_scale: expected a number > 0, received 0'):
    meta.HyperMAML(target=target, encoder=encoder(), hypernet=full, delta_scale=0)

  with pytest.raises(ValueError, match=r'rule.use_grad: expected True .*received False'):
    meta.LearnedUpdate(target=target, rule=hn.WeightConditionedHypernet(target, use_grad=False))
  with pytest.raises(ValueError, match=r'inner_steps: expected an integer >= 0, received -1'):
    meta.LearnedUpdate(target=target, rule=hn.WeightConditionedHypernet(target), inner_steps=-1)

  learner = make_learner('learned_update')
  p = learner.init(jax.random.key(0))
  t = jax.tree.map(lambda a: a[0], tasks(0, 1))
  with pytest.raises(ValueError, match=r'num_steps: expected an integer >= 0, received -1'):
    learner.adapt(p, t.x_support, t.y_support, -1)
  with pytest.raises(ValueError, match=r'x_support, y_support: .*received shapes \(10, 1\) and '
                                       r'\(9, 1\)'):
    learner.adapt(p, t.x_support, t.y_support[:9], 1)
