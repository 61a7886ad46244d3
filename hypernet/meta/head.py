"""`HyperHead`: a hypernetwork generates each class's classifier weights from its support set.

For N-way classification with a shared embedding network `f` (`x -> [D]`), a task's head is
one row per class. A hypernetwork `g` (any vector-conditioned family, e.g.
`hypernet.FullHypernet` for the one-class head target of `class_head_target(D)`) generates
class `c`'s row from its support examples, as in "predicting parameters from activations"
(Qiao et al., 2018) and the weight generator of Gidaris & Komodakis (2018):

    p_c     = mean of f(x) over the support examples of class c          [D]
    cond_c  = [norm(p_c), norm(p_c - mean_c' p_c')]                       [2D]
    (w_c, b_c) = base_c + g(cond_c)                                       [D], []
    logits(x)_c = f(x) . w_c + b_c

`norm` standardises over the feature axis (zero mean, unit second moment: what hyperfan
initialisation assumes of the condition). The second half of the condition is the class
relative to the task, so a row can depend on the other classes. `base`:

* `'prototype'` (default): `base_c = (2 p_c, -|p_c|^2)`, the linear head that gives
  exactly the Prototypical Networks' logits `-|f(x) - p_c|^2` up to a per-query constant
  (`|f(x)|^2`, which softmax ignores). With a zero-centred hypernetwork head the learner
  starts at ProtoNets and the hypernetwork learns a per-task correction.
* `'none'`: the generated rows alone.

`g` sees each class alone (vmapped over classes), so the head is equivariant to the order of
the labels and works for any number of ways and shots at evaluation. The embedding's weights
are shared by all tasks: under `vmap` over tasks the embedding runs once on the folded batch
(no per-task convolution kernels). `adapt(..., num_steps)` then takes `num_steps` SGD steps
(`inner_lr`) on the head alone, on the support loss with the features fixed (cheap; in
training with `inner_steps > 0`, second order through the head unless `first_order`).

meta_params: `{'embedding': embedding params, 'hypernet': the hypernetwork's params}`.
adapted: `{'kernel': [D, N], 'bias': [N]}`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hypernet.meta.base import SGDInnerLoopLearner
from hypernet.meta.inner import inner_sgd
from hypernet.target import PyTree, Target

BASES = ('prototype', 'none')


def class_head_target(dim: int) -> Target:
  """The one-class head `[n, dim] -> [n, 1]` (`{'kernel': [dim, 1], 'bias': [1]}`) whose
  parameters `HyperHead`'s hypernetwork generates, one class at a time."""
  if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
    raise ValueError(f'dim: expected a positive integer (the embedding size), received {dim!r}.')
  return Target.from_linen(nn.Dense(1), jnp.zeros((1, int(dim))), key=jax.random.key(0),
                           name=f'ClassHead{dim}')


def _standardise(v: jax.Array) -> jax.Array:
  """`[..., D]` to zero mean and unit second moment over the last axis."""
  v = v - jnp.mean(v, -1, keepdims=True)
  return v * jax.lax.rsqrt(jnp.mean(jnp.square(v), -1, keepdims=True) + 1e-6)


@dataclasses.dataclass(frozen=True)
class HyperHead(SGDInnerLoopLearner):
  """Shared embedding; class rows of the head generated from the support set (see module doc).

  Attributes:
    target: the embedding network, a `Target` mapping `x [n, ...]` to `[n, D]` (`target`: every
      learner's name for the network it adapts or reads).
    hypernet: a vector-conditioned hypernetwork with `cond_dim = 2 D` for the target
      `class_head_target(D)` (e.g. `hypernet.FullHypernet`); zero-centred head
      (`head_init` 'hyperfan_in', 'hyperfan_out', 'naive', 'torch' or 'xavier') when
      `base='prototype'`.
    ways: classes per task (labels `0..ways-1`). The meta-parameters do not depend on it:
      `dataclasses.replace(learner, ways=20)` evaluates a model trained 5-way on 20-way tasks.
    base: 'prototype' or 'none' (see the module docstring).
    inner_steps: SGD steps on the head in training (0: purely amortised).
    inner_lr: their step size (with `first_order` and `remat`, the inner loop:
      `SGDInnerLoopLearner`).
  """
  target: Target | None = None
  hypernet: nn.Module | None = None
  ways: int = 5
  base: str = 'prototype'
  loss: str = 'xent'
  inner_steps: int = 0
  inner_lr: float = 0.1

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.target, Target):
      raise TypeError(f'target: expected a hypernet.Target, received '
                      f'{type(self.target).__name__}.')
    if not isinstance(self.hypernet, nn.Module):
      raise TypeError(f'hypernet: expected a flax.linen.Module, received '
                      f'{type(self.hypernet).__name__}.')
    if self.loss != 'xent':
      raise ValueError(f"loss: HyperHead classifies, expected 'xent', received {self.loss!r}.")
    if not isinstance(self.ways, int) or isinstance(self.ways, bool) or self.ways < 2:
      raise ValueError(f'ways: expected an integer >= 2, received {self.ways!r}.')
    if self.base not in BASES:
      raise ValueError(f'base: expected one of {BASES}, received {self.base!r}.')
    if self.base == 'prototype' and getattr(self.hypernet, 'head_init', None) == 'target':
      raise ValueError("hypernet.head_init: with base='prototype' the hypernetwork's output is "
                       "a correction; expected a zero-centred head ('hyperfan_in', "
                       "'hyperfan_out', 'naive', 'torch' or 'xavier'), received 'target'.")
    own = getattr(self.hypernet, 'target', None)
    cond_dim = getattr(self.hypernet, 'cond_dim', None)
    if isinstance(own, Target):
      spec = own.param_spec
      if set(spec) != {'kernel', 'bias'} or spec['kernel'].shape[1:] != (1,):
        raise ValueError(f'hypernet.target: expected the one-class head of class_head_target(D) '
                         f"({{'kernel': [D, 1], 'bias': [1]}}), received {own.name!r} with spec "
                         f'{jax.tree.map(lambda s: s.shape, spec)}.')
      dim = spec['kernel'].shape[0]
      if cond_dim != 2 * dim:
        raise ValueError(f'hypernet.cond_dim: expected 2 * D = {2 * dim} (class and task '
                         f'features), received {cond_dim}.')

  @property
  def _head_target(self) -> Target:
    return self.hypernet.target

  def init(self, key: jax.Array) -> PyTree:
    emb_key, hnet_key = jax.random.split(key)
    cond = jnp.zeros((self.hypernet.cond_dim,), jnp.float32)
    return {'embedding': self.target.init(emb_key),
            'hypernet': self.hypernet.init(hnet_key, cond)['params']}

  def _check_features(self, z: jax.Array) -> None:
    dim = self._head_target.param_spec['kernel'].shape[0]
    if z.ndim != 2 or z.shape[1] != dim:
      raise ValueError(f'target: expected features [n, {dim}] (the hypernetwork\'s class '
                       f'head size), received shape {z.shape}.')

  def generate(self, meta_params: PyTree, x_support: jax.Array,
               y_support: jax.Array) -> dict[str, jax.Array]:
    """ONE task's generated head (no fine-tuning) from its support set, inputs
    `[K*N, ...]` and labels `[K*N]`, as every learner's `generate`:
    `{'kernel': [D, N], 'bias': [N]}`."""
    z = self.target.apply(meta_params['embedding'], x_support)  # [K*N, D]
    self._check_features(z)
    return self.head_from_features(meta_params, z, y_support)

  def head_from_features(self, meta_params: PyTree, z_support: jax.Array,
                         y_support: jax.Array) -> dict[str, jax.Array]:
    """`generate` from the support features `[K*N, D]` (already embedded)."""
    onehot = jax.nn.one_hot(y_support, self.ways, dtype=z_support.dtype)  # [K*N, N]
    protos = (onehot.T @ z_support) / jnp.maximum(onehot.sum(0), 1.0)[:, None]  # [N, D]
    cond = jnp.concatenate([_standardise(protos),
                            _standardise(protos - protos.mean(0, keepdims=True))], -1)  # [N, 2D]
    rows = jax.vmap(lambda c: self.hypernet.apply({'params': meta_params['hypernet']}, c))(cond)
    kernel, bias = rows['kernel'][..., 0].T, rows['bias'][:, 0]  # [D, N], [N]
    if self.base == 'prototype':
      kernel = kernel + 2.0 * protos.T
      bias = bias - jnp.sum(jnp.square(protos), -1)
    return {'kernel': kernel, 'bias': bias}

  def adapt(self, meta_params, x_support, y_support, num_steps, key=None):
    """ONE task: the generated head, then `num_steps` SGD steps on it (features fixed)."""
    del key  # deterministic
    if x_support.shape[0] != y_support.shape[0]:
      raise ValueError(f'x_support, y_support: expected ONE task\'s support set with the same '
                       f'number of examples, received shapes {x_support.shape} and '
                       f'{y_support.shape}.')
    z = self.target.apply(meta_params['embedding'], x_support)  # [K*N, D]
    self._check_features(z)
    head = self.head_from_features(meta_params, z, y_support)

    def support_loss(h):
      return self.loss_fn(z @ h['kernel'] + h['bias'], y_support)

    head, _ = inner_sgd(support_loss, head, self.inner_lr, int(num_steps),
                        first_order=self.first_order, remat=self.remat)
    return head

  def predict(self, meta_params, adapted, x):
    """Logits `[Q, N]`."""
    z = self.target.apply(meta_params['embedding'], x)  # [Q, D]
    return z @ adapted['kernel'] + adapted['bias']
