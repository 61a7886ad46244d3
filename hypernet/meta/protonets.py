"""Prototypical networks (Snell, Swersky & Zemel, 2017) for N-way classification tasks.

A shared embedding network (a `Target`, e.g. Conv-4 without its head) maps
examples to `[D]`; a task's prototypes are the mean support embedding of each
class; a query's logits are minus its squared Euclidean distances to the
prototypes. No inner loop: `num_steps` must be 0. The embedding weights are
shared by all tasks, so under `vmap` the network runs with unbatched weights
(tasks fold into the batch dimension, no per-task convolution kernels).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from hypernet.meta.base import MetaLearner
from hypernet.target import PyTree, Target


@dataclasses.dataclass(frozen=True)
class ProtoNet(MetaLearner):
  """Attributes:
    target: the embedding network, a `Target` mapping `x [N, ...]` to `[N, D]` (`target`: every
      learner's name for the network it adapts or reads).
    ways: number of classes per task (labels `0..ways-1`).
  """
  target: Target | None = None
  ways: int = 5
  loss: str = 'xent'
  inner_steps: int = 0
  has_inner_loop: ClassVar[bool] = False

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.target, Target):
      raise TypeError(f'target: expected a hypernet.Target, received '
                      f'{type(self.target).__name__}.')
    if self.loss != 'xent':
      raise ValueError(f"loss: ProtoNet classifies, expected 'xent', received {self.loss!r}.")
    if not isinstance(self.ways, int) or self.ways < 2:
      raise ValueError(f'ways: expected an integer >= 2, received {self.ways!r}.')

  def init(self, key: jax.Array) -> PyTree:
    return self.target.init(key)

  def adapt(self, meta_params, x_support, y_support, num_steps, key=None):
    """Prototypes `[ways, D]`: the mean support embedding of each class."""
    del key  # deterministic
    self.check_num_steps(num_steps)
    z = self.target.apply(meta_params, x_support)  # [K*N, D]
    onehot = jax.nn.one_hot(y_support, self.ways, dtype=z.dtype)  # [K*N, N]
    return (onehot.T @ z) / jnp.maximum(onehot.sum(0), 1.0)[:, None]  # [N, D]

  def predict(self, meta_params, adapted, x):
    """Logits `[Q, ways]`: minus squared distances to the prototypes."""
    z = self.target.apply(meta_params, x)  # [Q, D]
    return -jnp.sum(jnp.square(z[:, None, :] - adapted[None]), -1)
