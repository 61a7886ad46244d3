"""The sinusoid experiment on its `smoke` config: every algorithm runs; config errors."""

import json
import math
import os

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from experiments import events, learners, programs, sinusoid
from experiments.configs import sinusoid as sinusoid_config
from hypernet.tasks import Sinusoid

CONFIG_PATH = os.path.join(os.path.dirname(sinusoid_config.__file__), 'sinusoid.py')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def smoke_config(algo: str, plots: bool = False):
  config = sinusoid_config.get_config(f'algo={algo},smoke')
  config.plots = plots  # matplotlib takes a second a figure; one run checks the plots.
  return config


def test_algorithm_lists_agree():
  assert sinusoid_config.ALGOS == learners.ALGOS
  assert set(sinusoid_config.NUM_STEPS) == set(learners.ALGOS)
  assert sinusoid_config.DEFAULT_ALGO in learners.ALGOS


@pytest.mark.parametrize('algo', learners.ALGOS)
def test_smoke_run(algo, tmp_path):
  plots = algo == 'maml'
  config = smoke_config(algo, plots=plots)
  if algo not in ('maml', sinusoid_config.DEFAULT_ALGO):
    config.eval.shots = (5,)  # half the evaluation program to compile (seconds each)
  workdir = str(tmp_path)
  results = sinusoid.train_and_evaluate(config, workdir)

  outputs = ['config.json', 'metrics.jsonl', 'results.json']
  if plots:
    outputs += ['learning_curve.png', 'predictions.png', 'mse_vs_steps.png']
  for name in outputs:
    path = os.path.join(workdir, name)
    assert os.path.isfile(path) and os.path.getsize(path) > 0, name
  for name in outputs[3:]:
    with open(os.path.join(workdir, name), 'rb') as f:
      assert f.read(8) == PNG_MAGIC, name
  assert not [f for f in os.listdir(workdir) if f.endswith('.tmp')]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['20', '40']

  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f) == json.loads(config.to_json())
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f) == results
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['step'] for r in records] == [20, 40]
  assert all(math.isfinite(r['loss']) and r['steps_per_s'] > 0 for r in records)
  # The same records as TensorBoard scalars (float32 in the event files).
  scalars = events.read_scalars(os.path.join(workdir, events.EVENTS_DIR))
  assert [s for s, _ in scalars['loss']] == [20, 40]
  assert [v for _, v in scalars['loss']] == pytest.approx([r['loss'] for r in records], rel=1e-6)

  assert results['algo'] == algo and results['num_steps'] == config.num_steps
  assert results['num_meta_params'] > 0 and results['num_target_params'] == 16 + 16 + 16 * 16 + 16 + 16 + 1
  assert results['steps_per_s'] > 0
  expected = {f'mse_{k}shot_step{s}' for k in config.eval.shots for s in config.eval.steps}
  assert set(results['metrics']) == expected
  for summary in [*results['metrics'].values(), *results['baselines'].values()]:
    assert set(summary) == {'mean', 'ci95', 'n'}
    assert summary['n'] == config.eval.num_tasks
    assert math.isfinite(summary['mean']) and summary['ci95'] > 0
  if algo == 'maml':  # one inner step on the support set helps on held-out tasks.
    for k in config.eval.shots:
      assert results['metrics'][f'mse_{k}shot_step1']['mean'] < results['metrics'][f'mse_{k}shot_step0']['mean']


def test_eval_tasks_share_functions_and_queries():
  config = smoke_config('maml')  # the smoke runs' evaluation data (compiled already)
  eval_data = programs.jit(sinusoid._eval_data, (0, 1, 2, 3), config.fast_compile)
  data = eval_data(Sinusoid(), config.eval.num_tasks, tuple(config.eval.shots),
                   config.eval.num_query, jax.random.key(0))
  tasks = data['tasks']
  assert tasks.x_support.shape == (20, 10, 1) and tasks.x_query.shape == (20, 10, 1)
  five = sinusoid.with_shots(tasks, 5)
  assert five.x_support.shape == (20, 5, 1)
  np.testing.assert_array_equal(five.x_support, tasks.x_support[:, :5])
  np.testing.assert_array_equal(five.x_query, tasks.x_query)
  # E[y | x] of the sinusoid family: E[A] E[sin(x - phase)], phase ~ U[0, pi].
  x = np.asarray(data['grid'])
  exact = 2.55 * (np.cos(x - np.pi) - np.cos(x)) / np.pi
  np.testing.assert_allclose(data['mean_grid'], exact, atol=0.15)


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize('arg', ['smok', 'algo=mamll', 'algo=maml,smoke,extra', 'maml',
                                 'algo=anil,paper'])
def test_unknown_variant_or_algo_raises(arg):
  with pytest.raises(ValueError, match='config'):
    sinusoid_config.get_config(arg)


@pytest.mark.parametrize('arg', [None, '', 'smoke', 'algo=maml', 'algo=latent,smoke',
                                 'smoke,algo=reptile'])
def test_config_arguments(arg):
  config = sinusoid_config.get_config(arg)
  algo = sinusoid_config.parse_arg(arg).algo
  assert config.algo == algo
  assert (config.num_steps < 100) == ('smoke' in (arg or ''))
  learners.build_learner(config, sinusoid.build_target(config, jax.random.key(0)))


@pytest.mark.parametrize('arg', ['algo=maml', 'algo=maml,paper'])
def test_maml_has_the_paper_setting(arg):
  """Finn et al.'s network, tasks, step size and optimiser; `paper` also its one inner step
  (evaluated after it only), `maml` is trained for each of the 1..10 steps it is evaluated at."""
  config = sinusoid_config.get_config(arg)
  assert tuple(config.target.hidden) == (40, 40)
  assert (config.task.num_points, config.task.num_support) == (20, 10)
  assert (config.inner.lr, config.inner.first_order) == (0.01, False)
  assert (config.optimizer.learning_rate, config.meta_batch_size) == (1e-3, 25)
  assert tuple(config.eval.shots) == (5, 10)
  assert config.eval.num_tasks >= 1000 and config.num_steps == 70_000
  if 'paper' in arg:
    assert (config.inner.steps, config.inner.multi_step_loss) == (1, False)
    assert tuple(config.eval.steps) == (0, 1)
  else:
    assert (config.inner.steps, config.inner.multi_step_loss) == (10, True)
    assert tuple(config.eval.steps) == (0, 1, 5, 10)


def _parse_config_flags(*args: str, variant: str = 'algo=maml,smoke'):
  """Parses `args` as the command line would (fresh flags, argv given explicitly)."""
  argv = ['sinusoid', f'--config={CONFIG_PATH}:{variant}', *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', CONFIG_PATH, flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')  # ml_collections' loader.
def test_command_line_overrides_and_unknown_keys():
  assert _parse_config_flags('--config.num_steps=5').num_steps == 5
  assert _parse_config_flags('--config.inner.lr=0.1').inner.lr == 0.1
  with pytest.raises(AttributeError, match='num_stepz'):
    _parse_config_flags('--config.num_stepz=5')
  with pytest.raises((AttributeError, KeyError), match='encoder'):  # MAML has no set encoder.
    _parse_config_flags('--config.encoder.features=8')
  with pytest.raises(flags.IllegalFlagValueError, match='mamll'):  # absl wraps the ValueError
    _parse_config_flags(variant='algo=mamll')


@pytest.mark.parametrize('key, value, match', [
    ('num_steps', 0, 'num_steps'),
    ('num_steps', -5, 'num_steps'),
    ('meta_batch_size', 0, 'meta_batch_size'),
    ('log_every', 0, 'log_every'),
    ('task.num_support', 25, 'num_support'),  # more shots than the task's 20 points
    ('task.num_support', 20, 'num_support'),  # no query point left
    ('eval.shots', (0, 5), 'shots'),
    ('eval.steps', (-1,), 'steps'),
    ('optimizer.learning_rate', 0.0, 'learning_rate'),
    ('inner.steps', -1, 'inner.steps'),
    ('eval.ood', ('amplitud',), 'eval.ood'),
    ('eval.cost_repeats', -1, 'cost_repeats'),
    ('eval.track_tasks', 21, 'track_tasks'),  # more than the 20 held-out tasks
])
def test_invalid_values_raise_before_training(tmp_path, key, value, match):
  config = smoke_config('maml')
  parent, _, name = key.rpartition('.')
  (config[parent] if parent else config)[name] = value
  workdir = str(tmp_path / 'run')
  with pytest.raises(ValueError, match=match):
    sinusoid.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)  # nothing written


def test_unknown_hypernet_kind_raises(tmp_path):
  config = smoke_config('amortised')
  config.hypernet.kind = 'fulll'
  with pytest.raises(ValueError, match='fulll'):
    sinusoid.train_and_evaluate(config, str(tmp_path))


def test_diverged_tasks():
  mse = np.array([0.1, np.inf, np.nan, 2e4, sinusoid.DIVERGED_MSE])
  np.testing.assert_array_equal(sinusoid.diverged(mse), [False, True, True, True, False])
