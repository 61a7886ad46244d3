"""Weight-conditioned hypernetwork: a learned update rule on the target's own weights.

Its input is the target's current parameters (and their gradient on a support set);
its output is a modification of them. One small MLP is shared by every parameter
value, as in learned optimisers (Andrychowicz et al. 2016; Metz et al. 2020,
`learned_optimization`), so it scales to any target. Per value it sees

    [w, gradient features, momentum features, time features, e_leaf]

* gradient features (`grad_features`): `'raw'` g; `'normalised'` g / rms_leaf(g), the
  gradient divided by its root mean square over its tensor (learned_optimization's
  second-moment normaliser), so the rule's input has the same scale whatever the loss
  scale and the training stage; `'log_sign'` (log|g| / p, sign g), Andrychowicz et al.'s
  preprocessing (p = 10; |g| < e^-p maps to (-1, e^p g));
* momentum features (`momentum_decays`): for each decay b an exponential moving average
  m_b <- b m_b + (1 - b) g over the steps taken so far, divided by its rms over the tensor;
* time features (`time_scales`): tanh(t / s) for the step index t = 0, 1, ... of the
  application (learned_optimization's training-step features);
* e_leaf: a learned embedding of the tensor, so the rule can differ per tensor.

Its output `d` (one value per parameter) makes the update in one of three ways (`update_kind`):

* `'scaled'` (default): a learned per-tensor SGD step whose size the network scales per
  value,
      w' = w - lr_leaf * exp(c * tanh(d)) * g,   lr_leaf = exp(log_lr_leaf),  c = `max_log_scale`
  (log_lr starts at log(`init_lr`)): a positive diagonal preconditioner, so every update is
  a descent direction for the support loss, no larger than e^c learned SGD steps, and zero
  where the gradient is zero; with `d = 0` it is plain SGD, so the rule starts as MAML's
  inner step;
* `'residual'`: an additive correction of the learned SGD step, in units of the gradient's
  scale, `w' = w - lr_leaf * (g + rms_leaf(g) * d)` (any direction: it can move weights
  whose gradient is zero, and go uphill);
* `'direct'`: `w' = w + d` (the output is the modification itself; the original rule).

The output layer starts at standard deviation `init_scale`, so at init `d` is small but
every parameter receives a gradient. Leaves that are not selected (`generate`) pass
through unchanged.

The rule has a state, the momenta and the step index (`init_state()`); `step(params,
grads, state) -> (params, state)` applies it once. `__call__(params, grads)` is one
application from a fresh state (the stateless form `(params, grads) -> params`). With
`use_grad=False` the rule sees the weights (and the time) only: the gradient, momentum and
update kinds other than 'direct' have no input to act on and are unused.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hypernet.hypernets.base import MLP
from hypernet.init import scaled_normal
from hypernet.layout import ParamLayout, Selection, layout_for
from hypernet.target import PyTree, Target, check_tree_matches_spec

GRAD_FEATURES = ('raw', 'normalised', 'log_sign')
UPDATE_KINDS = ('scaled', 'residual', 'direct')
_EPS = 1e-12  # added to mean squares before the square root
_LOG_P = 10.0  # Andrychowicz et al.'s p for the log/sign preprocessing


def _per_value(layout: ParamLayout, per_leaf: jax.Array) -> jax.Array:
  """`[L, ...]` (one row per generated leaf) -> `[P, ...]` (each row repeated over its leaf).

  Concatenated broadcasts rather than a gather: their backward pass is a sum per leaf,
  where a gather's is a scatter-add (slow on CPU)."""
  return jnp.concatenate([jnp.broadcast_to(per_leaf[i], (l.size, *per_leaf.shape[1:]))
                          for i, l in enumerate(layout.generated)], 0)


def _leaf_rms(layout: ParamLayout, x: jax.Array) -> jax.Array:
  """Root mean square of `x [P]` over each generated leaf, repeated to `[P]`."""
  ms = jnp.stack([jnp.mean(jnp.square(x[l.offset:l.offset + l.size]))
                  for l in layout.generated])  # [L]
  return _per_value(layout, jnp.sqrt(ms + _EPS))


def _log_sign(g: jax.Array) -> jax.Array:
  """`g [P]` -> `[P, 2]`: (log|g| / p, sign g) where |g| >= e^-p, else (-1, e^p g)."""
  big = jnp.abs(g) >= np.exp(-_LOG_P)
  log_mag = jnp.log(jnp.maximum(jnp.abs(g), np.exp(-_LOG_P))) / _LOG_P
  return jnp.stack([jnp.where(big, log_mag, -1.0),
                    jnp.where(big, jnp.sign(g), np.exp(_LOG_P) * g)], -1)


class WeightConditionedHypernet(nn.Module):
  """`(params, grads, state) -> (params', state')`: a learned update rule (module doc).

  Attributes:
    target: the `Target` whose parameters are modified.
    hidden: sizes of the per-value MLP.
    use_grad: whether `grads` (same tree as `params`) are an input.
    leaf_emb_dim: size of the learned per-leaf embedding (0: none).
    generate: which leaves are modified.
    init_scale: standard deviation of the initial output `d`.
    grad_features: 'raw', 'normalised' or 'log_sign' (module doc).
    momentum_decays: decays of the gradient moving averages fed as features (() none).
    time_scales: s of the tanh(t / s) step features (() none).
    update_kind: 'scaled', 'residual' or 'direct': how the output makes the update (module doc).
    init_lr: the initial per-leaf SGD step size ('scaled' and 'residual').
    max_log_scale: c, the bound of the log step-size scale ('scaled').
  """
  target: Target
  hidden: Sequence[int] = (32,)
  use_grad: bool = True
  leaf_emb_dim: int = 4
  generate: Selection = None
  init_scale: float = 1e-3
  grad_features: str = 'normalised'
  momentum_decays: Sequence[float] = (0.5, 0.9)
  time_scales: Sequence[float] = (1.0, 3.0, 10.0)
  update_kind: str = 'scaled'
  init_lr: float = 0.01
  max_log_scale: float = 2.0

  def __post_init__(self):
    if self.leaf_emb_dim < 0:
      raise ValueError(f'leaf_emb_dim: expected >= 0, received {self.leaf_emb_dim}.')
    if self.grad_features not in GRAD_FEATURES:
      raise ValueError(f'grad_features: expected one of {GRAD_FEATURES}, received '
                       f'{self.grad_features!r}.')
    if not all(0.0 <= float(b) < 1.0 for b in self.momentum_decays):
      raise ValueError(f'momentum_decays: expected values in [0, 1), received '
                       f'{tuple(self.momentum_decays)!r}.')
    if not all(float(s) > 0.0 for s in self.time_scales):
      raise ValueError(f'time_scales: expected positive values, received '
                       f'{tuple(self.time_scales)!r}.')
    if self.update_kind not in UPDATE_KINDS:
      raise ValueError(f'update_kind: expected one of {UPDATE_KINDS}, received '
                       f'{self.update_kind!r}.')
    for name in ('init_lr', 'max_log_scale'):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
        raise ValueError(f'{name}: expected a number > 0, received {value!r}.')
    layout_for(self.target, self.generate)
    super().__post_init__()

  @property
  def _layout(self) -> ParamLayout:
    return layout_for(self.target, self.generate)

  def init_state(self) -> dict[str, jax.Array]:
    """A fresh state: `{'momentum': [M, P] zeros, 'step': int32 0}` (P generated values)."""
    num = len(self.momentum_decays) if self.use_grad else 0
    return {'momentum': jnp.zeros((num, self._layout.num_generated), jnp.float32),
            'step': jnp.zeros((), jnp.int32)}

  def __call__(self, params: PyTree, grads: PyTree | None = None) -> PyTree:
    """One task: ONE application from a fresh state; params (and grads) -> params'."""
    return self.step(params, grads, self.init_state())[0]

  @nn.compact
  def step(self, params: PyTree, grads: PyTree | None,
           state: dict[str, jax.Array]) -> tuple[PyTree, dict[str, jax.Array]]:
    """One task, one application: `(params, grads, state) -> (params', state')`.

    Args:
      params: the target's parameters (a tree matching `target.param_spec`).
      grads: their support-loss gradient (same tree), or None with `use_grad=False`.
      state: `init_state()` or the state returned by the previous application.
    """
    layout = self._layout
    check_tree_matches_spec(params, self.target.param_spec, 'params')
    w = layout.flatten(params)  # [P]
    feats = [w[:, None]]  # per-value features, each [P, f]
    momentum = state['momentum']  # [M, P]
    if self.use_grad:
      if grads is None:
        raise ValueError('grads: required with use_grad=True (the gradient of a support loss '
                         'with respect to params), received None.')
      check_tree_matches_spec(grads, self.target.param_spec, 'grads')
      g = layout.flatten(grads)  # [P]
      g_rms = _leaf_rms(layout, g)  # [P]
      if self.grad_features == 'raw':
        feats.append(g[:, None])
      elif self.grad_features == 'normalised':
        feats.append((g / g_rms)[:, None])
      else:
        feats.append(_log_sign(g))  # [P, 2]
      if self.momentum_decays:
        decays = jnp.asarray(self.momentum_decays, jnp.float32)[:, None]  # [M, 1]
        momentum = decays * momentum + (1.0 - decays) * g[None]  # [M, P]
        m_rms = jnp.stack([_leaf_rms(layout, m) for m in momentum])  # [M, P]
        feats.append((momentum / m_rms).T)  # [P, M]
    elif grads is not None:
      raise ValueError('grads: the hypernetwork was built with use_grad=False, received a tree.')
    num_leaves = len(layout.generated)
    leaf_feats = []  # features constant over a leaf, each [L, f]
    if self.time_scales:
      t = state['step'].astype(jnp.float32)
      times = jnp.tanh(t / jnp.asarray(self.time_scales, jnp.float32))  # [T]
      leaf_feats.append(jnp.broadcast_to(times, (num_leaves, times.shape[0])))  # [L, T]
    if self.leaf_emb_dim:
      leaf_feats.append(self.param('leaf_embeddings', nn.initializers.normal(1.0),
                                   (num_leaves, self.leaf_emb_dim)))  # [L, E]
    x = jnp.concatenate(feats, -1)  # [P, Fv]
    xl = jnp.concatenate(leaf_feats, -1) if leaf_feats else None  # [L, Fl]
    # The MLP on [x, xl[leaf]]: its first layer is split into a per-value and a per-leaf
    # part (the same function; the per-leaf part runs once per leaf, not once per value).
    width = tuple(self.hidden)[0] if self.hidden else 1
    fan_in = x.shape[-1] + (xl.shape[-1] if xl is not None else 0)
    std = (2.0 / fan_in) ** 0.5 if self.hidden else self.init_scale / fan_in ** 0.5
    h = nn.Dense(width, use_bias=False, kernel_init=nn.initializers.normal(std),
                 name='in_value')(x)  # [P, H]
    if xl is not None:
      h = h + _per_value(layout, nn.Dense(width, kernel_init=nn.initializers.normal(std),
                                          name='in_leaf')(xl))
    else:
      h = h + self.param('in_bias', nn.initializers.zeros, (width,))
    if self.hidden:
      h = MLP(tuple(self.hidden)[1:], name='mlp')(nn.relu(h))
      d = nn.Dense(1, kernel_init=scaled_normal(self.init_scale / (h.shape[-1] ** 0.5)),
                   name='out')(h)[:, 0]  # [P]
    else:  # linear in the features
      d = h[:, 0]
    if self.use_grad and self.update_kind != 'direct':
      log_lr = self.param('log_lr', nn.initializers.constant(float(np.log(self.init_lr))),
                          (num_leaves,))  # [L]
      lr = _per_value(layout, jnp.exp(log_lr))  # [P]
      if self.update_kind == 'scaled':
        new_w = w - lr * jnp.exp(self.max_log_scale * jnp.tanh(d)) * g
      else:
        new_w = w - lr * (g + g_rms * d)
    else:
      new_w = w + d
    new = layout.merge(layout.split_flat(new_w), layout.shared_values(params))
    return new, {'momentum': momentum, 'step': state['step'] + 1}
