"""The one inner-loop helper every gradient-based learner uses.

`inner_sgd` runs `num_steps` steps of (per-parameter) SGD on a support loss in
`jax.lax.scan`. The meta-gradient flows through the steps (second order) unless
`first_order=True` (the gradient is taken as a constant, FOMAML); with
`remat=True` each step is rematerialised (`jax.checkpoint`), so the backward
pass stores only the step's inputs: memory grows with the step count by one
parameter set per step instead of every intermediate activation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from hypernet.target import PyTree


def inner_sgd(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, lr: float | PyTree,
              num_steps: int, *, first_order: bool = False,
              remat: bool = False) -> tuple[PyTree, jax.Array]:
  """`num_steps` SGD steps on `loss_fn` from `params`.

  Args:
    loss_fn: `params -> scalar`, the support loss of ONE task.
    params: the starting point (a pytree).
    lr: a scalar, or a pytree like `params` (Meta-SGD's per-parameter rates).
    num_steps: a Python int >= 0 (static).
    first_order: stop the gradient of each step's gradient (FOMAML).
    remat: rematerialise each step in the backward pass.

  Returns:
    `(adapted params, losses [num_steps])`, the support loss before each step.
  """
  if not isinstance(num_steps, int) or num_steps < 0:
    raise ValueError(f'num_steps: expected an integer >= 0, received {num_steps!r}.')
  per_param = not isinstance(lr, (int, float)) and not (hasattr(lr, 'ndim') and lr.ndim == 0)

  def step(p, _):
    loss, g = jax.value_and_grad(loss_fn)(p)
    if first_order:
      g = jax.lax.stop_gradient(g)
    if per_param:
      p = jax.tree.map(lambda w, a, d: w - a * d, p, lr, g)
    else:
      p = jax.tree.map(lambda w, d: w - lr * d, p, g)
    return p, loss

  if remat:
    step = jax.checkpoint(step)
  if num_steps == 0:
    return params, jnp.zeros((0,))
  return jax.lax.scan(step, params, None, length=num_steps)
