"""The hypernetwork output regulariser of von Oswald et al. (ICLR 2020), equation (2).

While task `t` (0-based) is learned, the outputs of the hypernetwork for the embeddings of
the earlier tasks `t' < t` are kept close to the outputs stored when task `t - 1` ended
(`Theta*_{t'} = f_h(e_{t'}, Theta_h*)`, with `Theta_h*` the hypernetwork before task `t`):

    L_out = beta / t * sum_{t' < t} || f_h(e_{t'}, Theta_h + dTheta_h) - Theta*_{t'} ||^2

(the paper's `beta / (T - 1)` with `T = t + 1` tasks seen). The earlier embeddings are
constants (no gradient). `dTheta_h` is the optional one-step lookahead: the change the task
loss alone would make, here one SGD step `-lookahead_lr * grad L_task`, treated as a
constant, so that the regulariser is evaluated where the parameters are about to go.
Without lookahead `dTheta_h = 0`.

Shapes are static: outputs and stored outputs are `[T, P]` for all `T = num_tasks` task
slots, and `stored_mask(task_id, T)` selects the earlier tasks, so one compiled program
serves every task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def stored_mask(task_id: jax.typing.ArrayLike, num_tasks: int) -> jax.Array:
  """`[num_tasks]` float mask, 1 for the tasks `t' < task_id` whose outputs are regularised."""
  return (jnp.arange(num_tasks) < task_id).astype(jnp.float32)


def output_regularizer(outputs: jax.Array, stored: jax.Array, task_id: jax.typing.ArrayLike,
                       beta: float) -> jax.Array:
  """`beta / task_id * sum_{t' < task_id} ||outputs[t'] - stored[t']||^2` (0 for task 0).

  Args:
    outputs: `[T, P]` the hypernetwork's current flat outputs for every task embedding.
    stored: `[T, P]` the outputs stored after the previous task (rows `>= task_id` unused).
    task_id: int scalar, the task being learned (0-based).
    beta: regularisation strength (>= 0).

  Returns:
    scalar.
  """
  if outputs.ndim != 2 or outputs.shape != stored.shape:
    raise ValueError(f'outputs, stored: expected equal shapes [T, P], received {outputs.shape} '
                     f'and {stored.shape}.')
  mask = stored_mask(task_id, outputs.shape[0])  # [T]
  per_task = jnp.sum(jnp.square(outputs - stored), axis=-1)  # [T]
  return beta * jnp.sum(mask * per_task) / jnp.maximum(jnp.sum(mask), 1.0)
