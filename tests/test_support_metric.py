"""SupportMetric: the support-conditioned FiLM hypernetwork's contract on synthetic episodes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypernet as hn
from hypernet import meta
from hypernet.tasks import Blobs


EMB = hn.Target.from_linen(nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(16)]),
                          jnp.zeros((1, 8)), key=jax.random.key(0))


def make_learner(ways=5, init_scale=0.1, learn_metric_scale=False, hidden=(32,), film=True,
                 refiner=None, class_metric=None):
  enc = hn.SetEncoder(features=8, hidden=(16,), rho_hidden=(16,)) if film else None
  hnet = (hn.ModulationHypernet(target=EMB, cond_dim=8, kind='film', hidden=hidden,
                                init_scale=init_scale) if film else None)
  return meta.SupportMetric(target=EMB, hypernet=hnet, encoder=enc, ways=ways,
                          input_shape=(8,), learn_metric_scale=learn_metric_scale,
                          refiner=refiner, class_metric=class_metric)


VARIANTS = {
    'film': {},
    'film+attention+metric': {'refiner': meta.PrototypeAttention(num_heads=2, qkv_features=8),
                              'class_metric': meta.ClassMetric(hidden=(16,))},
    'attention': {'film': False, 'refiner': meta.PrototypeAttention(num_heads=2, qkv_features=8)},
    'metric': {'film': False, 'class_metric': meta.ClassMetric(hidden=(16,))},
}


def perturbed(params, key=jax.random.key(7), scale=0.1):
  """Params with every leaf moved a little (zero-initialised output layers come alive)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [a + scale * jax.random.normal(k, a.shape, a.dtype)
                                      for a, k in zip(leaves, keys)])


def tasks(n, ways=5, shots=1, queries=3, seed=0):
  return Blobs(dim=8, noise=0.8).sample_batch(jax.random.key(seed), n, ways=ways, shots=shots,
                                              queries=queries)


def test_vmapped_meta_loss_equals_a_loop_over_tasks():
  learner = make_learner()
  params = learner.init(jax.random.key(1))
  batch = tasks(4)
  loss, metrics = jax.jit(lambda p, t: meta.meta_loss(learner, p, t))(params, batch)
  per_task = [learner.task_loss(params, jax.tree.map(lambda a, i=i: a[i], batch))
              for i in range(4)]
  np.testing.assert_allclose(loss, np.mean([l for l, _ in per_task]), rtol=1e-5)
  np.testing.assert_allclose(metrics['accuracy'],
                             np.mean([m['accuracy'] for _, m in per_task]), rtol=1e-5)


@pytest.mark.parametrize('variant', VARIANTS)
def test_vmapped_meta_loss_equals_a_loop_for_every_variant(variant):
  learner = make_learner(**VARIANTS[variant])
  params = perturbed(learner.init(jax.random.key(1)))
  batch = tasks(3)
  loss, _ = jax.jit(lambda p, t: meta.meta_loss(learner, p, t))(params, batch)
  loop = [learner.task_loss(params, jax.tree.map(lambda a, i=i: a[i], batch))[0]
          for i in range(3)]
  np.testing.assert_allclose(loss, np.mean(loop), rtol=1e-5)


@pytest.mark.parametrize('variant', ['attention', 'metric', 'film+attention+metric'])
def test_zero_initialised_heads_start_at_protonets(variant):
  """The refiner and the class metric start as the identity: ProtoNets' logits."""
  learner = make_learner(**VARIANTS[variant])
  params = learner.init(jax.random.key(1))
  task = jax.tree.map(lambda a: a[0], tasks(1, shots=2))
  ours = learner.predict(params, learner.adapt(params, task.x_support, task.y_support, 0),
                         task.x_query)
  proto = meta.ProtoNet(target=EMB, ways=5)
  if learner.hypernet is None:
    emb_params = params['embedding']
  else:  # the FiLM'd weights of this task
    emb_params = learner.adapt(params, task.x_support, task.y_support, 0)['params']
  theirs = proto.predict(emb_params, proto.adapt(emb_params, task.x_support, task.y_support, 0),
                         task.x_query)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('learn_metric_scale', [False, True])
def test_meta_gradient_reaches_every_parameter(learn_metric_scale):
  learner = make_learner(learn_metric_scale=learn_metric_scale,
                         **VARIANTS['film+attention+metric'])
  params = perturbed(learner.init(jax.random.key(1)))
  grads = jax.grad(lambda p: meta.meta_loss(learner, p, tasks(3))[0])(params)
  flat = jax.tree_util.tree_leaves_with_path(grads)
  dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
  assert not dead, f'leaves without gradient: {dead}'
  assert {'hypernet', 'encoder', 'refiner', 'class_metric'} <= set(params)
  assert ('log_scale' in params) == learn_metric_scale


@pytest.mark.parametrize('variant', VARIANTS)
def test_predictions_are_equivariant_to_the_label_order(variant):
  """Relabelling the classes permutes the logits' columns and nothing else."""
  learner = make_learner(**VARIANTS[variant])
  params = perturbed(learner.init(jax.random.key(2)))
  task = jax.tree.map(lambda a: a[0], tasks(1, ways=5, shots=2))
  perm = jnp.array([3, 0, 4, 1, 2])  # new label of old class c is perm[c]
  logits = learner.predict(params, learner.adapt(params, task.x_support, task.y_support, 0),
                           task.x_query)
  relabelled = learner.predict(
      params, learner.adapt(params, task.x_support, perm[task.y_support], 0), task.x_query)
  np.testing.assert_allclose(relabelled[:, perm], logits, rtol=1e-4, atol=1e-4)


def test_the_hypernetwork_modulates_the_embedding_per_task():
  """Different support sets give different embedding weights (the FiLM is not dead)."""
  learner = make_learner(init_scale=0.1)
  params = learner.init(jax.random.key(3))
  batch = tasks(2)
  a, b = (learner.adapt(params, batch.x_support[i], batch.y_support[i], 0)['params']
          for i in range(2))
  diff = jax.tree.leaves(jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a, b))
  assert max(diff) > 1e-4
  base = learner.base_params(params)
  assert jax.tree.structure(base) == jax.tree.structure(a)


@pytest.mark.parametrize('ways, shots', [(3, 1), (5, 5), (20, 1)])
def test_any_ways_and_shots_at_evaluation(ways, shots):
  import dataclasses
  learner = make_learner(ways=5, **VARIANTS['film+attention+metric'])
  params = learner.init(jax.random.key(4))
  other = dataclasses.replace(learner, ways=ways)
  batch = tasks(2, ways=ways, shots=shots)
  out = meta.evaluate(other, params, batch, [0])[0]
  assert out['accuracy'].shape == (2,)
  assert np.all(np.isfinite(np.asarray(out['loss'])))


def test_short_training_improves_held_out_accuracy():
  learner = make_learner()
  tx = optax.adam(3e-3)
  state = meta.init_state(learner, tx, jax.random.key(1))
  step = meta.make_meta_step(learner, tx)
  held = tasks(200, seed=99)
  before = float(meta.evaluate(learner, state.meta_params, held, [0])[0]['accuracy'].mean())
  for i in range(150):
    state, _ = step(state, tasks(16, seed=i))
  after = float(meta.evaluate(learner, state.meta_params, held, [0])[0]['accuracy'].mean())
  assert after > before + 0.05 and after > 0.5, (before, after)


def test_invalid_settings_raise_clear_errors():
  learner = make_learner()
  params = learner.init(jax.random.key(0))
  task = jax.tree.map(lambda a: a[0], tasks(1))
  with pytest.raises(ValueError, match='num_steps: SupportMetric has no inner loop'):
    learner.adapt(params, task.x_support, task.y_support, 2)
  with pytest.raises(ValueError, match='inner_steps: SupportMetric has no inner loop'):
    import dataclasses
    dataclasses.replace(learner, inner_steps=1)
  with pytest.raises(ValueError, match='hypernet.cond_dim: expected encoder.features = 8'):
    meta.SupportMetric(target=learner.target, encoder=learner.encoder, input_shape=(8,),
                     hypernet=hn.ModulationHypernet(target=learner.target, cond_dim=4,
                                                    kind='film'))
  with pytest.raises(TypeError, match="hypernet: expected a hypernet.ModulationHypernet with "
                                      "kind='film'"):
    meta.SupportMetric(target=learner.target, encoder=learner.encoder, input_shape=(8,),
                     hypernet=hn.ModulationHypernet(target=learner.target, cond_dim=8,
                                                    kind='additive'))
  with pytest.raises(ValueError, match='received none'):
    meta.SupportMetric(target=learner.target, input_shape=(8,))
  with pytest.raises(ValueError, match='input_shape: expected the shape of one example'):
    meta.SupportMetric(target=learner.target, encoder=learner.encoder,
                     hypernet=learner.hypernet)


def test_omniglot_configs_of_the_flagship():
  """cpu: ProtoNets' episodes and schedule at 10,000 steps; paper: 20,000 60-way episodes."""
  from experiments.configs import omniglot as omniglot_config
  cpu = omniglot_config.get_config('algo=support_metric')
  proto = omniglot_config.get_config('algo=protonet')
  for key in ('num_steps', 'train_ways', 'shots', 'queries', 'meta_batch_size'):
    assert cpu[key] == proto[key], key
  assert cpu.optimizer.to_dict() == proto.optimizer.to_dict()
  assert (cpu.num_steps, cpu.train_ways, cpu.optimizer.decay_every) == (10_000, 20, 2_000)
  assert (cpu.head.refine, cpu.hypernet.kind, cpu.eval.conv_strategy) == (
      'attention+metric', 'none', 'xla')
  paper = omniglot_config.get_config('algo=support_metric,size=paper')
  assert (paper.num_steps, paper.train_ways, paper.queries) == (20_000, 60, 5)
