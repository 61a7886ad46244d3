"""Elastic weight consolidation (Kirkpatrick et al., 2017) and online EWC (Schwarz et al., 2018).

EWC's penalty after tasks `1..t` is a sum of one quadratic per task,
`lambda / 2 * sum_k sum_p F_k[p] (theta_p - theta*_k[p])^2`. A sum of quadratics in `theta`
is one quadratic, so the memory holds it merged, with fixed shapes whatever the number of
tasks (flat parameter vectors of size `P`):

* `precision [P]`: `A = sum_k F_k`; `center [P]`: `m = sum_k F_k theta*_k / A` (the
  Fisher-weighted mean of the anchors; where `A = 0`, the latest anchor); `offset []`:
  `sum_p sum_k F_k (theta*_k - m)^2`, the constant that makes the merged form equal to the
  sum: `sum_k F_k (theta - theta*_k)^2 = A (theta - m)^2 + offset`, exactly.
  Adding task `t`'s quadratic is the two-quadratic identity
  `A (theta - m)^2 + F (theta - a)^2 = (A + F) (theta - m')^2 + A F / (A + F) (m - a)^2`,
  numerically stable (no difference of large terms); the penalty and its gradient
  `lambda A (theta - m)` cost one pass over `P` per step, not one per earlier task.
* online EWC: `A <- gamma A + F_t`, `m <-` the parameters after task `t`, `offset = 0`.
* penalty: `lambda / 2 * (sum_p A[p] (theta_p - m[p])^2 + offset)`.

The Fisher is the diagonal of the model's Fisher information on `n` training inputs of the
task, with one label per input sampled from the model's predictive distribution (the
"true" Fisher, not the empirical one with the data labels; `labels='sample'`), or the model's
most probable label (`labels='argmax'`, as in van de Ven & Tolias's code:
`label = output.max(1)[1]`; much smaller than the sampled Fisher once the model is confident,
so it needs a larger lambda), averaged over inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def init_ewc_memory(num_params: int) -> dict[str, jax.Array]:
  """The empty memory: no quadratic yet (the penalty is 0)."""
  return {'precision': jnp.zeros((num_params,)), 'center': jnp.zeros((num_params,)),
          'offset': jnp.zeros(())}


def ewc_penalty(flat_params: jax.Array, memory: dict[str, jax.Array],
                strength: float) -> jax.Array:
  """`strength / 2 * (sum_p A[p] (theta_p - m[p])^2 + offset)` (see the module docstring).

  Args:
    flat_params: `[P]` the current parameters, flattened.
    memory: `{'precision': [P], 'center': [P], 'offset': []}`.
    strength: lambda (>= 0).

  Returns:
    scalar; 0 with an empty memory or, after one task, at its anchor.
  """
  sq = jnp.square(flat_params - memory['center'])
  return 0.5 * strength * (jnp.sum(memory['precision'] * sq) + memory['offset'])


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
  labels = _sampled_labels(log_probs_fn(flat_params, x), key, labels)  # [n]

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


class NotDenseError(ValueError):
  """`dense_fisher_diagonal` was given a network it cannot handle (use `fisher_diagonal`)."""


def _sampled_labels(log_probs: jax.Array, key: jax.Array | None, labels: str) -> jax.Array:
  if labels not in FISHER_LABELS:
    raise ValueError(f'labels: expected one of {FISHER_LABELS}, received {labels!r}.')
  if labels == 'sample':
    return jax.random.categorical(key, log_probs)
  return jnp.argmax(log_probs, -1)


def dense_fisher_diagonal(log_probs_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
                          x: jax.Array, key: jax.Array | None, chunk: int = 500,
                          labels: str = 'sample') -> Any:
  """`fisher_diagonal` in one forward-backward pass per chunk, for networks of Dense layers.

  For a `flax.linen.Dense` layer `z = a W + b` applied to a batch `a [B, I]`, the gradient of
  example `n`'s loss is `a_n (outer) delta_n` for `W` and `delta_n` for `b`, with
  `delta_n = d loss_n / d z_n`, so the sum over examples of the squared gradients is
  `(a * a)^T (delta * delta)` `[I, O]` and `sum_n delta_n^2` `[O]`. The `delta`s of every
  example come out of one backward pass (a zero added to each layer's output is
  differentiated), so no per-example gradient `[B, P]` is ever formed: the cost is that of
  one training step on the `n` inputs, against `n` separate gradients for `fisher_diagonal`.
  Exact (equal to `fisher_diagonal` up to float rounding).

  Args:
    log_probs_fn: `(params, x [B, D]) -> log-probabilities [B, C]`, a function whose
      parameters all belong to `flax.linen.Dense` layers, each called once per forward pass
      on `[B, features]` inputs (any parameter-free operations in between: activations,
      head selection).
    params: the parameter tree `log_probs_fn` reads (as given to `Module.apply`, without the
      `'params'` level).
    x: `[n, D]` inputs; `n` a multiple of `chunk`.
    key: for the sampled labels (unused with `labels='argmax'`).
    chunk: examples per forward-backward pass (memory: the activations of `chunk` inputs).
    labels: `'sample'` (`y ~ p(.|x)`) or `'argmax'` (`y = argmax p(.|x)`).

  Returns:
    the diagonal Fisher with the structure of `params` (mean over the `n` inputs).

  Raises:
    NotDenseError: a parameter outside a Dense layer, a Dense layer called twice or on inputs
      that are not `[B, features]`.
  """
  n = x.shape[0]
  if n % chunk:
    raise ValueError(f'x: expected a number of examples divisible by chunk={chunk}, received {n}.')
  if labels not in FISHER_LABELS:
    raise ValueError(f'labels: expected one of {FISHER_LABELS}, received {labels!r}.')

  def forward(p, xb, eps):
    """log-probs, with `eps[i]` added to the i-th Dense call's output; and each call's
    (path of module names, input, output)."""
    calls = []

    def interceptor(next_fun, args, kwargs, context):
      if not isinstance(context.module, nn.Dense) or context.method_name != '__call__':
        return next_fun(*args, **kwargs)
      out = next_fun(*args, **kwargs)
      calls.append((tuple(context.module.scope.path), args[0], out))
      return out if eps is None else out + eps[len(calls) - 1]

    with nn.intercept_methods(interceptor):
      log_probs = log_probs_fn(p, xb)
    return log_probs, calls

  paths = []  # static: read while tracing the probe

  def probe(xb):
    _, calls = forward(params, xb, None)
    paths.extend(path for path, _, _ in calls)
    return [(a, z) for _, a, z in calls]

  io = jax.eval_shape(probe, x[:chunk])
  if len(set(paths)) != len(paths):
    raise NotDenseError(f'log_probs_fn: a Dense layer is called more than once ({paths}); use '
                        'fisher_diagonal.')
  for path, (a, _) in zip(paths, io):
    if a.ndim != 2 or a.shape[0] != chunk:
      raise NotDenseError(f'log_probs_fn: Dense layer {"/".join(path)} expected inputs '
                          f'[{chunk}, features], received {a.shape}; use fisher_diagonal.')
  covered = set()
  for path in paths:
    node = params
    for name in path:
      if not isinstance(node, dict) or name not in node:
        raise NotDenseError(f'params: no entry for Dense layer {"/".join(path)}.')
      node = node[name]
    covered.update(jax.tree_util.keystr(tuple(jax.tree_util.DictKey(p) for p in path) + k)
                   for k, _ in jax.tree_util.tree_flatten_with_path(node)[0])
  missing = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]
             if jax.tree_util.keystr(k) not in covered]
  if missing:
    raise NotDenseError(f'params: {missing} belong to no Dense layer; use fisher_diagonal.')

  xs = x.reshape(n // chunk, chunk, *x.shape[1:])
  log_probs = jax.lax.map(lambda xb: forward(params, xb, None)[0], xs)  # [n / chunk, chunk, C]
  ys = _sampled_labels(log_probs.reshape(n, -1), key, labels).reshape(n // chunk, chunk)

  def chunk_sums(xb, yb):
    def total_log_lik(eps):
      lp, calls = forward(params, xb, eps)
      return jnp.sum(jnp.take_along_axis(lp, yb[:, None], -1)), [a for _, a, _ in calls]

    eps0 = [jnp.zeros(z.shape, z.dtype) for _, z in io]
    deltas, inputs = jax.grad(total_log_lik, has_aux=True)(eps0)
    return {path: {'kernel': jnp.square(a).T @ jnp.square(d), 'bias': jnp.sum(jnp.square(d), 0)}
            for path, a, d in zip(paths, inputs, deltas)}

  def body(total, xy):
    return jax.tree.map(jnp.add, total, chunk_sums(*xy)), None

  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(chunk_sums, xs[0], ys[0]))
  total, _ = jax.lax.scan(body, zeros, (xs, ys))

  def place(node, path=()):
    if path in total:
      return {k: total[path][k].reshape(v.shape) / n for k, v in node.items()}
    return {k: place(v, path + (k,)) for k, v in node.items()}
  return place(params)


def update_ewc_memory(memory: dict[str, jax.Array], fisher: jax.Array, flat_params: jax.Array,
                      gamma: float | None) -> dict[str, jax.Array]:
  """The memory after a task: its quadratic `F (theta - a)^2` added (EWC, `gamma=None`), or
  the online update (`A <- gamma A + F`, centre `a`).

  Args:
    memory: `{'precision': [P], 'center': [P], 'offset': []}`.
    fisher: `[P]` this task's Fisher diagonal `F`.
    flat_params: `[P]` the parameters after this task, `a`.
    gamma: online EWC's decay of the old Fisher, or None for EWC (one quadratic per task).
  """
  a, f = flat_params, fisher
  if gamma is not None:
    return {'precision': gamma * memory['precision'] + f, 'center': a,
            'offset': jnp.zeros_like(memory['offset'])}
  prec, m = memory['precision'], memory['center']
  total = prec + f
  safe = jnp.where(total > 0, total, 1.0)
  center = jnp.where(total > 0, m + f / safe * (a - m), a)  # the weighted mean of m and a
  offset = memory['offset'] + jnp.sum(jnp.where(total > 0, prec * f / safe, 0.0)
                                      * jnp.square(m - a))
  return {'precision': total, 'center': center, 'offset': offset}
