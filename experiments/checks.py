"""Config validators shared by every experiment: each names the dotted key, the expected and the
received value (`config.train.batch_size: expected an integer >= 1, received 0.`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import ml_collections


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
