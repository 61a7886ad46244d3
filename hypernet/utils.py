"""Small helpers: parameter counts and compression ratio."""

from __future__ import annotations

import math

import jax
import numpy as np

from hypernet.target import PyTree, Target


def count_params(tree: PyTree) -> int:
  """Number of scalar values in a pytree of arrays or `jax.ShapeDtypeStruct`s
  (so `count_params(jax.eval_shape(hnet.init, ...))` counts without allocating)."""
  return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


def compression_ratio(hnet_params: PyTree, target: Target, *extra: PyTree) -> float:
  """(hypernetwork + embedding parameters) / target parameters.

  Args:
    hnet_params: the hypernetwork's parameters (chunk embeddings and shared
      target leaves included).
    target: the target network.
    *extra: further trees to count, e.g. a task-embedding table.
  """
  return (count_params(hnet_params) + sum(count_params(e) for e in extra)) / target.num_params
