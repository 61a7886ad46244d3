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
  """Two "hosts" (processes joined by `jax.distributed`, 2 CPU devices each, gloo
  collectives) train the sharded meta-step over all 4 devices; the result equals one
  device's in this process."""
  import _multihost_check as check  # pylint: disable=g-import-not-at-top
  from experiments import sinusoid, train  # pylint: disable=g-import-not-at-top

  out, port = tmp_path / 'report.json', _free_port()
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu', PYTHONPATH=os.path.dirname(HERE))
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, '_multihost_check.py'), str(i),
                             str(port), str(out)], env=env, cwd=os.path.dirname(HERE),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in (0, 1)]
  try:
    results = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, results):
    assert p.returncode == 0, err[-4000:]
  report = json.loads(out.read_text())
  assert (report['process_count'], report['device_count'], report['local_device_count']) == (2, 4, 2)
  assert report['mesh_devices'] == 4 and report['param_devices'] == 4

  config = check.config_for_check()
  experiment = sinusoid.build_experiment(config)
  tx = train.make_optimizer(config)
  state = train.init_state(experiment.learner, tx, jax.random.key(0), True)
  chunk = train.TrainChunk(experiment.learner, tx, experiment.sample_tasks, True, None)
  state, metrics = chunk(state, jax.random.key(1), check.NUM_STEPS)
  np.testing.assert_allclose(report['losses'], np.asarray(metrics['loss']), rtol=1e-4, atol=1e-6)
  for got, want in zip(report['params'], jax.tree.leaves(state.meta_params)):
    np.testing.assert_allclose(got, np.asarray(want).ravel(), rtol=1e-4, atol=1e-5)
  first = jax.tree.leaves(train.init_state(experiment.learner, tx, jax.random.key(0),
                                           True).meta_params)
  assert any(not np.allclose(g, np.asarray(f).ravel()) for g, f in zip(report['params'], first))
