"""Run by `tests/test_parallel.py`: ONE of two processes of a 2-host run on this machine.

`python tests/_multihost_check.py <process_id> <port> <out.json>`, started twice (ids 0
and 1) with `XLA_FLAGS=--xla_force_host_platform_device_count=2`: each process is a
"host" with 2 CPU devices, joined by `jax.distributed` (coordinator on localhost) with
gloo collectives between processes, so the mesh spans 4 devices in 2 processes. It
trains a few meta-steps of the sinusoid MAML smoke config with the task axis sharded
over all 4 devices, exactly as `experiments.train` does, and process 0 writes the losses
and final meta-parameters to `out.json`. Not a test module itself (no `test_` prefix).
"""

import json
import sys

import jax
import numpy as np

NUM_STEPS = 6


def config_for_check():
  from experiments.configs import sinusoid as sinusoid_config  # pylint: disable=g-import-not-at-top
  config = sinusoid_config.get_config('algo=maml,smoke')
  config.meta_batch_size = 8
  config.steps_per_call = 3
  return config


def main(process_id: int, port: int, out: str) -> None:
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'localhost:{port}', num_processes=2,
                             process_id=process_id, initialization_timeout=120)
  from experiments import sinusoid, train  # pylint: disable=g-import-not-at-top
  from hypernet import parallel  # pylint: disable=g-import-not-at-top
  config = config_for_check()
  experiment = sinusoid.build_experiment(config)
  tx = train.make_optimizer(config)
  mesh = train.task_mesh_for(config, experiment.sample_tasks)  # shard_tasks=None: all devices
  state = parallel.replicate(train.init_state(experiment.learner, tx, jax.random.key(0), True),
                             mesh)
  chunk = train.TrainChunk(experiment.learner, tx, experiment.sample_tasks, True, mesh)
  state, metrics = chunk(state, jax.random.key(1), NUM_STEPS)
  # Replicated outputs: this process's copy is the whole value.
  local = lambda a: np.asarray(a.addressable_data(0))  # noqa: E731
  report = {
      'process_count': jax.process_count(), 'device_count': jax.device_count(),
      'local_device_count': jax.local_device_count(), 'mesh_devices': int(mesh.devices.size),
      'param_devices': len(jax.tree.leaves(state.meta_params)[0].sharding.device_set),
      'losses': local(metrics['loss']).tolist(),
      'params': [local(a).ravel().tolist() for a in jax.tree.leaves(state.meta_params)],
  }
  if process_id == 0:
    with open(out, 'w') as f:
      json.dump(report, f)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
