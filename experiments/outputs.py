"""A run's output files: written atomically (a temporary name, then `os.replace`), by process 0
alone in a multi-process run; `results.json` as strict JSON; `metrics.jsonl` read back."""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hypernet import parallel


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


def plot_learning_curve(path: str, records: list[dict[str, Any]],
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
