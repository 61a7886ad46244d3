"""Input-conditioned (dynamic) hypernetworks: weights generated per input example.

`InputConditioned(hypernet, target)` runs any hypernetwork family on features of
each example and applies the target to that example with its own weights:

    y_n = target.apply(hypernet(f(x_n)), x_n[None])[0]

Memory is `N * P` generated values for `N` examples: prefer a small modulation
(`ModulationHypernet(kind='film')`: `2 * units` values per layer) over full
weights. The target sees one example at a time, so BatchNorm's `'task'` policy
(batch statistics) does not apply here.

The seed sketch (a Dense-64-ReLU hypernetwork whose output multiplies the
output of a bias-free Dense target) is this with FiLM scale-only modulation:
`x W diag(gamma(x)) = (x W) * gamma(x)`; see `hypernet.sketch`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hypernet.target import PyTree, Target


def _call(module: nn.Module, features: jax.Array) -> PyTree:
  return module(features)


class InputConditioned(nn.Module):
  """Per-example weights: `x [N, ...] -> outputs [N, ...]`.

  Attributes:
    hypernet: a hypernetwork module whose `cond_dim` equals the feature size.
    target: the `Target` it generates for.
    features_fn: `x_n -> [cond_dim]` for one example (default: flatten).
  """
  hypernet: nn.Module
  target: Target
  features_fn: Callable[[jax.Array], jax.Array] | None = None

  def _features(self, x: jax.Array) -> jax.Array:
    fn = self.features_fn or (lambda xn: jnp.ravel(xn))
    return jax.vmap(fn)(x)  # [N, cond_dim]

  def generate(self, x: jax.Array) -> PyTree:
    """`x [N, ...]` -> params with a leading example axis `[N, ...]` on every leaf."""
    per_example = nn.vmap(_call, variable_axes={'params': None}, split_rngs={'params': False},
                          in_axes=0, out_axes=0)
    return per_example(self.hypernet, self._features(x))

  def __call__(self, x: jax.Array) -> jax.Array:
    """`x [N, ...]` -> `target` outputs `[N, ...]`, each example with its own weights."""
    params = self.generate(x)
    return jax.vmap(lambda p, xn: self.target.apply(p, xn[None])[0])(params, x)
