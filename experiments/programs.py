"""The compiled programs of a run: the optimiser, the jitted `lax.scan` of meta-steps
(`TrainChunk`), the mesh the meta-batch is sharded over, the initial state; cached so that
runs of the same experiment objects reuse their compilations."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax

from experiments import progress
from hypernet import meta, parallel
from hypernet.tasks import Task


# `fold_in(train_key, LEARNER_STREAM)` roots the learners' keys; the tasks of step `s` use
# `fold_in(train_key, s)`, and no run reaches step 2**31 - 1.
LEARNER_STREAM = 2**31 - 1


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with `config.optimizer.learning_rate`, after optional global-norm clipping.

  With `config.optimizer.decay_every = n > 0` the learning rate is multiplied by
  `config.optimizer.decay_rate` every `n` meta-steps (a staircase, as ProtoNets' "halve every
  2000 episodes"); it depends on the step only, so a run can be extended without changing
  the steps already taken.
  """
  opt = config.optimizer
  return _optimizer(opt.learning_rate, opt.grad_clip_norm, opt.get('decay_every', 0),
                    opt.get('decay_rate', 0.5), opt.get('skip_nonfinite', 0))


@functools.lru_cache(maxsize=16)
def _optimizer(learning_rate: float, grad_clip_norm: float, decay_every: int = 0,
               decay_rate: float = 0.5, skip_nonfinite: int = 0) -> optax.GradientTransformation:
  # Cached: the same values give the same object, so compiled programs are reused.
  if decay_every:
    learning_rate = optax.exponential_decay(learning_rate, transition_steps=decay_every,
                                            decay_rate=decay_rate, staircase=True)
  tx = optax.adam(learning_rate)
  if grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  if skip_nonfinite:  # an update that is not finite is dropped (the identity otherwise)
    tx = optax.apply_if_finite(tx, max_consecutive_errors=skip_nonfinite)
  return tx


def skipped_updates(opt_state: Any) -> int:
  """Updates `optax.apply_if_finite` dropped so far (0 without it)."""
  states = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
      x, optax.ApplyIfFiniteState)) if isinstance(s, optax.ApplyIfFiniteState)]
  return sum(int(jax.device_get(s.total_notfinite)) for s in states)


# XLA options of `config.fast_compile`: CPU programs compile about twice as fast and run
# slower; for smoke runs, which spend most of their time compiling.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


@functools.lru_cache(maxsize=None)
def jit(fun: Callable, static_argnums: tuple[int, ...] = (), fast_compile: bool = False):
  """`jax.jit(fun, static_argnums)`, with `FAST_COMPILE` options if asked; one object per
  arguments, so that its compiled programs are reused from run to run."""
  return jax.jit(fun, static_argnums=static_argnums,
                 compiler_options=FAST_COMPILE if fast_compile else None)


class TrainChunk:
  """`chunk(state, train_key, length) -> (state, metrics {name: [length]})`.

  Runs `length` meta-steps in one jitted `lax.scan`; update `s = state.step + 1` trains
  on `sample_tasks(fold_in(train_key, state.step))`. The state is donated. Programs are
  compiled ahead of time, once per `length` (`compile_s` adds up the time spent).
  With a `mesh` (`hypernet.parallel.task_mesh`) each meta-batch is sampled already split
  over its devices along the task axis, and the state (passed in replicated) stays
  replicated. `compute_dtype` is `make_meta_step`'s.
  """

  def __init__(self, learner: meta.MetaLearner, tx: optax.GradientTransformation,
               sample_tasks: Callable[[jax.Array], Task], fast_compile: bool = False,
               mesh: jax.sharding.Mesh | None = None, compute_dtype: str | None = None):
    meta_step = meta.make_meta_step(learner, tx, mesh=mesh, compute_dtype=compute_dtype)

    def train_chunk(state: meta.TrainState, train_key: jax.Array, length: int):
      # The learner's keys (stochastic learners only) come from a stream of their own, so
      # the tasks drawn are the same with or without them.
      learner_root = jax.random.fold_in(train_key, LEARNER_STREAM)

      def body(state, _):
        tasks = sample_tasks(jax.random.fold_in(train_key, state.step))
        return meta_step(state, parallel.constrain_tasks(tasks, mesh),
                         jax.random.fold_in(learner_root, state.step))
      return jax.lax.scan(body, state, None, length=length)

    self._program = progress.Compiled(train_chunk, static_argnums=(2,), donate_argnums=(0,),
                                      compiler_options=FAST_COMPILE if fast_compile else None)

  @property
  def compile_s(self) -> float:
    """Seconds spent compiling so far (one compilation per chunk length)."""
    return self._program.compile_s

  @property
  def run_s(self) -> float:
    """Seconds spent in `timed` calls so far, compilation excluded."""
    return self._program.run_s

  def __call__(self, state: meta.TrainState, train_key: jax.Array,
               length: int) -> tuple[meta.TrainState, dict[str, jax.Array]]:
    return self._program(state, train_key, length)

  def timed(self, state: meta.TrainState, train_key: jax.Array, length: int):
    """`((state, metrics), seconds computing, compilation excluded)`."""
    return self._program.timed(state, train_key, length)


@functools.lru_cache(maxsize=16)
def make_train_chunk(learner: meta.MetaLearner, tx: optax.GradientTransformation,
                     sample_tasks: Callable[[jax.Array], Task], fast_compile: bool = False,
                     mesh: jax.sharding.Mesh | None = None,
                     compute_dtype: str | None = None) -> TrainChunk:
  """A `TrainChunk`, cached: runs of the same experiment objects reuse its programs."""
  return TrainChunk(learner, tx, sample_tasks, fast_compile, mesh, compute_dtype)


def task_mesh_for(config: ml_collections.ConfigDict,
                  sample_tasks: Callable[[jax.Array], Task]) -> jax.sharding.Mesh | None:
  """The mesh the meta-batch is sharded over, or None (one device, no annotations).

  `config.shard_tasks`: True shards over all devices (`hypernet.parallel.task_mesh`);
  False never shards; None or absent shards when `jax.device_count() > 1`.

  Raises:
    ValueError: sharding is on and the meta-batch (`sample_tasks`' leading axis, the
      experiment's `config.meta_batch_size`) is not a multiple of the device count.
  """
  shard = config.get('shard_tasks', None)
  if shard is None:
    shard = jax.device_count() > 1
  if not shard:
    return None
  mesh = parallel.task_mesh()
  shapes = jax.eval_shape(sample_tasks, jax.random.key(0))
  num_tasks = jax.tree.leaves(shapes)[0].shape[0]
  if num_tasks % mesh.devices.size:
    raise ValueError(
        f'config.meta_batch_size: expected a multiple of the {mesh.devices.size} devices the '
        f'task axis is sharded over (config.shard_tasks={config.get("shard_tasks", None)!r}), '
        f'received {num_tasks}; change it, or set --config.shard_tasks=False.')
  return mesh


def init_state(learner: meta.MetaLearner, tx: optax.GradientTransformation, key: jax.Array,
               fast_compile: bool = False) -> meta.TrainState:
  """`hypernet.meta.init_state`, jitted (eagerly it compiles every operation alone)."""
  return jit(meta.init_state, (0, 1), fast_compile)(learner, tx, key)
