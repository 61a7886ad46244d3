"""Hypernetwork meta-learners: the hypernetwork is the adaptation mechanism.

* `Amortised`: set encoder over the support set -> hypernetwork -> target
  parameters; no inner loop (`inner_steps` must be 0).
* `LatentAdaptation` (CAVIA / LEO family): inner-loop gradient steps on a
  low-dimensional task code `z` (starting at zero, or at a learned init), which
  a hypernetwork decodes into target parameters or modulations.
* `HyperMAML`: the hypernetwork maps the support set and the base weights'
  predictions on it to an update of meta-learned base weights, optionally
  followed by `inner_steps` gradient steps.
* `LearnedUpdate`: a `WeightConditionedHypernet` takes the target's weights and
  their support-set gradient and returns the update; applied for `inner_steps`
  steps from meta-learned initial weights.

Each is written for ONE task, like every `MetaLearner`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from hypernet.meta.base import MetaLearner
from hypernet.target import PyTree, Target


@dataclasses.dataclass(frozen=True, eq=False)
class Amortised(MetaLearner):
  """`encoder(x_s, y_s) [cond_dim] -> hypernet -> target params`.

  Attributes:
    target: the `Target`.
    encoder: a `hypernet.SetEncoder` (its `features` = the hypernetwork's `cond_dim`).
    hypernet: any hypernetwork family module mapping `[cond_dim]` to target params.
  meta_params: `{'encoder': ..., 'hypernet': ...}` (Flax `params` collections).
  """
  target: Target | None = None
  encoder: nn.Module | None = None
  hypernet: nn.Module | None = None
  inner_steps: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class LatentAdaptation(MetaLearner):
  """Inner SGD on a task code `z [latent_dim]`, decoded by `hypernet` into target params.

  Attributes:
    target: the `Target`.
    hypernet: hypernetwork module with `cond_dim == latent_dim` (e.g.
      `ModulationHypernet(kind='film')`, CAVIA-style, or `FullHypernet`).
    latent_dim: size of z.
    inner_lr: inner step size on z.
    learn_init: meta-learn z's starting point (else zeros).
    first_order, remat: as in `inner_sgd`.
  meta_params: `{'hypernet': ..., ('z_init': [latent_dim])}`.
  """
  target: Target | None = None
  hypernet: nn.Module | None = None
  latent_dim: int = 16
  inner_lr: float = 1.0
  learn_init: bool = False
  first_order: bool = False
  remat: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class HyperMAML(MetaLearner):
  """Base weights theta; `theta' = theta + delta(encoder([x_s, y_s, f_theta(x_s)]))`, then SGD.

  Attributes:
    target: the `Target`.
    encoder: a `hypernet.SetEncoder` over per-point features `[x, y, f_theta(x), f_theta(x) - y]`.
    hypernet: a hypernetwork module mapping `[encoder.features]` to a target-shaped *update*
      (e.g. `FullHypernet(head_init='target')`-like or a zero-centred module; see implementation).
    inner_lr: step size of the optional gradient steps after the hypernetwork update.
    first_order, remat: as in `inner_sgd`.
  meta_params: `{'base': target params, 'encoder': ..., 'hypernet': ...}`.
  """
  target: Target | None = None
  encoder: nn.Module | None = None
  hypernet: nn.Module | None = None
  inner_lr: float = 0.01
  inner_steps: int = 0
  first_order: bool = False
  remat: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedUpdate(MetaLearner):
  """`theta_{k+1} = rule(theta_k, grad L_support(theta_k))` for `inner_steps` steps.

  Attributes:
    target: the `Target`.
    rule: a `hypernet.WeightConditionedHypernet` for `target` (with `use_grad=True`).
    remat: rematerialise each step.
  meta_params: `{'init': target params, 'rule': ...}`.
  """
  target: Target | None = None
  rule: nn.Module | None = None
  remat: bool = False
