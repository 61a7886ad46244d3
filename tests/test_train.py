"""The shared loop (`experiments.train`): resumption, determinism, workdirs, non-finite losses.

The runs use the sinusoid experiment's MAML `smoke` config (40 steps, checkpoints at 20
and 40, 10 steps per call). One `Experiment` object is shared by the runs of one config,
as a notebook sweep would share it, so that they reuse its compiled programs.
"""

import json
import os

import chex
import jax
import numpy as np
import pytest

from experiments import sinusoid, train
from experiments.configs import sinusoid as sinusoid_config


def smoke_config(**overrides):
  config = sinusoid_config.get_config('algo=maml,smoke')
  config.plots = False
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.fixture(scope='module')
def experiment():
  return sinusoid.build_experiment(smoke_config())


@pytest.fixture(scope='module')
def uninterrupted(experiment, tmp_path_factory):
  """An uninterrupted run: (workdir, results, final TrainState)."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  results = train.train_and_evaluate(smoke_config(), workdir, experiment)
  return workdir, results, _final_state(workdir, experiment)


def _final_state(workdir, experiment):
  like = train.init_state(experiment.learner, train.make_optimizer(smoke_config()),
                          jax.random.key(0), fast_compile=True)
  return train.restore_state(workdir, like)


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_same_seed_same_metrics_and_parameters(experiment, uninterrupted, tmp_path):
  workdir, results, state = uninterrupted
  again = train.train_and_evaluate(smoke_config(), str(tmp_path), experiment)
  assert again['metrics'] == results['metrics'] and again['baselines'] == results['baselines']
  assert [r['loss'] for r in _records(str(tmp_path))] == [r['loss'] for r in _records(workdir)]
  chex.assert_trees_all_equal(_final_state(str(tmp_path), experiment), state)


def test_interrupted_run_resumes_to_the_same_parameters(experiment, uninterrupted, tmp_path,
                                                        monkeypatch):
  _, results, state = uninterrupted
  workdir = str(tmp_path)
  check_finite = train._check_finite

  def interrupt_after_step_20(metrics, first_step, config):
    if first_step > 20:  # the call after the checkpoint at step 20
      raise KeyboardInterrupt('simulated interruption')
    check_finite(metrics, first_step, config)

  monkeypatch.setattr(train, '_check_finite', interrupt_after_step_20)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(smoke_config(), workdir, experiment)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['20']
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  assert [r['step'] for r in _records(workdir)] == [20]

  monkeypatch.setattr(train, '_check_finite', check_finite)
  resumed = train.train_and_evaluate(smoke_config(), workdir, experiment)
  assert resumed['resumed_from_step'] == 20
  assert [r['step'] for r in _records(workdir)] == [20, 40]
  chex.assert_trees_all_equal(_final_state(workdir, experiment), state)
  assert resumed['metrics'] == results['metrics']


def test_longer_run_continues_a_finished_one(experiment, uninterrupted, tmp_path):
  """`num_steps` may change: training 20 steps, then 40 ends where 40 steps do."""
  _, _, state = uninterrupted
  workdir = str(tmp_path)
  train.train_and_evaluate(smoke_config(num_steps=20), workdir, experiment)
  longer = train.train_and_evaluate(smoke_config(num_steps=40), workdir, experiment)
  assert longer['resumed_from_step'] == 20 and longer['num_steps'] == 40
  chex.assert_trees_all_equal(_final_state(workdir, experiment), state)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['num_steps'] == 40
  with pytest.raises(ValueError, match='beyond'):  # cannot go back to fewer steps
    train.train_and_evaluate(smoke_config(num_steps=10), workdir, experiment)


def test_workdir_with_a_different_config_is_refused(tmp_path):
  workdir = str(tmp_path)
  train.prepare_workdir(smoke_config(), workdir)
  os.makedirs(os.path.join(workdir, 'checkpoints', '20'))
  with pytest.raises(ValueError, match=r'seed: 0 -> 1.*overwrite'):
    train.prepare_workdir(smoke_config(seed=1), workdir)
  with pytest.raises(ValueError, match='inner.lr'):
    config = smoke_config()
    config.inner.lr = 0.1
    train.prepare_workdir(config, workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['seed'] == 0  # untouched
  train.prepare_workdir(smoke_config(num_steps=80), workdir)  # a longer run: accepted
  train.prepare_workdir(smoke_config(seed=1, overwrite=True), workdir)  # starts afresh
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['seed'] == 1


def test_checkpoints_without_config_are_refused(tmp_path):
  os.makedirs(tmp_path / 'checkpoints')
  with pytest.raises(ValueError, match='no config.json'):
    train.prepare_workdir(smoke_config(), str(tmp_path))


def test_non_finite_loss_names_the_step_and_metric(tmp_path):
  config = smoke_config()
  config.optimizer.learning_rate = 1e38  # the first Adam update makes every parameter ~1e38.
  with pytest.raises(FloatingPointError, match=r"'loss' is .* at step 2\b"):
    sinusoid.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints' / '20')  # nothing non-finite saved
  assert not os.path.exists(tmp_path / 'results.json')


def test_check_finite_reports_the_first_bad_step():
  config = smoke_config()
  metrics = {'grad_norm': np.array([1.0, np.inf, 1.0]), 'loss': np.array([1.0, 2.0, np.nan])}
  with pytest.raises(FloatingPointError, match=r"'grad_norm' is inf .* at step 12\b"):
    train._check_finite(metrics, 11, config)
  train._check_finite({'loss': np.ones(3)}, 1, config)


def test_calls_end_at_log_and_checkpoint_steps():
  config = smoke_config(num_steps=95, steps_per_call=30, log_every=20, checkpoint_every=50)
  ends, step = [], 0
  while step < config.num_steps:
    step = train._next_boundary(step, config)
    ends.append(step)
  assert ends == [20, 30, 40, 50, 60, 80, 90, 95]


def test_summary():
  s = train.summary(np.array([1.0, 2.0, 3.0, 4.0]))
  assert s['n'] == 4 and s['mean'] == 2.5
  np.testing.assert_allclose(s['ci95'], 1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  path = str(tmp_path / 'out.json')
  train.write_json(path, {'a': 1})

  def fail(tmp):
    with open(tmp, 'w') as f:
      f.write('{"a": ')
    raise RuntimeError('disk full')

  with pytest.raises(RuntimeError):
    train.atomic_write(path, fail)
  assert os.listdir(tmp_path) == ['out.json']
  with open(path) as f:
    assert json.load(f) == {'a': 1}
