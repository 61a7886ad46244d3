"""The task axis sharded over devices: a 1-D `Mesh`, task and replicated placements.

Every meta-learner is written for ONE task and vmapped over a batch `[T, ...]`;
the tasks are independent until the meta-gradient is averaged. So the natural
way to scale is to split the task axis over devices (data parallelism over
tasks) and replicate the meta-parameters and optimiser state:

    mesh = hypernet.parallel.task_mesh()                 # all devices, axis 'tasks'
    state = hypernet.parallel.replicate(state, mesh)
    meta_step = hypernet.meta.make_meta_step(learner, tx, mesh=mesh)
    tasks = hypernet.parallel.shard_tasks(tasks, mesh)   # leaves [T, ...], T % devices == 0
    state, metrics = meta_step(state, tasks)

Inside the jitted step the tasks carry `NamedSharding(mesh, P('tasks'))` and the
state `NamedSharding(mesh, P())`; XLA's SPMD partitioner runs each device's
tasks locally and all-reduces the meta-gradient (the mean over tasks), so every
device applies the same optimiser update. Results equal one device's within
float tolerance (the mean is summed in a different order).
`experiments.train` does this behind `config.shard_tasks`, sampling each
meta-batch on device inside the jitted loop (already sharded, nothing to
transfer).

Several hosts. Start the same program on every host and call
`initialize_distributed()` (`jax.distributed.initialize`, with gloo collectives
between CPU processes) before any other JAX call: with no arguments on Cloud TPU,
SLURM and Open MPI launches; elsewhere pass `coordinator_address`,
`num_processes` and `process_id` (the experiments' `--distributed` flag does it).
`jax.devices()` then lists the devices of all hosts and `task_mesh()` spans them. Tasks sampled inside `jit` from a key (as
in `experiments.train`) need nothing more: each host computes its own shards.
A meta-batch built on the host must be this process's part only (its rows
`[T / process_count, ...]`); `shard_tasks` assembles the global array with
`jax.make_array_from_process_local_data`. Tested on 8 simulated CPU devices in one
process, and with two processes on one machine joined by `jax.distributed` (2 CPU
devices each, gloo collectives: `tests/test_parallel.py` runs the sinusoid experiment
so), both matching one device; no run across real hosts or accelerators has been made.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hypernet.target import PyTree

TASK_AXIS = 'tasks'


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins this process to a multi-process JAX run; call it before any JAX computation.

  `jax.distributed.initialize` with these arguments (None: detected from the cluster
  environment, SLURM, Open MPI or Cloud TPU, or `JAX_COORDINATOR_ADDRESS`), with gloo as
  the collectives between the processes' CPU devices (XLA's CPU client has none by default;
  accelerators use their own). Afterwards `jax.devices()` lists every process's devices,
  `task_mesh()` spans them all and `jax.process_index()` tells this process's rank.

  Raises:
    ValueError: `num_processes` < 1, or `process_id` outside [0, num_processes).
  """
  if num_processes is not None and num_processes < 1:
    raise ValueError(f'num_processes: expected an integer >= 1, received {num_processes}.')
  if process_id is not None and (process_id < 0 or (num_processes is not None
                                                    and process_id >= num_processes)):
    raise ValueError(f'process_id: expected an integer in [0, {num_processes}), received '
                     f'{process_id}.' if num_processes is not None else
                     f'process_id: expected an integer >= 0, received {process_id}.')
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def is_primary() -> bool:
  """Whether this is process 0, the one that writes a run's files (every process when
  there is one)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def task_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D `Mesh` with axis `'tasks'` over `devices` (default: `jax.devices()`, every
  device of every process when `jax.distributed` is initialised)."""
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError('devices: expected at least one device, received an empty list.')
  return Mesh(np.asarray(devices), (TASK_AXIS,))


def task_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (task) axis split over the mesh: `P('tasks')`."""
  return NamedSharding(mesh, P(TASK_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh: `P()`."""
  return NamedSharding(mesh, P())


def check_divisible(num_tasks: int, mesh: Mesh, name: str = 'num_tasks') -> None:
  """Raises a ValueError naming `name` unless `num_tasks` splits evenly over the mesh."""
  n = mesh.devices.size
  if num_tasks % n:
    raise ValueError(f'{name}: expected a multiple of the {n} devices the task axis is '
                     f'sharded over, received {num_tasks}.')


def _num_tasks(tasks: PyTree) -> int:
  leaves = jax.tree.leaves(tasks)
  if not leaves:
    raise ValueError('tasks: expected a pytree with array leaves [T, ...], received no leaves.')
  sizes = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f'tasks: expected every leaf to have the same leading task axis, received '
                     f'leading sizes {sorted(map(str, sizes))}.')
  return sizes.pop()


def shard_tasks(tasks: PyTree, mesh: Mesh) -> PyTree:
  """Places a batch of tasks (every leaf `[T, ...]`) with the task axis over the mesh.

  With one process, `tasks` is the whole batch; with several (`jax.distributed`),
  each process passes its own rows `[T / process_count, ...]`.

  Raises:
    ValueError: leaves with different leading sizes, or a task count not divisible by
      the number of devices.
  """
  sharding = task_sharding(mesh)
  local = _num_tasks(tasks)
  if jax.process_count() > 1:
    check_divisible(local * jax.process_count(), mesh, 'tasks (global task count)')
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), tasks)
  check_divisible(local, mesh, 'tasks (leading axis)')
  return jax.device_put(tasks, sharding)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """A full copy of `tree` (meta-parameters, optimiser state) on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def constrain_tasks(tasks: PyTree, mesh: Mesh | None) -> PyTree:
  """Inside `jit`: `tasks` (leaves `[T, ...]`) split over the mesh; unchanged if `mesh` is None."""
  if mesh is None:
    return tasks
  return jax.lax.with_sharding_constraint(tasks, task_sharding(mesh))


def constrain_replicated(tree: PyTree, mesh: Mesh | None) -> PyTree:
  """Inside `jit`: `tree` replicated over the mesh; unchanged if `mesh` is None."""
  if mesh is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, replicated(mesh))
