"""The learned update rule (`WeightConditionedHypernet`, `LearnedUpdate`) and the multi-step loss.

The rule's features and updates against their definitions; `inner_sgd(return_path=True)` and
every learner's `adapt_path` against `adapt`; the multi-step loss against the mean of the
per-step query losses; a rule trained on a small setting stays finite for 20 steps.
"""

import dataclasses
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
from hypernet.hypernets import weight_conditioned as wc
from hypernet.layout import layout_for
from hypernet.tasks import Sinusoid


class TinyMLP(nn.Module):
  """`[N, 1] -> [N, 1]`, one ReLU hidden layer."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.relu(nn.Dense(16)(x)))


@functools.cache
def target() -> hn.Target:
  return hn.Target.from_linen(TinyMLP(), jnp.zeros((1, 1)), key=jax.random.key(0))


def task(seed: int = 0, num_support: int = 10):
  batch = Sinusoid().sample_batch(jax.random.key(seed), 1, num_support + 10, num_support)
  return jax.tree.map(lambda a: a[0], batch)


def support_grads(params, t):
  return jax.grad(lambda p: jnp.mean((target().apply(p, t.x_support) - t.y_support) ** 2))(params)


# ------------------------------------------------------------ the rule
def test_log_sign_features():
  g = jnp.array([2.0, -0.5, 1e-6, -1e-6, 0.0])
  out = np.asarray(wc._log_sign(g))
  np.testing.assert_allclose(out[:2, 0], np.log([2.0, 0.5]) / 10, rtol=1e-6)
  np.testing.assert_array_equal(out[:2, 1], [1.0, -1.0])
  np.testing.assert_array_equal(out[2:, 0], [-1.0, -1.0, -1.0])  # below e^-10
  np.testing.assert_allclose(out[2:, 1], np.exp(10) * np.array([1e-6, -1e-6, 0.0]), rtol=1e-5)


def test_leaf_rms_is_per_leaf():
  layout = layout_for(target())
  x = jnp.arange(layout.num_generated, dtype=jnp.float32)
  rms = np.asarray(wc._leaf_rms(layout, x))
  for l in layout.generated:
    part = np.arange(l.offset, l.offset + l.size, dtype=np.float64)
    np.testing.assert_allclose(rms[l.offset:l.offset + l.size],
                               np.sqrt(np.mean(part ** 2) + wc._EPS), rtol=1e-5)


@pytest.mark.parametrize('update_kind', wc.UPDATE_KINDS)
def test_rule_starts_near_its_base_update(update_kind):
  """With a tiny output (init_scale), 'scaled' and 'residual' are SGD with init_lr; 'direct'
  leaves the weights almost unchanged."""
  rule = hn.WeightConditionedHypernet(target(), hidden=(8,), update_kind=update_kind, init_lr=0.05,
                                      init_scale=1e-7)
  params = target().init(jax.random.key(1))
  grads = support_grads(params, task())
  variables = rule.init(jax.random.key(2), params, grads)
  new = rule.apply(variables, params, grads)
  want = params if update_kind == 'direct' else jax.tree.map(lambda w, g: w - 0.05 * g, params, grads)
  chex.assert_trees_all_close(new, want, atol=1e-5)


def test_scaled_update_is_a_bounded_descent_direction():
  rule = hn.WeightConditionedHypernet(target(), hidden=(8,), init_scale=3.0, init_lr=0.1,
                                      max_log_scale=2.0)
  params = target().init(jax.random.key(1))
  grads = support_grads(params, task())
  variables = rule.init(jax.random.key(2), params, grads)
  new = rule.apply(variables, params, grads)
  for w, n, g in zip(jax.tree.leaves(params), jax.tree.leaves(new), jax.tree.leaves(grads)):
    step = np.asarray(w - n)  # = 0.1 * scale * g, scale in [e^-2, e^2]
    g = np.asarray(g)
    nonzero = np.abs(g) > 1e-6
    ratio = step[nonzero] / (0.1 * g[nonzero])
    assert np.all(ratio >= np.exp(-2.0) * (1 - 1e-4)) and np.all(ratio <= np.exp(2.0) * (1 + 1e-4))
    np.testing.assert_array_equal(step[~nonzero & (g == 0)], 0.0)  # no gradient, no move
  assert not np.allclose(ratio, ratio.flat[0])  # the scale differs per value


def test_state_carries_momentum_and_step():
  rule = hn.WeightConditionedHypernet(target(), hidden=(8,), momentum_decays=(0.5, 0.9))
  params = target().init(jax.random.key(1))
  grads = support_grads(params, task())
  variables = rule.init(jax.random.key(2), params, grads)
  state = rule.init_state()
  assert state['momentum'].shape == (2, layout_for(target()).num_generated)
  _, state = rule.apply(variables, params, grads, state, method='step')
  g = np.asarray(layout_for(target()).flatten(grads))
  np.testing.assert_allclose(state['momentum'], [0.5 * g, 0.1 * g], rtol=1e-6)
  assert int(state['step']) == 1


def test_time_features_change_the_update():
  rule = hn.WeightConditionedHypernet(target(), hidden=(8,), time_scales=(1.0,),
                                      init_scale=1.0)
  params = target().init(jax.random.key(1))
  grads = support_grads(params, task())
  variables = rule.init(jax.random.key(2), params, grads)
  first = rule.apply(variables, params, grads, rule.init_state(), method='step')[0]
  later = rule.apply(variables, params, grads, dict(rule.init_state(), step=jnp.int32(5)),
                     method='step')[0]
  assert not np.allclose(jax.tree.leaves(first)[0], jax.tree.leaves(later)[0])


def test_invalid_rule_options_raise():
  with pytest.raises(ValueError, match=r"grad_features: expected one of .*received 'rawr'"):
    hn.WeightConditionedHypernet(target(), grad_features='rawr')
  with pytest.raises(ValueError, match=r"update_kind: expected one of .*received 'sgd'"):
    hn.WeightConditionedHypernet(target(), update_kind='sgd')
  with pytest.raises(ValueError, match=r'momentum_decays: expected values in \[0, 1\), '
                                       r'received \(1.0,\)'):
    hn.WeightConditionedHypernet(target(), momentum_decays=(1.0,))
  with pytest.raises(ValueError, match=r'time_scales: expected positive values, received \(0.0,\)'):
    hn.WeightConditionedHypernet(target(), time_scales=(0.0,))
  with pytest.raises(ValueError, match=r'init_lr: expected a number > 0, received -0.1'):
    hn.WeightConditionedHypernet(target(), init_lr=-0.1)
  with pytest.raises(TypeError, match=r'rule: expected a module with init_state\(\) and step'):
    meta.LearnedUpdate(target=target(), rule=hn.FullHypernet(target(), 4))
  with pytest.raises(ValueError,
                     match=r"remat: expected False, True or 'step' .*received 'nested'"):
    meta.LearnedUpdate(target=target(), rule=hn.WeightConditionedHypernet(target()),
                       remat='nested')


# ------------------------------------------------------------ paths and the multi-step loss
def test_inner_sgd_path_matches_its_steps():
  t = task()
  loss_fn = lambda p: jnp.mean((target().apply(p, t.x_support) - t.y_support) ** 2)
  params = target().init(jax.random.key(1))
  path, losses = meta.inner_sgd(loss_fn, params, 0.01, 4, return_path=True)
  for k in range(1, 5):
    want, want_losses = meta.inner_sgd(loss_fn, params, 0.01, k)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[k - 1], path), want, rtol=1e-5)
    np.testing.assert_allclose(losses[:k], want_losses, rtol=1e-5)
  empty, _ = meta.inner_sgd(loss_fn, params, 0.01, 0, return_path=True)
  assert all(a.shape[0] == 0 for a in jax.tree.leaves(empty))
  with pytest.raises(ValueError, match="return_path: not available with remat='nested'"):
    meta.inner_sgd(loss_fn, params, 0.01, 4, return_path=True, remat='nested')


@functools.cache
def multi_step_learner(name: str) -> meta.MetaLearner:
  t = target()
  if name == 'maml':
    return meta.MAML(target=t, inner_steps=3, multi_step_loss=True)
  if name == 'anil':
    return meta.ANIL(target=t, inner_steps=3, multi_step_loss=True)
  if name == 'metasgd':
    return meta.MetaSGD(target=t, inner_steps=3, multi_step_loss=True)
  if name == 'latent':
    return meta.LatentAdaptation(target=t, hypernet=hn.ModulationHypernet(t, 4, hidden=()),
                                 latent_dim=4, inner_lr=1.0, inner_steps=3, multi_step_loss=True)
  if name == 'learned_update':
    return meta.LearnedUpdate(target=t, rule=hn.WeightConditionedHypernet(t, hidden=(8,)),
                              inner_steps=3, multi_step_loss=True)
  raise ValueError(name)


@pytest.mark.parametrize('name', ['maml', 'anil', 'metasgd', 'latent', 'learned_update'])
def test_multi_step_loss_is_the_mean_over_steps(name):
  learner = multi_step_learner(name)
  p = learner.init(jax.random.key(0))
  t = task(3)
  path = learner.adapt_path(p, t.x_support, t.y_support, 3)
  per_step = []
  for k in range(1, 4):
    adapted = learner.adapt(p, t.x_support, t.y_support, k)
    chex.assert_trees_all_close(jax.tree.map(lambda a, k=k: a[k - 1], path), adapted,
                                rtol=1e-5, atol=1e-6)
    per_step.append(jnp.mean((learner.predict(p, adapted, t.x_query) - t.y_query) ** 2))
  loss, metrics = learner.task_loss(p, t)
  np.testing.assert_allclose(loss, np.mean(per_step), rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], per_step[-1], rtol=1e-5)  # after inner_steps
  _, metrics_1 = learner.task_loss(p, t, 1)  # evaluation after one step
  np.testing.assert_allclose(metrics_1['loss'], per_step[0], rtol=1e-5)
  # The first step weighted up: w * loss_1 + (1 - w) * mean(loss_1..loss_3).
  weighted = dataclasses.replace(learner, first_step_weight=0.5)
  loss_w, metrics_w = weighted.task_loss(p, t)
  np.testing.assert_allclose(loss_w, 0.5 * per_step[0] + 0.5 * np.mean(per_step), rtol=1e-5)
  np.testing.assert_allclose(metrics_w['loss'], per_step[-1], rtol=1e-5)


@pytest.mark.parametrize('kwargs,received', [
    (dict(multi_step_loss=True, first_step_weight=1.5), '1.5'),
    (dict(multi_step_loss=True, first_step_weight=True), 'True'),
    (dict(multi_step_loss=True, first_step_weight='0.5'), "'0.5'"),
    (dict(multi_step_loss=False, first_step_weight=0.5), '0.5'),
])
def test_first_step_weight_is_checked(kwargs, received):
  with pytest.raises(ValueError, match=rf'first_step_weight: .*expected .*received {received}'):
    meta.MAML(target=target(), inner_steps=3, **kwargs)


def test_multi_step_loss_needs_adapt_path():
  with pytest.raises(ValueError, match=r"multi_step_loss: Reptile's meta-gradient"):
    meta.Reptile(target=target(), multi_step_loss=True)
  hnet = hn.FullHypernet(target(), 4, hidden=(8,))
  with pytest.raises(ValueError, match=r'multi_step_loss: Amortised has no adapt_path'):
    meta.Amortised(target=target(), encoder=hn.SetEncoder(features=4), hypernet=hnet,
                   multi_step_loss=True)


# ------------------------------------------------------------ a trained rule stays finite
def test_trained_rule_stays_finite_for_20_steps():
  """The sinusoid config's rule (hidden 8, scaled update), trained 300 meta-steps on 5 unrolled
  steps of a tiny target (10-shot tasks), applied 20 times on held-out 5- and 10-shot tasks:
  finite for every task, and at 10 shots below the error before adaptation."""
  t = target()
  rule = hn.WeightConditionedHypernet(t, hidden=(8,), init_lr=0.03)
  learner = meta.LearnedUpdate(target=t, rule=rule, inner_steps=5, multi_step_loss=True,
                               remat=True)
  tx = optax.adam(1e-2)
  state = meta.init_state(learner, tx, jax.random.key(0))
  meta_step = meta.make_meta_step(learner, tx)
  sample = jax.jit(lambda key: Sinusoid().sample_batch(key, 8, 20, 10))
  for step in range(300):
    state, metrics = meta_step(state, sample(jax.random.fold_in(jax.random.key(1), step)))
  assert np.isfinite(float(metrics['loss']))
  held_out = Sinusoid().sample_batch(jax.random.key(2), 100, 20, 10)
  for shots in (5, 10):
    tasks = held_out.replace(x_support=held_out.x_support[:, :shots],
                             y_support=held_out.y_support[:, :shots])
    out = meta.evaluate(learner, state.meta_params, tasks, [0, 5, 20])
    for k in (0, 5, 20):
      assert np.all(np.isfinite(out[k]['loss'])), (shots, k)
    if shots == 10:
      start = float(np.mean(out[0]['loss']))
      assert float(np.mean(out[5]['loss'])) < start and float(np.mean(out[20]['loss'])) < start
