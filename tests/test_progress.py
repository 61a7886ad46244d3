"""The metric log shared by the training loops (`experiments.progress`)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import events, progress


def test_metric_log_records_means_rates_and_files(tmp_path):
  """A record: the loop's fields, the means since the last record (non-finite values aside),
  the largest loss, steps per computing second (the seconds the loop reported, so compilation
  is out), the wall time; `metrics.jsonl` rewritten with every record, TensorBoard events
  at the global step, the loop's fields left out."""
  path = str(tmp_path / 'metrics.jsonl')
  kept = [{'task': 0, 'step': 4, 'loss': 9.0}]  # from before a resume
  with events.EventWriter(str(tmp_path), start_step=4) as writer:
    log = progress.MetricLog(path, writer, kept, total_steps=12, start_step=4)
    log.rewrite()
    assert [json.loads(line) for line in open(path)] == kept
    log.add({'loss': np.array([1.0, 3.0]), 'acc': np.array([0.5, np.nan])}, run_s=0.5)
    log.add({'loss': np.array([2.0, 6.0]), 'acc': np.array([0.7, 0.9])}, run_s=1.5)
    assert log.steps_per_s == pytest.approx(2.0)  # 4 steps in 2 s
    assert str(log.eta()) == '0:00:02'  # 4 steps left at 2 steps/s
    record = log.flush(8, {'task': 1, 'step': 4})
  assert list(record)[:2] == ['task', 'step']
  assert record['loss'] == 3.0 and record['acc'] == pytest.approx(0.7)
  assert record['loss_max'] == 6.0 and record['steps_per_s'] == pytest.approx(2.0)
  assert record['wall_s'] >= 0
  lines = [json.loads(line) for line in open(path)]
  assert lines == kept + [record]
  scalars = events.read_scalars(str(tmp_path / events.EVENTS_DIR))
  assert scalars['loss'] == [(8, 3.0)] and 'task' not in scalars and 'step' not in scalars


def test_compiled_compiles_once_per_static_value_and_times_apart():
  calls = []

  def chunk(x, n):
    calls.append(n)  # traced once per compilation
    return jax.lax.fori_loop(0, n, lambda i, v: v * 1.5, x)

  program = progress.Compiled(chunk, static_argnums=(1,))
  out, seconds = program.timed(jnp.ones(3), 2)
  np.testing.assert_allclose(out, 2.25)
  first = program.compile_s
  assert first > 0 and seconds >= 0 and calls == [2]
  np.testing.assert_allclose(program(jnp.ones(3), 2), 2.25)
  assert program.compile_s == first and calls == [2]  # no recompilation
  program(jnp.ones(3), 3)
  assert program.compile_s > first and calls == [2, 3]
