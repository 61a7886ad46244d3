"""Elastic weight consolidation (Kirkpatrick et al., 2017) and online EWC (Schwarz et al., 2018).

Memory (fixed shapes, flat parameter vectors of size `P`):

* `fisher [K, P]`, `anchor [K, P]`, `mask [K]`: EWC keeps one slot per task (`K = T`);
  online EWC keeps one (`K = 1`): `F <- gamma * F + F_t`, anchor `<-` the parameters
  after task `t`.
* penalty: `lambda / 2 * sum_k mask_k * sum_p F[k, p] (theta_p - anchor[k, p])^2`.

The Fisher is the diagonal of the model's Fisher information on `n` training inputs of the
task, with one label per input sampled from the model's predictive distribution (the
"true" Fisher, not the empirical one with the data labels; `labels='sample'`), or the model's
most probable label (`labels='argmax'`, as in van de Ven & Tolias's code:
`label = output.max(1)[1]`; much smaller than the sampled Fisher once the model is confident,
so it needs a larger lambda), averaged over inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def ewc_penalty(flat_params: jax.Array, memory: dict[str, jax.Array],
                strength: float) -> jax.Array:
  """`strength / 2 * sum_k mask_k sum_p F[k, p] (theta_p - anchor[k, p])^2`.

  Args:
    flat_params: `[P]` the current parameters, flattened.
    memory: `{'fisher': [K, P], 'anchor': [K, P], 'mask': [K]}`.
    strength: lambda (>= 0).

  Returns:
    scalar; 0 at the anchors or with an empty memory.
  """
  sq = jnp.square(flat_params[None] - memory['anchor'])  # [K, P]
  return 0.5 * strength * jnp.sum(memory['mask'][:, None] * memory['fisher'] * sq)


FISHER_LABELS = ('sample', 'argmax')


def fisher_diagonal(log_probs_fn: Callable[[jax.Array, jax.Array], jax.Array],
                    flat_params: jax.Array, x: jax.Array, key: jax.Array,
                    chunk: int = 100, labels: str = 'sample') -> jax.Array:
  """Diagonal Fisher `[P]`: mean over inputs of `(d log p(y | x) / d theta)^2`.

  Args:
    log_probs_fn: `(flat_params [P], x [B, D]) -> log-probabilities [B, C]`.
    flat_params: `[P]`.
    x: `[n, D]` inputs; `n` must be a multiple of `chunk` (per-example gradients are
      computed `chunk` at a time).
    key: for the sampled labels (unused with `labels='argmax'`).
    chunk: examples per vectorised gradient computation.
    labels: `'sample'`: `y ~ p(.|x)`; `'argmax'`: `y = argmax p(.|x)`.
  """
  n = x.shape[0]
  if n % chunk:
    raise ValueError(f'x: expected a number of examples divisible by chunk={chunk}, received {n}.')
  if labels not in FISHER_LABELS:
    raise ValueError(f'labels: expected one of {FISHER_LABELS}, received {labels!r}.')
  log_probs = log_probs_fn(flat_params, x)  # [n, C]
  labels = (jax.random.categorical(key, log_probs) if labels == 'sample'
            else jnp.argmax(log_probs, -1))  # [n]

  def one(p, xi, yi):  # one example
    return log_probs_fn(p, xi[None])[0, yi]

  def body(total, xy):
    xs, ys = xy
    g = jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(flat_params, xs, ys)  # [chunk, P]
    return total + jnp.sum(jnp.square(g), 0), None

  xs = x.reshape(n // chunk, chunk, *x.shape[1:])
  total, _ = jax.lax.scan(body, jnp.zeros_like(flat_params),
                          (xs, labels.reshape(n // chunk, chunk)))
  return total / n


def update_ewc_memory(memory: dict[str, jax.Array], fisher: jax.Array, flat_params: jax.Array,
                      task_id: jax.typing.ArrayLike, gamma: float | None) -> dict[str, jax.Array]:
  """The memory after task `task_id`: slot `task_id` (EWC, `gamma=None`) or the one online slot.

  Args:
    memory: `{'fisher': [K, P], 'anchor': [K, P], 'mask': [K]}`.
    fisher: `[P]` this task's Fisher diagonal.
    flat_params: `[P]` the parameters after this task.
    task_id: int scalar.
    gamma: online EWC's decay of the old Fisher, or None for one slot per task.
  """
  if gamma is None:
    return {'fisher': memory['fisher'].at[task_id].set(fisher),
            'anchor': memory['anchor'].at[task_id].set(flat_params),
            'mask': memory['mask'].at[task_id].set(1.0)}
  return {'fisher': gamma * memory['fisher'] + fisher[None],
          'anchor': flat_params[None],
          'mask': jnp.ones_like(memory['mask'])}
