"""Command-line errors (`experiments.cli`): one `FATAL ...` line, exit status 1, no traceback.

Each case runs an entry point in a subprocess with a mistake a user makes: a bad config
value, an unknown key, a bad config argument, a refused workdir, missing data, a bad flag.
"""

import json
import os
import subprocess
import sys

import pytest

from experiments.configs import sinusoid as sinusoid_config

SINUSOID = ['experiments.sinusoid', '--config=experiments/configs/sinusoid.py:algo=maml,smoke']
SHORT = ['--config.num_steps=20', '--config.plots=False']
CONTINUAL = ['experiments.continual',
             '--config=experiments/configs/continual.py:benchmark=split_mnist,method=hnet,smoke']


def _run(args, cwd):
  env = {k: v for k, v in os.environ.items() if not k.startswith('HYPERNET_')}
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env['PYTHONPATH'] = repo
  return subprocess.run([sys.executable, '-m', *args], cwd=repo, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize('case', [
    'bad_value', 'unknown_key', 'bad_config_argument', 'refused_workdir', 'missing_data',
    'continual_value', 'benchmark_flag', 'table_runs', 'unreadable_checkpoints'])
def test_user_errors_are_one_fatal_line(case, tmp_path):
  workdir = str(tmp_path / 'wd')
  args, expected = {
      'bad_value': (SINUSOID + ['--config.inner.lr=nan', f'--workdir={workdir}'],
                    'FATAL experiments.sinusoid: config.inner.lr: expected a finite number, '
                    'received nan.'),
      'unknown_key': (SINUSOID + ['--config.num_stepz=3'],
                      'FATAL Flags parsing error: no such config key: \'num_stepz\' Did you mean '
                      '"num_steps"'),
      'bad_config_argument': (['experiments.sinusoid',
                               '--config=experiments/configs/sinusoid.py:algo=nope'],
                              'FATAL Flags parsing error: flag --config=experiments/configs/'
                              'sinusoid.py:algo=nope: Error whilst parsing config file: '
                              'ValueError: config algo: expected one of'),
      'refused_workdir': (SINUSOID + [f'--workdir={workdir}'],
                          f'FATAL experiments.sinusoid: workdir {workdir!r} holds a run with a '
                          'different config ('),
      'missing_data': (['experiments.omniglot', f'--config.data.dir={tmp_path / "nowhere"}',
                        f'--config.data.cache_dir={tmp_path / "cache"}', f'--workdir={workdir}'],
                       'FATAL experiments.omniglot: Omniglot data not found in'),
      'continual_value': (CONTINUAL + ['--config.optimizer.learning_rate=-1',
                                       f'--workdir={workdir}'],
                          'FATAL experiments.continual: config.optimizer.learning_rate: expected a '
                          'finite number > 0, received -1'),
      'benchmark_flag': (['experiments.benchmark', '--workloads=W9',
                          f'--out={tmp_path / "b.json"}'],
                         'FATAL experiments.benchmark: workloads: expected names in'),
      'table_runs': (['experiments.results_table', f'--runs={tmp_path}/*'],
                     'FATAL experiments.results_table: runs: no results.json found'),
      'unreadable_checkpoints': (SINUSOID + SHORT + [f'--workdir={workdir}',
                                                     '--config.num_steps=40'],
                                 f'FATAL experiments.sinusoid: {workdir}/checkpoints: no '
                                 'checkpoint can be restored (step 20: '),
  }[case]
  if case == 'unreadable_checkpoints':  # a finished run whose only checkpoint is damaged
    done = _run(SINUSOID + SHORT + [f'--workdir={workdir}'], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', '20')):
      for name in files if os.path.basename(root) == 'd' else ():
        open(os.path.join(root, name), 'w').close()
  if case == 'refused_workdir':
    os.makedirs(workdir)
    config = sinusoid_config.get_config('algo=maml,smoke')
    config.seed = 1
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json())
    before = sorted(os.listdir(workdir))
  done = _run(args, tmp_path)
  assert done.returncode == 1, done.stderr[-2000:]
  assert 'Traceback' not in done.stderr, done.stderr[-2000:]
  fatal = [line for line in done.stderr.splitlines() if line.startswith('FATAL')]
  assert len(fatal) == 1 and fatal[0].startswith(expected), done.stderr[-2000:]
  # orbax's abandoned reads after a failed restore: no flood of asyncio errors either
  assert 'Event loop is closed' not in done.stderr and 'never retrieved' not in done.stderr
  if case == 'refused_workdir':
    assert 'seed: 1 -> 0' in fatal[0]
    assert sorted(os.listdir(workdir)) == before
    with open(os.path.join(workdir, 'config.json')) as f:
      assert json.load(f)['seed'] == 1
  if case == 'missing_data':  # the message goes on with the files to place, one per line
    assert 'images_background.zip' in done.stderr and 'hypernet.data.fetch omniglot' in done.stderr


def test_abandoned_reads_after_a_failed_restore_are_not_logged():
  """What `unreadable_checkpoints` above meets only when the collector runs before the process
  exits, made certain: an abandoned future whose exception nobody read, collected after its
  loop closed. asyncio logs it as 'Future exception was never retrieved', then `future: <...>`
  and the traceback; `rundir.quiet_failed_restores` drops exactly that, and other asyncio
  errors still pass."""
  script = '\n'.join([
      'import asyncio, gc, logging',
      'from experiments import rundir',
      'rundir.quiet_failed_restores()',
      'loop = asyncio.new_event_loop()',
      'future = loop.create_future()',
      'try:',
      '  raise ValueError("byte range [0, 4358) is not valid for value of size 0")',
      'except ValueError as e:',
      '  future.set_exception(e)',
      'loop.close()',
      'del future',
      'gc.collect()',
      'logging.getLogger("asyncio").error("another asyncio error")',
  ])
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([sys.executable, '-c', script], cwd=repo, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr
  assert 'never retrieved' not in done.stderr and 'Traceback' not in done.stderr, done.stderr
  assert 'byte range' not in done.stderr, done.stderr
  assert 'another asyncio error' in done.stderr, done.stderr
