"""Meta-training runs: `train_and_evaluate(config, workdir, experiment)`.

An experiment (sinusoid regression, Omniglot) hands the runner an `Experiment`: a
`MetaLearner`, a pure `sample_tasks(key)` for one meta-batch, an `evaluate(meta_params, key)`
returning per-task values, and optional plots. The loop owns the rest, with its helpers split
by role: `experiments.loop` (the step loop every experiment runs, `run_steps`; the continual
experiment drives it once per task), `experiments.rundir` (the workdir, config differences,
checkpoints and resume),
`experiments.programs` (optimiser, jitted chunks of meta-steps, mesh), `experiments.outputs`
(atomic files, summaries, `results.json`) and `experiments.checks` (config validation):

* randomness: one root `jax.random.key(config.seed)`, split into `init`, `train` and
  `eval` keys; the meta-batch of update `s` (1-based) is `sample_tasks(fold_in(train_key,
  s - 1))`, so training holds no hidden state beyond the `TrainState`;
* speed: `config.steps_per_call` meta-steps per host call, one jitted `lax.scan` that
  samples each step's tasks on device;
* checkpoints every `config.checkpoint_every` steps and at the end (the newest
  `config.keep_checkpoints` kept); a rerun resumes from the newest and ends with exactly the
  parameters of an uninterrupted run (`experiments.rundir` says what refuses a rerun and
  what happens to an unreadable checkpoint);
* `metrics.jsonl` (one JSON object per log step: `pandas.read_json(path, lines=True)`) and
  the same numbers as TensorBoard scalars in `workdir/tensorboard/` (`experiments.events`),
  progress lines with steps/s (compilation excluded) and ETA, all by
  `experiments.progress.MetricLog` through `experiments.loop`; a `FloatingPointError`
  naming the step and the metric when a training metric is not finite, and naming the step
  and the leaf when the meta-parameters are not finite after an update (nothing is saved
  for that step); before
  evaluation, the final meta-parameters must also give a finite training loss on one more
  meta-batch (a last update can leave finite parameters that overflow);
* `learning_curve.png`, then `results.json`: every evaluation value as
  `{"mean", "ci95", "n"}` plus the algorithm, steps, speed and parameter counts, strict JSON
  (`outputs.strict_json`: a diverged evaluation is `{"mean": null, "diverged": "nan", ...}`).

Every file is written to a temporary name and moved into place; in a multi-process run
(`--distributed`) every process trains and evaluates (the meta-batch is sharded over all
their devices) and process 0 alone writes the files. `results.json` is written last, so it
only ever holds a finished run; a rerun that extends the run replaces it when it finishes,
and a refused or failed rerun leaves it (its `num_steps` says which run it records).

Config keys read here: `seed`, `overwrite`, `num_steps`, `steps_per_call`, `log_every`,
`checkpoint_every`, `keep_checkpoints`, `optimizer.{learning_rate, grad_clip_norm}` (and
optionally `optimizer.{decay_every, decay_rate}`, see `programs.make_optimizer`, and
`optimizer.skip_nonfinite`: n > 0 drops an update whose meta-gradient is not finite, up to n in
a row, with `optax.apply_if_finite`; the metrics of such a step are left out of the record's
means, the count is `skipped_updates` in `metrics.jsonl` and `results.json`),
optionally `plots` (False: no PNG files), `fast_compile` (see `programs.FAST_COMPILE`), `algo`
(copied into the results), `shard_tasks` (see `programs.task_mesh_for`: None or absent shards the
meta-batch over all devices when there is more than one) and `compute_dtype` ('float32', the
default, or 'bfloat16': the meta-gradient in bfloat16 with float32 master weights and
optimiser state, `hypernet.meta.make_meta_step`; evaluation stays float32).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

import hypernet
from experiments import checks, events, loop, progress
from experiments.outputs import plot_learning_curve, summary, write_results
from experiments.programs import (init_state, jit, make_optimizer, make_train_chunk,
                                  skipped_updates, task_mesh_for)
from experiments.rundir import (CHECKPOINT_DIR, METRICS_FILE, RESULTS_FILE, check_workdir,
                                commit_workdir, legacy_layout, open_checkpoints, read_json,
                                records_up_to, restore_newest)
from hypernet import meta, parallel
from hypernet.target import PyTree
from hypernet.tasks import Task


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


# ------------------------------------------------------------------ the run
TRAINING_KEYS = ('steps_per_s', 'train_time_s', 'compile_time_s', 'resumed_from_step')


def previous_training(results_path: str, num_steps: int) -> dict[str, Any]:
  """`TRAINING_KEYS` of the `results.json` of the same run (`num_steps` steps), plus
  `evaluated_again: True`; `{}` if there is none or it is unreadable. A finished run evaluated
  again (e.g. on more episodes) trains no step, so its training speed and time are the
  earlier record's."""
  try:
    old = read_json(results_path)
  except (OSError, ValueError):
    return {}
  if not isinstance(old, dict) or old.get('num_steps') != num_steps:
    return {}
  return {**{k: old[k] for k in TRAINING_KEYS if k in old}, 'evaluated_again': True}


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
  checks.check_loop_config(config)
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
    latest, state, unreadable = restore_newest(ckpt_dir, state, num_steps, 'config.num_steps',
                                               legacy_layout(type(learner)))
    start = latest or 0
    if latest is not None:
      logging.info('resumed from the checkpoint at step %d in %s.', latest, ckpt_dir)
    records = records_up_to(metrics_path, start)
  else:
    start = 0
  hint = f' (config.optimizer.learning_rate={config.optimizer.learning_rate})'
  previous = {}  # a finished run evaluated again keeps its record of training (speed, time)
  if start == num_steps:  # a finished run, evaluated again: its parameters are checked first
    checks.check_params_finite(state.meta_params, f'the update of step {start}', hint=hint)
    _check_final_loss(experiment, state.meta_params, train_key, start, config, fast_compile)
    previous = previous_training(os.path.join(workdir, RESULTS_FILE), num_steps)
  commit_workdir(config, workdir, unreadable)
  manager = open_checkpoints(ckpt_dir, config.keep_checkpoints)
  writer = events.EventWriter(workdir, start)
  log = progress.MetricLog(metrics_path, writer, records, num_steps, start)
  if records or os.path.exists(metrics_path):
    log.rewrite()
  try:
    train_chunk = make_train_chunk(learner, tx, experiment.sample_tasks, fast_compile, mesh,
                                   config.get('compute_dtype', 'float32'))
    compile_s0 = train_chunk.compile_s
    calls_s0 = train_chunk.run_s

    def check(state, step):
      if step == num_steps:
        _check_final_loss(experiment, state.meta_params, train_key, step, config, fast_compile)

    def extra(state):
      out = {}
      if config.optimizer.get('skip_nonfinite', 0):  # updates dropped so far (cumulative)
        out['skipped_updates'] = skipped_updates(state.opt_state)
      if experiment.track is not None:
        out.update({name: float(v) for name, v in
                    experiment.track(state.meta_params, eval_key).items()})
      return out

    def save(state, step):
      if step % config.checkpoint_every == 0 or step == num_steps:
        manager.save(step, args=ocp.args.StandardSave(state))

    state = loop.run_steps(
        lambda state, step, n: train_chunk.timed(state, train_key, n), state, start=start,
        stop=num_steps, log=log, config=config, log_every=config.log_every,
        every=(config.steps_per_call, config.checkpoint_every),
        params=lambda state: state.meta_params, extra=extra, check=check, after_call=save,
        message=lambda r, eta: (f'step {r["step"]:6d}/{num_steps}  loss {r["loss"]:.4f}  '
                                f'grad_norm {r.get("grad_norm", float("nan")):.3g}  '
                                f'{r["steps_per_s"]:.0f} steps/s  ETA {eta}'))
    manager.wait_until_finished()
    run_s = train_chunk.run_s - calls_s0  # time in training calls, compilation excluded
  finally:
    manager.close()
    writer.close()
  records = log.records

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
      **previous,
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
    plot_learning_curve(os.path.join(workdir, 'learning_curve.png'), records, lines)
  if experiment.plot is not None and config.get('plots', True):
    experiment.plot(workdir, state.meta_params, eval_key, results)
  write_results(os.path.join(workdir, RESULTS_FILE), results)  # last: the run is complete.
  return results
