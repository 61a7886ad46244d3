"""The one shared training loop: `train_and_evaluate(config, workdir, experiment)`.

An experiment (sinusoid regression now; Omniglot and continual learning later) hands the
loop an `Experiment`: a `MetaLearner`, a pure `sample_tasks(key)` for one meta-batch,
an `evaluate(meta_params, key)` returning per-task values, and optional plots. The loop
owns everything else:

* the workdir: `config.json` is written before the first step; a workdir holding a run
  with a different config is refused unless `config.overwrite` (which starts afresh);
  `num_steps` may differ, so a finished run can be extended;
* randomness: one root `jax.random.key(config.seed)`, split into `init`, `train` and
  `eval` keys; the meta-batch of update `s` (1-based) is `sample_tasks(fold_in(train_key,
  s - 1))`, so training holds no hidden state beyond the `TrainState`;
* speed: `config.steps_per_call` meta-steps per host call, one jitted `lax.scan` that
  samples each step's tasks on device;
* orbax checkpoints in `workdir/checkpoints` every `config.checkpoint_every` steps and at
  the end (the newest `config.keep_checkpoints` kept); a rerun resumes from the newest and
  ends with exactly the parameters of an uninterrupted run;
* `metrics.jsonl` (one JSON object per log step: `pandas.read_json(path, lines=True)`),
  progress lines with steps/s and ETA, a `FloatingPointError` naming the step and the
  metric when a training metric is not finite;
* `learning_curve.png`, then `results.json`: every evaluation value as
  `{"mean", "ci95", "n"}` plus the algorithm, steps, speed and parameter counts.

Every file is written to a temporary name and moved into place (`os.replace`); orbax
writes checkpoints the same way. A stale `results.json` is removed before training, so
a workdir never shows results that its checkpoints do not back.

Config keys read here: `seed`, `overwrite`, `num_steps`, `steps_per_call`, `log_every`,
`checkpoint_every`, `keep_checkpoints`, `optimizer.{learning_rate, grad_clip_norm}` (and
optionally `optimizer.{decay_every, decay_rate}`, see `make_optimizer`),
optionally `plots` (False: no PNG files), `fast_compile` (see `FAST_COMPILE`), `algo`
(copied into the results), `shard_tasks` (see `task_mesh_for`: None or absent shards the
meta-batch over all devices when there is more than one) and `compute_dtype` ('float32', the
default, or 'bfloat16': the meta-gradient in bfloat16 with float32 master weights and
optimiser state, `hypernet.meta.make_meta_step`; evaluation stays float32).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging as pylogging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from matplotlib.figure import Figure

import hypernet
from hypernet import meta, parallel
from hypernet.target import PyTree
from hypernet.tasks import Task

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
RESULTS_FILE = 'results.json'
CHECKPOINT_DIR = 'checkpoints'
# Keys that may differ between a workdir's run and a rerun that resumes it. `shard_tasks`
# changes where the tasks are computed, not what (results agree within float tolerance),
# so a run may resume on a machine with another number of devices.
RESUMABLE_DIFFERENCES = ('num_steps', 'overwrite', 'shard_tasks')
# Keys added after runs were recorded: absent from an old `config.json` means this value,
# so those runs can still be resumed and extended.
ABSENT_MEANS = {'compute_dtype': 'float32', 'optimizer.decay_every': 0,
                'optimizer.decay_rate': 0.5}


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What the loop needs from an experiment.

  Attributes:
    learner: the meta-learner.
    sample_tasks: `key -> Task` batch `[T, ...]`, one meta-batch; pure and jittable (it runs
      inside the jitted loop).
    evaluate: `(meta_params, key) -> {group: {name: per-task values [n]}}`, e.g.
      `{'metrics': {'mse_5shot_step1': [n], ...}, 'baselines': {...}}`; each array is
      summarised as `{"mean", "ci95", "n"}` in `results.json` under its group.
    plot: optional `(workdir, meta_params, key, results) -> None`, writing PNG files (with
      `save_figure`).
    curve_metrics: names of evaluation metrics drawn as horizontal lines on the learning
      curve (the held-out counterpart of the training loss).
    info: extra entries for `results.json` (e.g. the target's parameter count).
  """
  learner: meta.MetaLearner
  sample_tasks: Callable[[jax.Array], Task]
  evaluate: Callable[[PyTree, jax.Array], Mapping[str, Mapping[str, np.ndarray]]]
  plot: Callable[[str, PyTree, jax.Array, dict], None] | None = None
  curve_metrics: tuple[str, ...] = ()
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------ files
def atomic_write(path: str, write_fn: Callable[[str], None]) -> None:
  """Calls `write_fn(tmp_path)` on a temporary file next to `path`, then moves it into place."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.',
                             prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  os.close(fd)
  try:
    write_fn(tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are for everyone to read.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, 'w') as f:
      f.write(text)
  atomic_write(path, write)


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2) + '\n')


def save_figure(fig: Figure, path: str) -> None:
  """A matplotlib `Figure` as a PNG, atomically."""
  atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))


def summary(values: np.ndarray) -> dict[str, float | int]:
  """Mean and 95% confidence half-width (normal approximation) of per-task values `[n]`."""
  values = np.asarray(values, np.float64).reshape(-1)
  n = int(values.shape[0])
  std = float(np.std(values, ddof=1)) if n > 1 else float('nan')
  return {'mean': float(np.mean(values)), 'ci95': 1.96 * std / math.sqrt(n), 'n': n}


def quiet_orbax_logs() -> None:
  """Drops orbax's INFO lines (a dozen per checkpoint) from absl's log; warnings stay."""
  class _Filter(pylogging.Filter):
    def filter(self, record):
      return record.levelno >= pylogging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname
  logging.get_absl_handler().addFilter(_Filter())


# ------------------------------------------------------------------ config and workdir
def _positive_int(config: ml_collections.ConfigDict, name: str) -> int:
  value = config[name]
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f'config.{name}: expected a positive integer, received {value!r}.')
  return value


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the key for invalid values of the keys this loop reads."""
  for name in ('num_steps', 'steps_per_call', 'log_every', 'checkpoint_every',
               'keep_checkpoints'):
    _positive_int(config, name)
  lr = config.optimizer.learning_rate
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
    raise ValueError(f'config.optimizer.learning_rate: expected a positive finite number, '
                     f'received {lr!r}.')
  clip = config.optimizer.grad_clip_norm
  if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 <= clip < math.inf:
    raise ValueError(f'config.optimizer.grad_clip_norm: expected a finite number >= 0 (0: no '
                     f'clipping), received {clip!r}.')
  every = config.optimizer.get('decay_every', 0)
  if isinstance(every, bool) or not isinstance(every, int) or every < 0:
    raise ValueError(f'config.optimizer.decay_every: expected an integer >= 0 (0: constant '
                     f'learning rate), received {every!r}.')
  rate = config.optimizer.get('decay_rate', 0.5)
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
    raise ValueError(f'config.optimizer.decay_rate: expected a number in (0, 1], received '
                     f'{rate!r}.')
  dtype = config.get('compute_dtype', 'float32')
  if dtype not in meta.base.COMPUTE_DTYPES:
    raise ValueError(f'config.compute_dtype: expected one of {meta.base.COMPUTE_DTYPES}, '
                     f'received {dtype!r}.')
  shard = config.get('shard_tasks', None)
  if shard is not None and not isinstance(shard, bool):
    raise ValueError(f'config.shard_tasks: expected True, False or None (None: shard when '
                     f'there is more than one device), received {shard!r}.')


def _flatten(d: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """Dotted keys whose values differ (present in one only, or unequal), resumable ones aside."""
  old, new = _flatten(old), _flatten(new)
  get = lambda d, k: d.get(k, ABSENT_MEANS.get(k, '<absent>'))  # noqa: E731
  return sorted(k for k in set(old) | set(new)
                if k not in RESUMABLE_DIFFERENCES and get(old, k) != get(new, k))


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates `workdir`, refuses (or, with `config.overwrite`, clears) a different run in it,
  writes `config.json` and removes a stale `results.json`.

  Raises:
    ValueError: `workdir` holds a run whose config differs in more than `num_steps` (the
      message lists the keys), or checkpoints without a `config.json`, and
      `config.overwrite` is False.
  """
  os.makedirs(workdir, exist_ok=True)
  config_path = os.path.join(workdir, CONFIG_FILE)
  new = json.loads(config.to_json())
  if config.overwrite:
    for name in (CONFIG_FILE, METRICS_FILE, RESULTS_FILE):
      if os.path.exists(os.path.join(workdir, name)):
        os.remove(os.path.join(workdir, name))
    shutil.rmtree(os.path.join(workdir, CHECKPOINT_DIR), ignore_errors=True)
  elif os.path.exists(config_path):
    with open(config_path) as f:
      old = json.load(f)
    diff = _config_differences(old, new)
    if diff:
      details = '; '.join(f'{k}: {_flatten(old).get(k, "<absent>")!r} -> '
                          f'{_flatten(new).get(k, "<absent>")!r}' for k in diff[:10])
      if len(diff) > 10:
        details += f'; and {len(diff) - 10} more'
      raise ValueError(
          f'workdir {workdir!r} holds a run with a different config ({details}). Use another '
          f'--workdir, or set --config.overwrite=True to discard that run.')
  elif os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    raise ValueError(f'workdir {workdir!r} holds checkpoints but no {CONFIG_FILE}; use another '
                     f'--workdir, or set --config.overwrite=True to discard them.')
  results_path = os.path.join(workdir, RESULTS_FILE)
  if os.path.exists(results_path):
    os.remove(results_path)
  write_text(config_path, config.to_json(indent=2) + '\n')


def _read_records(path: str, up_to_step: int) -> list[dict[str, Any]]:
  """`metrics.jsonl` records of steps <= `up_to_step` (those a checkpoint backs)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [r for r in records if r['step'] <= up_to_step]


# Keys read only by this loop: configs that differ only in these can share one `Experiment`
# (hence its compiled programs): reruns, resumed runs, sweeps in a notebook.
LOOP_KEYS = ('overwrite', 'plots', 'num_steps', 'steps_per_call', 'log_every',
             'checkpoint_every', 'keep_checkpoints', 'optimizer', 'shard_tasks', 'compute_dtype')


def experiment_key(config: ml_collections.ConfigDict) -> str:
  """The config without `LOOP_KEYS`, as sorted JSON: a cache key for building an experiment."""
  fields = {k: v for k, v in json.loads(config.to_json()).items() if k not in LOOP_KEYS}
  return json.dumps(fields, sort_keys=True)


# ------------------------------------------------------------------ the jitted loop
def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with `config.optimizer.learning_rate`, after optional global-norm clipping.

  With `config.optimizer.decay_every = n > 0` the learning rate is multiplied by
  `config.optimizer.decay_rate` every `n` meta-steps (a staircase, as ProtoNets' "halve every
  2000 episodes"); it depends on the step only, so a run can be extended without changing
  the steps already taken.
  """
  opt = config.optimizer
  return _optimizer(opt.learning_rate, opt.grad_clip_norm, opt.get('decay_every', 0),
                    opt.get('decay_rate', 0.5))


@functools.lru_cache(maxsize=16)
def _optimizer(learning_rate: float, grad_clip_norm: float, decay_every: int = 0,
               decay_rate: float = 0.5) -> optax.GradientTransformation:
  # Cached: the same values give the same object, so compiled programs are reused.
  if decay_every:
    learning_rate = optax.exponential_decay(learning_rate, transition_steps=decay_every,
                                            decay_rate=decay_rate, staircase=True)
  tx = optax.adam(learning_rate)
  if grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx


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
      def body(state, _):
        tasks = sample_tasks(jax.random.fold_in(train_key, state.step))
        return meta_step(state, parallel.constrain_tasks(tasks, mesh))
      return jax.lax.scan(body, state, None, length=length)

    self._jitted = jax.jit(train_chunk, static_argnums=(2,), donate_argnums=(0,))
    self._options = FAST_COMPILE if fast_compile else None
    self._compiled: dict[int, Any] = {}
    self.compile_s = 0.0

  def __call__(self, state: meta.TrainState, train_key: jax.Array,
               length: int) -> tuple[meta.TrainState, dict[str, jax.Array]]:
    if length not in self._compiled:
      t0 = time.perf_counter()
      self._compiled[length] = self._jitted.lower(state, train_key, length).compile(
          compiler_options=self._options)
      self.compile_s += time.perf_counter() - t0
    return self._compiled[length](state, train_key)


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


def _next_boundary(step: int, config: ml_collections.ConfigDict) -> int:
  """The first step after `step` at which a call ends: a multiple of `steps_per_call`,
  `log_every` or `checkpoint_every`, or `num_steps`. Absolute step numbers, so that a
  resumed run makes exactly the calls of an uninterrupted one."""
  ends = [config.num_steps]
  for every in (config.steps_per_call, config.log_every, config.checkpoint_every):
    ends.append((step // every + 1) * every)
  return min(ends)


def _check_finite(metrics: dict[str, np.ndarray], first_step: int,
                  config: ml_collections.ConfigDict) -> None:
  """Raises FloatingPointError at the first step (1-based) with a non-finite metric."""
  bad = {name: np.flatnonzero(~np.isfinite(v)) for name, v in metrics.items()}
  bad = {name: idx[0] for name, idx in bad.items() if idx.size}
  if bad:
    name = min(bad, key=lambda n: (bad[n], n != 'loss'))
    step = first_step + int(bad[name])
    raise FloatingPointError(
        f'training metric {name!r} is {metrics[name][bad[name]]} (non-finite) at step {step} '
        f'(config.optimizer.learning_rate={config.optimizer.learning_rate}).')


def _plot_learning_curve(path: str, records: list[dict[str, Any]],
                         lines: Mapping[str, float]) -> None:
  """Training loss (and meta-gradient norm) per log step; held-out values as lines."""
  fig = Figure(figsize=(10, 3.8), layout='constrained')
  ax_loss, ax_grad = fig.subplots(1, 2)
  steps = [r['step'] for r in records]
  ax_loss.plot(steps, [r['loss'] for r in records], marker='.',
               label='train: meta-batch query loss')
  for (name, value), color in zip(lines.items(), ('tab:red', 'tab:green', 'tab:purple')):
    ax_loss.axhline(value, color=color, ls='--', label=f'held-out {name} = {value:.4g}')
  ax_loss.set(yscale='log', xlabel='meta-step', ylabel='loss', title='learning curve')
  ax_loss.legend(fontsize='small')
  ax_grad.plot(steps, [r['grad_norm'] for r in records], marker='.', color='tab:gray')
  ax_grad.set(yscale='log', xlabel='meta-step', ylabel='global norm',
              title='meta-gradient norm (log-step mean)')
  save_figure(fig, path)


# ------------------------------------------------------------------ the run
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       experiment: Experiment) -> dict[str, Any]:
  """Trains `experiment.learner` (resuming from `workdir`), evaluates, writes the outputs.

  Args:
    config: the experiment config (validated here for the keys this loop reads; the
      experiment validates its own before building `experiment`).
    workdir: output directory (created if needed).
    experiment: what to train and evaluate.

  Returns:
    the contents of `results.json`.

  Raises:
    ValueError: an invalid config value (e.g. a meta-batch that does not split over the
      devices of `config.shard_tasks`), or a workdir holding another run.
    FloatingPointError: a training metric is not finite (the message names step and metric).
  """
  validate_config(config)
  mesh = task_mesh_for(config, experiment.sample_tasks)
  prepare_workdir(config, workdir)
  learner, num_steps = experiment.learner, config.num_steps
  init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)

  tx = make_optimizer(config)
  fast_compile = bool(config.get('fast_compile', False))
  state = init_state(learner, tx, init_key, fast_compile)
  if mesh is not None:  # before restoring: the checkpoint is read onto the same placement.
    state = parallel.replicate(state, mesh)
    logging.info('meta-batch sharded over %d devices (%s).', mesh.devices.size,
                 jax.devices()[0].platform)
  num_meta_params = hypernet.count_params(state.meta_params)
  logging.info('%s: %d meta-parameters; %d meta-steps of %d per call.',
               config.get('algo', type(learner).__name__), num_meta_params, num_steps,
               config.steps_per_call)

  ckpt_dir = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
  manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, create=True, enable_async_checkpointing=False))
  try:
    latest = manager.latest_step()
    if latest is not None:
      if latest > num_steps:
        raise ValueError(f'workdir {workdir!r} has a checkpoint at step {latest}, beyond '
                         f'config.num_steps={num_steps}; raise num_steps or use another workdir.')
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
      state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
      logging.info('resumed from the checkpoint at step %d in %s.', latest, ckpt_dir)
    start = int(state.step)
    metrics_path = os.path.join(workdir, METRICS_FILE)
    records = _read_records(metrics_path, start)
    if records or os.path.exists(metrics_path):
      write_text(metrics_path, ''.join(json.dumps(r) + '\n' for r in records))

    train_chunk = make_train_chunk(learner, tx, experiment.sample_tasks, fast_compile, mesh,
                                   config.get('compute_dtype', 'float32'))
    compile_s0 = train_chunk.compile_s
    run_s = 0.0  # time in training calls, compilation excluded.
    pending: dict[str, list[np.ndarray]] = {}
    step, last_log_step, t_last_log = start, start, time.perf_counter()
    run_s_at_last_log = 0.0
    while step < num_steps:
      end = _next_boundary(step, config)
      length = end - step
      t0, c0 = time.perf_counter(), train_chunk.compile_s
      state, metrics = train_chunk(state, train_key, length)
      metrics = jax.device_get(metrics)  # {name: [length]}, one transfer per call.
      run_s += time.perf_counter() - t0 - (train_chunk.compile_s - c0)
      _check_finite(metrics, step + 1, config)
      for name, values in metrics.items():
        pending.setdefault(name, []).append(np.asarray(values))
      step = end

      if step % config.log_every == 0 or step == num_steps:
        now = time.perf_counter()
        span = run_s - run_s_at_last_log
        rate = (step - last_log_step) / span if span > 0 else float('nan')
        record = {'step': step,
                  **{name: float(np.mean(np.concatenate(v))) for name, v in pending.items()},
                  'steps_per_s': rate, 'wall_s': now - t_last_log}
        records.append(record)
        write_text(metrics_path, ''.join(json.dumps(r) + '\n' for r in records))
        eta = datetime.timedelta(seconds=round((num_steps - step) / rate)) if rate > 0 else '?'
        logging.info('step %6d/%d  loss %.4f  grad_norm %.3g  %.0f steps/s  ETA %s', step,
                     num_steps, record['loss'], record.get('grad_norm', float('nan')), rate, eta)
        pending, last_log_step, t_last_log, run_s_at_last_log = {}, step, now, run_s
      if step % config.checkpoint_every == 0 or step == num_steps:
        manager.save(step, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
  finally:
    manager.close()

  trained = num_steps - start
  compile_s = train_chunk.compile_s - compile_s0
  logging.info('trained %d steps in %.1f s (+ %.1f s compiling); evaluating.', trained, run_s,
               compile_s)
  evaluation = experiment.evaluate(state.meta_params, eval_key)
  results = {
      'algo': config.get('algo', type(learner).__name__),
      'num_steps': num_steps,
      'steps_per_s': trained / run_s if run_s > 0 else None,
      'train_time_s': run_s,
      'compile_time_s': compile_s,
      'resumed_from_step': start,
      'num_meta_params': num_meta_params,
      'compute_dtype': config.get('compute_dtype', 'float32'),
      **dict(experiment.info),
      'train_loss': {'first': records[0]['loss'] if records else None,
                     'last': records[-1]['loss'] if records else None},
      **{group: {name: summary(v) for name, v in values.items()}
         for group, values in evaluation.items()},
  }
  if records and config.get('plots', True):
    lines = {name: results['metrics'][name]['mean'] for name in experiment.curve_metrics
             if name in results.get('metrics', {})}
    _plot_learning_curve(os.path.join(workdir, 'learning_curve.png'), records, lines)
  if experiment.plot is not None and config.get('plots', True):
    experiment.plot(workdir, state.meta_params, eval_key, results)
  write_json(os.path.join(workdir, RESULTS_FILE), results)  # last: the run is complete.
  return results


def restore_state(workdir: str, like: meta.TrainState) -> meta.TrainState:
  """The newest checkpoint in `workdir`, restored with the structure of `like`."""
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)))
  try:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
  finally:
    manager.close()
