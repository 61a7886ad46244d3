"""The task axis sharded over devices (`hypernet.parallel`, `config.shard_tasks`).

The sharded run needs 8 devices, which XLA creates only when `XLA_FLAGS` is set before
JAX starts, so it runs `tests/_sharded_check.py` in a separate process and checks its report.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hypernet import parallel
from hypernet.tasks import Sinusoid

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', PYTHONPATH=os.path.dirname(HERE))
  workdir = str(tmp_path_factory.mktemp('sharded') / 'run')
  proc = subprocess.run([sys.executable, os.path.join(HERE, '_sharded_check.py'), workdir],
                        env=env, capture_output=True, text=True, timeout=300,
                        cwd=os.path.dirname(HERE))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_training_matches_one_device(report):
  assert report['mesh_devices'] == 8
  assert report['sharded_param_devices'] == 8  # replicated over the mesh
  assert report['single_param_devices'] == 1
  assert report['params_changed']  # six Adam steps moved the parameters ...
  assert report['params_allclose'], report['max_param_diff']  # ... the same on 1 and 8 devices
  assert report['losses_allclose']
  a, b = report['step_loss']
  assert abs(a - b) <= 1e-5 * max(1.0, abs(b))


def test_batch_is_split_over_eight_devices(report):
  assert report['task_devices'] == 8
  assert report['task_shards'] == [[2, 10, 1]]  # 16 tasks -> 2 per device, 10 support points
  assert report['compiled_task_spec'] == ['tasks']
  assert report['hlo_all_reduce']  # the meta-gradient is summed across devices


def test_config_key_runs_the_loop_and_names_itself_on_error(report):
  assert report['loop_loss'] is not None and report['loop_loss'] > 0
  err = report['indivisible_error']
  assert err is not None and 'config.meta_batch_size' in err and '8 devices' in err
  assert 'received 12' in err and 'shard_tasks' in err


def test_shard_tasks_checks_its_input():
  mesh = parallel.task_mesh()
  tasks = Sinusoid().sample_batch(jax.random.key(0), 3, 4, 2)
  placed = parallel.shard_tasks(tasks, mesh)  # one device here: any count divides
  assert placed.x_support.shape == (3, 2, 1)
  with pytest.raises(ValueError, match='leading'):
    parallel.shard_tasks({'a': jnp.zeros((3, 2)), 'b': jnp.zeros((4, 2))}, mesh)
  with pytest.raises(ValueError, match='devices'):
    parallel.task_mesh([])
  two = parallel.task_mesh([jax.devices()[0]])  # a 1-device mesh: divisibility by 1
  parallel.check_divisible(5, two)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_match_one_device(tmp_path):
  """The sinusoid experiment launched as two "hosts" (`--distributed`: two processes joined
  by `jax.distributed`, 2 CPU devices each, gloo collectives) shards each meta-batch over
  all 4 devices; its results equal one device's in this process, and process 0 alone wrote
  the outputs (one TensorBoard file, one summary printed)."""
  from experiments import sinusoid  # pylint: disable=g-import-not-at-top
  from experiments.configs import sinusoid as sinusoid_config  # pylint: disable=g-import-not-at-top

  workdir, port, root = tmp_path / 'two', _free_port(), os.path.dirname(HERE)
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu', PYTHONPATH=root)
  command = [sys.executable, '-m', 'experiments.sinusoid',
             '--config=experiments/configs/sinusoid.py:algo=maml,smoke', '--config.plots=False',
             f'--workdir={workdir}', '--distributed', f'--coordinator_address=localhost:{port}',
             '--num_processes=2']
  procs = [subprocess.Popen(command + [f'--process_id={i}'], env=env, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in (0, 1)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  assert 'Done in' in outputs[0][0] and 'Done in' not in outputs[1][0]
  assert 'meta-batch sharded over 4 devices' in outputs[0][1]
  assert len(os.listdir(workdir / 'tensorboard')) == 1
  results = json.loads((workdir / 'results.json').read_text())

  config = sinusoid_config.get_config('algo=maml,smoke')
  config.plots = False
  want = sinusoid.train_and_evaluate(config, str(tmp_path / 'one'))
  assert jax.device_count() == 1  # this process: one device, nothing sharded
  assert results['metrics'].keys() == want['metrics'].keys()
  for name, value in want['metrics'].items():
    np.testing.assert_allclose(results['metrics'][name]['mean'], value['mean'], rtol=1e-4,
                               err_msg=name)
  lines = lambda p: [json.loads(l) for l in p.read_text().splitlines()]  # noqa: E731,E741
  got, ref = lines(workdir / 'metrics.jsonl'), lines(tmp_path / 'one' / 'metrics.jsonl')
  assert [r['step'] for r in got] == [r['step'] for r in ref]
  np.testing.assert_allclose([r['loss'] for r in got], [r['loss'] for r in ref], rtol=1e-4)
