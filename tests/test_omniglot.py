"""The Omniglot experiment: every classification learner builds and trains; outputs; errors.

Runs on the real Omniglot where `data_sources.staged_root` finds it, otherwise on a small
dataset generated here in the official zip layout (7 characters; the split sizes are shrunk
to fit), read through the experiment's real code path, its sha256 checked against checksums
this module declares for the generated files (`data_sources.declared_files`).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import omniglot
from experiments.configs import omniglot as omniglot_config
from hypernet import meta
from hypernet.data import omniglot as om

import data_sources


@pytest.fixture(scope='module')
def data_config(tmp_path_factory):
  """Config overrides for the data: the real files, or generated official-layout zips."""
  cache = tmp_path_factory.mktemp('omniglot_cache')
  root = data_sources.staged_root('omniglot', 'omniglot.npz')
  if root is not None:
    yield {'dir': str(root), 'cache_dir': str(cache)}
    return
  root = tmp_path_factory.mktemp('omniglot_tiny')
  data_sources.tiny_omniglot_zips(root / 'omniglot')
  declared = data_sources.declared_files(root / 'omniglot', [f.name for f in om.ZIP_FILES])
  with pytest.MonkeyPatch.context() as patch:  # while this module's tests run
    patch.setattr(om, 'ZIP_FILES', declared)
    # 7 characters: 4 train (16 classes with rotations), 2 validation (8), 1 test (4).
    yield {'dir': str(root), 'cache_dir': str(cache), 'num_train': 6, 'num_val': 2}


def smoke_config(algo, data_config, **overrides):
  config = omniglot_config.get_config(f'algo={algo},ways=3,shots=1,smoke')
  config.data.update(data_config)
  config.eval.settings = ((3, 1, 2),)
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.mark.parametrize('algo', omniglot_config.ALGOS)
def test_every_learner_builds_and_its_meta_loss_has_the_right_shapes(algo, data_config):
  """Tracing only (no compilation): each learner's vmapped meta-loss over a sampled batch."""
  config = smoke_config(algo, data_config)
  experiment = omniglot.build_experiment(config)
  tasks = jax.eval_shape(experiment.sample_tasks, jax.random.key(0))
  assert tasks.x_support.shape == (config.meta_batch_size, 3, 28, 28, 1)
  assert tasks.x_query.shape == (config.meta_batch_size, 3 * config.queries, 28, 28, 1)
  params = jax.eval_shape(experiment.learner.init, jax.random.key(0))
  loss, metrics = jax.eval_shape(
      lambda p, t: meta.meta_loss(experiment.learner, p, t), params, tasks)
  assert loss.shape == () and metrics['accuracy'].shape == ()


def test_default_maml_smoke_run_is_finite(tmp_path):
  """`algo=maml,smoke` as a user runs it (5-way, real Omniglot): compiled at XLA's
  optimisation level 0 its meta-gradient was NaN at meta-step 2, so learners that adapt the
  convolutions compile at the default level in the smoke config."""
  root = data_sources.staged_root('omniglot', 'omniglot.npz')
  if root is None:  # the generated files have 4 test classes: no 5-way episode
    pytest.skip(data_sources.not_staged('Omniglot', 'omniglot',
                                        'the generated files are too small for 5-way episodes'))
  config = omniglot_config.get_config('algo=maml,smoke')
  assert not config.fast_compile
  config.data.dir, config.data.cache_dir = str(root), str(tmp_path / 'cache')
  results = omniglot.train_and_evaluate(config, str(tmp_path / 'run'))  # raises if not finite
  assert all(np.isfinite(m['mean']) for m in results['metrics'].values())


@pytest.mark.parametrize('algo', ['hyperhead', 'maml'])
def test_smoke_run_writes_results_and_resumes_identically(algo, data_config, tmp_path):
  config = smoke_config(algo, data_config)
  results = omniglot.train_and_evaluate(config, str(tmp_path / 'a'))
  with open(tmp_path / 'a' / 'results.json') as f:
    assert json.load(f) == json.loads(json.dumps(results))
  steps = config.eval.steps
  for split, n in (('test', config.eval.num_episodes), ('val', config.eval.val_episodes)):
    for k in steps:
      m = results['metrics'][f'{split}_acc_3w1s_step{k}']
      assert m['n'] == n and 0.0 <= m['mean'] <= 100.0
  # An interrupted run (half the steps) continued to the end gives the same results.
  half = smoke_config(algo, data_config, num_steps=config.num_steps // 2)
  omniglot.train_and_evaluate(half, str(tmp_path / 'b'))
  resumed = omniglot.train_and_evaluate(config, str(tmp_path / 'b'))
  assert resumed['resumed_from_step'] == config.num_steps // 2
  assert resumed['metrics'] == results['metrics']
  # The finished run evaluated again on more test episodes: nothing trained, the training
  # record kept, the config and results rewritten with the new number.
  more = smoke_config(algo, data_config)
  more.eval.num_episodes = 2 * config.eval.num_episodes
  again = omniglot.train_and_evaluate(more, str(tmp_path / 'a'))
  assert again['evaluated_again'] is True
  for key in ('steps_per_s', 'train_time_s', 'compile_time_s', 'resumed_from_step'):
    assert again[key] == results[key], key
  for name, m in again['metrics'].items():
    assert m['n'] == (more.eval.num_episodes if name.startswith('test') else
                      config.eval.val_episodes), name
  with open(tmp_path / 'a' / 'config.json') as f:
    assert json.load(f)['eval']['num_episodes'] == more.eval.num_episodes


def test_hyperhead_starts_as_protonets_and_evaluates_other_ways(data_config):
  """base='prototype' with the hypernetwork's output zeroed gives ProtoNets' predictions."""
  config = smoke_config('hyperhead', data_config)
  experiment = omniglot.build_experiment(config)
  learner = experiment.learner
  proto = meta.ProtoNet(target=learner.target, ways=3)
  two = omniglot.for_ways(learner, 2)

  @jax.jit
  def run(params, task):
    zeroed = dict(params, hypernet=jax.tree.map(jnp.zeros_like, params['hypernet']))
    head = lambda p: learner.adapt(p, task.x_support, task.y_support, 0)
    ours = learner.predict(zeroed, head(zeroed), task.x_query)
    theirs = proto.predict(params['embedding'], proto.adapt(
        params['embedding'], task.x_support, task.y_support, 0), task.x_query)
    generated = learner.predict(params, head(params), task.x_query)
    # Trained 3-way, evaluated 2-way: same parameters, 2 logits (and 1 SGD step on the head).
    two_way = two.predict(params, two.adapt(params, task.x_support[:2], task.y_support[:2], 1),
                          task.x_query)
    return [jax.nn.log_softmax(a) for a in (ours, theirs, generated)] + [two_way]

  params = learner.init(jax.random.key(1))
  task = jax.tree.map(lambda a: a[0], experiment.sample_tasks(jax.random.key(2)))
  ours, theirs, generated, two_way = run(params, task)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  # With the generated correction the predictions differ (the hypernetwork is not dead).
  assert not np.allclose(generated, theirs, atol=1e-4)
  assert two_way.shape == (task.x_query.shape[0], 2)


@pytest.mark.parametrize('change, message', [
    ({'ways': 500}, 'ways: expected at most'),
    ({'shots': 15, 'queries': 6}, r'shots \+ queries: expected at most 20'),
    ({'algo': 'nope'}, 'config.algo: expected one of'),
    ({'train_ways': 4}, 'config.train_ways: maml has a 3-way head'),
])
def test_impossible_settings_are_clear_errors(change, message, data_config):
  config = smoke_config('maml', data_config)
  config.update(change)
  if 'ways' in change:
    config.train_ways = change['ways']
    config.eval.settings = ((change['ways'], 1, 2),)
  with pytest.raises(ValueError, match=message):
    omniglot.build_experiment(config)


def test_missing_data_directory_names_the_files(tmp_path):
  config = omniglot_config.get_config('algo=protonet,smoke')
  config.data.dir = str(tmp_path / 'nowhere')
  config.data.cache_dir = str(tmp_path / 'cache')
  with pytest.raises(Exception, match='images_background.zip'):
    omniglot.build_experiment(config)
  assert not any(Path(tmp_path / 'cache').rglob('*.npz'))


def test_config_argument_errors():
  with pytest.raises(ValueError, match='config algo: expected one of'):
    omniglot_config.get_config('algo=unknown')
  with pytest.raises(ValueError, match='config ways: expected an integer >= 2'):
    omniglot_config.get_config('ways=1')
  with pytest.raises(ValueError,
                     match=r'config argument: expected `algo=<value>`, .*received .bogus.'):
    omniglot_config.get_config('bogus')
  paper = omniglot_config.get_config('algo=maml,ways=20,size=paper')
  assert (paper.num_steps, paper.meta_batch_size, paper.inner.steps) == (60_000, 16, 5)
  # The flagship (ProtoNets on the gated Conv-4) at the publications' length: 20,000 60-way
  # episodes; without `gated`, the plain Conv-4.
  flagship = omniglot_config.get_config('algo=protonet,gated,size=paper')
  assert (flagship.model.gate, flagship.num_steps, flagship.train_ways) == (True, 20_000, 60)
  assert not omniglot_config.get_config('algo=protonet,size=paper').model.gate
