"""The stateless target network: `apply(params, x, ...)` plus its parameter spec.

A `Target` is what a hypernetwork generates parameters for. It holds

* `param_spec`: a pytree of `jax.ShapeDtypeStruct`, the exact tree, shapes and
  dtypes that `apply` accepts as `params`;
* `apply(params, *args, **kwargs)`: a pure function (no state in, no state out);
* `init(key)`: a draw of the target's own default initialisation, used by the
  hypernetworks for base weights, shared leaves and the `init='target'` option.

Build one from a Flax Linen module (`Target.from_linen`), a Flax NNX module
(`Target.from_nnx`) or a plain function (`Target.from_fn`).

BatchNorm and other mutable collections
---------------------------------------
Only the `params` collection is ever generated. Other collections (Linen's
`batch_stats`, NNX's `BatchStat`) are handled by an explicit policy,
`batch_stats=`:

* `'task'` (default; the MAML convention): every call normalises with the
  statistics of the batch it is given. Under `jax.vmap` over tasks that is each
  task's own batch, so tasks never share statistics. Running averages are never
  read and their updates are discarded: `apply` stays pure. A Linen module must
  be called in training mode for this (e.g. `apply_kwargs={'train': True}`);
  `from_linen` checks that the output does not depend on the running averages
  and raises otherwise. NNX modules are switched to `use_running_average=False`
  automatically.
* `'frozen'`: the stored statistics (from the module's init or given by the
  caller) are constants of the target; Linen modules must then be called in
  evaluation mode, NNX modules are switched to `use_running_average=True`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import flax.errors
import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

BATCH_STATS_POLICIES = ('task', 'frozen')


def _spec_of(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), tree)


def path_str(path: tuple[Any, ...]) -> str:
  """'/'-joined names of a pytree key path, e.g. `'Dense_0/kernel'`."""
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


_COMPUTE_DTYPE: contextvars.ContextVar = contextvars.ContextVar('hypernet_compute_dtype',
                                                               default=None)


@contextlib.contextmanager
def compute_dtype(dtype: Any) -> Iterator[None]:
  """Mixed precision: within the block, floating leaves may also have `dtype`.

  Used by `hypernet.meta.make_meta_step(compute_dtype=...)`, which casts float32 master
  weights to e.g. bfloat16 for the forward and backward passes; parameter trees checked
  against a float32 spec (`check_tree_matches_spec`, hence `Target.apply`) then accept
  the cast copies. Read at trace time; shapes and structure are checked as always.
  """
  token = _COMPUTE_DTYPE.set(None if dtype is None else jnp.dtype(dtype))
  try:
    yield
  finally:
    _COMPUTE_DTYPE.reset(token)


def check_tree_matches_spec(tree: PyTree, spec: PyTree, name: str,
                            batch_dims: int = 0) -> None:
  """Raises a ValueError naming `name` unless `tree` has exactly `spec`'s structure.

  Dtypes must match exactly, except inside `compute_dtype(d)`, where a floating leaf of
  the spec may also be `d`.

  Args:
    tree: the pytree to check (arrays or `ShapeDtypeStruct`s).
    spec: the expected pytree of `jax.ShapeDtypeStruct`.
    name: the argument name used in the error message.
    batch_dims: number of extra leading axes allowed (and required) on every leaf.
  """
  got_def = jax.tree.structure(tree)
  want_def = jax.tree.structure(spec)
  if got_def != want_def:
    got = sorted(path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0])
    want = sorted(path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(spec)[0])
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    raise ValueError(
        f'{name}: pytree structure does not match the target spec; expected leaves '
        f'{want}, received {got} (missing {missing}, unexpected {extra}).')
  flat_tree = jax.tree_util.tree_flatten_with_path(tree)[0]
  flat_spec = jax.tree.leaves(spec)
  low = _COMPUTE_DTYPE.get()
  for (path, leaf), want in zip(flat_tree, flat_spec):
    shape = tuple(np.shape(leaf))
    dtype = jnp.result_type(leaf)
    lead, rest = shape[:batch_dims], shape[batch_dims:]
    dtype_ok = dtype == want.dtype or (
        low is not None and dtype == low and jnp.issubdtype(want.dtype, jnp.floating))
    if len(lead) != batch_dims or rest != tuple(want.shape) or not dtype_ok:
      raise ValueError(
          f'{name}: leaf {path_str(path)!r} expected shape '
          f'{("<batch>",) * batch_dims + tuple(want.shape)} dtype {want.dtype}, '
          f'received shape {shape} dtype {dtype}.')


def default_init(spec: PyTree) -> Callable[[jax.Array], PyTree]:
  """Flax's defaults by shape: LeCun-normal for leaves with ndim >= 2
  (fan-in = prod(shape[:-1])), zeros for vectors and scalars."""
  lecun = jax.nn.initializers.lecun_normal()

  def init(key: jax.Array) -> PyTree:
    leaves, treedef = jax.tree.flatten(spec)
    keys = jax.random.split(key, len(leaves))
    out = [lecun(k, s.shape, s.dtype) if len(s.shape) >= 2 else jnp.zeros(s.shape, s.dtype)
           for k, s in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, out)

  return init


def _name_input_errors(apply_fn: Callable[..., Any], sample_specs: tuple) -> Callable[..., Any]:
  """`apply_fn`, with Flax's parameter-shape error on a wrongly shaped input re-raised as a
  ValueError naming the input (`x`, or `args[i]`), its expected and its received shape.

  A Linen module infers its parameters' shapes from its input; given an input of another
  shape it fails (at trace time) with `ScopeParamShapeError` about a kernel, not the input.
  The expected shape is the sample's given to `from_linen`, with a free leading (batch) axis.
  """
  def apply(p, *args, **kwargs):
    try:
      return apply_fn(p, *args, **kwargs)
    except flax.errors.ScopeParamShapeError as e:
      names = ['x'] if len(args) == 1 else [f'args[{i}]' for i in range(len(args))]
      parts = []
      for arg_name, arg, spec in zip(names, args, sample_specs):
        got = tuple(np.shape(arg))
        want = tuple(getattr(spec, 'shape', ()))
        batched = len(want) >= 2  # a leading batch axis, free
        if len(got) != len(want) or (got[1:] != want[1:] if batched else got != want):
          expected = '(' + ', '.join(['N', *map(str, want[1:])]) + ')' if batched else str(want)
          parts.append(f'{arg_name}: expected shape {expected} (the sample input given to '
                       f'Target.from_linen had shape {want}'
                       + ('; only the leading axis may differ' if batched else '')
                       + f'), received {got}')
      if not parts:  # the inputs look right; some other shape made the parameters not fit
        raise
      cause = str(e).split(' (https://')[0]
      raise ValueError('; '.join(parts) + f'. The module\'s parameters do not fit it ({cause}).'
                       ) from e
  return apply


def _linen_value_key(module, arg_specs, batch_stats, others, apply_kwargs, name) -> Hashable:
  """`Target.value_key` of a Linen target, or None where a part cannot be hashed by value."""
  def arrays_key(tree):  # small collections (BatchNorm statistics): their bytes
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.asarray(a).dtype.str, np.shape(a), np.asarray(a).tobytes())
                          for a in leaves)
  try:
    key = ('linen', module,
           tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(arg_specs)),
           batch_stats, arrays_key(others), tuple(sorted(apply_kwargs.items())), name)
    hash(key)
  except TypeError:  # an unhashable module field or apply argument: identity only
    return None
  return key


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
  """A stateless target network.

  Attributes:
    apply_fn: `apply_fn(params, *args, **kwargs) -> outputs`, pure.
    param_spec: pytree of `jax.ShapeDtypeStruct` that `params` must match.
    init_fn: `init_fn(key) -> params`, the target's own default initialisation.
    name: a label for messages and tables.
    value_key: a hashable description of everything the target's functions depend on, or
      None. Two targets with equal `value_key`s are equal (and hash alike), so learners built
      twice from one config are equal and share their compiled programs (`jax.jit` static
      arguments, caches keyed by value). `from_linen` sets it (the module, the sample inputs'
      shapes and dtypes, the BatchNorm policy and state, the apply arguments) where all of
      them hash (a module with a list field, e.g. `nn.Sequential`, does not); without it a
      target equals only itself.
  """
  apply_fn: Callable[..., Any]
  param_spec: PyTree
  init_fn: Callable[[jax.Array], PyTree]
  name: str = 'target'
  value_key: Hashable | None = None

  def __eq__(self, other: object) -> bool:
    if self is other:
      return True
    return (isinstance(other, Target) and self.value_key is not None
            and self.value_key == other.value_key)

  def __hash__(self) -> int:
    return hash(self.value_key) if self.value_key is not None else id(self)

  def apply(self, params: PyTree, *args, **kwargs) -> Any:
    """Runs the target with `params` (checked against `param_spec` at trace time)."""
    check_tree_matches_spec(params, self.param_spec, 'params')
    return self.apply_fn(params, *args, **kwargs)

  def init(self, key: jax.Array) -> PyTree:
    """A draw of the target's default initialisation (matches `param_spec`)."""
    return self.init_fn(key)

  @property
  def num_params(self) -> int:
    return int(sum(np.prod(s.shape, dtype=np.int64) for s in jax.tree.leaves(self.param_spec)))

  # ---------------------------------------------------------------- builders
  @classmethod
  def from_fn(cls, apply_fn: Callable[..., Any], param_spec: PyTree,
              init_fn: Callable[[jax.Array], PyTree] | None = None,
              name: str = 'fn') -> 'Target':
    """A target from a plain function `apply_fn(params, *args)`.

    Args:
      apply_fn: pure function of `params` (a pytree matching `param_spec`).
      param_spec: pytree of `jax.ShapeDtypeStruct` (or arrays, whose shapes and
        dtypes are taken).
      init_fn: default initialisation; if None, `default_init(param_spec)`.
      name: label.
    """
    spec = _spec_of(param_spec)
    return cls(apply_fn=apply_fn, param_spec=spec,
               init_fn=init_fn if init_fn is not None else default_init(spec), name=name)

  @classmethod
  def from_linen(cls, module, *sample_args, key: jax.Array,
                 batch_stats: str = 'task', state: Mapping[str, PyTree] | None = None,
                 apply_kwargs: Mapping[str, Any] | None = None,
                 name: str | None = None) -> 'Target':
    """A target from a Flax Linen module.

    Args:
      module: the `flax.linen.Module`.
      *sample_args: example inputs for `module.init` (shapes only matter).
      key: PRNG key for the initialisation used to read the spec (and, with the
        'frozen' policy, the default statistics).
      batch_stats: 'task' or 'frozen'; see the module docstring.
      state: with 'frozen', the non-param collections to use (default: init's).
      apply_kwargs: keyword arguments always passed to `module.apply` (e.g.
        `{'train': True}` for the 'task' policy).
      name: label (default: the module's class name).
    """
    if batch_stats not in BATCH_STATS_POLICIES:
      raise ValueError(f'batch_stats: expected one of {BATCH_STATS_POLICIES}, received {batch_stats!r}.')
    apply_kwargs = dict(apply_kwargs or {})
    init_kwargs = {k: v for k, v in apply_kwargs.items() if k != 'rngs'}
    init_jit = jax.jit(lambda k, *a: module.init(k, *a, **init_kwargs))
    shapes = dict(jax.eval_shape(init_jit, key, *sample_args))
    if 'params' not in shapes:
      raise ValueError(f'module: {type(module).__name__} has no parameters to generate.')
    spec = _spec_of(shapes.pop('params'))
    if state is not None:
      others = dict(state)
    elif shapes:  # non-param collections (e.g. batch_stats): their initial values
      others = dict(init_jit(key, *sample_args))
      others.pop('params')
    else:
      others = {}

    arg_specs = _spec_of(sample_args)

    @jax.jit
    def init_fn(k):  # only the shapes of the sample inputs matter
      zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), arg_specs)
      return module.init(k, *zeros, **init_kwargs)['params']

    if not others:
      def apply_fn(p, *args, **kwargs):
        return module.apply({'params': p}, *args, **{**apply_kwargs, **kwargs})
    elif batch_stats == 'frozen':
      def apply_fn(p, *args, **kwargs):
        return module.apply({'params': p, **others}, *args, **{**apply_kwargs, **kwargs})
    else:
      mutable = list(others)

      def apply_fn(p, *args, **kwargs):
        out, _ = module.apply({'params': p, **others}, *args, mutable=mutable,
                              **{**apply_kwargs, **kwargs})
        return out

      @jax.jit
      def uses_running_stats(k, *a):
        p = init_fn(k)
        shifted = jax.tree.map(lambda s: s + 1.0, others)
        y0 = apply_fn(p, *a)
        y1 = module.apply({'params': p, **shifted}, *a, mutable=mutable, **apply_kwargs)[0]
        return jnp.any(jnp.array([jnp.any(jnp.abs(u - v) > 1e-5 * (1 + jnp.abs(u)))
                                  for u, v in zip(jax.tree.leaves(y0), jax.tree.leaves(y1))]))

      if bool(uses_running_stats(key, *sample_args)):
        raise ValueError(
            "batch_stats='task': the module's output depends on its stored running statistics "
            f'(collections {mutable}); call it in training mode (e.g. apply_kwargs={{"train": True}}) '
            "or use batch_stats='frozen'.")
    value_key = _linen_value_key(module, arg_specs, batch_stats, others, apply_kwargs,
                                 name or type(module).__name__)
    return cls(apply_fn=_name_input_errors(apply_fn, arg_specs), param_spec=spec,
               init_fn=init_fn, name=name or type(module).__name__, value_key=value_key)

  @classmethod
  def from_nnx(cls, module_or_factory, *, key: jax.Array | None = None,
               batch_stats: str = 'task', name: str | None = None) -> 'Target':
    """A target from a Flax NNX module, through `nnx.split` / `nnx.merge`.

    Args:
      module_or_factory: an `nnx.Module`, or `factory(rngs: nnx.Rngs) -> nnx.Module`.
        With a factory, `init(key)` builds a fresh module from `nnx.Rngs(key)`;
        with an instance, `init(key)` returns the instance's own parameters
        (the key is not used).
      key: with a factory, the key of the instance that fixes structure and
        (with 'frozen') the statistics. Required for a factory.
      batch_stats: 'task' or 'frozen'; BatchNorm layers are switched to
        `use_running_average=False` or `True` accordingly.
      name: label.
    """
    from flax import nnx  # pylint: disable=g-import-not-at-top
    if batch_stats not in BATCH_STATS_POLICIES:
      raise ValueError(f'batch_stats: expected one of {BATCH_STATS_POLICIES}, received {batch_stats!r}.')
    if isinstance(module_or_factory, nnx.Module):
      module, factory = module_or_factory, None
    else:
      if key is None:
        raise ValueError('key: required when module_or_factory is a factory, received None.')
      factory = module_or_factory
      module = factory(nnx.Rngs(key))
    module = nnx.view(module, use_running_average=(batch_stats == 'frozen'),
                      raise_if_not_found=False)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    spec = _spec_of(nnx.to_pure_dict(params))

    def apply_fn(p, *args, **kwargs):
      # Fresh Variable objects inside the current trace; the template is untouched.
      p_state = jax.tree.map(lambda a: a, params)
      nnx.replace_by_pure_dict(p_state, p)
      r_state = jax.tree.map(lambda a: a, rest)
      return nnx.merge(graphdef, p_state, r_state)(*args, **kwargs)

    if factory is None:
      own = nnx.to_pure_dict(params)

      def init_fn(k):
        del k
        return jax.tree.map(jnp.asarray, own)
    else:
      @jax.jit
      def init_fn(k):
        return nnx.to_pure_dict(nnx.state(factory(nnx.Rngs(k)), nnx.Param))

    return cls(apply_fn=apply_fn, param_spec=spec, init_fn=init_fn,
               name=name or type(module).__name__)
