"""Smoke tests of the demo (`python -m experiments.demo`) on its `smoke` config."""

import json
import math
import os

import pytest
from absl import flags
from ml_collections import config_flags

from experiments import demo
from experiments.configs import demo as demo_config

CONFIG_PATH = os.path.join(os.path.dirname(demo_config.__file__), 'demo.py')
OUTPUTS = ('config.json', 'metrics.jsonl', 'results.json', 'predictions.png', 'learning_curve.png')


@pytest.fixture(scope='module')
def smoke_runs(tmp_path_factory):
  """Two runs of the smoke config with the same seed, into two workdirs."""
  config = demo_config.get_config('smoke')
  runs = []
  for name in ('first', 'second'):
    workdir = str(tmp_path_factory.mktemp(name))
    runs.append((workdir, demo.train_and_evaluate(config, workdir)))
  return config, runs


def test_smoke_run_writes_outputs_and_learns(smoke_runs):
  config, [(workdir, results), _] = smoke_runs
  for name in OUTPUTS:
    path = os.path.join(workdir, name)
    assert os.path.isfile(path) and os.path.getsize(path) > 0, name
  assert not [f for f in os.listdir(workdir) if f.endswith('.tmp')]

  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f) == json.loads(config.to_json())
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f) == results

  summaries = [results['query_mse'], *results['baselines'].values()]
  for summary in summaries:
    assert summary['n'] == config.eval.num_tasks
    assert math.isfinite(summary['mean']) and math.isfinite(summary['ci95'])
    assert summary['ci95'] > 0

  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['step'] for r in records] == [1, 50, 100, 150, 200]
  assert all(math.isfinite(r['loss']) for r in records)
  assert records[-1]['loss'] < records[0]['loss']
  # Training helps on held-out tasks: better than the untrained hypernetwork.
  assert results['query_mse']['mean'] < results['baselines']['untrained_hypernet']['mean']


def test_same_seed_same_results(smoke_runs):
  _, [(_, first), (_, second)] = smoke_runs
  assert first == second


def test_unknown_variant_raises():
  with pytest.raises(ValueError, match='smok'):
    demo_config.get_config('smok')


def _parse_config_flags(*args: str):
  """Parses `args` as the demo's command line would (fresh flags, argv given explicitly)."""
  argv = ['demo', f'--config={CONFIG_PATH}:smoke', *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', CONFIG_PATH, flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')  # ml_collections' loader.
def test_config_override_and_key_typo():
  assert _parse_config_flags('--config.num_steps=5').num_steps == 5
  with pytest.raises(AttributeError, match='num_stepz'):
    _parse_config_flags('--config.num_stepz=5')


def test_unknown_hypernet_raises(tmp_path):
  config = demo_config.get_config('smoke')
  config.hypernet = 'fulll'
  with pytest.raises(ValueError, match='fulll'):
    demo.train_and_evaluate(config, str(tmp_path))


def test_non_finite_loss_names_the_step(tmp_path):
  config = demo_config.get_config('smoke')
  config.learning_rate = float('nan')  # The first update makes every meta-parameter NaN.
  config.num_steps = 10
  config.log_every = 5
  with pytest.raises(FloatingPointError, match=r'at step 2\b'):
    demo.train_and_evaluate(config, str(tmp_path))
