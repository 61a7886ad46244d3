"""Task conditioning blocks: what a hypernetwork is conditioned on.

* `TaskEmbedding`: a learned table, one vector per task id (continual learning,
  multi-task); entries start N(0, 1), the second moment hyperfan assumes.
* `SetEncoder`: a permutation-invariant encoder of a support set of (x, y)
  pairs (Deep Sets: `rho(pool_k phi([x_k, y_k]))`), with mean pooling,
  attention pooling by learned seed queries (PMA, Set Transformer), or class
  pooling (classification: one mean per class, concatenated in label order). A mask
  allows padded sets. Its output is layer-normalised by default, so that codes
  have the unit second moment that hyperfan initialisation assumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import checkify

from hypernet.hypernets.base import MLP, check_positive

POOLINGS = ('mean', 'attention', 'class')


OUT_OF_RANGE = ('nan', 'clip', 'checkify')


class TaskEmbedding(nn.Module):
  """`task_id` (int scalar) -> `[features]`. Ids must be in `[0, num_tasks)`.

  A concrete id outside `[0, num_tasks)` (a Python or NumPy integer, a concrete array) is a
  ValueError. A traced id (under `jit`, `vmap`, `scan`) cannot be checked at trace time; what
  it gives is `out_of_range`:

  * `'nan'` (default): a row of NaN, so that a wrong id makes the loss non-finite (the
    training loops stop on that, naming the step) instead of silently reading another
    task's row. (Plain indexing would clamp 5 to the last row and wrap -1 around to it.)
  * `'clip'`: the id is clamped to `[0, num_tasks - 1]` (XLA's gather semantics; -1 -> 0).
  * `'checkify'`: a `jax.experimental.checkify.check`: call the model through
    `checkify.checkify(fn)`, which returns the error (`err.throw()` raises it); a jitted
    call without `checkify` fails at trace time.

  Attributes:
    num_tasks: rows of the table.
    features: size of each row.
    out_of_range: 'nan', 'clip' or 'checkify' (see above).
  """
  num_tasks: int
  features: int
  out_of_range: str = 'nan'

  def __post_init__(self):
    check_positive('num_tasks', self.num_tasks)
    check_positive('features', self.features)
    if self.out_of_range not in OUT_OF_RANGE:
      raise ValueError(f'out_of_range: expected one of {OUT_OF_RANGE}, received '
                       f'{self.out_of_range!r}.')
    super().__post_init__()

  @nn.compact
  def __call__(self, task_id: jax.Array) -> jax.Array:
    task_id = jnp.asarray(task_id)
    if task_id.ndim != 0 or not jnp.issubdtype(task_id.dtype, jnp.integer):
      raise ValueError(f'task_id: expected an integer scalar (vmap for many tasks), received '
                       f'shape {task_id.shape} dtype {task_id.dtype}.')
    if not isinstance(task_id, jax.core.Tracer) and not 0 <= int(task_id) < self.num_tasks:
      raise ValueError(f'task_id: expected an integer in [0, {self.num_tasks}) (num_tasks='
                       f'{self.num_tasks}), received {int(task_id)}.')
    table = self.param('embedding', nn.initializers.normal(1.0), (self.num_tasks, self.features))
    if self.out_of_range == 'clip':
      return table.at[task_id].get(mode='clip', wrap_negative_indices=False)
    if self.out_of_range == 'checkify':
      checkify.check((task_id >= 0) & (task_id < self.num_tasks),
                     f'task_id: expected an integer in [0, {self.num_tasks}), received {{i}}.',
                     i=task_id)
      return table.at[task_id].get(mode='clip', wrap_negative_indices=False)
    return table.at[task_id].get(mode='fill', fill_value=jnp.nan, wrap_negative_indices=False)


class SetEncoder(nn.Module):
  """Support set `x [K, dx]`, `y [K, dy]` -> task code `[features]`, invariant to order.

  Attributes:
    features: output size.
    hidden: sizes of the per-element network `phi`.
    pooling: 'mean', 'attention' or 'class'. 'class' needs one-hot labels `y [K, C]`: the
      mean of `phi` over each class's points, `[C, H]`, flattened in label order to
      `[C * H]` (a class without points gives zeros), so the code keeps which features belong
      to which label, where a mean over the whole set blurs them (relabelling the classes
      permutes the code's blocks).
    num_heads: attention heads (attention pooling).
    rho_hidden: sizes of the network after pooling (before the output layer).
    normalize: end with a LayerNorm, so that the code has zero mean and unit
      second moment over its features at init: the `E[cond^2] = 1` that the
      hyperfan initialisation of the hypernetworks assumes.
  """
  features: int
  hidden: Sequence[int] = (64, 64)
  pooling: str = 'mean'
  num_heads: int = 4
  rho_hidden: Sequence[int] = (64,)
  normalize: bool = True

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f'pooling: expected one of {POOLINGS}, received {self.pooling!r}.')
    check_positive('features', self.features)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """One task's support set -> `[features]`.

    Args:
      x: `[K, dx]` inputs (`[K]` is taken as `[K, 1]`).
      y: `[K, dy]` targets or one-hot labels (`[K]` is taken as `[K, 1]`).
      mask: optional `[K]` bool, False for padding elements.
    """
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
      raise ValueError(f'x, y: expected [K, dx] and [K, dy] with the same K, received '
                       f'{x.shape} and {y.shape}.')
    if self.pooling == 'class' and y.shape[-1] < 2:
      raise ValueError(f"y: pooling='class' expects one-hot labels [K, C] with C >= 2 classes, "
                       f'received shape {y.shape}.')
    if mask is not None and mask.shape != (x.shape[0],):
      raise ValueError(f'mask: expected shape ({x.shape[0]},), received {mask.shape}.')
    h = MLP(tuple(self.hidden), name='phi')(jnp.concatenate([x, y.astype(x.dtype)], -1))  # [K, H]
    if self.pooling == 'mean':
      w = jnp.ones(x.shape[0]) if mask is None else mask.astype(h.dtype)
      pooled = (w @ h) / jnp.maximum(w.sum(), 1.0)  # [H]
    elif self.pooling == 'class':
      w = y.astype(h.dtype)  # [K, C] one-hot
      if mask is not None:
        w = w * mask.astype(h.dtype)[:, None]
      means = (w.T @ h) / jnp.maximum(w.sum(0), 1.0)[:, None]  # [C, H]
      pooled = means.reshape(-1)  # [C * H]
    else:
      seed = self.param('seed', nn.initializers.normal(1.0), (1, h.shape[-1]))
      attn_mask = None if mask is None else mask[None, None, None, :]  # [1, heads, q, K]
      pooled = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name='pool')(
          seed[None], h[None], mask=attn_mask)[0, 0]  # [H]
    h = MLP(tuple(self.rho_hidden), name='rho')(pooled)
    code = nn.Dense(self.features, name='out')(h)
    return nn.LayerNorm(name='norm')(code) if self.normalize else code
