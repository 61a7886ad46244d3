"""Run by `tests/test_parallel.py` in its own process, on 8 simulated CPU devices.

Trains a few meta-steps of the sinusoid MAML smoke config twice, with the meta-batch
sharded over the 8 devices and on one device, and prints a JSON report on the last line.
Not a test module itself (no `test_` prefix): it needs XLA_FLAGS set before JAX starts.
"""

import json
import sys

import jax
import numpy as np

from experiments import programs, sinusoid, train
from experiments.configs import sinusoid as sinusoid_config
from hypernet import meta, parallel


def main(workdir: str) -> None:
  assert jax.device_count() == 8, jax.devices()
  config = sinusoid_config.get_config('algo=maml,smoke')
  config.meta_batch_size = 16
  config.num_steps = 6
  config.steps_per_call = 3
  config.log_every = 3
  config.checkpoint_every = 6
  config.plots = False
  config.eval.num_tasks = 8
  config.eval.batch_size = 8
  config.eval.track_tasks = 8
  experiment = sinusoid.build_experiment(config)
  tx = programs.make_optimizer(config)
  report = {}

  # The library path: the same TrainChunk with and without the mesh.
  mesh = programs.task_mesh_for(config, experiment.sample_tasks)  # shard_tasks=None: 8 devices
  report['mesh_devices'] = int(mesh.devices.size)
  key = jax.random.key(0)
  finals = {}
  for name, m in (('sharded', mesh), ('single', None)):
    state = programs.init_state(experiment.learner, tx, key, True)
    if m is not None:
      state = parallel.replicate(state, m)
    chunk = programs.TrainChunk(experiment.learner, tx, experiment.sample_tasks, True, m)
    state, metrics = chunk(state, jax.random.key(1), 6)
    finals[name] = (jax.device_get(state.meta_params), np.asarray(metrics['loss']))
    report[f'{name}_param_devices'] = len(jax.tree.leaves(state.meta_params)[0].sharding.device_set)
  a, b = finals['sharded'], finals['single']
  report['max_param_diff'] = max(float(np.max(np.abs(x - y))) for x, y in
                                 zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0])))
  report['params_allclose'] = all(np.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in
                                  zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0])))
  report['losses_allclose'] = bool(np.allclose(a[1], b[1], rtol=1e-4, atol=1e-6))
  report['params_changed'] = any(
      not np.allclose(x, y) for x, y in
      zip(jax.tree.leaves(a[0]), jax.tree.leaves(jax.device_get(
          programs.init_state(experiment.learner, tx, key, True).meta_params))))

  # The meta-step on a batch placed by shard_tasks: really split 8 ways, compiled that way.
  tasks = experiment.sample_tasks(jax.random.key(2))
  sharded = parallel.shard_tasks(tasks, mesh)
  report['task_shards'] = sorted({tuple(s.data.shape) for s in sharded.x_support.addressable_shards})
  report['task_devices'] = len(sharded.x_support.sharding.device_set)
  step = meta.make_meta_step(experiment.learner, tx, mesh=mesh)
  state = parallel.replicate(programs.init_state(experiment.learner, tx, key, True), mesh)
  compiled = step.lower(state, sharded).compile()
  task_in = compiled.input_shardings[0][1].x_support
  report['compiled_task_spec'] = [str(s) for s in task_in.spec]
  report['hlo_all_reduce'] = 'all-reduce' in compiled.as_text()
  state, m = compiled(state, sharded)
  single_state = programs.init_state(experiment.learner, tx, key, True)
  _, m1 = meta.make_meta_step(experiment.learner, tx)(single_state, tasks)
  report['step_loss'] = [float(m['loss']), float(m1['loss'])]

  # The whole loop behind the config key, and the error naming it.
  results = train.train_and_evaluate(config, workdir, experiment)
  report['loop_loss'] = results['train_loss']['last']
  bad = sinusoid_config.get_config('algo=maml,smoke')
  bad.meta_batch_size = 12
  try:
    train.train_and_evaluate(bad, workdir + '_bad', sinusoid.build_experiment(bad))
    report['indivisible_error'] = None
  except ValueError as e:
    report['indivisible_error'] = str(e)
  print(json.dumps(report))


if __name__ == '__main__':
  main(sys.argv[1])
