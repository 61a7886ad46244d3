"""The metric log every training loop shares: records, steps/s, ETA, `metrics.jsonl`, TensorBoard.

The step loop (`experiments.loop.run_steps`, which `experiments.train` runs over a
meta-training run and `experiments.continual` once per task) hands each jitted call's
metrics to `MetricLog.add`,
with the seconds the call computed (compilation excluded: `Compiled`), and calls `flush` at
its logging boundaries. A record holds the fields the loop names (`step`, and `task` in the
continual loop), the means since the previous record of every metric (non-finite values
aside: a dropped update), the largest single-step loss (`loss_max`: spikes), `steps_per_s`
(compilation excluded, so the first record is comparable with the others) and `wall_s`
(wall-clock seconds since the previous record, compilation included). Each record is
appended to `metrics.jsonl` (rewritten atomically, so a reader never sees half a line) and
to the TensorBoard events. One definition of each, where the two loops had drifted (steps/s
with compilation in one and not the other).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from experiments import events, outputs


def finite_mean(values: np.ndarray) -> float | None:
  """The mean of the finite values (None if there is none: every step's update dropped)."""
  finite = values[np.isfinite(values)]
  return float(np.mean(finite)) if finite.size else None


def finite_max(values: np.ndarray) -> float | None:
  """The largest finite value (None if there is none)."""
  finite = values[np.isfinite(values)]
  return float(np.max(finite)) if finite.size else None


class MetricLog:
  """Records of one run (see the module docstring).

  Args:
    path: the run's `metrics.jsonl`.
    writer: its TensorBoard writer.
    records: the records kept from before a resume (rewritten first, then extended).
    total_steps: the run's last global step (for the ETA).
    start_step: the global step training starts from (a resumed run: where it resumes).
  """

  def __init__(self, path: str, writer: events.EventWriter, records: Sequence[dict[str, Any]],
               total_steps: int, start_step: int):
    self.path, self.writer, self.total_steps = path, writer, total_steps
    self.records = list(records)
    self._pending: dict[str, list[np.ndarray]] = {}
    self._steps = 0  # steps since the last record
    self._run_s = 0.0  # their computing seconds, compilation excluded
    self._t_last = time.perf_counter()
    self._step = start_step

  def rewrite(self) -> None:
    """`metrics.jsonl` with the records so far (the kept ones after a resume)."""
    outputs.write_text(self.path, ''.join(json.dumps(r) + '\n' for r in self.records))

  def add(self, metrics: Mapping[str, Any], run_s: float) -> None:
    """One call's metrics `{name: [n]}` (the next `n` steps), computed in `run_s` seconds."""
    n = 0
    for name, values in metrics.items():
      values = np.asarray(values)
      self._pending.setdefault(name, []).append(values)
      n = values.shape[0]
    self._steps += n
    self._step += n
    self._run_s += run_s

  @property
  def steps_per_s(self) -> float:
    """Steps per computing second since the last record (nan before any)."""
    return self._steps / self._run_s if self._run_s > 0 else float('nan')

  def eta(self) -> datetime.timedelta | str:
    """The time left to `total_steps` at the current rate."""
    rate = self.steps_per_s
    return (datetime.timedelta(seconds=round((self.total_steps - self._step) / rate))
            if rate > 0 else '?')

  def flush(self, global_step: int, fields: Mapping[str, Any],
            extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes and returns the record of the steps since the last one: `fields` first (the
    loop's step keys, also left out of TensorBoard), the metric means, `loss_max`,
    `steps_per_s`, `wall_s`, then `extra` (e.g. tracked evaluations)."""
    now = time.perf_counter()
    record = dict(fields)
    record.update({name: finite_mean(np.concatenate(v))
                   for name, v in self._pending.items()})
    if 'loss' in self._pending:
      record['loss_max'] = finite_max(np.concatenate(self._pending['loss']))
    record['steps_per_s'] = self.steps_per_s
    record['wall_s'] = now - self._t_last
    record.update(extra or {})
    self.records.append(record)
    self.rewrite()
    self.writer.write(global_step, record, skip=tuple(fields))
    self._pending, self._steps, self._run_s, self._t_last = {}, 0, 0.0, now
    return record


class Compiled:
  """`fn` jitted, compiled ahead of time once per value of its static arguments, the
  compilation timed apart (`compile_s`) so that a loop's steps/s exclude it.

  Args:
    fn: the function.
    static_argnums: its static arguments (e.g. a chunk's length), as for `jax.jit`.
    donate_argnums: as for `jax.jit`.
    compiler_options: XLA options (`experiments.programs.FAST_COMPILE`), or None.
  """

  def __init__(self, fn: Callable[..., Any], static_argnums: tuple[int, ...] = (),
               donate_argnums: tuple[int, ...] = (),
               compiler_options: Mapping[str, Any] | None = None):
    self._jitted = jax.jit(fn, static_argnums=static_argnums, donate_argnums=donate_argnums)
    self._static = tuple(static_argnums)
    self._options = compiler_options
    self._compiled: dict[tuple[Any, ...], Any] = {}
    self.compile_s = 0.0
    self.run_s = 0.0  # seconds in `timed` calls, compilation excluded

  def __call__(self, *args):
    key = tuple(args[i] for i in self._static)
    if key not in self._compiled:
      t0 = time.perf_counter()
      self._compiled[key] = self._jitted.lower(*args).compile(
          compiler_options=self._options)
      self.compile_s += time.perf_counter() - t0
    dynamic = [a for i, a in enumerate(args) if i not in self._static]
    return self._compiled[key](*dynamic)

  def timed(self, *args) -> tuple[Any, float]:
    """`(outputs, seconds computing)`: the call's wall time less any compilation, the outputs
    fetched to the host (so the time covers the computation)."""
    t0, c0 = time.perf_counter(), self.compile_s
    out = jax.block_until_ready(self(*args))
    seconds = time.perf_counter() - t0 - (self.compile_s - c0)
    self.run_s += seconds
    return out, seconds
