"""Per-task losses: `(predictions, targets) -> scalar`, for ONE task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOSSES = ('mse', 'xent')


def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
  """Mean squared error over all elements; `pred` and `y` of the same shape `[N, ...]`."""
  return jnp.mean(jnp.square(pred - y))


def xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy; `logits [N, C]`, integer `labels [N]`."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of correct argmax predictions; `logits [N, C]`, `labels [N]`."""
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def get_loss(name: str):
  if name not in LOSSES:
    raise ValueError(f'loss: expected one of {LOSSES}, received {name!r}.')
  return {'mse': mse, 'xent': xent}[name]
