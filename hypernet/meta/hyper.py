"""Hypernetwork meta-learners: the hypernetwork is the adaptation mechanism.

* `Amortised`: set encoder over the support set -> hypernetwork -> target
  parameters; no inner loop in training (`inner_steps` must be 0).
* `LatentAdaptation` (CAVIA / LEO family): inner-loop gradient steps on a
  low-dimensional task code `z` (starting at zero, or at a learned init), which
  a hypernetwork decodes into target parameters or modulations.
* `HyperMAML`: the hypernetwork maps the support set and the base weights'
  predictions on it to an update of meta-learned base weights, optionally
  followed by `inner_steps` gradient steps.
* `LearnedUpdate`: a `WeightConditionedHypernet` takes the target's weights and
  their support-set gradient and returns the updated weights; applied for
  `inner_steps` steps from meta-learned initial weights.

Each is written for ONE task, like every `MetaLearner`; `meta_params` is a dict
of plain pytrees (Flax `params` collections and target parameter trees), and
`adapt` returns the adapted *target parameters* for every learner here, so that
`predict` is `target.apply(adapted, x)` throughout.

Steps at evaluation. `adapt(..., num_steps)` accepts any `num_steps >= 0` for
every learner, so all of them can be evaluated "after 0, 1, ..., k steps"
(`hypernet.meta.evaluate`):

* `Amortised`: `num_steps` plain SGD steps (`inner_lr`) on the generated
  target parameters (0: the hypernetwork's output as it is);
* `LatentAdaptation`: `num_steps` SGD steps on `z`;
* `HyperMAML`: the hypernetwork update, then `num_steps` SGD steps;
* `LearnedUpdate`: `num_steps` applications of the learned rule.

Support-set features. The encoders see each support point as one vector:
inputs flattened to `[K, dx]`; targets as `[K, dy]` floats for `loss='mse'`
and one-hot `[K, C]` for `loss='xent'` (C = the target's output size). Since a
`Target` does not record its input shape, learners with an encoder take
`input_shape`, the shape of ONE input example, to initialise it.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hypernet.hypernets.modulation import ModulationHypernet
from hypernet.layout import ParamLayout, layout_for
from hypernet.meta.base import INIT_KEY, InnerLoopLearner, SGDInnerLoopLearner
from hypernet.meta.inner import inner_sgd
from hypernet.target import PyTree, Target, check_tree_matches_spec


# ------------------------------------------------------------------ checks
def _check_target(target: Target) -> None:
  if not isinstance(target, Target):
    raise TypeError(f'target: expected a hypernet.Target, received {type(target).__name__}.')


def _check_module(name: str, module: nn.Module) -> None:
  if not isinstance(module, nn.Module):
    raise TypeError(f'{name}: expected a flax.linen.Module, received {type(module).__name__}.')


def _check_encoder_and_hypernet(target, encoder, hypernet) -> None:
  """A target, a set encoder and a hypernetwork whose cond_dim is the encoder's features."""
  _check_target(target)
  _check_module('encoder', encoder)
  _check_module('hypernet', hypernet)
  cond_dim = _cond_dim('hypernet', hypernet)
  features = getattr(encoder, 'features', None)
  if features is not None and features != cond_dim:
    raise ValueError(f'encoder.features: expected the hypernetwork\'s cond_dim {cond_dim}, '
                     f'received {features}.')


def _check_for_target(name: str, module: nn.Module, target: Target) -> None:
  """A module that holds a `target` field must be built for a target with the same spec."""
  own = getattr(module, 'target', None)
  if isinstance(own, Target) and own is not target:
    try:
      check_tree_matches_spec(own.param_spec, target.param_spec, f'{name}.target')
    except ValueError as e:
      raise ValueError(f'{name}: built for a different target than the learner\'s '
                       f'{target.name!r}; {e}') from None


def _cond_dim(name: str, hypernet: nn.Module) -> int:
  cond_dim = getattr(hypernet, 'cond_dim', None)
  if cond_dim is None:
    raise TypeError(f'{name}: expected a hypernetwork conditioned on a vector (a module with a '
                    f'cond_dim attribute, e.g. hypernet.FullHypernet), received '
                    f'{type(hypernet).__name__}.')
  return int(cond_dim)


def _check_number(name: str, value, *, positive: bool = False) -> None:
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
  if not ok or value < 0 or (positive and value == 0):
    want = 'a number > 0' if positive else 'a number >= 0'
    raise ValueError(f'{name}: expected {want}, received {value!r}.')


def _check_input_shape(value) -> None:
  if (not isinstance(value, tuple) or not value
      or not all(isinstance(d, (int, np.integer)) and d > 0 for d in value)):
    raise ValueError(f'input_shape: expected a non-empty tuple of positive integers (the shape of '
                     f'ONE input example, e.g. (1,) for 1-D regression), received {value!r}.')


def _check_support(x_support: jax.Array, y_support: jax.Array) -> None:
  if x_support.ndim < 1 or y_support.ndim < 1 or x_support.shape[0] != y_support.shape[0]:
    raise ValueError(f'x_support, y_support: expected ONE task\'s support set [K, ...] and '
                     f'[K, ...] with the same K (vmap over tasks), received shapes '
                     f'{x_support.shape} and {y_support.shape}.')


# ------------------------------------------------------------------ features
def _inputs(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1).astype(jnp.float32)  # [K, dx]


def _labels(loss: str, y: jax.Array, num_outputs: int) -> jax.Array:
  """Targets as per-point vectors: `[K, dy]` (mse) or one-hot `[K, C]` (xent)."""
  if loss == 'xent':
    return jax.nn.one_hot(y, num_outputs)  # [K, C]
  return y.reshape(y.shape[0], -1).astype(jnp.float32)  # [K, dy]


def _num_outputs(target: Target, x: jax.Array) -> int:
  out = jax.eval_shape(target.apply, target.param_spec, x)
  return int(np.prod(out.shape[1:], dtype=np.int64))


def _sample_support(learner, target: Target) -> tuple[jax.Array, jax.Array]:
  """A one-point support set of the right shapes, for initialising encoders."""
  x = jnp.zeros((1, *learner.input_shape), jnp.float32)
  c = _num_outputs(target, x)
  y = jnp.zeros((1,), jnp.int32) if learner.loss == 'xent' else jnp.zeros((1, c), jnp.float32)
  return x, y


def _support_loss_fn(learner, x_support, y_support) -> Callable[[PyTree], jax.Array]:
  def support_loss(params):
    return learner.loss_fn(learner.target.apply(params, x_support), y_support)
  return support_loss


# ------------------------------------------------------------------ learners
@dataclasses.dataclass(frozen=True)
class Amortised(SGDInnerLoopLearner):
  """`encoder(x_s, y_s) [cond_dim] -> hypernet -> target params`, one forward pass.

  Attributes:
    target: the `Target`.
    encoder: a `hypernet.SetEncoder` (its `features` = the hypernetwork's `cond_dim`).
    hypernet: any hypernetwork family module mapping `[cond_dim]` to target params.
    inner_steps: must be 0 (training is purely amortised).
    inner_lr: step size of the optional SGD fine-tuning of the generated
      parameters when `adapt` is called with `num_steps > 0` (evaluation); with
      `first_order` and `remat`, the inner loop (`SGDInnerLoopLearner`).
    input_shape: shape of ONE input example (initialises the encoder).
  meta_params: `{'encoder': ..., 'hypernet': ...}` (Flax `params` collections).
  """
  target: Target | None = None
  encoder: nn.Module | None = None
  hypernet: nn.Module | None = None
  inner_steps: int = 0
  input_shape: tuple[int, ...] = (1,)

  def __post_init__(self):
    super().__post_init__()
    if self.inner_steps != 0:
      raise ValueError(f'inner_steps: Amortised has no inner loop in training, expected 0, '
                       f'received {self.inner_steps} (evaluate with more steps to fine-tune the '
                       f'generated parameters with inner_lr).')
    _check_encoder_and_hypernet(self.target, self.encoder, self.hypernet)
    _check_for_target('hypernet', self.hypernet, self.target)
    _check_input_shape(self.input_shape)

  def init(self, key: jax.Array) -> PyTree:
    encoder_key, hnet_key = jax.random.split(key)
    x, y = _sample_support(self, self.target)
    c = _num_outputs(self.target, x)
    enc_params = self.encoder.init(encoder_key, _inputs(x), _labels(self.loss, y, c))['params']
    cond = jnp.zeros((_cond_dim('hypernet', self.hypernet),), jnp.float32)
    hnet_params = self.hypernet.init(hnet_key, cond)['params']
    return {'encoder': enc_params, 'hypernet': hnet_params}

  def generate(self, meta_params: PyTree, x_support: jax.Array,
               y_support: jax.Array) -> PyTree:
    """ONE task: the generated target parameters (no fine-tuning)."""
    _check_support(x_support, y_support)
    c = _num_outputs(self.target, x_support)
    code = self.encoder.apply({'params': meta_params['encoder']}, _inputs(x_support),
                              _labels(self.loss, y_support, c))  # [cond_dim]
    return self.hypernet.apply({'params': meta_params['hypernet']}, code)

  def adapt(self, meta_params, x_support, y_support, num_steps, key=None):
    """ONE task: generated parameters, then `num_steps` SGD steps (`inner_lr`)."""
    del key  # deterministic
    self.check_num_steps(num_steps)
    params = self.generate(meta_params, x_support, y_support)
    params, _ = inner_sgd(_support_loss_fn(self, x_support, y_support), params,
                          self.inner_lr, int(num_steps), first_order=self.first_order,
                          remat=self.remat)
    return params

  def predict(self, meta_params, adapted, x):
    return self.target.apply(adapted, x)


@dataclasses.dataclass(frozen=True)
class LatentAdaptation(SGDInnerLoopLearner):
  """Inner SGD on a task code `z [latent_dim]`, decoded by `hypernet` into target params.

  `adapt` returns the decoded target parameters; `adapt_latent` returns `z`.

  The decoder must depend on `z` at its starting point: a hypernetwork with a
  ReLU trunk (`hidden != ()`) has zero-initialised biases, so at `z = 0` every
  trunk unit sits at the kink of the ReLU, whose derivative JAX takes as 0, and
  neither `z` nor the trunk would ever receive a gradient. `init` checks this
  (on concrete values) and raises. Use a linear decoder (`hidden=()`), e.g.
  `ModulationHypernet(kind='film', hidden=())` as in CAVIA, or
  `learn_init=True`, whose `z_init` starts at N(0, 1) (the unit second moment
  the hyperfan initialisation assumes).

  Attributes:
    target: the `Target`.
    hypernet: hypernetwork module with `cond_dim == latent_dim` (e.g.
      `ModulationHypernet(kind='film', hidden=())`, CAVIA-style, or `FullHypernet`).
    latent_dim: size of z.
    inner_lr: inner step size on z (with `inner_steps`, `first_order` and `remat`, the
      inner loop: `SGDInnerLoopLearner`).
    learn_init: meta-learn z's starting point (else zeros).
  meta_params: `{'hypernet': ..., ('z_init': [latent_dim])}`.
  """
  target: Target | None = None
  hypernet: nn.Module | None = None
  latent_dim: int = 16
  inner_lr: float = 1.0
  learn_init: bool = False

  def __post_init__(self):
    super().__post_init__()
    _check_target(self.target)
    _check_module('hypernet', self.hypernet)
    if (not isinstance(self.latent_dim, (int, np.integer)) or isinstance(self.latent_dim, bool)
        or self.latent_dim <= 0):
      raise ValueError(f'latent_dim: expected a positive integer, received {self.latent_dim!r}.')
    cond_dim = _cond_dim('hypernet', self.hypernet)
    if cond_dim != self.latent_dim:
      raise ValueError(f'hypernet.cond_dim: expected latent_dim {self.latent_dim}, received '
                       f'{cond_dim}.')
    _check_for_target('hypernet', self.hypernet, self.target)

  def init(self, key: jax.Array) -> PyTree:
    hnet_key, z_key = jax.random.split(key)
    z0 = jnp.zeros((self.latent_dim,), jnp.float32)
    meta_params = {'hypernet': self.hypernet.init(hnet_key, z0)['params']}
    if self.learn_init:
      meta_params['z_init'] = jax.random.normal(z_key, (self.latent_dim,), jnp.float32)
    self._check_depends_on_z(meta_params)
    return meta_params

  def _check_depends_on_z(self, meta_params: PyTree) -> None:
    z0 = self._z_init(meta_params)
    if isinstance(z0, jax.core.Tracer) or any(
        isinstance(l, jax.core.Tracer) for l in jax.tree.leaves(meta_params)):
      return  # under a transformation: nothing concrete to check
    _, tangent = jax.jvp(lambda z: self.decode(meta_params, z), (z0,), (jnp.ones_like(z0),))
    if not any(bool(jnp.any(t != 0)) for t in jax.tree.leaves(tangent)):
      raise ValueError(
          'hypernet: the decoded target parameters do not depend on z at its starting point '
          '(zero derivative), so the inner loop could never move z; a ReLU trunk with zero '
          'biases is flat at z = 0. Expected a decoder that is linear in z at the start '
          "(hidden=(), e.g. ModulationHypernet(kind='film', hidden=())) or learn_init=True; "
          f'received {type(self.hypernet).__name__} with hidden='
          f'{getattr(self.hypernet, "hidden", "?")} and learn_init={self.learn_init}.')

  def _z_init(self, meta_params: PyTree) -> jax.Array:
    if self.learn_init:
      return meta_params['z_init']
    return jnp.zeros((self.latent_dim,), jnp.float32)

  def decode(self, meta_params: PyTree, z: jax.Array) -> PyTree:
    """`z [latent_dim]` -> target params."""
    return self.hypernet.apply({'params': meta_params['hypernet']}, z)

  def adapt_latent(self, meta_params: PyTree, x_support: jax.Array, y_support: jax.Array,
                   num_steps: int, return_path: bool = False) -> jax.Array:
    """ONE task: z `[latent_dim]` after `num_steps` SGD steps on the support loss (with
    `return_path`, z after each step `[num_steps, latent_dim]`)."""
    _check_support(x_support, y_support)
    self.check_num_steps(num_steps)

    def support_loss(z):
      return self.loss_fn(self.target.apply(self.decode(meta_params, z), x_support), y_support)

    z, _ = inner_sgd(support_loss, self._z_init(meta_params), self.inner_lr, int(num_steps),
                     first_order=self.first_order, remat=self.remat, return_path=return_path)
    return z

  def adapt(self, meta_params, x_support, y_support, num_steps, key=None):
    """ONE task: the target parameters decoded from the adapted z."""
    del key  # deterministic
    return self.decode(meta_params, self.adapt_latent(meta_params, x_support, y_support,
                                                      num_steps))

  def adapt_path(self, meta_params, x_support, y_support, num_steps, key=None):
    """ONE task: the target parameters decoded after each step 1..num_steps (`[S, ...]`)."""
    del key  # deterministic
    z_path = self.adapt_latent(meta_params, x_support, y_support, num_steps, return_path=True)
    return jax.vmap(lambda z: self.decode(meta_params, z))(z_path)  # leaves [S, ...]

  def predict(self, meta_params, adapted, x):
    return self.target.apply(adapted, x)


@dataclasses.dataclass(frozen=True)
class HyperMAML(SGDInnerLoopLearner):
  """Base weights theta; `theta' = theta + delta(encoder(features))`, then SGD.

  Per support point the encoder sees `[x, f_theta(x)]` as its inputs and
  `[y, f_theta(x) - y]` as its targets (`SetEncoder` concatenates them), i.e.
  the point, the base model's prediction and its residual (for `loss='xent'`,
  the one-hot label and softmax probabilities). Its code conditions the
  hypernetwork, whose output is read as an *update*:

      delta_j = delta_scale * hypernet(code)_j   on the leaves the hypernetwork generates,
      delta_j = 0                                on the others (e.g. all but the last layer
                                                 with `FullHypernet(generate='Dense_2')`,
                                                 the paper's setting).

  Why a fixed `delta_scale`: hyperfan heads (`head_init='hyperfan_in'`, the
  default) generate kernels with the target's own init variance and biases
  around 0, so `delta_scale` sets the initial update relative to each leaf's
  init scale (0.1: a tenth), zero-centred, and every hypernetwork parameter
  receives a gradient from the first step. Hypernetworks that return weights
  rather than updates are rejected: `head_init='target'` (a constant copy of
  the target's init) and `ModulationHypernet` (which holds its own base).
  The hypernetwork's own copies of the leaves it does not generate (its
  `shared` parameter) are unused here and get no gradient.

  Attributes:
    target: the `Target`.
    encoder: a `hypernet.SetEncoder` (its `features` = the hypernetwork's `cond_dim`).
    hypernet: a vector-conditioned hypernetwork (e.g. `FullHypernet`,
      `PerTensorHypernet`, `ChunkedHypernet`) with a zero-centred head.
    inner_lr: step size of the optional gradient steps after the hypernetwork update.
    inner_steps: gradient steps after the update in training (0: none).
    first_order, remat: as every inner loop's (`SGDInnerLoopLearner`).
    delta_scale: the fixed scale of the generated update (> 0).
    input_shape: shape of ONE input example (initialises the encoder).
  meta_params: `{'init': the base weights (target params), 'encoder': ..., 'hypernet': ...}`.
  """
  has_learned_init: ClassVar[bool] = True
  target: Target | None = None
  encoder: nn.Module | None = None
  hypernet: nn.Module | None = None
  inner_steps: int = 0
  delta_scale: float = 0.1
  input_shape: tuple[int, ...] = (1,)

  def __post_init__(self):
    super().__post_init__()
    _check_encoder_and_hypernet(self.target, self.encoder, self.hypernet)
    if isinstance(self.hypernet, ModulationHypernet):
      raise ValueError('hypernet: expected a hypernetwork whose output is an update (e.g. '
                       'FullHypernet), received ModulationHypernet, which returns modulated '
                       'copies of its own base weights.')
    if getattr(self.hypernet, 'head_init', None) == 'target':
      raise ValueError("hypernet.head_init: expected a zero-centred head ('hyperfan_in', "
                       "'hyperfan_out', 'naive', 'torch' or 'xavier'), received 'target' (a "
                       'constant copy of the target init, not an update).')
    _check_for_target('hypernet', self.hypernet, self.target)
    _check_number('delta_scale', self.delta_scale, positive=True)
    _check_input_shape(self.input_shape)

  def _layout(self) -> ParamLayout:
    return layout_for(self.target, getattr(self.hypernet, 'generate', None))

  def init(self, key: jax.Array) -> PyTree:
    base_key, encoder_key, hnet_key = jax.random.split(key, 3)
    base = self.target.init(base_key)
    x, y = _sample_support(self, self.target)
    enc_x, enc_y = self._features(base, x, y)
    cond = jnp.zeros((_cond_dim('hypernet', self.hypernet),), jnp.float32)
    return {INIT_KEY: base,
            'encoder': self.encoder.init(encoder_key, enc_x, enc_y)['params'],
            'hypernet': self.hypernet.init(hnet_key, cond)['params']}

  def _features(self, base: PyTree, x: jax.Array,
                y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encoder inputs `[K, dx + C]` and targets `[K, 2 C]` of ONE support set."""
    out = self.target.apply(base, x)
    out = out.reshape(out.shape[0], -1)  # [K, C]
    labels = _labels(self.loss, y, out.shape[-1])  # [K, C]
    pred = jax.nn.softmax(out, -1) if self.loss == 'xent' else out
    return (jnp.concatenate([_inputs(x), pred], -1),  # [K, dx + C]
            jnp.concatenate([labels, pred - labels], -1))  # [K, 2 C]

  def update(self, meta_params: PyTree, x_support: jax.Array, y_support: jax.Array) -> PyTree:
    """ONE task: the generated update `delta` (a tree like the target's params)."""
    _check_support(x_support, y_support)
    enc_x, enc_y = self._features(meta_params[INIT_KEY], x_support, y_support)
    code = self.encoder.apply({'params': meta_params['encoder']}, enc_x, enc_y)  # [cond_dim]
    out = jax.tree.leaves(self.hypernet.apply({'params': meta_params['hypernet']}, code))
    layout = self._layout()
    delta = [jnp.zeros(l.shape, l.dtype) for l in layout.leaves]
    for l in layout.generated:
      delta[l.index] = (self.delta_scale * out[l.index]).astype(l.dtype)
    return jax.tree.unflatten(layout.treedef, delta)

  def adapt(self, meta_params, x_support, y_support, num_steps, key=None):
    """ONE task: `base + delta`, then `num_steps` SGD steps (`inner_lr`)."""
    del key  # deterministic
    self.check_num_steps(num_steps)
    delta = self.update(meta_params, x_support, y_support)
    params = jax.tree.map(jnp.add, meta_params[INIT_KEY], delta)
    params, _ = inner_sgd(_support_loss_fn(self, x_support, y_support), params, self.inner_lr,
                          int(num_steps), first_order=self.first_order, remat=self.remat)
    return params

  def predict(self, meta_params, adapted, x):
    return self.target.apply(adapted, x)


@dataclasses.dataclass(frozen=True)
class LearnedUpdate(InnerLoopLearner):
  """`(theta_{k+1}, s_{k+1}) = rule(theta_k, grad L_support(theta_k), s_k)`, k < num_steps.

  The rule (a `WeightConditionedHypernet`) carries a state `s` (gradient momenta and the
  step index), fresh for every task. The steps run in `jax.lax.scan` (each
  rematerialised with `remat=True`, so unrolling many steps in training stores one
  parameter set per step, not every step's activations); the meta-gradient flows through
  every step, through the support-loss gradients too (second order) unless `first_order`.
  A rule is trained for the numbers of steps it is unrolled for: with
  `multi_step_loss=True` for every number from 1 to `inner_steps` (the mean query loss
  over the steps), otherwise only for `inner_steps`.

  Attributes:
    target: the `Target`.
    rule: a `hypernet.WeightConditionedHypernet` for `target` (with `use_grad=True`).
    first_order: treat the support-loss gradients as constants in the meta-gradient.
    remat: rematerialise each step (True or 'step'; not 'nested').
  meta_params: `{'init': target params, 'rule': ...}`.
  """
  has_learned_init: ClassVar[bool] = True
  target: Target | None = None
  rule: nn.Module | None = None

  def __post_init__(self):
    super().__post_init__()
    _check_target(self.target)
    _check_module('rule', self.rule)
    if self.remat == 'nested':
      raise ValueError("remat: expected False, True or 'step' (each application of the rule "
                       "rematerialised; no 'nested' here), received 'nested'.")
    if getattr(self.rule, 'use_grad', True) is not True:
      raise ValueError('rule.use_grad: expected True (the rule takes the support-loss gradient), '
                       f'received {self.rule.use_grad!r}.')
    if not (callable(getattr(self.rule, 'init_state', None))
            and callable(getattr(self.rule, 'step', None))):
      raise TypeError(f'rule: expected a module with init_state() and step(params, grads, state) '
                      f'(a hypernet.WeightConditionedHypernet), received '
                      f'{type(self.rule).__name__}.')
    _check_for_target('rule', self.rule, self.target)

  def init(self, key: jax.Array) -> PyTree:
    init_key, rule_key = jax.random.split(key)
    params = self.target.init(init_key)
    grads = jax.tree.map(jnp.zeros_like, params)
    return {INIT_KEY: params, 'rule': self.rule.init(rule_key, params, grads)['params']}

  def _run(self, meta_params, x_support, y_support, num_steps, return_path):
    _check_support(x_support, y_support)
    self.check_num_steps(num_steps)
    support_loss = _support_loss_fn(self, x_support, y_support)
    rule_vars = {'params': meta_params['rule']}

    def step(carry, _):
      params, state = carry
      grads = jax.grad(support_loss)(params)
      if self.first_order:
        grads = jax.lax.stop_gradient(grads)
      params, state = self.rule.apply(rule_vars, params, grads, state, method='step')
      return (params, state), (params if return_path else None)

    if self.remat:
      step = jax.checkpoint(step)
    if num_steps == 0:
      if return_path:
        return jax.tree.map(lambda a: jnp.zeros((0, *a.shape), a.dtype), meta_params[INIT_KEY])
      return meta_params[INIT_KEY]
    (params, _), path = jax.lax.scan(step, (meta_params[INIT_KEY], self.rule.init_state()), None,
                                     length=int(num_steps))
    return path if return_path else params

  def adapt(self, meta_params, x_support, y_support, num_steps, key=None):
    """ONE task: `num_steps` applications of the rule from `meta_params['init']`."""
    del key  # deterministic
    return self._run(meta_params, x_support, y_support, num_steps, return_path=False)

  def adapt_path(self, meta_params, x_support, y_support, num_steps, key=None):
    """ONE task: the parameters after each application 1..num_steps (leaves `[S, ...]`)."""
    del key  # deterministic
    return self._run(meta_params, x_support, y_support, num_steps, return_path=True)

  def predict(self, meta_params, adapted, x):
    return self.target.apply(adapted, x)
