"""The step loop every experiment runs: `run_steps`.

A training state is advanced from step `start` to `stop` in jitted calls (`advance`, a
`lax.scan` over several steps), each call ending at the next boundary: a multiple of one of
`every` (steps per call, log and checkpoint intervals) or `stop`. Boundaries are absolute
step numbers, so a resumed run makes exactly the calls of an uninterrupted one. After each
call the loop

1. checks the metrics (`checks.check_finite_metrics`: a `FloatingPointError` naming the step
   and the metric) and the parameters (`checks.check_params_finite`: naming the step and
   the leaf) before anything is recorded or saved for that call;
2. adds the metrics to the `progress.MetricLog` (steps/s without compilation, ETA), and at
   each multiple of `log_every` (and at `stop`) writes one record (`metrics.jsonl` and
   TensorBoard) and one progress line;
3. calls `after_call(state, step)` (the caller's checkpoint policy).

`experiments.train` runs it once over a whole meta-training run; `experiments.continual` is
an outer driver on it, one `run_steps` per task, with the task's end (importance weights,
the accuracy column, a checkpoint) between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import jax
import ml_collections
from absl import logging

from experiments import checks, progress
from hypernet.target import PyTree

State = TypeVar('State')
# (state, first step, number of steps) -> ((state, {name: [number of steps]}), seconds)
Advance = Callable[[State, int, int], tuple[tuple[State, Mapping[str, Any]], float]]


def next_boundary(step: int, stop: int, every: Iterable[int]) -> int:
  """The first step after `step` that is a multiple of one of `every`, or `stop`."""
  return min([stop, *((step // e + 1) * e for e in every)])


def run_steps(advance: Advance, state: State, *, start: int, stop: int,
              log: progress.MetricLog, config: ml_collections.ConfigDict, log_every: int,
              every: Iterable[int] = (), params: Callable[[State], PyTree],
              message: Callable[[dict[str, Any], str], str], what: str = 'meta-parameters',
              where: str = '', record_step: int = 0, fields: Mapping[str, Any] | None = None,
              extra: Callable[[State], Mapping[str, float]] | None = None,
              check: Callable[[State, int], None] | None = None,
              after_call: Callable[[State, int], None] | None = None) -> State:
  """Steps `start..stop` of `state` (see the module doc); returns the final state.

  Args:
    advance: one jitted call, `(state, step, n) -> ((state, metrics), seconds)`: steps
      `step + 1 .. step + n`, each metric an array `[n]`.
    state: the state at step `start`.
    start, stop: the first and last step boundaries (`0 <= start <= stop`).
    log: the run's metric log.
    config: the experiment config (`optimizer.learning_rate` and
      `optimizer.skip_nonfinite` are read for the error messages and checks).
    log_every: steps between records.
    every: further call boundaries (steps per call, checkpoint interval).
    params: the parameters in `state` to check after each call.
    message: `(record, eta) -> progress line`.
    what, where: name the parameters and prefix the step in error messages (e.g.
      `'task 3, '`).
    record_step: added to the step for the record's global step (TensorBoard's x axis).
    fields: entries put in every record before `step` (e.g. `{'task': 3}`).
    extra: `state -> {name: value}` added to each record (held-out values, counters).
    check: `(state, step)`: a further check after the call, before it is recorded.
    after_call: `(state, step)` after each call is recorded (e.g. a checkpoint).

  Raises:
    FloatingPointError: a non-finite training metric or parameter after a call.
  """
  hint = f' (config.optimizer.learning_rate={config.optimizer.learning_rate})'
  step = start
  while step < stop:
    end = next_boundary(step, stop, (log_every, *every))
    (state, metrics), seconds = advance(state, step, end - step)
    metrics = jax.device_get(metrics)  # one transfer per call
    checks.check_finite_metrics(metrics, step + 1, config, where=where)
    checks.check_params_finite(params(state), f'the update of {where}step {end}', what, hint)
    if check is not None:
      check(state, end)
    log.add(metrics, seconds)
    step = end
    if step % log_every == 0 or step == stop:
      eta = log.eta()
      record = log.flush(record_step + step, {**(fields or {}), 'step': step},
                         dict(extra(state)) if extra is not None else {})
      logging.info('%s', message(record, eta))
    if after_call is not None:
      after_call(state, step)
  return state
