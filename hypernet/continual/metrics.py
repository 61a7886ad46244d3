"""Accuracy-matrix summaries and task inference by predictive entropy.

The accuracy matrix `acc [T, T]` holds the test accuracy on task `i` (row) after training
task `j` (column); entries above the diagonal are tasks not trained yet.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check_square(acc) -> np.ndarray:
  acc = np.asarray(acc, np.float64)
  if acc.ndim != 2 or acc.shape[0] != acc.shape[1]:
    raise ValueError(f'acc: expected a square [T, T] matrix, received shape {acc.shape}.')
  return acc


def average_accuracy(acc) -> float:
  """Final average accuracy: `mean_i acc[i, T-1]`."""
  acc = _check_square(acc)
  return float(acc[:, -1].mean())


def backward_transfer(acc) -> float:
  """BWT (Lopez-Paz & Ranzato, 2017): `mean_{i < T-1} (acc[i, T-1] - acc[i, i])`; 0 for T=1.

  Negative values are forgetting.
  """
  acc = _check_square(acc)
  t = acc.shape[0]
  if t == 1:
    return 0.0
  return float(np.mean(acc[:-1, -1] - np.diag(acc)[:-1]))


def learning_accuracy(acc) -> float:
  """LA (Riemer et al., ICLR 2019): `mean_i acc[i, i]`, each task's accuracy right after its own
  training: what a method could learn, before any forgetting.

  With BWT, it splits the final average accuracy:
  `average_accuracy = learning_accuracy + (T - 1) / T * backward_transfer`.
  """
  acc = _check_square(acc)
  return float(np.mean(np.diag(acc)))


def predictive_entropy(logits: jax.Array) -> jax.Array:
  """`[..., C]` logits -> `[...]` entropy (nats) of the softmax."""
  logp = jax.nn.log_softmax(logits, -1)
  return -jnp.sum(jnp.exp(logp) * logp, -1)


def entropy_task_inference(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Picks, per input, the task whose predictions have the lowest entropy.

  Args:
    logits: `[K, N, C]` the predictions for `N` inputs under each of `K` candidate tasks.

  Returns:
    `(task [N] int, chosen logits [N, C])`.
  """
  if logits.ndim != 3:
    raise ValueError(f'logits: expected [K, N, C], received shape {logits.shape}.')
  task = jnp.argmin(predictive_entropy(logits), axis=0)  # [N]
  chosen = jnp.take_along_axis(logits, task[None, :, None], axis=0)[0]  # [N, C]
  return task, chosen
