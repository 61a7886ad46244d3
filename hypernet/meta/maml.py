"""Gradient-based baselines: MAML (second and first order), Meta-SGD, ANIL, Reptile.

All adapt the target's own parameters with `hypernet.meta.inner.inner_sgd` and
predict with `target.apply`; they differ in what is meta-learned and how the
meta-gradient is formed:

* `MAML` (Finn et al. 2017): meta-learns the initialisation; second order by
  default, `first_order=True` for FOMAML; `remat=True` bounds memory.
* `MetaSGD` (Li et al. 2017): also meta-learns a per-parameter inner learning
  rate (a pytree like the params, initialised at `inner_lr`).
* `ANIL` (Raghu et al. 2020): the inner loop adapts only the leaves selected by
  `adapt_leaves=` (default: the last layer's leaves); the rest is shared.
* `Reptile` (Nichol et al. 2018): first-order; the meta-"gradient" is
  `params - adapted` averaged over tasks, handed to the outer optimiser.

MAML, Meta-SGD and ANIL implement `adapt_path`, so they can be trained with
`multi_step_loss=True` (the mean query loss after 1..`inner_steps` steps): a learner
evaluated after more steps than one is then trained for each of them.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from hypernet.layout import Selection, layout_for
from hypernet.meta.base import INIT_KEY, SGDInnerLoopLearner, meta_loss, task_keys
from hypernet.meta.inner import inner_sgd
from hypernet.target import PyTree, Target


@dataclasses.dataclass(frozen=True)
class MAML(SGDInnerLoopLearner):
  """MAML over a target's parameters.

  Attributes:
    target: the `Target`.
    inner_steps, inner_lr, first_order (FOMAML), remat: the inner loop
      (`SGDInnerLoopLearner`).
  """
  target: Target | None = None
  has_learned_init: ClassVar[bool] = True

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.target, Target):
      raise TypeError(f'target: expected a hypernet.Target, received {type(self.target).__name__}.')

  def init(self, key: jax.Array) -> PyTree:
    """`{'init': the target's parameters}`: the learned initialisation (`INIT_KEY`)."""
    return {INIT_KEY: self.target.init(key)}

  def _inner_lr(self, meta_params):
    return self.inner_lr

  def _init_params(self, meta_params):
    return meta_params[INIT_KEY]

  def adapt(self, meta_params, x_support, y_support, num_steps, key=None):
    del key  # deterministic
    return self._adapt(meta_params, x_support, y_support, num_steps, return_path=False)

  def adapt_path(self, meta_params, x_support, y_support, num_steps, key=None):
    """ONE task: the parameters after each of the steps 1..num_steps (leaves `[S, ...]`)."""
    del key  # deterministic
    return self._adapt(meta_params, x_support, y_support, num_steps, return_path=True)

  def _adapt(self, meta_params, x_support, y_support, num_steps, return_path):
    def support_loss(p):
      return self.loss_fn(self.target.apply(p, x_support), y_support)

    params, _ = inner_sgd(support_loss, self._init_params(meta_params),
                          self._inner_lr(meta_params), num_steps,
                          first_order=self.first_order, remat=self.remat,
                          return_path=return_path)
    return params

  def predict(self, meta_params, adapted, x):
    return self.target.apply(adapted, x)


@dataclasses.dataclass(frozen=True)
class MetaSGD(MAML):
  """MAML with a meta-learned per-parameter inner learning rate."""

  def init(self, key):
    """`{'init': the target's parameters, 'lr': a step size per parameter}`."""
    params = self.target.init(key)
    return {INIT_KEY: params, 'lr': jax.tree.map(lambda p: jnp.full_like(p, self.inner_lr), params)}

  def _inner_lr(self, meta_params):
    return meta_params['lr']


@dataclasses.dataclass(frozen=True)
class ANIL(MAML):
  """MAML whose inner loop adapts only the `adapt_leaves` (default: the last layer).

  Attributes:
    adapt_leaves: a `hypernet.layout.Selection` of the leaves adapted per task.
  """
  adapt_leaves: Selection = None

  def _layout(self):
    sel = self.adapt_leaves
    if sel is None:  # the leaves of the last layer in pytree order
      paths = [l.path for l in layout_for(self.target).leaves]
      parent = paths[-1].rpartition('/')[0]
      sel = (parent,) if parent else (paths[-1],)
    return layout_for(self.target, sel)

  def _adapt(self, meta_params, x_support, y_support, num_steps, return_path):
    layout = self._layout()
    params = self._init_params(meta_params)
    shared = layout.shared_values(params)
    head = [jax.tree.leaves(params)[l.index] for l in layout.generated]

    def support_loss(h):
      return self.loss_fn(self.target.apply(layout.merge(h, shared), x_support), y_support)

    head, _ = inner_sgd(support_loss, head, self.inner_lr, num_steps,
                        first_order=self.first_order, remat=self.remat,
                        return_path=return_path)
    if return_path:  # head leaves [S, ...]; the shared leaves repeated along S
      return jax.vmap(lambda h: layout.merge(h, shared))(head)
    return layout.merge(head, shared)


@dataclasses.dataclass(frozen=True)
class Reptile(MAML):
  """Reptile: outer "gradient" `params - adapted(support ∪ query)`, averaged over tasks.

  The inner loop runs on all of a task's points (support and query), as in the
  paper; the query loss reported is measured after adapting on the support set
  alone, like every other learner. Its meta-"gradient" is not a query loss, so
  `multi_step_loss` does not apply.
  """

  def __post_init__(self):
    super().__post_init__()
    if self.multi_step_loss:
      raise ValueError('multi_step_loss: Reptile\'s meta-gradient is not a query loss, expected '
                       'False, received True.')

  def meta_grad(self, meta_params, tasks, key=None):
    def direction(task, k):
      x = jnp.concatenate([task.x_support, task.x_query])
      y = jnp.concatenate([task.y_support, task.y_query])
      adapted = self.adapt(meta_params, x, y, self.inner_steps, k)
      return {INIT_KEY: jax.tree.map(lambda p, a: p - a, self._init_params(meta_params), adapted)}

    keys = task_keys(key, tasks)
    directions = jax.vmap(direction, in_axes=(0, None if keys is None else 0))(tasks, keys)
    grads = jax.tree.map(lambda d: jnp.mean(d, 0), directions)
    _, metrics = meta_loss(self, jax.lax.stop_gradient(meta_params), tasks, key=key)
    return grads, metrics
