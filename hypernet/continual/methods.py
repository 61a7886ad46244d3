"""Continual-learning methods behind one interface, all pure functions of explicit state.

A `ContinualMethod` has

* `init(key) -> params` (everything trained),
* `init_memory(params) -> memory` (what is kept between tasks; fixed shapes),
* `loss(params, memory, task_id, x [B, D], y [B], key) -> (loss, metrics)`: one batch of ONE
  task (`key`: for a method that draws at random, e.g. `HnetMethod` with `reg_samples`),
* `step_memory(memory, old_params, new_params, grads) -> memory`: called after every
  optimiser step (inside the jitted scan, the memory is part of its carry; the identity for
  every method but SI, whose running path integral lives there),
* `begin_task(params, task_id) -> params`: called before each task's first step (the
  identity for every method but `HnetMethod` with `init_with_prev_emb`),
* `end_task(params, memory, task_id, x [n, D], key) -> memory`: called after each task,
* `predict(params, task_id, x [N, D]) -> logits [N, C]`: the task-incremental prediction
  (the task identity is given).

`HnetMethod`: a hypernetwork (`FullHypernet` or `ChunkedHypernet`) maps a learned task
embedding `e_t [E]` to all target weights; the memory is the stored outputs `[T, P]` of the
output regulariser (`hypernet.continual.regularizer`). `TargetMethod`: the target network is
trained directly, with no penalty (fine-tuning), EWC or online EWC (`hypernet.continual.ewc`)
or SI (`hypernet.continual.si`), and either one shared output head or one head per task
(`multi_head`).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from hypernet.continual import ewc as ewc_lib
from hypernet.continual import si as si_lib
from hypernet.continual.regularizer import output_regularizer
from hypernet.encoders import TaskEmbedding
from hypernet.hypernets.chunked import ChunkedHypernet
from hypernet.layout import layout_for
from hypernet.target import PyTree, Target

PENALTIES = ('none', 'ewc', 'online_ewc', 'si')


def _cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _accuracy(logits: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, -1) == y)


def _unravel_fn(target: Target):
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), target.param_spec)
  return ravel_pytree(zeros)[1]


def _chunk_index(target: Target, chunk_size: int, num_chunks: int) -> np.ndarray:
  """`[num_chunks, chunk_size]` int32: where each value of a chunked hypernetwork's chunks
  (`layout.flatten` order) sits in `ravel_pytree`'s order (`HnetMethod.outputs`: the leaves
  in `jax.tree.leaves` order, each raveled); -1 past the last value."""
  sizes = [math.prod(s.shape) for s in jax.tree.leaves(target.param_spec)]
  starts = np.cumsum([0] + sizes)
  flat = np.concatenate([np.arange(starts[l.index], starts[l.index] + l.size)
                         for l in layout_for(target).generated]).astype(np.int32)
  pad = num_chunks * chunk_size - flat.shape[0]
  return np.pad(flat, (0, pad), constant_values=-1).reshape(num_chunks, chunk_size)


def select_head(logits: jax.Array, head: jax.typing.ArrayLike, num_classes: int) -> jax.Array:
  """`logits [N, H * C]` -> `[N, C]`, the output units of head `head` (traced int is fine)."""
  if logits.shape[-1] % num_classes:
    raise ValueError(f'logits: expected a last axis divisible by num_classes={num_classes}, '
                     f'received shape {logits.shape}.')
  return jax.lax.dynamic_slice_in_dim(logits, head * num_classes, num_classes, axis=-1)


class ContinualMethod:
  """Interface; see the module docstring."""
  num_tasks: int

  def init(self, key: jax.Array) -> PyTree:
    raise NotImplementedError

  def init_memory(self, params: PyTree) -> PyTree:
    raise NotImplementedError

  def loss(self, params, memory, task_id, x, y, key=None
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    raise NotImplementedError

  def step_memory(self, memory, old_params, new_params, grads) -> PyTree:
    """After one optimiser step (`grads`: of `loss`, at `old_params`); default: unchanged."""
    del old_params, new_params, grads
    return memory

  def begin_task(self, params: PyTree, task_id: int) -> PyTree:
    """Before task `task_id`'s first step; default: unchanged."""
    del task_id
    return params

  def end_task(self, params, memory, task_id, x, key) -> PyTree:
    raise NotImplementedError

  def predict(self, params, task_id, x) -> jax.Array:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class HnetMethod(ContinualMethod):
  """Task-conditioned hypernetwork with the output regulariser.

  Attributes:
    target: the target network `x [N, D] -> logits [N, C]` (one head: its weights are
      generated per task anyway).
    hnet: a Flax hypernetwork `cond [emb_dim] -> target params` (`FullHypernet`,
      `ChunkedHypernet`).
    num_tasks: `T`, the number of task embeddings.
    emb_dim: `E`, the embedding size (the hypernetwork's `cond_dim`).
    beta: output-regulariser strength.
    lookahead_lr: > 0: the regulariser is evaluated after a one-step SGD lookahead of this
      size on the task loss (the paper's `dTheta_h`); 0: no lookahead.
    reg_samples: 0: the regulariser sums over every earlier task at each step (the paper's
      equation (2): `T` generations per step); `k > 0`: over `k` earlier tasks drawn
      uniformly (with replacement) at each step, an unbiased estimate of the same mean that
      costs `k + 1` generations per step (long sequences: PermutedMNIST-100). Needs `key`.
    reg_chunks: with `reg_samples > 0` and a `ChunkedHypernet` generating every target leaf:
      `m > 0`: each drawn task's squared distance is estimated from `m` of its chunks drawn
      uniformly (with replacement), scaled by `num_chunks / m` (unbiased), so the
      regulariser costs `k * m / num_chunks` generations instead of `k`: more earlier tasks
      held per step for the same cost. 0: every chunk.
    init_with_prev_emb: True: each task after the first starts from the previous task's
      trained embedding (the whole row: with `cond_chunk_embs`, its chunk embeddings too), so
      it starts from the previous task's generated weights, as fine-tuning does, instead of
      those of a random embedding (hypnettorch's `init_with_prev_emb`); False: from its own
      initial draw.
  """
  target: Target
  hnet: nn.Module
  num_tasks: int
  emb_dim: int
  beta: float
  lookahead_lr: float = 0.0
  reg_samples: int = 0
  init_with_prev_emb: bool = False
  reg_chunks: int = 0

  def __post_init__(self):
    if not isinstance(self.reg_samples, int) or self.reg_samples < 0:
      raise ValueError(f'reg_samples: expected an int >= 0, received {self.reg_samples!r}.')
    if not isinstance(self.reg_chunks, int) or self.reg_chunks < 0:
      raise ValueError(f'reg_chunks: expected an int >= 0, received {self.reg_chunks!r}.')
    if self.reg_chunks:
      if not self.reg_samples:
        raise ValueError(f'reg_chunks: expected 0 with reg_samples=0 (chunks are drawn for '
                         f'the drawn tasks), received {self.reg_chunks}.')
      if not isinstance(self.hnet, ChunkedHypernet) or self.hnet.generate is not None:
        raise ValueError('reg_chunks: expected 0 unless hnet is a ChunkedHypernet generating '
                         f'every target leaf, received {self.reg_chunks} with '
                         f'{type(self.hnet).__name__}.')
    if not isinstance(self.init_with_prev_emb, bool):
      raise ValueError('init_with_prev_emb: expected True or False, received '
                       f'{self.init_with_prev_emb!r}.')

  def init(self, key: jax.Array) -> PyTree:
    """`{'hnet': hypernetwork params, 'embeddings': [T, E]}`."""
    hnet_key, emb_key = jax.random.split(key)
    table = TaskEmbedding(self.num_tasks, self.emb_dim)
    emb = table.init(emb_key, jnp.zeros((), jnp.int32))['params']['embedding']
    return {'hnet': self.hnet.init(hnet_key, jnp.zeros(self.emb_dim)),
            'embeddings': emb}

  def outputs(self, hnet_params: PyTree, embeddings: jax.Array) -> jax.Array:
    """`[T, E]` embeddings -> `[T, P]` flat generated target parameters."""
    one = lambda e: ravel_pytree(self.hnet.apply(hnet_params, e))[0]
    return jax.vmap(one)(embeddings)

  def generate(self, params: PyTree, task_id: jax.typing.ArrayLike) -> PyTree:
    """The target parameters of task `task_id` (a pytree matching `target.param_spec`)."""
    return self.hnet.apply(params['hnet'], params['embeddings'][task_id])

  def init_memory(self, params: PyTree) -> PyTree:
    """`{'stored': [T, P]}`, zeros (no row is read before `end_task` writes it)."""
    n = self.target.num_params
    return {'stored': jnp.zeros((self.num_tasks, n), jnp.float32)}

  def loss(self, params, memory, task_id, x, y, key=None):
    """One batch of one task: cross-entropy + output regulariser. Only the embedding of
    `task_id` and the hypernetwork get gradients. `key`: the earlier tasks drawn for the
    regulariser (`reg_samples > 0`; unused otherwise)."""
    if self.reg_samples:
      return self._sampled_loss(params, memory, task_id, x, y, key)
    unravel = _unravel_fn(self.target)
    rows = jnp.arange(self.num_tasks)[:, None] == task_id
    emb = jnp.where(rows, params['embeddings'], jax.lax.stop_gradient(params['embeddings']))
    if self.lookahead_lr > 0:
      def task_loss(p):
        logits = self.target.apply(self.generate(p, task_id), x)
        return _cross_entropy(logits, y), logits
      (ce, logits), grads = jax.value_and_grad(task_loss, has_aux=True)(params)
      step = jax.tree.map(lambda g: -self.lookahead_lr * jax.lax.stop_gradient(g), grads['hnet'])
      hnet_ahead = jax.tree.map(jnp.add, params['hnet'], step)
      outs = self.outputs(hnet_ahead, jax.lax.stop_gradient(params['embeddings']))
      ce = task_loss(params)[0]  # differentiated again at params (the gradient above is const)
    else:
      outs = self.outputs(params['hnet'], emb)  # [T, P], one pass for all tasks
      logits = self.target.apply(unravel(outs[task_id]), x)
      ce = _cross_entropy(logits, y)
    reg = output_regularizer(outs, memory['stored'], task_id, self.beta)
    return ce + reg, {'loss': ce + reg, 'ce': ce, 'reg': reg, 'acc': _accuracy(logits, y)}

  def _sampled_loss(self, params, memory, task_id, x, y, key):
    """`loss` with the regulariser over `reg_samples` earlier tasks drawn uniformly:
    `beta * mean_k ||f_h(e_{t_k}) - stored_{t_k}||^2` (0 for task 0)."""
    if key is None:
      raise ValueError(f'key: expected a PRNG key with reg_samples={self.reg_samples}, '
                       'received None.')

    def task_loss(p):
      logits = self.target.apply(self.generate(p, task_id), x)
      return _cross_entropy(logits, y), logits

    if self.lookahead_lr > 0:
      (ce, logits), grads = jax.value_and_grad(task_loss, has_aux=True)(params)
      ce = task_loss(params)[0]  # differentiated again at params (the gradient above is const)
      hnet_reg = jax.tree.map(lambda p, g: p - self.lookahead_lr * jax.lax.stop_gradient(g),
                              params['hnet'], grads['hnet'])
    else:
      ce, logits = task_loss(params)
      hnet_reg = params['hnet']
    earlier = jnp.arange(self.num_tasks) < task_id
    # Task 0 has no earlier task: any row is drawn and weighted 0.
    log_p = jnp.where(earlier | (task_id == 0), 0.0, -jnp.inf)
    rows = jax.random.categorical(key, log_p, shape=(self.reg_samples,))
    emb = jax.lax.stop_gradient(params['embeddings'])[rows]  # [k, E]
    if self.reg_chunks:  # its own stream: the rows stay those drawn without reg_chunks
      per_task = self._chunk_distances(hnet_reg, emb, memory['stored'], rows,
                                       jax.random.fold_in(key, 1))
    else:
      outs = self.outputs(hnet_reg, emb)  # [k, P]
      per_task = jnp.sum(jnp.square(outs - memory['stored'][rows]), axis=-1)
    reg = self.beta * jnp.mean(per_task) * (task_id > 0)
    return ce + reg, {'loss': ce + reg, 'ce': ce, 'reg': reg, 'acc': _accuracy(logits, y)}

  def _chunk_distances(self, hnet_params, emb, stored, rows, key):
    """`[k]` estimates of `||f_h(e) - stored[row]||^2` from `reg_chunks` chunks of each drawn
    row (`emb [k, E]`, `rows [k]`; `stored [T, P]` in `outputs`' order). Only the drawn
    chunks' stored values are read."""
    n = self.hnet.num_chunks
    index = _chunk_index(self.target, self.hnet.chunk_size, n)  # [n, chunk], -1: padding
    ids = jax.random.randint(key, (emb.shape[0], self.reg_chunks), 0, n)  # [k, m]
    gen = jax.vmap(lambda e, i: self.hnet.apply(hnet_params, e, chunk_ids=i))(emb, ids)
    where = jnp.asarray(index)[ids]  # [k, m, chunk]
    old = stored[rows[:, None, None], jnp.maximum(where, 0)]  # [k, m, chunk]
    old = jnp.where(where >= 0, old, 0.0)  # gen is 0 there too
    return jnp.sum(jnp.square(gen - old), axis=(1, 2)) * (n / self.reg_chunks)

  def begin_task(self, params: PyTree, task_id: int) -> PyTree:
    """With `init_with_prev_emb`, task `task_id > 0`'s embedding row := row `task_id - 1`."""
    if not self.init_with_prev_emb or task_id == 0:
      return params
    emb = params['embeddings']
    return {**params, 'embeddings': emb.at[task_id].set(emb[task_id - 1])}

  def end_task(self, params, memory, task_id, x, key):
    """Stores the current outputs for every embedding (rows `<= task_id` are used next)."""
    del task_id, x, key
    return {'stored': self.outputs(params['hnet'], params['embeddings'])}

  def predict(self, params, task_id, x):
    return self.target.apply(self.generate(params, task_id), x)


@dataclasses.dataclass(frozen=True)
class TargetMethod(ContinualMethod):
  """The target trained directly: fine-tuning (`penalty='none'`), EWC, online EWC or SI.

  Attributes:
    target: `x [N, D] -> logits [N, num_heads * C]`.
    num_tasks: `T`.
    num_classes: `C`, classes per task.
    multi_head: True: task `t` reads head `t` (the target has `T * C` outputs);
      False: one shared head (`C` outputs).
    penalty: one of `PENALTIES`.
    strength: the penalty's strength: EWC's lambda, SI's c.
    gamma: online EWC's Fisher decay.
    fisher_samples: training inputs per task for the Fisher (multiple of 100).
    fisher_labels: `'sample'` or `'argmax'` (`hypernet.continual.ewc.fisher_diagonal`).
    xi: SI's damping.
    path_grad: SI's path-integral gradient, `'total'` (of the loss with the SI penalty, as
      van de Ven's code) or `'task'` (without it, as Zenke et al.'s code).
  """
  target: Target
  num_tasks: int
  num_classes: int
  multi_head: bool
  penalty: str = 'none'
  strength: float = 0.0
  gamma: float = 1.0
  fisher_samples: int = 1000
  fisher_labels: str = 'sample'
  xi: float = 0.1
  path_grad: str = 'total'

  def __post_init__(self):
    if self.penalty not in PENALTIES:
      raise ValueError(f'penalty: expected one of {PENALTIES}, received {self.penalty!r}.')
    if self.fisher_labels not in ewc_lib.FISHER_LABELS:
      raise ValueError(f'fisher_labels: expected one of {ewc_lib.FISHER_LABELS}, received '
                       f'{self.fisher_labels!r}.')
    if self.path_grad not in si_lib.PATH_GRADS:
      raise ValueError(f'path_grad: expected one of {si_lib.PATH_GRADS}, received '
                       f'{self.path_grad!r}.')

  def init(self, key):
    return self.target.init(key)

  def init_memory(self, params):
    if self.penalty == 'none':
      return {}
    if self.penalty == 'si':  # flat [P] vectors: omega, importance, anchor (= the init)
      return si_lib.init_si_memory(ravel_pytree(params)[0])
    return ewc_lib.init_ewc_memory(self.target.num_params)

  def logits(self, params, task_id, x):
    out = self.target.apply(params, x)
    return select_head(out, task_id, self.num_classes) if self.multi_head else out

  def loss(self, params, memory, task_id, x, y, key=None):
    del key  # deterministic
    logits = self.logits(params, task_id, x)
    ce = _cross_entropy(logits, y)
    if self.penalty == 'none':
      pen = jnp.zeros(())
    elif self.penalty == 'si':
      pen = si_lib.si_penalty(ravel_pytree(params)[0], memory, self.strength)
    else:
      pen = ewc_lib.ewc_penalty(ravel_pytree(params)[0], memory, self.strength)
    return ce + pen, {'loss': ce + pen, 'ce': ce, 'reg': pen, 'acc': _accuracy(logits, y)}

  def step_memory(self, memory, old_params, new_params, grads):
    """SI: adds the step to the path integral (`grads` are of the total loss; with
    `path_grad='task'` the SI penalty's gradient is taken out first); others: unchanged."""
    if self.penalty != 'si':
      return memory
    old, new, g = (ravel_pytree(t)[0] for t in (old_params, new_params, grads))
    if self.path_grad == 'task':
      g = g - si_lib.si_penalty_grad(old, memory, self.strength)
    return si_lib.accumulate_path_integral(memory, old, new, g)

  def end_task(self, params, memory, task_id, x, key):
    """EWC: adds this task's Fisher (on `x [fisher_samples, D]`) to the memory; SI: folds the
    task's path integral into the importance and moves the anchor here."""
    if self.penalty == 'none':
      return memory
    flat, unravel = ravel_pytree(params)
    if self.penalty == 'si':
      return si_lib.update_si_memory(memory, flat, self.xi)
    log_probs = lambda p, xb: jax.nn.log_softmax(self.logits(p, task_id, xb), -1)
    try:  # one forward-backward pass per chunk where the target is made of Dense layers
      fisher = ravel_pytree(ewc_lib.dense_fisher_diagonal(
          log_probs, params, x, key, chunk=math.gcd(x.shape[0], 1000),
          labels=self.fisher_labels))[0]
    except ewc_lib.NotDenseError:  # any other target: per-example gradients
      fisher = ewc_lib.fisher_diagonal(lambda p, xb: log_probs(unravel(p), xb), flat, x, key,
                                       labels=self.fisher_labels)
    gamma = None if self.penalty == 'ewc' else self.gamma
    return ewc_lib.update_ewc_memory(memory, fisher, flat, gamma)

  def predict(self, params, task_id, x):
    return self.logits(params, task_id, x)
