"""The one shared training loop: `train_and_evaluate(config, workdir, experiment)`.

An experiment (sinusoid regression now; Omniglot and continual learning later) hands the
loop an `Experiment`: a `MetaLearner`, a pure `sample_tasks(key)` for one meta-batch,
an `evaluate(meta_params, key)` returning per-task values, and optional plots. The loop
owns everything else:

* the workdir: `config.json` is written before the first step; a workdir holding a run
  with a different config is refused unless `config.overwrite` (which starts afresh);
  `num_steps` may differ, so a finished run can be extended. Everything that can refuse a
  run (the config, `config.json`, `metrics.jsonl`, the checkpoints) is checked before
  anything in the workdir changes, so a refused rerun leaves a finished run as it was;
* randomness: one root `jax.random.key(config.seed)`, split into `init`, `train` and
  `eval` keys; the meta-batch of update `s` (1-based) is `sample_tasks(fold_in(train_key,
  s - 1))`, so training holds no hidden state beyond the `TrainState`;
* speed: `config.steps_per_call` meta-steps per host call, one jitted `lax.scan` that
  samples each step's tasks on device;
* orbax checkpoints in `workdir/checkpoints` every `config.checkpoint_every` steps and at
  the end (the newest `config.keep_checkpoints` kept); a rerun resumes from the newest and
  ends with exactly the parameters of an uninterrupted run. An unreadable newest checkpoint
  (a damaged disk, a copy cut short) is reported in one warning naming its directory, moved
  to `workdir/unreadable_checkpoints/`, and the run resumes from the newest intact one; if
  none is readable the run is refused, naming the checkpoint directory;
* `metrics.jsonl` (one JSON object per log step: `pandas.read_json(path, lines=True)`) and
  the same numbers as TensorBoard scalars in `workdir/tensorboard/` (`experiments.events`),
  progress lines with steps/s and ETA, a `FloatingPointError` naming the step and the
  metric when a training metric is not finite, and naming the step and the leaf when the
  meta-parameters are not finite after an update (nothing is saved for that step); before
  evaluation, the final meta-parameters must also give a finite training loss on one more
  meta-batch (a last update can leave finite parameters that overflow);
* `learning_curve.png`, then `results.json`: every evaluation value as
  `{"mean", "ci95", "n"}` plus the algorithm, steps, speed and parameter counts. It is
  strict JSON: a value that is not finite is never written as a number (`strict_json`:
  an evaluation with more inner steps than training can diverge, which is reported, not
  hidden, as `{"mean": null, "diverged": "nan", ...}`).

Every file is written to a temporary name and moved into place (`os.replace`); orbax
writes checkpoints the same way. In a multi-process run (`jax.distributed`, the
experiments' `--distributed`) every process trains and evaluates (the meta-batch is sharded
over all their devices) and process 0 alone writes the files; orbax coordinates the
checkpoints itself. `results.json` is written last, so it only ever holds a
finished run; a rerun that extends the run replaces it when it finishes, and a refused or
failed rerun leaves it (its `num_steps` says which run it records).

Config keys read here: `seed`, `overwrite`, `num_steps`, `steps_per_call`, `log_every`,
`checkpoint_every`, `keep_checkpoints`, `optimizer.{learning_rate, grad_clip_norm}` (and
optionally `optimizer.{decay_every, decay_rate}`, see `make_optimizer`, and
`optimizer.skip_nonfinite`: n > 0 drops an update whose meta-gradient is not finite, up to n in
a row, with `optax.apply_if_finite`; the metrics of such a step are left out of the record's
means, the count is `skipped_updates` in `metrics.jsonl` and `results.json`),
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
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from matplotlib.figure import Figure

import hypernet
from experiments import checks, events
from hypernet import meta, parallel
from hypernet.target import PyTree, path_str
from hypernet.tasks import Task

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
RESULTS_FILE = 'results.json'
CHECKPOINT_DIR = 'checkpoints'
UNREADABLE_DIR = 'unreadable_checkpoints'  # unreadable checkpoints are moved here, not deleted
# Keys that may differ between a workdir's run and a rerun that resumes it. `shard_tasks`
# changes where the tasks are computed, not what (results agree within float tolerance),
# so a run may resume on a machine with another number of devices.
RESUMABLE_DIFFERENCES = ('num_steps', 'overwrite', 'shard_tasks')
# Keys added after runs were recorded: absent from an old `config.json` means this value,
# so those runs can still be resumed and extended.
ABSENT_MEANS = {'compute_dtype': 'float32', 'optimizer.decay_every': 0,
                'optimizer.skip_nonfinite': 0,
                'optimizer.decay_rate': 0.5,
                # experiments.continual (issue 15): van de Ven & Tolias's protocol.
                'protocol': 'default', 'data.pad': 0, 'target.init': 'lecun',
                'train.reset_optimizer': True, 'ewc.fisher_labels': 'sample',
                # issue 14: the first step's weight in the multi-step loss.
                'inner.first_step_weight': 0.0}


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
    track: optional `(meta_params, eval_key) -> {name: float}`: held-out values measured at
      every log step and added to that step's `metrics.jsonl` record (error against
      meta-steps), with the key `evaluate` gets; it changes neither the training state nor
      its randomness.
  """
  learner: meta.MetaLearner
  sample_tasks: Callable[[jax.Array], Task]
  evaluate: Callable[[PyTree, jax.Array], Mapping[str, Mapping[str, np.ndarray]]]
  plot: Callable[[str, PyTree, jax.Array, dict], None] | None = None
  curve_metrics: tuple[str, ...] = ()
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  track: Callable[[PyTree, jax.Array], Mapping[str, float]] | None = None


# ------------------------------------------------------------------ files
def atomic_write(path: str, write_fn: Callable[[str], None]) -> None:
  """Calls `write_fn(tmp_path)` on a temporary file next to `path`, then moves it into place
  (process 0 only in a multi-process run: the others write nothing)."""
  if not parallel.is_primary():
    return
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
  """Mean and 95% confidence half-width (normal approximation) of per-task values `[n]`.

  The mean is NaN or inf if some values are (e.g. an evaluation with more inner steps than
  training overflowed); `results.json` records that as `diverged` (`strict_json`).
  """
  values = np.asarray(values, np.float64).reshape(-1)
  n = int(values.shape[0])
  std = float(np.std(values, ddof=1)) if n > 1 else float('nan')
  return {'mean': float(np.mean(values)), 'ci95': 1.96 * std / math.sqrt(n), 'n': n}


def strict_json(obj: Any) -> Any:
  """`obj` with no non-finite float left, for strict JSON files (`results.json`).

  A `summary` whose mean is not finite becomes `{"mean": null, "ci95": null, "n", "diverged":
  "nan" | "inf" | "-inf"}` (the divergence is reported, not hidden); any other non-finite
  float (e.g. the `ci95` of a single value) becomes null.
  """
  if isinstance(obj, Mapping):
    mean = obj.get('mean')
    if isinstance(mean, float) and not math.isfinite(mean) and 'n' in obj:
      return {**{k: strict_json(v) for k, v in obj.items()}, 'mean': None, 'ci95': None,
              'diverged': str(mean)}
    return {k: strict_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict_json(v) for v in obj]
  if isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
    return None
  return obj


def write_results(path: str, results: Mapping[str, Any]) -> None:
  """`results.json`, atomically, as strict JSON (`strict_json`: no NaN or Infinity tokens)."""
  write_text(path, json.dumps(strict_json(results), indent=2, allow_nan=False) + '\n')


def quiet_orbax_logs() -> None:
  """Drops orbax's INFO lines (a dozen per checkpoint) from absl's log; warnings stay."""
  class _Filter(pylogging.Filter):
    def filter(self, record):
      return record.levelno >= pylogging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname
  logging.get_absl_handler().addFilter(_Filter())


def _drop_closed_loop_noise(hook: Callable[[Any], None]) -> Callable[[Any], None]:
  def unraisable(u):
    if isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == 'Event loop is closed':
      return
    hook(u)
  unraisable.drops_closed_loop_noise = True
  return unraisable


class _AbandonedReads(pylogging.Filter):
  """Drops asyncio's 'Future/Task exception was never retrieved' (orbax's abandoned reads)."""

  def filter(self, record):
    return not str(record.msg).endswith('exception was never retrieved')


def quiet_failed_restores() -> None:
  """Silences the flood of "Event loop is closed" tracebacks after a failed orbax restore.

  When one array of a checkpoint cannot be read, orbax closes its event loop while
  tensorstore still completes the other reads; each completion then fails to call back into
  the closed loop and Python prints it through `sys.unraisablehook` (dozens of tracebacks,
  the real error among them); then asyncio logs each abandoned read's error ("Future
  exception was never retrieved") and warns of their coroutines. Only those are dropped;
  other unraisable exceptions and log records pass. Idempotent.
  """
  if not getattr(sys.unraisablehook, 'drops_closed_loop_noise', False):
    sys.unraisablehook = _drop_closed_loop_noise(sys.unraisablehook)
    # ... and the reads it abandoned, collected later.
    warnings.filterwarnings('ignore', message=r"coroutine '.*' was never awaited",
                            category=RuntimeWarning)
    pylogging.getLogger('asyncio').addFilter(_AbandonedReads())


# ------------------------------------------------------------------ config and workdir
# Numeric keys of the learners' sub-dicts (`experiments.learners`), checked here when present so
# that an error names the key the user set (`config.inner.lr`), not a learner's field (e.g.
# `Amortised.finetune_lr`): key -> (integer?, minimum).
LEARNER_NUMBERS = {'inner.lr': (False, 0), 'inner.steps': (True, 0)}


def _number_leaves(value: Any, key: str):
  """(dotted key, number) for every number in `value` (tuples and lists included)."""
  if isinstance(value, Mapping):
    for k, v in value.items():
      yield from _number_leaves(v, f'{key}.{k}' if key else k)
  elif isinstance(value, (tuple, list)):
    for i, v in enumerate(value):
      yield from _number_leaves(v, f'{key}[{i}]')
  elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
    yield key, value


def check_numbers(config: ml_collections.ConfigDict) -> None:
  """Every number in `config` is finite, and the learners' numeric keys are in range.

  Raises:
    ValueError: naming the key the user set (e.g. `config.inner.lr`), the expected and the
      received value: before anything is built, not at the first step.
  """
  for key, value in _number_leaves(config.to_dict(), ''):
    if not math.isfinite(value):
      raise ValueError(f'config.{key}: expected a finite number, received {value!r}.')
  flat = _flatten(config.to_dict())
  for key, (integer, low) in LEARNER_NUMBERS.items():
    if key not in flat:
      continue
    value = flat[key]
    ok = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
          and value >= low)
    if not ok:
      want = f'an integer >= {low}' if integer else f'a finite number >= {low}'
      raise ValueError(f'config.{key}: expected {want}, received {value!r}.')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the key for invalid values of the keys this loop reads, and
  for any number in the config that is not finite (`check_numbers`)."""
  check_numbers(config)
  for name in ('num_steps', 'steps_per_call', 'log_every', 'checkpoint_every',
               'keep_checkpoints'):
    checks.check_int(config, name)
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
  skip = config.optimizer.get('skip_nonfinite', 0)
  if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
    raise ValueError(f'config.optimizer.skip_nonfinite: expected an integer >= 0 (0: a non-finite '
                     f'meta-gradient stops the run), received {skip!r}.')
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


def _read_json(path: str) -> Any:
  """A JSON file of the workdir; a damaged one is a ValueError naming it."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e}); the file is empty, truncated or damaged. '
                     'Restore it, use another --workdir, or set --config.overwrite=True to '
                     'discard the run in it.') from None


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir holding another run; reads but never changes anything.

  Raises:
    ValueError: `workdir` holds a run whose config differs in more than `num_steps` (the
      message lists the keys), an unreadable `config.json` (named), or checkpoints without
      a `config.json`, and `config.overwrite` is False.
  """
  if config.overwrite:
    return
  config_path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(config_path):
    old, new = _read_json(config_path), json.loads(config.to_json())
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


def commit_workdir(config: ml_collections.ConfigDict, workdir: str,
                   unreadable_steps: Sequence[int] = ()) -> None:
  """After every check passed: creates `workdir`, clears it with `config.overwrite`, moves
  unreadable checkpoints aside (to `unreadable_checkpoints/<step>`) and writes `config.json`.
  In a multi-process run process 0 does it once every process has read the workdir, and the
  others wait for it."""
  parallel.barrier('hypernet: workdir read')
  if parallel.is_primary():
    _commit_workdir(config, workdir, unreadable_steps)
  parallel.barrier('hypernet: workdir committed')


def _commit_workdir(config: ml_collections.ConfigDict, workdir: str,
                    unreadable_steps: Sequence[int]) -> None:
  os.makedirs(workdir, exist_ok=True)
  if config.overwrite:
    for name in (CONFIG_FILE, METRICS_FILE, RESULTS_FILE):
      if os.path.exists(os.path.join(workdir, name)):
        os.remove(os.path.join(workdir, name))
    shutil.rmtree(os.path.join(workdir, CHECKPOINT_DIR), ignore_errors=True)
    shutil.rmtree(os.path.join(workdir, events.EVENTS_DIR), ignore_errors=True)
  for step in unreadable_steps:
    aside = os.path.join(workdir, UNREADABLE_DIR, str(step))
    n = 1
    while os.path.exists(aside):
      n += 1
      aside = os.path.join(workdir, UNREADABLE_DIR, f'{step}.{n}')
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    os.replace(os.path.join(workdir, CHECKPOINT_DIR, str(step)), aside)
  write_text(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2) + '\n')


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`check_workdir`, then `commit_workdir` (a workdir without checkpoints to restore)."""
  check_workdir(config, workdir)
  commit_workdir(config, workdir)


def read_records(path: str, keep: Callable[[dict[str, Any]], bool] = lambda r: True
                 ) -> list[dict[str, Any]]:
  """The records of a `metrics.jsonl` that `keep` accepts ([] if there is no file).

  A last line that is not valid JSON (a write cut short) is dropped with a warning.

  Raises:
    ValueError: an earlier line is not a JSON object; naming the file and the line.
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [(i + 1, line) for i, line in enumerate(f) if line.strip()]
  records = []
  for n, (number, line) in enumerate(lines):
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise ValueError(f'expected a JSON object, received {type(record).__name__}')
    except ValueError as e:
      if n == len(lines) - 1:
        warnings.warn(f'{path}: line {number} is not valid JSON ({e}), a write cut short; '
                      'dropping it.', stacklevel=2)
        break
      raise ValueError(f'{path}: line {number} is not a JSON object ({e}); the file is '
                       'damaged. Repair or delete it (it only holds the training log), or '
                       'set --config.overwrite=True to discard the run.') from None
    records.append(record)
  return [r for r in records if keep(r)]


def _read_records(path: str, up_to_step: int) -> list[dict[str, Any]]:
  """`metrics.jsonl` records of steps <= `up_to_step` (those a checkpoint backs)."""
  return read_records(path, lambda r: r['step'] <= up_to_step)


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
  """Raises FloatingPointError at the first step (1-based) with a non-finite metric (unless
  `config.optimizer.skip_nonfinite`: such a step's update was dropped, and too many in a row
  leave non-finite parameters, which `check_params_finite` names)."""
  if config.optimizer.get('skip_nonfinite', 0):
    return
  bad = {name: np.flatnonzero(~np.isfinite(v)) for name, v in metrics.items()}
  bad = {name: idx[0] for name, idx in bad.items() if idx.size}
  if bad:
    name = min(bad, key=lambda n: (bad[n], n != 'loss'))
    step = first_step + int(bad[name])
    raise FloatingPointError(
        f'training metric {name!r} is {metrics[name][bad[name]]} (non-finite) at step {step} '
        f'(config.optimizer.learning_rate={config.optimizer.learning_rate}).')


def _finite_mean(values: np.ndarray) -> float | None:
  """The mean of the finite values (None if there is none: every step's update dropped)."""
  finite = values[np.isfinite(values)]
  return float(np.mean(finite)) if finite.size else None


def _finite_max(values: np.ndarray) -> float | None:
  finite = values[np.isfinite(values)]
  return float(np.max(finite)) if finite.size else None


def _leaves_finite(tree: PyTree) -> jax.Array:
  """`[num_leaves]` bool: whether every value of each leaf is finite (ints count as finite)."""
  return jax.numpy.stack([jax.numpy.all(jax.numpy.isfinite(x)) for x in jax.tree.leaves(tree)])


def check_params_finite(params: PyTree, where: str, what: str = 'meta-parameters',
                        hint: str = '') -> None:
  """Raises FloatingPointError naming the first non-finite leaf of `params` after `where`
  (e.g. 'the update of step 40')."""
  finite = np.asarray(jax.device_get(jit(_leaves_finite)(params)))
  if not finite.all():
    paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    bad = [p for p, ok in zip(paths, finite) if not ok]
    raise FloatingPointError(
        f'{what} are not finite after {where} (leaf {bad[0]!r}'
        + (f' and {len(bad) - 1} more' if len(bad) > 1 else '') + f'): the update diverged'
        f'{hint}. Nothing was saved for this step.')


def _next_loss(learner: meta.MetaLearner, sample_tasks: Callable[[jax.Array], Task],
               meta_params: PyTree, key: jax.Array) -> jax.Array:
  return meta.meta_loss(learner, meta_params, sample_tasks(key))[0]


def _check_final_loss(experiment: Experiment, meta_params: PyTree, train_key: jax.Array,
                      step: int, config: ml_collections.ConfigDict, fast_compile: bool) -> None:
  """The training loss of the final meta-parameters (on the meta-batch step `step + 1` would
  use) must be finite: a last update can leave finite parameters that overflow."""
  loss = float(jit(_next_loss, (0, 1), fast_compile)(
      experiment.learner, experiment.sample_tasks, meta_params,
      jax.random.fold_in(train_key, step)))
  if not math.isfinite(loss):
    raise FloatingPointError(
        f'the meta-parameters after the last update (step {step}) give a training loss of '
        f'{loss} on the next meta-batch: the last update diverged (config.optimizer.'
        f'learning_rate={config.optimizer.learning_rate}). Nothing was saved for this step and '
        f'no results were written.')


def _one_line(e: BaseException, limit: int = 300) -> str:
  text = str(e).split('\n')[0].split(' [tensorstore_spec')[0]
  return f'{type(e).__name__}: {text[:limit]}' + ('...' if len(text) > limit else '')


def open_checkpoints(ckpt_dir: str, keep: int | None = None) -> ocp.CheckpointManager:
  """An orbax `CheckpointManager` on `ckpt_dir` (created), saving synchronously."""
  return ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=False))


def restore_newest(ckpt_dir: str, like: PyTree, max_step: int | None = None,
                   max_step_name: str = 'max_step') -> tuple[int | None, PyTree, list[int]]:
  """The newest checkpoint in `ckpt_dir` that can be restored with the structure of `like`.

  Reads only. An unreadable checkpoint (damaged files, another model's) is skipped with a
  warning naming its directory and the error; the caller moves it aside (`commit_workdir`).

  Args:
    ckpt_dir: the checkpoint directory (absent: nothing to restore).
    like: the state whose structure, shapes and dtypes the checkpoint must have.
    max_step: a checkpoint beyond this step is refused (e.g. `config.num_steps`).
    max_step_name: how the refusal names `max_step`.

  Returns:
    `(step, state, unreadable)`: the restored step (None: no checkpoint, `state` is `like`)
    and the steps of the newer, unreadable checkpoints.

  Raises:
    ValueError: a checkpoint beyond `max_step`, or checkpoints none of which can be restored
      (the message names the directory and each error).
  """
  if not os.path.isdir(ckpt_dir):
    return None, like, []
  quiet_failed_restores()
  manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
      create=False, enable_async_checkpointing=False))
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if steps and max_step is not None and steps[0] > max_step:
      raise ValueError(f'{ckpt_dir} has a checkpoint at step {steps[0]}, beyond '
                       f'{max_step_name}={max_step}; raise it or use another workdir (nothing '
                       'was changed).')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    errors = {}
    for step in steps:
      try:
        state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many types
        errors[step] = _one_line(e)
        continue
      if errors:
        logging.warning(
            'checkpoint %s cannot be restored (%s); resuming from the newest readable one, '
            'step %d. The unreadable one%s moved to %s when the run starts.',
            ', '.join(os.path.join(ckpt_dir, str(k)) for k in errors),
            '; '.join(f'step {k}: {v}' for k, v in errors.items()), step,
            's are' if len(errors) > 1 else ' is',
            os.path.join(os.path.dirname(ckpt_dir), UNREADABLE_DIR))
      return step, state, list(errors)
    if errors:
      raise ValueError(
          f'{ckpt_dir}: no checkpoint can be restored ('
          + '; '.join(f'step {k}: {v}' for k, v in errors.items())
          + '). They are damaged, or were written by another model or optimiser. Nothing was '
          'changed; move that directory away, or set --config.overwrite=True to start afresh.')
    return None, like, []
  finally:
    manager.close()


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
    the results; `results.json` holds `strict_json` of them (a diverged evaluation mean is
    NaN or inf here, `null` with `"diverged"` in the file).

  Raises:
    ValueError: an invalid config value (e.g. a meta-batch that does not split over the
      devices of `config.shard_tasks`), a workdir holding another run, an unreadable
      `config.json` or `metrics.jsonl`, a checkpoint beyond `config.num_steps`, or
      checkpoints none of which can be restored. Raised before the workdir changes.
    FloatingPointError: a training metric is not finite (the message names step and metric),
      or the meta-parameters after an update are not finite or give a non-finite training
      loss (nothing is saved for that step, no results are written).
  """
  validate_config(config)
  mesh = task_mesh_for(config, experiment.sample_tasks)
  check_workdir(config, workdir)
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

  # Everything that can refuse the run is read before the workdir changes.
  ckpt_dir = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
  metrics_path = os.path.join(workdir, METRICS_FILE)
  unreadable, records = [], []
  if not config.overwrite:
    latest, state, unreadable = restore_newest(ckpt_dir, state, num_steps, 'config.num_steps')
    start = latest or 0
    if latest is not None:
      logging.info('resumed from the checkpoint at step %d in %s.', latest, ckpt_dir)
    records = _read_records(metrics_path, start)
  else:
    start = 0
  hint = f' (config.optimizer.learning_rate={config.optimizer.learning_rate})'
  if start == num_steps:  # a finished run, evaluated again: its parameters are checked first
    check_params_finite(state.meta_params, f'the update of step {start}', hint=hint)
    _check_final_loss(experiment, state.meta_params, train_key, start, config, fast_compile)
  commit_workdir(config, workdir, unreadable)
  if records or os.path.exists(metrics_path):
    write_text(metrics_path, ''.join(json.dumps(r) + '\n' for r in records))

  manager = open_checkpoints(ckpt_dir, config.keep_checkpoints)
  writer = events.EventWriter(workdir, start)
  try:
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
      check_params_finite(state.meta_params, f'the update of step {end}', hint=hint)
      if end == num_steps:
        _check_final_loss(experiment, state.meta_params, train_key, end, config, fast_compile)
      for name, values in metrics.items():
        pending.setdefault(name, []).append(np.asarray(values))
      step = end

      if step % config.log_every == 0 or step == num_steps:
        now = time.perf_counter()
        span = run_s - run_s_at_last_log
        rate = (step - last_log_step) / span if span > 0 else float('nan')
        record = {'step': step,
                  **{name: _finite_mean(np.concatenate(v)) for name, v in pending.items()},
                  'steps_per_s': rate, 'wall_s': now - t_last_log}
        if 'loss' in pending:  # the largest single-step loss since the last record (spikes)
          record['loss_max'] = _finite_max(np.concatenate(pending['loss']))
        if config.optimizer.get('skip_nonfinite', 0):  # updates dropped so far (cumulative)
          record['skipped_updates'] = skipped_updates(state.opt_state)
        if experiment.track is not None:
          tracked = experiment.track(state.meta_params, eval_key)
          record.update({name: float(v) for name, v in tracked.items()})
        records.append(record)
        write_text(metrics_path, ''.join(json.dumps(r) + '\n' for r in records))
        writer.write(step, record, skip=('step',))
        eta = datetime.timedelta(seconds=round((num_steps - step) / rate)) if rate > 0 else '?'
        logging.info('step %6d/%d  loss %.4f  grad_norm %.3g  %.0f steps/s  ETA %s', step,
                     num_steps, record['loss'], record.get('grad_norm', float('nan')), rate, eta)
        pending, last_log_step, t_last_log, run_s_at_last_log = {}, step, now, run_s
      if step % config.checkpoint_every == 0 or step == num_steps:
        manager.save(step, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
  finally:
    manager.close()
    writer.close()

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
      **({'skipped_updates': skipped_updates(state.opt_state)}
         if config.optimizer.get('skip_nonfinite', 0) else {}),
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
             if name in results.get('metrics', {})
             and math.isfinite(results['metrics'][name]['mean'])}
    _plot_learning_curve(os.path.join(workdir, 'learning_curve.png'), records, lines)
  if experiment.plot is not None and config.get('plots', True):
    experiment.plot(workdir, state.meta_params, eval_key, results)
  write_results(os.path.join(workdir, RESULTS_FILE), results)  # last: the run is complete.
  return results


def restore_state(workdir: str, like: meta.TrainState) -> meta.TrainState:
  """The newest checkpoint in `workdir`, restored with the structure of `like`."""
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)))
  try:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
  finally:
    manager.close()


@dataclasses.dataclass(frozen=True)
class Restored:
  """A run read back from its workdir (`restore`)."""
  config: ml_collections.ConfigDict  # its config.json, with the overrides applied
  experiment: Experiment  # built from that config: the learner the run trained
  state: meta.TrainState  # the newest checkpoint's

  @property
  def meta_params(self) -> PyTree:
    return self.state.meta_params

  @property
  def learner(self) -> meta.MetaLearner:
    return self.experiment.learner


def restore(workdir: str, build_experiment: Callable[[ml_collections.ConfigDict], Experiment],
            overrides: Mapping[str, Any] | None = None) -> Restored:
  """A run's config, experiment and newest `TrainState`, to explore it in a notebook.

  Args:
    workdir: the run's folder (with `config.json` and `checkpoints/`).
    build_experiment: the experiment's builder, e.g. `experiments.sinusoid.build_experiment`.
    overrides: dotted config keys to change before building, e.g. `{'data.dir': ...}` where
      the run read its data from a path that differs here.

  Raises:
    ValueError: no `config.json` or no checkpoint in `workdir` (named), or an override of a
      key the config does not have.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f'workdir: expected a run folder with {CONFIG_FILE}, received {workdir!r} '
                     'without one.')
  config = ml_collections.ConfigDict(_read_json(path))
  for key, value in (overrides or {}).items():
    parent, _, name = key.rpartition('.')
    node = config
    for part in filter(None, parent.split('.')):
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      raise ValueError(f'overrides: {key!r} is not a key of the config in {path}.')
    node[name] = value
  experiment = build_experiment(config)
  ckpt_dir = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
  if not os.path.isdir(ckpt_dir) or not any(name.isdigit() for name in os.listdir(ckpt_dir)):
    raise ValueError(f'workdir: expected checkpoints in {ckpt_dir}, found none.')
  init = functools.partial(meta.init_state, experiment.learner, make_optimizer(config))
  like = jax.eval_shape(init, jax.random.key(config.seed))  # shapes only, nothing computed
  return Restored(config, experiment, restore_state(workdir, like))
