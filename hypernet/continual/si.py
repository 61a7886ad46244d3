"""Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017), as in van de Ven & Tolias (2019).

While task `mu` is learned, every optimiser step adds to a running path integral per parameter

    omega_k += -g_k * (theta_k(after) - theta_k(before)),

with `g_k` the gradient used for that step, taken at `theta(before)`. At the end of the task

    Omega_k += omega_k / (Delta_k^2 + xi),   Delta_k = theta_k(end of mu) - theta*_k,

`theta*` <- the parameters at the end of task `mu`, and `omega` <- 0. While later tasks are
learned the loss gains `c * sum_k Omega_k (theta_k - theta*_k)^2` (no 1/2, as in both
references).

Which gradient `g`: van de Ven's code (GMvandeVen/continual-learning,
`train.py`/`train/train_task_based.py`: `W[n].add_(-p.grad*(p.detach()-p_old[n]))` after
`loss_total.backward()`, `loss_total` including `si_c * surrogate_loss()`) uses the gradient of
the TOTAL loss, SI penalty included (`path_grad='total'`, the default here). Zenke et al.'s own
code (ganguli-lab/pathint, `protocols.py`: `prev_val - vars['unreg_grads'][w] * vars['deltas'][w]`)
uses the gradient of the task loss WITHOUT the penalty (`path_grad='task'`); it also clips the
accumulated `Omega` at 0 (`tf.nn.relu`), which van de Ven's code, and this one, do not.

All functions are pure and work on any parameter pytree (a flat `[P]` vector included), leaf
by leaf. Memory: `{'omega': running path integral, 'importance': Omega, 'anchor': theta*}`,
each shaped like the parameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
PATH_GRADS = ('total', 'task')


def init_si_memory(params: PyTree) -> dict[str, PyTree]:
  """Before the first task: `omega = Omega = 0`, `theta* = params` (the initial parameters,
  so that the first task's `Delta` is its total change from initialisation)."""
  zeros = jax.tree.map(jnp.zeros_like, params)
  return {'omega': zeros, 'importance': zeros, 'anchor': jax.tree.map(jnp.asarray, params)}


def si_penalty(params: PyTree, memory: dict[str, PyTree], strength: float) -> jax.Array:
  """`strength * sum_k Omega_k (theta_k - theta*_k)^2` (scalar; 0 before the first task ends).

  Args:
    params: the current parameters.
    memory: `init_si_memory`/`update_si_memory`'s dict (same structure as `params`).
    strength: `c` (>= 0).
  """
  terms = jax.tree.map(lambda p, w, a: jnp.sum(w * jnp.square(p - a)), params,
                       memory['importance'], memory['anchor'])
  return strength * sum(jax.tree.leaves(terms), jnp.zeros(()))


def si_penalty_grad(params: PyTree, memory: dict[str, PyTree], strength: float) -> PyTree:
  """The gradient of `si_penalty` with respect to `params`: `2 c Omega (theta - theta*)`."""
  return jax.tree.map(lambda p, w, a: 2.0 * strength * w * (p - a), params,
                      memory['importance'], memory['anchor'])


def accumulate_path_integral(memory: dict[str, PyTree], old_params: PyTree, new_params: PyTree,
                             grads: PyTree) -> dict[str, PyTree]:
  """One optimiser step's contribution: `omega += -grads * (new_params - old_params)`.

  Args:
    memory: the SI memory.
    old_params, new_params: the parameters before and after the step.
    grads: the gradient the path integral uses (see the module docstring), at `old_params`.

  Returns:
    the memory with the updated `omega` (`importance` and `anchor` unchanged).
  """
  omega = jax.tree.map(lambda w, g, new, old: w - g * (new - old), memory['omega'], grads,
                       new_params, old_params)
  return {**memory, 'omega': omega}


def update_si_memory(memory: dict[str, PyTree], params: PyTree, xi: float) -> dict[str, PyTree]:
  """End of a task: `Omega += omega / ((params - theta*)^2 + xi)`, `theta* <- params`, `omega <- 0`.

  Args:
    memory: the SI memory after the task's steps.
    params: the parameters at the end of the task.
    xi: the damping (> 0; 0.1 in Zenke et al.'s MNIST runs and van de Ven's `--epsilon`).
  """
  importance = jax.tree.map(lambda big, w, p, a: big + w / (jnp.square(p - a) + xi),
                            memory['importance'], memory['omega'], params, memory['anchor'])
  return {'omega': jax.tree.map(jnp.zeros_like, memory['omega']), 'importance': importance,
          'anchor': jax.tree.map(jnp.asarray, params)}
