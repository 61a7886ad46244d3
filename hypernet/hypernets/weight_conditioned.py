"""Weight-conditioned hypernetwork: a learned update rule on the target's own weights.

Its input is the target's current parameters (and optionally their gradient on
a support set); its output is a modification of them. One small MLP is shared
by every parameter value (as in learned optimisers), so it scales to any
target: per value it sees

    [w, g, e_leaf]     (g only with use_grad; e_leaf a learned embedding of the leaf)

and returns `delta`, giving `w' = w + delta`. The leaf embedding lets it learn a
different rule per tensor. Leaves that are not selected pass through unchanged.
The output layer starts at standard deviation `init_scale`, so at init the
update is small but every parameter receives a gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hypernet.hypernets.base import MLP
from hypernet.init import scaled_normal
from hypernet.layout import Selection, layout_for
from hypernet.target import PyTree, Target, check_tree_matches_spec


class WeightConditionedHypernet(nn.Module):
  """`(params, grads) -> params + delta(params, grads)`.

  Attributes:
    target: the `Target` whose parameters are modified.
    hidden: sizes of the per-value MLP.
    use_grad: whether `grads` (same tree as `params`) are an input.
    leaf_emb_dim: size of the learned per-leaf embedding (0: none).
    generate: which leaves are modified.
    init_scale: standard deviation of the initial `delta`.
  """
  target: Target
  hidden: Sequence[int] = (32,)
  use_grad: bool = True
  leaf_emb_dim: int = 4
  generate: Selection = None
  init_scale: float = 1e-3

  def __post_init__(self):
    if self.leaf_emb_dim < 0:
      raise ValueError(f'leaf_emb_dim: expected >= 0, received {self.leaf_emb_dim}.')
    layout_for(self.target, self.generate)
    super().__post_init__()

  @nn.compact
  def __call__(self, params: PyTree, grads: PyTree | None = None) -> PyTree:
    """One task: params (and grads) matching `target.param_spec` -> modified params."""
    layout = layout_for(self.target, self.generate)
    check_tree_matches_spec(params, self.target.param_spec, 'params')
    feats = [layout.flatten(params)]  # [P]
    if self.use_grad:
      if grads is None:
        raise ValueError('grads: required with use_grad=True (the gradient of a support loss '
                         'with respect to params), received None.')
      check_tree_matches_spec(grads, self.target.param_spec, 'grads')
      feats.append(layout.flatten(grads))
    elif grads is not None:
      raise ValueError('grads: the hypernetwork was built with use_grad=False, received a tree.')
    x = jnp.stack(feats, -1)  # [P, 1 or 2]
    if self.leaf_emb_dim:
      embs = self.param('leaf_embeddings', nn.initializers.normal(1.0),
                        (len(layout.generated), self.leaf_emb_dim))  # [L, E]
      x = jnp.concatenate([x, embs[layout.leaf_ids()]], -1)  # [P, F]
    h = MLP(tuple(self.hidden), name='mlp')(x)
    delta = nn.Dense(1, kernel_init=scaled_normal(self.init_scale / (h.shape[-1] ** 0.5)),
                     name='out')(h)[:, 0]  # [P]
    new = layout.split_flat(layout.flatten(params) + delta)
    return layout.merge(new, layout.shared_values(params))
