"""Config validators shared by every experiment: each names the dotted key, the expected and the
received value (`config.train.batch_size: expected an integer >= 1, received 0.`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments.programs import jit
from hypernet import meta
from hypernet.target import PyTree, path_str


def get(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value of the dotted `key` ('eval.steps')."""
  value = config
  for part in key.split('.'):
    value = value[part]
  return value


def fail(key: str, expected: str, value: Any) -> None:
  """Raises the ValueError: `config.<key>: expected <expected>, received <value!r>.`"""
  raise ValueError(f'config.{key}: expected {expected}, received {value!r}.')


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def check_int(config: ml_collections.ConfigDict, key: str, minimum: int = 1) -> int:
  """An integer >= `minimum`."""
  value = get(config, key)
  if not _is_int(value) or value < minimum:
    fail(key, f'an integer >= {minimum}', value)
  return value


def check_float(config: ml_collections.ConfigDict, key: str, positive: bool = False) -> float:
  """A finite number >= 0 (> 0 with `positive`)."""
  value = get(config, key)
  ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
  if not ok or value < 0 or (positive and value == 0):
    fail(key, 'a finite number ' + ('> 0' if positive else '>= 0'), value)
  return float(value)


def check_int_tuple(config: ml_collections.ConfigDict, key: str,
                    minimum: int) -> tuple[int, ...]:
  """A non-empty tuple (or list) of integers >= `minimum`."""
  values = get(config, key)
  if (not isinstance(values, (tuple, list)) or not values
      or not all(_is_int(v) and v >= minimum for v in values)):
    fail(key, f'a non-empty tuple of integers >= {minimum}', values)
  return tuple(values)


def check_choice(config: ml_collections.ConfigDict, key: str, choices: Sequence[Any]) -> Any:
  """One of `choices`."""
  value = get(config, key)
  if value not in tuple(choices):
    fail(key, f'one of {tuple(choices)}', value)
  return value


# ------------------------------------------------------------------ config and workdir
# Numeric keys of the learners' sub-dicts (`experiments.learners`), checked here when present so
# that an error names the key the user set (`config.inner.lr`), not a learner's field (e.g.
# `Amortised.inner_lr`): key -> (integer?, minimum).
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
  flat = flatten(config.to_dict())
  for key, (integer, low) in LEARNER_NUMBERS.items():
    if key not in flat:
      continue
    value = flat[key]
    ok = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
          and value >= low)
    if not ok:
      want = f'an integer >= {low}' if integer else f'a finite number >= {low}'
      raise ValueError(f'config.{key}: expected {want}, received {value!r}.')


def check_loop_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the key for invalid values of the keys this loop reads, and
  for any number in the config that is not finite (`check_numbers`)."""
  check_numbers(config)
  for name in ('num_steps', 'steps_per_call', 'log_every', 'checkpoint_every',
               'keep_checkpoints'):
    check_int(config, name)
  check_float(config, 'optimizer.learning_rate', positive=True)
  check_float(config, 'optimizer.grad_clip_norm')  # 0: no clipping
  for key in ('decay_every', 'skip_nonfinite'):  # optional; 0: constant rate / stop on NaN
    if key in config.optimizer:
      check_int(config, f'optimizer.{key}', minimum=0)
  rate = config.optimizer.get('decay_rate', 0.5)
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
    fail('optimizer.decay_rate', 'a number in (0, 1]', rate)
  if 'compute_dtype' in config:
    check_choice(config, 'compute_dtype', meta.base.COMPUTE_DTYPES)
  shard = config.get('shard_tasks', None)
  if shard is not None and not isinstance(shard, bool):
    raise ValueError(f'config.shard_tasks: expected True, False or None (None: shard when '
                     f'there is more than one device), received {shard!r}.')


def flatten(d: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


# ------------------------------------------------------------------ finiteness at run time
def check_finite_metrics(metrics: dict[str, np.ndarray], first_step: int,
                         config: ml_collections.ConfigDict, where: str = '') -> None:
  """Raises FloatingPointError at the first step (1-based) with a non-finite metric (unless
  `config.optimizer.skip_nonfinite`: such a step's update was dropped, and too many in a row
  leave non-finite parameters, which `check_params_finite` names). `where` prefixes the
  step in the message (e.g. `'task 3, '`)."""
  if config.optimizer.get('skip_nonfinite', 0):
    return
  bad = {name: np.flatnonzero(~np.isfinite(v)) for name, v in metrics.items()}
  bad = {name: idx[0] for name, idx in bad.items() if idx.size}
  if bad:
    name = min(bad, key=lambda n: (bad[n], n != 'loss'))
    step = first_step + int(bad[name])
    raise FloatingPointError(
        f'training metric {name!r} is {metrics[name][bad[name]]} (non-finite) at {where}step '
        f'{step} (config.optimizer.learning_rate={config.optimizer.learning_rate}).')


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
