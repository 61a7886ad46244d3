"""Which target leaves a hypernetwork generates, and how they sit in one flat vector.

A `ParamLayout` is pure bookkeeping over a target's `param_spec`: the leaves in
pytree order, their '/'-joined paths (e.g. `'Dense_0/kernel'`), which of them are
generated and where each generated leaf lives in the flat output vector
`[num_generated]` of a hypernetwork. Leaves that are not generated stay ordinary
shared parameters, held by the hypernetwork module and merged back by
`unflatten`.

Leaf kinds (used by the initialisers): a leaf with `ndim >= 2` is a *kernel*
with the Flax convention that the last axis indexes output units and the
second-to-last input units, so `fan_in = prod(shape[:-1])` and
`fan_out = shape[-1] * prod(shape[:-2])` (the rule of `jax.nn.initializers`);
every other leaf is a *vector* (biases, normalisation scales).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from hypernet.target import PyTree, Target, check_tree_matches_spec, path_str

# None (all leaves), one glob pattern, several, or a predicate on (path, spec leaf).
Selection = Union[None, str, Sequence[str], Callable[[str, jax.ShapeDtypeStruct], bool]]


@dataclasses.dataclass(frozen=True)
class LeafInfo:
  """One leaf of the target's parameter tree.

  Attributes:
    index: position among the spec's leaves (pytree order).
    path: '/'-joined key path, e.g. `'Conv_0/kernel'`.
    shape, dtype, size: of the leaf.
    generated: whether the hypernetwork produces it.
    offset: start of the leaf in the flat generated vector (-1 if shared).
    fan_in, fan_out: for kernels (ndim >= 2); None for vectors.
    kernel_sibling: for a vector leaf, the path of a kernel in the same parent
      (e.g. the kernel next to a bias); None if there is none.
  """
  index: int
  path: str
  shape: tuple[int, ...]
  dtype: Any
  size: int
  generated: bool
  offset: int
  fan_in: int | None
  fan_out: int | None
  kernel_sibling: str | None

  @property
  def is_kernel(self) -> bool:
    return self.fan_in is not None


def _matches(path: str, pattern: str) -> bool:
  return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.rstrip('/') + '/*')


class ParamLayout:
  """Generated/shared split of a target's parameters and their flat layout.

  Args:
    spec: pytree of `jax.ShapeDtypeStruct` (a target's `param_spec`).
    generate: which leaves to generate: None for all; a glob pattern or a
      sequence of them matched against leaf paths (a pattern also matches every
      leaf below it, so `'Dense_2'` selects `'Dense_2/kernel'` and
      `'Dense_2/bias'`); or a predicate `fn(path, spec_leaf) -> bool`.

  Raises:
    ValueError: a pattern that matches no leaf (the message lists the leaves),
      or a selection that selects nothing.
  """

  def __init__(self, spec: PyTree, generate: Selection = None):
    flat, self.treedef = jax.tree_util.tree_flatten_with_path(spec)
    self.spec = spec
    paths = [path_str(p) for p, _ in flat]
    if generate is None:
      chosen = [True] * len(flat)
    elif callable(generate):
      chosen = [bool(generate(p, s)) for p, (_, s) in zip(paths, flat)]
    else:
      patterns = (generate,) if isinstance(generate, str) else tuple(generate)
      for pat in patterns:
        if not any(_matches(p, pat) for p in paths):
          raise ValueError(f'generate: pattern {pat!r} matches no target leaf; the leaves are {paths}.')
      chosen = [any(_matches(p, pat) for pat in patterns) for p in paths]
    if not any(chosen):
      raise ValueError(f'generate: selects no leaf of the target; the leaves are {paths}.')

    kernels_by_parent: dict[str, str] = {}
    for p, (_, s) in zip(paths, flat):
      if len(s.shape) >= 2:
        kernels_by_parent.setdefault(p.rpartition('/')[0], p)
    leaves, offset = [], 0
    for i, (p, (_, s)) in enumerate(zip(paths, flat)):
      shape = tuple(int(d) for d in s.shape)
      size = int(np.prod(shape, dtype=np.int64))
      if len(shape) >= 2:
        rf = int(np.prod(shape[:-2], dtype=np.int64))
        fan_in, fan_out, sib = shape[-2] * rf, shape[-1] * rf, None
      else:
        fan_in = fan_out = None
        sib = kernels_by_parent.get(p.rpartition('/')[0])
      leaves.append(LeafInfo(i, p, shape, s.dtype, size, chosen[i], offset if chosen[i] else -1,
                             fan_in, fan_out, sib))
      if chosen[i]:
        offset += size
    self.leaves: tuple[LeafInfo, ...] = tuple(leaves)
    self.generated: tuple[LeafInfo, ...] = tuple(l for l in leaves if l.generated)
    self.shared: tuple[LeafInfo, ...] = tuple(l for l in leaves if not l.generated)
    self.num_generated: int = offset
    self.num_params: int = sum(l.size for l in leaves)
    self.by_path = {l.path: l for l in leaves}

  def __repr__(self) -> str:
    return (f'ParamLayout({len(self.generated)} generated leaves / {self.num_generated} values, '
            f'{len(self.shared)} shared leaves)')

  # ------------------------------------------------------------ conversions
  def flatten(self, params: PyTree, dtype=jnp.float32) -> jax.Array:
    """Generated leaves of `params` as one flat vector `[num_generated]`."""
    check_tree_matches_spec(params, self.spec, 'params')
    leaves = jax.tree.leaves(params)
    return jnp.concatenate([jnp.ravel(leaves[l.index]).astype(dtype) for l in self.generated])

  def shared_values(self, params: PyTree) -> tuple[jax.Array, ...]:
    """The shared (not generated) leaves of `params`, in layout order."""
    leaves = jax.tree.leaves(params)
    return tuple(leaves[l.index] for l in self.shared)

  def split_flat(self, flat: jax.Array) -> list[jax.Array]:
    """Cuts `flat` `[num_generated]` into the generated leaves (shaped, cast)."""
    if flat.shape != (self.num_generated,):
      raise ValueError(f'flat: expected shape ({self.num_generated},), received {flat.shape}.')
    return [flat[l.offset:l.offset + l.size].reshape(l.shape).astype(l.dtype) for l in self.generated]

  def merge(self, generated: Sequence[jax.Array], shared: Sequence[jax.Array]) -> PyTree:
    """Full parameter tree from generated leaves and shared leaves (layout order)."""
    if len(generated) != len(self.generated) or len(shared) != len(self.shared):
      raise ValueError(f'merge: expected {len(self.generated)} generated and {len(self.shared)} '
                       f'shared leaves, received {len(generated)} and {len(shared)}.')
    out: list[Any] = [None] * len(self.leaves)
    for l, a in zip(self.generated, generated):
      out[l.index] = a
    for l, a in zip(self.shared, shared):
      out[l.index] = a
    return jax.tree.unflatten(self.treedef, out)

  def unflatten(self, flat: jax.Array, shared: Sequence[jax.Array] = ()) -> PyTree:
    """Full parameter tree from a flat generated vector and the shared leaves."""
    return self.merge(self.split_flat(flat), shared)

  # ------------------------------------------------------- per-element facts
  def leaf_ids(self) -> np.ndarray:
    """`[num_generated]` int32: which generated leaf (0..n-1) each value belongs to."""
    return np.repeat(np.arange(len(self.generated), dtype=np.int32),
                     [l.size for l in self.generated])

  def kernel_mask(self) -> np.ndarray:
    """`[num_generated]` bool: True where the value belongs to a kernel leaf."""
    return np.repeat(np.array([l.is_kernel for l in self.generated], bool),
                     [l.size for l in self.generated])


# Per target (weakly held: a dropped Target frees its layouts), per selection.
_LAYOUTS: 'weakref.WeakKeyDictionary[Target, dict]' = weakref.WeakKeyDictionary()


def layout_for(target: Target, generate: Selection = None) -> ParamLayout:
  """The (cached) `ParamLayout` of `target` for a selection."""
  if not isinstance(target, Target):
    raise TypeError(f'target: expected a hypernet.Target, received {type(target).__name__}.')
  if isinstance(generate, list):
    generate = tuple(generate)
  per_target = _LAYOUTS.setdefault(target, {})
  if generate not in per_target:
    per_target[generate] = ParamLayout(target.param_spec, generate)
  return per_target[generate]
