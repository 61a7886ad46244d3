"""One interface for meta-learners; the vmapped meta-loss; the jitted meta-step; evaluation.

A `MetaLearner` is written for ONE task:

* `init(key) -> meta_params`: everything the outer loop learns (a pytree);
* `adapt(meta_params, x_support, y_support, num_steps, key=None) -> adapted`: per-task
  adaptation (inner gradient steps, a hypernetwork's forward pass, or both);
  `adapted` is whatever `predict` needs, usually the target's parameters;
* `predict(meta_params, adapted, x) -> outputs`;
* `task_loss(meta_params, task, num_steps, key=None) -> (loss, metrics)`: the query loss
  after adaptation (scalar) and a dict of scalars;
* optionally `adapt_path(meta_params, x_support, y_support, num_steps, key=None) -> path`: what
  `adapt` returns after each of the steps 1..num_steps, stacked (leaves `[num_steps, ...]`);
  learners with it can train on the multi-step loss (`multi_step_loss=True`: the mean of
  the query losses after 1, 2, ..., `inner_steps` steps, the MAML++ "multi-step loss" of
  Antoniou et al. 2019 with uniform weights), so that they are trained for every number
  of steps up to `inner_steps`, not only the last.

A learner whose adaptation starts from a meta-learned point in the target's parameter space
(MAML, FOMAML, Meta-SGD, ANIL, Reptile, HyperMAML, LearnedUpdate) keeps it under
`meta_params['init']` (`INIT_KEY`), a tree with the target's structure, beside its other
meta-parameters (`'lr'`, `'encoder'`, `'hypernet'`, `'rule'`).

Every learner with an inner loop derives from `InnerLoopLearner` and so has the same four
settings with one meaning and one validation, `learner.inner_loop` (an `InnerLoop`):
`inner_steps` (steps in training), `inner_lr` (the SGD step size, from
`SGDInnerLoopLearner`; all but `LearnedUpdate`, whose steps are learned), `first_order` and
`remat` (`hypernet.meta.inner`). A learner without one (ProtoNet, SupportMetric) has
`inner_loop = None`, and `num_steps > 0` is an error for it (`check_num_steps`).

`key` is one task's PRNG key for learners whose adaptation draws at random (sampled
latents as in LEO, dropout in the target, sub-sampled inner batches, probabilistic
hypernetworks). Deterministic learners ignore it (every learner in this package is one);
a stochastic learner defines what `key=None` means (e.g. its mean, for evaluation) or
raises. `meta_loss` splits a batch key into one key per task; `meta_step` takes one.

Around it, for batches of tasks (leading task axis `[T, ...]`):

* `meta_loss(learner, meta_params, tasks, key=None)`: `jax.vmap(task_loss)` over tasks,
  averaged;
* `make_meta_step(learner, tx, mesh=None)`: `meta_step(state, tasks, key=None) -> (state,
  metrics)`,
  jitted once with the state donated; with a `mesh` (`hypernet.parallel.task_mesh`) the
  task axis is sharded over its devices and the state replicated; `compute_dtype='bfloat16'`
  computes in bfloat16 with float32 master weights;
* `evaluate(learner, meta_params, tasks, steps)`: per-task query loss (and
  accuracy for classification) after each number of inner steps in `steps`,
  which may differ from training; one compiled `lax.map` program, batched, whose tasks may
  be made inside it (`make_task`: episodes drawn from keys); every experiment evaluates
  with it.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hypernet import parallel
from hypernet import target as target_lib
from hypernet.meta import losses
from hypernet.meta.inner import REMAT_MODES
from hypernet.target import PyTree
from hypernet.tasks.base import Task


# Where a learner keeps its meta-learned initialisation of the target's parameters.
INIT_KEY = 'init'


@dataclasses.dataclass(frozen=True)
class MetaLearner(abc.ABC):
  """Base class. Subclasses set the fields below and implement init/adapt/predict.

  Learners are frozen dataclasses compared by value: two built from the same settings (and
  equal targets, `Target.value_key`) are equal and hash alike, so as `jax.jit` static
  arguments and in caches keyed by value they share their compiled programs.

  Attributes:
    loss: 'mse' (regression) or 'xent' (classification, integer labels).
    inner_steps: number of adaptation steps used in training (static; >= 0).
    multi_step_loss: train on the mean query loss after 1..`inner_steps` steps instead of
      the loss after `inner_steps` (needs `adapt_path`); the reported `loss` metric is
      still the query loss after the last step.
    first_step_weight: with `multi_step_loss`, the weight w of the loss after the first
      step in `w * loss_1 + (1 - w) * mean(loss_1..loss_n)` (0: the plain mean; in
      [0, 1]). A learner evaluated after one step as well as after many trains for both.
  """
  loss: str = 'mse'
  inner_steps: int = 1
  multi_step_loss: bool = False
  first_step_weight: float = 0.0
  # False for learners whose adaptation is one forward pass (ProtoNet, SupportMetric): their
  # `num_steps` must be 0, and a number above is an error, not silently ignored.
  has_inner_loop: ClassVar[bool] = True
  # True for learners whose adaptation starts from a meta-learned point of the target's
  # parameters, kept under `meta_params[INIT_KEY]` with the target's structure.
  has_learned_init: ClassVar[bool] = False

  def __post_init__(self):
    losses.get_loss(self.loss)
    if not isinstance(self.inner_steps, int) or self.inner_steps < 0:
      raise ValueError(f'inner_steps: expected an integer >= 0, received {self.inner_steps!r}.')
    if self.inner_steps and not self.has_inner_loop:
      raise ValueError(f'inner_steps: {type(self).__name__} has no inner loop, expected 0, '
                       f'received {self.inner_steps!r}.')
    if not isinstance(self.multi_step_loss, bool):
      raise ValueError(f'multi_step_loss: expected True or False, received '
                       f'{self.multi_step_loss!r}.')
    if self.multi_step_loss and type(self).adapt_path is MetaLearner.adapt_path:
      raise ValueError(f'multi_step_loss: {type(self).__name__} has no adapt_path (the '
                       'adapted state after every step), expected multi_step_loss=False, '
                       'received True.')
    w = self.first_step_weight
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
      raise ValueError(f'first_step_weight: expected a number in [0, 1], received {w!r}.')
    if w and not self.multi_step_loss:
      raise ValueError(f'first_step_weight: weights the first step of the multi-step loss, '
                       f'expected 0 with multi_step_loss=False, received {w!r}.')

  def check_num_steps(self, num_steps: Any) -> int:
    """`num_steps` as an int; a ValueError naming it unless it is an integer >= 0 (0 for a
    learner without an inner loop). Every learner's `adapt` calls it."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or (
        num_steps < 0):
      raise ValueError(f'num_steps: expected an integer >= 0, received {num_steps!r}.')
    if num_steps and not self.has_inner_loop:
      raise ValueError(f'num_steps: {type(self).__name__} has no inner loop, expected 0, '
                       f'received {num_steps!r}.')
    return int(num_steps)

  @property
  def inner_loop(self) -> InnerLoop | None:
    """The inner-loop setting (`InnerLoop`), None for a learner without an inner loop."""
    return None

  def check_task(self, task: Task) -> None:
    """Trace-time checks of ONE task's arrays (every learner's `task_loss` calls it): as many
    labels as inputs in the support and query sets, inputs of one shape, integer labels for
    classification; a ValueError names the fields, the expected and the received."""
    xs, ys, xq, yq = task.x_support, task.y_support, task.x_query, task.y_query
    for name, x, y in (('support', xs, ys), ('query', xq, yq)):
      if jnp.ndim(x) < 1 or jnp.ndim(y) < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f'task.x_{name}, task.y_{name}: expected ONE task\'s {name} set, inputs [n, ...] and '
            f'as many labels [n, ...], received shapes {jnp.shape(x)} and {jnp.shape(y)} (a '
            'batch of tasks goes to meta_loss, which vmaps task_loss over it).')
    if xs.shape[1:] != xq.shape[1:]:
      raise ValueError(f'task.x_support, task.x_query: expected inputs of one shape, received '
                       f'{xs.shape[1:]} and {xq.shape[1:]} per example.')
    if self.loss == 'xent':
      for name, y in (('y_support', ys), ('y_query', yq)):
        if not jnp.issubdtype(y.dtype, jnp.integer) or y.ndim != 1:
          raise ValueError(f"task.{name}: expected integer class labels [n] for loss='xent', "
                           f'received {y.dtype} {y.shape}.')
    elif ys.shape[1:] != yq.shape[1:]:
      raise ValueError(f'task.y_support, task.y_query: expected targets of one shape, received '
                       f'{ys.shape[1:]} and {yq.shape[1:]} per example.')

  @property
  def loss_fn(self):
    return losses.get_loss(self.loss)

  @abc.abstractmethod
  def init(self, key: jax.Array) -> PyTree:
    """The meta-parameters."""

  @abc.abstractmethod
  def adapt(self, meta_params: PyTree, x_support: jax.Array, y_support: jax.Array,
            num_steps: int, key: jax.Array | None = None) -> Any:
    """ONE task: adapt to its support set `[K, ...]` with `num_steps` steps (`key`: this
    task's PRNG key, for a learner that draws at random; see the module docstring)."""

  @abc.abstractmethod
  def predict(self, meta_params: PyTree, adapted: Any, x: jax.Array) -> jax.Array:
    """ONE task: outputs at `x [N, ...]` of the adapted model."""

  def adapt_path(self, meta_params: PyTree, x_support: jax.Array, y_support: jax.Array,
                 num_steps: int, key: jax.Array | None = None) -> Any:
    """ONE task: `adapt`'s result after each of the steps 1..`num_steps`, stacked
    (every leaf `[num_steps, ...]`). Optional; needed by `multi_step_loss`."""
    raise NotImplementedError(f'{type(self).__name__} does not implement adapt_path.')

  def task_loss(self, meta_params: PyTree, task: Task, num_steps: int | None = None,
                key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ONE task: query loss after adapting on the support set (`key` passed to `adapt`),
    and metrics.

    With `multi_step_loss` and `num_steps > 0` the returned loss (the one differentiated)
    is the mean query loss over the steps 1..`num_steps` (its first step weighted up by
    `first_step_weight`); `metrics['loss']` is the query loss after `num_steps` either way.
    """
    num_steps = self.check_num_steps(self.inner_steps if num_steps is None else num_steps)
    self.check_task(task)
    if self.multi_step_loss and num_steps > 0:
      path = self.adapt_path(meta_params, task.x_support, task.y_support, num_steps, key)
      outs = jax.vmap(lambda a: self.predict(meta_params, a, task.x_query))(path)  # [S, Q, ...]
      step_losses = jax.vmap(lambda o: self.loss_fn(o, task.y_query))(outs)  # [S]
      metrics = {'loss': step_losses[-1], 'loss_mean_over_steps': jnp.mean(step_losses)}
      if self.loss == 'xent':
        metrics['accuracy'] = losses.accuracy(outs[-1], task.y_query)
      w = self.first_step_weight
      objective = jnp.mean(step_losses)
      if w:
        objective = w * step_losses[0] + (1.0 - w) * objective
      return objective, metrics
    adapted = self.adapt(meta_params, task.x_support, task.y_support, num_steps, key)
    out = self.predict(meta_params, adapted, task.x_query)
    loss = self.loss_fn(out, task.y_query)
    metrics = {'loss': loss}
    if self.loss == 'xent':
      metrics['accuracy'] = losses.accuracy(out, task.y_query)
    return loss, metrics

  def meta_grad(self, meta_params: PyTree, tasks: Task, key: jax.Array | None = None
                ) -> tuple[PyTree, dict[str, jax.Array]]:
    """Gradient of the mean query loss over a batch of tasks (Reptile overrides this)."""
    (_, metrics), grads = jax.value_and_grad(meta_loss, argnums=1, has_aux=True)(
        self, meta_params, tasks, key=key)
    return grads, metrics


class InnerLoop(NamedTuple):
  """One learner's inner-loop setting, `learner.inner_loop` (None for a learner without one).

  Attributes:
    steps: adaptation steps in training (`inner_steps`; evaluation passes its own).
    lr: the SGD step size (`inner_lr`), None for a learner whose update rule is learned
      (`LearnedUpdate`).
    first_order: the support-loss gradients are constants in the meta-gradient (FOMAML).
    remat: False, True or 'nested' (`hypernet.meta.inner`): the memory of the second-order
      backward pass.
  """
  steps: int
  lr: float | None
  first_order: bool
  remat: bool | str


@dataclasses.dataclass(frozen=True)
class InnerLoopLearner(MetaLearner):
  """Base of every learner with an inner loop: the fields of `InnerLoop` (but `lr`), with one
  meaning and one validation for all of them (`inner_steps` is `MetaLearner`'s).

  Attributes:
    first_order: treat the support-loss gradients as constants in the meta-gradient.
    remat: False, True (rematerialise each inner step) or 'nested' (O(sqrt(steps)) memory);
      see `hypernet.meta.inner`.
  """
  first_order: bool = False
  remat: bool | str = False

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.first_order, bool):
      raise ValueError(f'first_order: expected True or False, received {self.first_order!r}.')
    if not any(self.remat is m or (isinstance(m, str) and self.remat == m)
               for m in REMAT_MODES):
      raise ValueError(f'remat: expected one of {REMAT_MODES}, received {self.remat!r}.')

  @property
  def inner_loop(self) -> InnerLoop:
    return InnerLoop(self.inner_steps, getattr(self, 'inner_lr', None), self.first_order,
                     self.remat)


@dataclasses.dataclass(frozen=True)
class SGDInnerLoopLearner(InnerLoopLearner):
  """An `InnerLoopLearner` whose inner loop is SGD with step size `inner_lr` (a finite number
  >= 0; Meta-SGD's initial per-parameter rate)."""
  inner_lr: float = 0.01

  def __post_init__(self):
    super().__post_init__()
    lr = self.inner_lr
    if (isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer))
        or not 0 <= lr < float('inf')):
      raise ValueError(f'inner_lr: expected a finite number >= 0, received {lr!r}.')


def task_keys(key: jax.Array | None, tasks: Any) -> jax.Array | None:
  """One PRNG key per task of a batch `[T, ...]` from one key (None stays None)."""
  if key is None:
    return None
  return jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])


def meta_loss(learner: MetaLearner, meta_params: PyTree, tasks: Task,
              num_steps: int | None = None, key: jax.Array | None = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean of `learner.task_loss` over a batch of tasks `[T, ...]` (vmapped); `key` is split
  into one key per task (`task_keys`)."""
  keys = task_keys(key, tasks)
  per_task = jax.vmap(learner.task_loss, in_axes=(None, 0, None, None if keys is None else 0))
  loss, metrics = per_task(meta_params, tasks, num_steps, keys)  # [T], {name: [T]}
  return jnp.mean(loss), jax.tree.map(jnp.mean, metrics)


@flax.struct.dataclass
class TrainState:
  """Outer-loop state: `step` (int32 scalar, updates done), `meta_params`, `opt_state`."""
  step: jax.Array
  meta_params: PyTree
  opt_state: optax.OptState


def init_state(learner: MetaLearner, tx: optax.GradientTransformation,
               key: jax.Array) -> TrainState:
  meta_params = learner.init(key)
  return TrainState(jnp.zeros((), jnp.int32), meta_params, tx.init(meta_params))


COMPUTE_DTYPES = ('float32', 'bfloat16')


def cast_floating(tree: PyTree, dtype: Any) -> PyTree:
  """`tree` with every floating-point leaf cast to `dtype` (integer leaves unchanged)."""
  return jax.tree.map(
      lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree)


def _check_compute_dtype(compute_dtype: Any) -> Any:
  if compute_dtype is None:
    return None
  if str(compute_dtype) not in COMPUTE_DTYPES:
    raise ValueError(f'compute_dtype: expected None or one of {COMPUTE_DTYPES}, received '
                     f'{compute_dtype!r}.')
  return None if str(compute_dtype) == 'float32' else jnp.dtype(str(compute_dtype))


def make_meta_step(learner: MetaLearner, tx: optax.GradientTransformation,
                   mesh: jax.sharding.Mesh | None = None, compute_dtype: str | None = None):
  """`meta_step(state, tasks, key=None) -> (state, metrics)`, jitted, the state donated
  (`key`: the batch's PRNG key, split into one per task; ignored by deterministic learners).

  Args:
    learner: the meta-learner.
    tx: the outer optimiser.
    mesh: optional 1-D mesh with axis `'tasks'` (`hypernet.parallel.task_mesh`): the
      tasks (leaves `[T, ...]`, `T` a multiple of the mesh size) are sharded over its
      devices and the returned state is replicated (pass it in replicated:
      `hypernet.parallel.replicate`). None: no sharding annotations (one device).
    compute_dtype: None or 'float32' (plain), or 'bfloat16': mixed precision. The
      meta-gradient is computed with the meta-parameters and the tasks' floating leaves
      cast to bfloat16 (forward, inner loop and backward in bfloat16); the master
      meta-parameters, their gradient (cast back) and the optimiser state stay float32,
      and the metrics are returned as float32.

  `metrics` holds the batch's mean query loss (before the update) and the
  global norm of the meta-gradient.
  """

  low = _check_compute_dtype(compute_dtype)

  def meta_step(state: TrainState, tasks: Task, key: jax.Array | None = None
                ) -> tuple[TrainState, dict[str, jax.Array]]:
    tasks = parallel.constrain_tasks(tasks, mesh)
    if low is None:
      grads, metrics = learner.meta_grad(state.meta_params, tasks, key)
    else:
      # d/dp L(cast(p)) is the cast-back gradient with respect to the cast copy.
      with target_lib.compute_dtype(low):
        low_grads, metrics = learner.meta_grad(cast_floating(state.meta_params, low),
                                               cast_floating(tasks, low), key)
      grads = jax.tree.map(lambda g, p: g.astype(p.dtype), low_grads, state.meta_params)
      metrics = cast_floating(metrics, jnp.float32)
    updates, opt_state = tx.update(grads, state.opt_state, state.meta_params)
    meta_params = optax.apply_updates(state.meta_params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    out = TrainState(state.step + 1, meta_params, opt_state), metrics
    return parallel.constrain_replicated(out, mesh)

  return jax.jit(meta_step, donate_argnums=(0,))


def _as_task(x: Any, data: Any) -> Task:
  del data
  return x


def evaluate(learner: MetaLearner, meta_params: PyTree, tasks: Any, steps: Sequence[int],
             batch_size: int = 250, make_task: Callable[[Any, Any], Task] | None = None,
             data: Any = None, compiler_options: Mapping[str, Any] | None = None
             ) -> dict[int, dict[str, jax.Array]]:
  """Per-task metrics after each number of inner steps: every experiment's evaluator.

  One jitted program (`lax.map` over the tasks, `batch_size` of them vmapped at a time, so
  memory is bounded) computes `learner.task_loss`'s metrics after each of `steps`; it is
  compiled once per (learner, steps, batch_size, make_task, shapes) and reused.

  Args:
    learner: the meta-learner.
    meta_params: its meta-parameters.
    tasks: `n` tasks, every leaf `[n, ...]`; or, with `make_task`, `n` of whatever it makes
      ONE task from (e.g. PRNG keys `[n]` to draw episodes from, tasks cut to fewer shots).
    steps: the numbers of inner steps to evaluate (may differ from training).
    batch_size: tasks computed at once (bounds memory; the last batch may be partial).
    make_task: `make_task(x, data) -> Task` for ONE element `x` of `tasks`; hashable, and
      equal for equal behaviour (a module-level function or a frozen dataclass) so that the
      compiled program is reused. Default: the element is the task.
    data: a pytree passed to `make_task` as an argument of the program (e.g. a dataset on
      device), not baked into it as a constant.
    compiler_options: XLA options of the program (`jax.jit`'s), e.g. a lower optimisation
      level for tests that spend their time compiling.

  Returns:
    `{num_steps: {'loss': [n], ('accuracy': [n])}}`: the query loss after exactly that many
    steps (`task_loss`'s `metrics['loss']`, not its multi-step training objective).
  """
  steps = tuple(int(k) for k in steps)
  if not steps or min(steps) < 0:
    raise ValueError(f'steps: expected one or more integers >= 0, received {steps}.')
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f'batch_size: expected a positive integer, received {batch_size!r}.')
  n = jax.tree.leaves(tasks)[0].shape[0]
  options = tuple(sorted((compiler_options or {}).items()))
  return _evaluate_program(options)(learner, steps, min(batch_size, n),
                                    make_task or _as_task, meta_params, tasks, data)


def _evaluate_impl(learner, steps, batch_size, make_task, meta_params, tasks, data):
  def one(x):
    task = make_task(x, data)
    return {k: learner.task_loss(meta_params, task, k)[1] for k in steps}
  return jax.lax.map(one, tasks, batch_size=batch_size)


@functools.lru_cache(maxsize=None)
def _evaluate_program(options: tuple[tuple[str, Any], ...]) -> Callable[..., Any]:
  return jax.jit(_evaluate_impl, static_argnums=(0, 1, 2, 3),
                 compiler_options=dict(options) or None)
