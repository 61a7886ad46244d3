"""`SupportFiLM`: a hypernetwork modulates the metric embedding of each task from its support set.

Prototypical Networks (`hypernet.meta.ProtoNet`) embed every task's examples with the same
network. Here a hypernetwork generates, from the task's support set, a FiLM modulation
(per-channel scale and shift, Perez et al. 2018) of every selected layer of the embedding,
as TADAM's task-embedding network (Oreshkin et al. 2018) and CNAPs (Requeima et al. 2019)
do, and the task is then classified by distances to prototypes in the modulated embedding:

    z_k      = f(x_k; theta)                                     [K*N, D]  support, base weights
    p_c      = mean of z_k over class c                          [N, D]
    code     = rho(mean_c phi(context(p_c)))                     [C]       `SetEncoder` over classes
    theta'   = g(code; theta)                                    FiLM'd weights (`ModulationHypernet`)
    p'_c     = mean over class c of f(x_k; theta')               [N, D]
    logits_c = -scale * |f(x; theta') - p'_c|^2                  [Q, N]

`context(p_c)` is `[norm(p_c), norm(p_c - mean_c' p_c')]` (`norm`: zero mean, unit second
moment over features): the class and the class relative to the task. `g` is
`hypernet.ModulationHypernet(kind='film')` over the embedding target: it owns the base
weights `theta` and, per selected kernel, heads for `gamma = 1 + m(code)` and `beta(code)`
(`W' = W * gamma`, `b' = b * gamma + beta`, exactly FiLM on the pre-activation). With small
heads (`init_scale`) the learner starts near ProtoNets. `scale` is learned (log-space,
initial value `init_metric_scale`) when `learn_metric_scale`, else 1 (ProtoNets' metric).

The support set enters through a mean over classes, so predictions are equivariant to the
order of the labels, and the learner works for any number of ways and shots at evaluation.
Meta-parameters `{'hypernet': g's params (base weights included), 'encoder': the set
encoder's, 'log_scale': [] (only when learned)}`; `adapt` returns `{'params': theta',
'prototypes': [N, D]}`. There is no inner loop: `num_steps` must be 0.

Cost: one extra pass over the support set (the base pass that feeds the context), so about
`(2 K N + Q N) / (K N + Q N)` of ProtoNets' per episode (1.17x for 20-way 1-shot with 5
queries). Per-task weights under `vmap` make per-task convolution kernels: keep
`hypernet.nn.Conv`'s `'auto'` strategy (im2col on the CPU), not `'xla'`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from hypernet.encoders import SetEncoder
from hypernet.hypernets.modulation import ModulationHypernet
from hypernet.meta.base import MetaLearner
from hypernet.target import PyTree, Target


def standardise(v: jax.Array) -> jax.Array:
  """`[..., D]` to zero mean and unit second moment over the last axis."""
  v = v - jnp.mean(v, -1, keepdims=True)
  return v * jax.lax.rsqrt(jnp.mean(jnp.square(v), -1, keepdims=True) + 1e-6)


def class_means(z: jax.Array, y: jax.Array, ways: int) -> jax.Array:
  """Mean of `z [n, D]` per label `y [n]` in `0..ways-1`: `[ways, D]` (0 for an absent class)."""
  onehot = jax.nn.one_hot(y, ways, dtype=z.dtype)  # [n, N]
  return (onehot.T @ z) / jnp.maximum(onehot.sum(0), 1.0)[:, None]


def task_context(prototypes: jax.Array) -> jax.Array:
  """`[N, D]` prototypes -> `[N, 2D]`: each class, and each class relative to the task."""
  centred = prototypes - prototypes.mean(0, keepdims=True)
  return jnp.concatenate([standardise(prototypes), standardise(centred)], -1)


class PrototypeAttention(nn.Module):
  """Prototypes refined by self-attention over the task's classes: `[N, D] -> [N, D]`.

  `p + W_o MHA(LN(p))` (one block of a pre-norm Set Transformer, as FEAT's set-to-set
  adaptation, Ye et al. 2020): each class's prototype, the classifier row of the distance
  head, is corrected by what the other classes of the task look like. `W_o` starts at zero,
  so the refinement starts as the identity. Permutation-equivariant over classes.
  """
  num_heads: int = 4
  qkv_features: int = 64

  @nn.compact
  def __call__(self, prototypes: jax.Array) -> jax.Array:
    if prototypes.ndim != 2:
      raise ValueError(f'prototypes: expected [N, D], received shape {prototypes.shape}.')
    h = nn.LayerNorm(name='norm')(prototypes)[None]  # [1, N, D]
    delta = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.qkv_features,
        out_features=prototypes.shape[-1], out_kernel_init=nn.initializers.zeros,
        name='attention')(h, h)[0]  # [N, D]
    return prototypes + delta


class ClassMetric(nn.Module):
  """A diagonal metric per class, generated from the class and its task: `[N, D] -> [N, D], [N]`.

  For each class, an MLP of `[norm(p_c), norm(p_c - mean_c' p_c')]` (`task_context`) gives
  the log-precision `[D]` of its squared distance and a bias, so the logits are
  `-sum_j exp(l_cj) (z_j - p_cj)^2 + b_c`: a per-class Mahalanobis distance (diagonal),
  predicted from one example where Simple CNAPs estimates it from many. The output layer
  starts at zero: ProtoNets' metric. The MLP sees each class with its task context, so the
  head is equivariant to the order of the labels.
  """
  hidden: tuple[int, ...] = (128,)

  @nn.compact
  def __call__(self, prototypes: jax.Array) -> tuple[jax.Array, jax.Array]:
    if prototypes.ndim != 2:
      raise ValueError(f'prototypes: expected [N, D], received shape {prototypes.shape}.')
    dim = prototypes.shape[-1]
    h = task_context(prototypes)  # [N, 2D]
    for i, f in enumerate(self.hidden):
      h = nn.relu(nn.Dense(f, kernel_init=nn.initializers.he_normal(), name=f'dense_{i}')(h))
    out = nn.Dense(dim + 1, kernel_init=nn.initializers.zeros, name='out')(h)  # [N, D + 1]
    return out[:, :dim], out[:, dim]


@dataclasses.dataclass(frozen=True, eq=False)
class SupportFiLM(MetaLearner):
  """ProtoNets in an embedding FiLM-modulated per task from the support set (module doc).

  Attributes:
    embedding: `Target` mapping `x [n, ...]` to `[n, D]` (e.g. Conv-4 without its head).
    hypernet: `ModulationHypernet(kind='film')` for `embedding`, with `cond_dim` equal to
      `encoder.features`; None (with `encoder` None): no modulation, the embedding's weights
      are `meta_params['embedding']` (the refiner alone, an ablation).
    encoder: `SetEncoder` reading the `[N, 2D]` class contexts (labels are not needed: the
      contexts are per class already; the encoder gets an empty `y`).
    ways: classes per task (labels `0..ways-1`); the meta-parameters do not depend on it.
    input_shape: the shape of ONE input example (e.g. `(28, 28, 1)`).
    learn_metric_scale: learn the scale of the squared distances (else 1).
    init_metric_scale: its initial value.
    refiner: optional set-to-set module on the prototypes (`PrototypeAttention`), applied
      after the modulated embedding.
    class_metric: optional `ClassMetric`: a per-class diagonal metric and bias generated
      from the prototypes.
  """
  embedding: Target | None = None
  hypernet: nn.Module | None = None
  encoder: nn.Module | None = None
  ways: int = 5
  input_shape: tuple[int, ...] = ()
  loss: str = 'xent'
  inner_steps: int = 0
  learn_metric_scale: bool = False
  init_metric_scale: float = 1.0
  refiner: nn.Module | None = None
  class_metric: nn.Module | None = None

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.embedding, Target):
      raise TypeError(f'embedding: expected a hypernet.Target, received '
                      f'{type(self.embedding).__name__}.')
    if (self.hypernet is None and self.encoder is None and self.refiner is None
        and self.class_metric is None):
      raise ValueError('hypernet, encoder, refiner, class_metric: expected a FiLM hypernetwork '
                       'and its set encoder, a refiner or a class metric; received none (that '
                       'is ProtoNet).')
    if self.hypernet is not None or self.encoder is not None:
      if not isinstance(self.hypernet, ModulationHypernet) or self.hypernet.kind != 'film':
        raise TypeError(f"hypernet: expected a hypernet.ModulationHypernet with kind='film', "
                        f'received {self.hypernet!r:.200}.')
      if self.hypernet.target is not self.embedding:
        raise ValueError('hypernet.target: expected the embedding target itself (the '
                         'hypernetwork modulates the embedding), received another Target.')
      if not isinstance(self.encoder, SetEncoder):
        raise TypeError(f'encoder: expected a hypernet.SetEncoder, received '
                        f'{type(self.encoder).__name__}.')
      if self.hypernet.cond_dim != self.encoder.features:
        raise ValueError(f'hypernet.cond_dim: expected encoder.features = '
                         f'{self.encoder.features}, received {self.hypernet.cond_dim}.')
    if self.refiner is not None and not isinstance(self.refiner, nn.Module):
      raise TypeError(f'refiner: expected a flax.linen.Module (e.g. PrototypeAttention) or '
                      f'None, received {type(self.refiner).__name__}.')
    if self.loss != 'xent':
      raise ValueError(f"loss: SupportFiLM classifies, expected 'xent', received {self.loss!r}.")
    if not isinstance(self.ways, int) or isinstance(self.ways, bool) or self.ways < 2:
      raise ValueError(f'ways: expected an integer >= 2, received {self.ways!r}.')
    if self.inner_steps != 0:
      raise ValueError(f'inner_steps: SupportFiLM has no inner loop, expected 0, received '
                       f'{self.inner_steps!r}.')
    if not isinstance(self.input_shape, tuple) or not self.input_shape:
      raise ValueError(f'input_shape: expected the shape of one example, e.g. (28, 28, 1), '
                       f'received {self.input_shape!r}.')
    if not (isinstance(self.init_metric_scale, (int, float)) and self.init_metric_scale > 0
            and self.init_metric_scale < float('inf')):
      raise ValueError(f'init_metric_scale: expected a positive finite number, received '
                       f'{self.init_metric_scale!r}.')

  @property
  def _dim(self) -> int:
    out = jax.eval_shape(self.embedding.apply, self.embedding.param_spec,
                         jax.ShapeDtypeStruct((1, *self.input_shape), jnp.float32))
    if len(out.shape) != 2:
      raise ValueError(f'embedding: expected outputs [n, D] for inputs of input_shape='
                       f'{self.input_shape}, received shape {out.shape}.')
    return int(out.shape[-1])

  def init(self, key: jax.Array) -> PyTree:
    h_key, e_key = jax.random.split(key)
    dim = self._dim
    if self.hypernet is None:
      params = {'embedding': self.embedding.init(h_key)}
    else:
      code = jnp.zeros((self.encoder.features,), jnp.float32)
      params = {'hypernet': self.hypernet.init(h_key, code)['params']}
      ctx = jnp.zeros((self.ways, 2 * dim), jnp.float32)
      params['encoder'] = self.encoder.init(e_key, ctx, jnp.zeros((self.ways, 0)))['params']
    if self.learn_metric_scale:
      params['log_scale'] = jnp.log(jnp.asarray(self.init_metric_scale, jnp.float32))
    if self.refiner is not None:
      r_key = jax.random.fold_in(key, 2)
      params['refiner'] = self.refiner.init(r_key, jnp.zeros((self.ways, dim)))['params']
    if self.class_metric is not None:
      m_key = jax.random.fold_in(key, 3)
      params['class_metric'] = self.class_metric.init(
          m_key, jnp.zeros((self.ways, dim)))['params']
    return params

  def base_params(self, meta_params: PyTree) -> PyTree:
    """The unmodulated embedding weights `theta` (the hypernetwork's base)."""
    if self.hypernet is None:
      return meta_params['embedding']
    treedef = jax.tree.structure(self.embedding.param_spec)
    return jax.tree.unflatten(treedef, list(meta_params['hypernet']['base']))

  def task_code(self, meta_params: PyTree, x_support: jax.Array,
                y_support: jax.Array) -> jax.Array:
    """ONE task's code `[C]` from its support set (base-weight embedding, class contexts)."""
    z = self.embedding.apply(self.base_params(meta_params), x_support)  # [K*N, D]
    ctx = task_context(class_means(z, y_support, self.ways))  # [N, 2D]
    return self.encoder.apply({'params': meta_params['encoder']}, ctx,
                              jnp.zeros((ctx.shape[0], 0), ctx.dtype))

  def adapt(self, meta_params, x_support, y_support, num_steps):
    """ONE task: `{'params': FiLM'd embedding weights, 'prototypes': [N, D]}`."""
    if num_steps:
      raise ValueError(f'num_steps: SupportFiLM has no inner loop, expected 0, received '
                       f'{num_steps!r}.')
    if x_support.shape[0] != y_support.shape[0]:
      raise ValueError(f'x_support, y_support: expected ONE task\'s support set with the same '
                       f'number of examples, received shapes {x_support.shape} and '
                       f'{y_support.shape}.')
    if self.hypernet is None:
      params = meta_params['embedding']
    else:
      code = self.task_code(meta_params, x_support, y_support)
      params = self.hypernet.apply({'params': meta_params['hypernet']}, code)
    z = self.embedding.apply(params, x_support)  # [K*N, D]
    prototypes = class_means(z, y_support, self.ways)  # [N, D]
    if self.refiner is not None:
      prototypes = self.refiner.apply({'params': meta_params['refiner']}, prototypes)
    adapted = {'params': params, 'prototypes': prototypes}
    if self.class_metric is not None:
      adapted['log_precision'], adapted['bias'] = self.class_metric.apply(
          {'params': meta_params['class_metric']}, prototypes)  # [N, D], [N]
    return adapted

  def predict(self, meta_params, adapted, x):
    """Logits `[Q, N]`: minus (scaled) squared distances to the prototypes."""
    z = self.embedding.apply(adapted['params'], x)  # [Q, D]
    sq = jnp.square(z[:, None, :] - adapted['prototypes'][None])  # [Q, N, D]
    if 'log_precision' in adapted:
      d2 = jnp.sum(sq * jnp.exp(adapted['log_precision'])[None], -1) - adapted['bias'][None]
    else:
      d2 = jnp.sum(sq, -1)
    if self.learn_metric_scale:
      d2 = d2 * jnp.exp(meta_params['log_scale'])
    return -d2
