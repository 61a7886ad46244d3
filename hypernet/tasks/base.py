"""A task as data: support and query sets (and the task's own parameters, for plots)."""

from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class Task:
  """One task (or, with a leading task axis `[T, ...]` on every leaf, a batch of tasks).

  Attributes:
    x_support: `[K, ...]` support inputs.
    y_support: `[K, ...]` support targets (regression values or integer labels).
    x_query: `[Q, ...]` query inputs.
    y_query: `[Q, ...]` query targets.
    info: dict of the task's own parameters (e.g. amplitude and phase `[]`, or an
      episode's class ids `[N]`), for plots and analysis; learners do not read it.
  """
  x_support: jax.Array
  y_support: jax.Array
  x_query: jax.Array
  y_query: jax.Array
  info: dict[str, Any] = flax.struct.field(default_factory=dict)


def check_split(num_points: int, num_support: int, name: str = 'num_support') -> None:
  """A task of `num_points` points split into `num_support` support and the rest query."""
  if not isinstance(num_points, int) or num_points <= 0:
    raise ValueError(f'num_points: expected a positive integer, received {num_points!r}.')
  if not isinstance(num_support, int) or num_support <= 0:
    raise ValueError(f'{name}: expected a positive integer, received {num_support!r}.')
  if num_support >= num_points:
    raise ValueError(f'{name}: expected fewer support shots than the task\'s {num_points} points '
                     f'(at least one query point), received {num_support}.')
