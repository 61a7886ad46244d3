"""Convolutions that stay fast when their weights differ per task.

MAML's adapted weights and a hypernetwork's generated kernels give every task
its own convolution kernel. Under `jax.vmap` over tasks, `lax.conv_general_dilated`
with a batched kernel becomes ONE grouped convolution (`feature_group_count = T`).
GPU and TPU backends have kernels for that; XLA's CPU backend runs it very
slowly: second-order Conv-4 MAML on Omniglot shapes ran at about 0.008
meta-steps/s with plain `jit(vmap(...))`, against about 0.27 for an unrolled
Python loop over tasks.

`Conv` here is a drop-in for the common use of `flax.linen.Conv` (same fields,
same parameter names and shapes, so the same parameter tree and the same
initial values for the same key) with one more field, `strategy`:

* `'xla'`: `lax.conv_general_dilated`, exactly what `flax.linen.Conv` does.
* `'im2col'`: the input's patches, then one matrix product with the kernel
  reshaped to `[prod(kernel_size) * in_features, features]`. Patch extraction
  is pure data movement (pad, strided slices, concatenate), with no weights,
  so under `vmap` it folds the task axis into the batch; the product with a
  per-task kernel becomes a batched matmul (`dot_general` with a batch
  dimension), which CPUs run well. The memory cost is the patch tensor,
  `prod(kernel_size)` times the input's size, kept for the backward pass.
* `'auto'` (default): resolved when the layer is traced, in this order: the
  innermost `conv_strategy(...)` context; the environment variable
  `HYPERNET_CONV_STRATEGY`; otherwise `'im2col'` when `jax.default_backend()`
  is `'cpu'` and `'xla'` on GPU and TPU.

A layer given `'xla'` or `'im2col'` explicitly keeps it: the overrides only
decide what `'auto'` means, so a whole model can be switched without editing it::

    with hypernet.nn.conv_strategy('xla'):
      state, metrics = meta_step(state, tasks)   # traced (and cached) with 'xla'

or `HYPERNET_CONV_STRATEGY=xla python -m experiments....` (read at trace time;
set it before the run: `jax.jit`'s cache does not see a later change). Where
JAX has `jax.make_user_context` the context's value is part of `jax.jit`'s
cache key, so the same jitted function called inside and outside the context
is traced once for each strategy.

Measured (CPU, 2 cores, jax 0.10.2; second-order Conv-4 MAML, 64 filters, 28x28x1,
5-way 1-shot, 15 queries per class, 32 tasks, 1 inner SGD step, Adam): 'im2col'
with `max_pool` below ran 0.22 meta-steps/s (compile 8-9 s) where 'xla' ran
0.0027 and a hand-written `jit(vmap(...))` 0.0031 (those two under a load of 4-5,
where 'im2col' ran 0.11-0.13); an unrolled Python loop over tasks, which is not a
layer-level option, ran 0.29 with `max_pool` below (compile 36 s, growing with the
number of tasks). No XLA CPU flag tried (oneDNN, XNNPACK fusions, fast math)
changed these numbers beyond noise.

Why patches by slicing and not `lax.conv_general_dilated_patches`: that
function is itself a convolution (an identity kernel with
`feature_group_count = in_features`), and XLA's CPU backend runs it, and the
grouped convolutions of its gradients, slowly: 0.0096 meta-steps/s on the
benchmark above; one vmapped 3x3 layer (32 tasks x 80 images, 14x14x64 -> 64,
forward and both gradients) took 81 s with it, 7.3 s with slicing and 31 s as a
grouped convolution.

`max_pool` is `flax.linen.max_pool` with a reshape lowering for non-overlapping
windows: the derivative of `reduce_window`'s gradient (`select_and_scatter`),
which second-order MAML needs, was about 60% of the op time in a profile of the
'im2col' step above; with `max_pool` the step went from 6.0 s to 4.5 s.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding
from jax import lax

CONV_STRATEGIES = ('auto', 'xla', 'im2col')
ENV_CONV_STRATEGY = 'HYPERNET_CONV_STRATEGY'
_BACKEND_DEFAULTS = {'cpu': 'im2col'}  # any other backend: 'xla'

PaddingLike = str | int | Sequence[int | tuple[int, int]]


# --------------------------------------------------------------------- strategy
def _check_strategy(strategy: Any, name: str) -> str:
  if strategy not in CONV_STRATEGIES:
    raise ValueError(f'{name}: expected one of {CONV_STRATEGIES}, received {strategy!r}.')
  return strategy


class _ContextVarOverride:
  """Fallback for JAX versions without `jax.make_user_context` (not in jit's cache key)."""

  def __init__(self):
    self._var = contextvars.ContextVar('hypernet_conv_strategy', default=None)

  @property
  def value(self):
    return self._var.get()

  @contextlib.contextmanager
  def __call__(self, value):
    token = self._var.set(value)
    try:
      yield
    finally:
      self._var.reset(token)


_make_user_context = getattr(jax, 'make_user_context', None)
_OVERRIDE = _make_user_context(None) if _make_user_context is not None else _ContextVarOverride()


@contextlib.contextmanager
def conv_strategy(strategy: str) -> Iterator[None]:
  """Within the block, layers with `strategy='auto'` use `strategy`.

  Args:
    strategy: 'xla', 'im2col' or 'auto' ('auto' restores the backend default
      inside an outer override, and ignores `HYPERNET_CONV_STRATEGY`).

  The value counts where a layer is traced: wrap the first call of a jitted
  function (or every call; with `jax.make_user_context` available, jit retraces
  when the value changes).
  """
  _check_strategy(strategy, 'strategy')
  with _OVERRIDE(strategy):
    yield


def resolve_conv_strategy(strategy: str = 'auto') -> str:
  """The concrete strategy, 'xla' or 'im2col', that a layer given `strategy` uses now.

  Order for 'auto': the innermost `conv_strategy` context, then the environment
  variable `HYPERNET_CONV_STRATEGY`, then the backend default ('im2col' on CPU,
  'xla' elsewhere).
  """
  _check_strategy(strategy, 'strategy')
  if strategy != 'auto':
    return strategy
  override = _OVERRIDE.value
  if override is None:
    env = os.environ.get(ENV_CONV_STRATEGY, '').strip()
    if env:
      override = _check_strategy(env, f'environment variable {ENV_CONV_STRATEGY}')
  if override is not None and override != 'auto':
    return override
  return _BACKEND_DEFAULTS.get(jax.default_backend(), 'xla')


# --------------------------------------------------------------------- functional
def _patches(x: jax.Array, kernel_size: tuple[int, ...], strides: tuple[int, ...],
             pads: Sequence[tuple[int, int]], input_dilation: tuple[int, ...],
             kernel_dilation: tuple[int, ...]) -> jax.Array:
  """`x [N, *spatial, C]` -> patches `[N, *out_spatial, prod(kernel_size) * C]`.

  The last axis is ordered (kernel position row-major, then channel), i.e. like
  `kernel.reshape(-1, C, features)` for a kernel `[*kernel_size, C, features]`.
  """
  nd = len(kernel_size)
  config = [(0, 0, 0), *[(lo, hi, d - 1) for (lo, hi), d in zip(pads, input_dilation)], (0, 0, 0)]
  if any(c != (0, 0, 0) for c in config):
    x = lax.pad(x, jnp.zeros((), x.dtype), config)
  spatial = x.shape[1:1 + nd]
  eff = [(k - 1) * r + 1 for k, r in zip(kernel_size, kernel_dilation)]
  out = [(n - e) // s + 1 for n, e, s in zip(spatial, eff, strides)]
  if any(o <= 0 for o in out):
    raise ValueError(f'inputs: spatial shape {spatial} (after padding and dilation) is smaller '
                     f'than the dilated kernel {tuple(eff)}.')
  if math.prod(kernel_size) == 1 and all(s == 1 for s in strides):
    return x
  pieces = []
  for offset in np.ndindex(*kernel_size):
    start = [0] + [i * r for i, r in zip(offset, kernel_dilation)] + [0]
    limit = ([x.shape[0]] + [b + (o - 1) * s + 1 for b, o, s in zip(start[1:], out, strides)]
             + [x.shape[-1]])
    pieces.append(lax.slice(x, start, limit, (1, *strides, 1)))
  return jnp.concatenate(pieces, axis=-1) if len(pieces) > 1 else pieces[0]


def conv(inputs: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1,
         padding: str | Sequence[tuple[int, int]] = 'SAME',
         input_dilation: int | Sequence[int] = 1, kernel_dilation: int | Sequence[int] = 1,
         feature_group_count: int = 1, precision: Any = None,
         strategy: str = 'auto') -> jax.Array:
  """A channels-last convolution of ONE batch, lowered by `strategy`.

  Args:
    inputs: `[N, *spatial, C]`.
    kernel: `[*kernel_size, C // feature_group_count, F]`.
    strides: an int or one per spatial axis.
    padding: 'SAME', 'VALID' or one `(low, high)` pair per spatial axis (as
      `lax.conv_general_dilated`).
    input_dilation: an int or one per spatial axis (transposed convolution).
    kernel_dilation: an int or one per spatial axis (atrous convolution).
    feature_group_count: groups of input and output features.
    precision: `lax.Precision` for the convolution or matmul.
    strategy: 'auto', 'xla' or 'im2col' (see the module docstring).

  Returns:
    `[N, *out_spatial, F]`, equal (to float tolerance) for every strategy.
  """
  nd = kernel.ndim - 2
  if inputs.ndim != nd + 2:
    raise ValueError(f'inputs: expected {nd + 2} axes [N, *spatial, C] for a kernel of shape '
                     f'{kernel.shape}, received shape {inputs.shape}.')
  as_tuple = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)  # noqa: E731
  strides, input_dilation, kernel_dilation = map(as_tuple, (strides, input_dilation,
                                                             kernel_dilation))
  kernel_size = kernel.shape[:nd]
  cin, features = inputs.shape[-1], kernel.shape[-1]
  g = feature_group_count
  if cin % g or features % g or kernel.shape[-2] * g != cin:
    raise ValueError(f'kernel: expected shape {(*kernel_size, cin // g, features)} with '
                     f'in_features {cin} and features {features} divisible by '
                     f'feature_group_count {g}, received {kernel.shape}.')
  strategy = resolve_conv_strategy(strategy)
  spatial = 'HWD'[:nd] if nd <= 3 else ''.join(chr(ord('a') + i) for i in range(nd))
  dnums = ('N' + spatial + 'C', spatial + 'IO', 'N' + spatial + 'C')
  if strategy == 'xla':
    return lax.conv_general_dilated(inputs, kernel, strides, padding, lhs_dilation=input_dilation,
                                    rhs_dilation=kernel_dilation, dimension_numbers=dnums,
                                    feature_group_count=g, precision=precision)
  if isinstance(padding, str):  # as lax.conv_general_dilated: from the undilated input shape
    if any(d != 1 for d in input_dilation):
      raise ValueError(f'padding: string padding {padding!r} is not implemented with '
                       f'input_dilation {input_dilation} (as in lax.conv_general_dilated); '
                       'give explicit (low, high) pairs.')
    eff = [(k - 1) * r + 1 for k, r in zip(kernel_size, kernel_dilation)]
    pads = lax.padtype_to_pads(inputs.shape[1:-1], eff, strides, padding)
  else:
    pads = [tuple(p) for p in padding]
  patches = _patches(inputs, kernel_size, strides, pads, input_dilation, kernel_dilation)
  k = math.prod(kernel_size)
  if g == 1:
    w = kernel.reshape(k * cin, features)  # [K * C, F], rows (position, channel)
    return lax.dot_general(patches, w, (((patches.ndim - 1,), (0,)), ((), ())),
                           precision=precision)
  lead = patches.shape[:-1]
  p = patches.reshape(*lead, k, g, cin // g)  # [N, *out, K, G, C/G]
  w = kernel.reshape(k, cin // g, g, features // g)  # [K, C/G, G, F/G]
  y = jnp.einsum('...kgc,kcgf->...gf', p, w, precision=precision)
  return y.reshape(*lead, features)


# --------------------------------------------------------------------- module
class Conv(nn.Module):
  """`flax.linen.Conv` with a choice of lowering (`strategy`); same parameters.

  Attributes:
    features: number of output features.
    kernel_size: an int or one per spatial axis.
    strides: an int or one per spatial axis (default 1).
    padding: 'SAME', 'VALID', 'CIRCULAR', 'REFLECT', 'CAUSAL' (1-D), an int, or
      one int or `(low, high)` pair per spatial axis, as `flax.linen.Conv`.
    input_dilation: an int or one per spatial axis.
    kernel_dilation: an int or one per spatial axis.
    feature_group_count: groups of input and output features.
    use_bias: add a bias `[features]`.
    mask: optional mask multiplied into the kernel (same shape).
    dtype: computation dtype (default: inferred from inputs and parameters).
    param_dtype: parameter dtype.
    precision: `lax.Precision` of the convolution or matmul.
    kernel_init: initialiser of 'kernel' `[*kernel_size, in // groups, features]`.
    bias_init: initialiser of 'bias' `[features]`.
    strategy: 'auto' (default), 'xla' or 'im2col'; see the module docstring.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: None | int | Sequence[int] = 1
  padding: PaddingLike = 'SAME'
  input_dilation: None | int | Sequence[int] = 1
  kernel_dilation: None | int | Sequence[int] = 1
  feature_group_count: int = 1
  use_bias: bool = True
  mask: jax.Array | None = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  strategy: str = 'auto'

  def __post_init__(self):
    _check_strategy(self.strategy, 'strategy')
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """`inputs [*batch, *spatial, in_features]` -> `[*batch, *out_spatial, features]`.

    Leading batch axes are flattened into one (and none is allowed), as in
    `flax.linen.Conv`.
    """
    kernel_size = ((self.kernel_size,) if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    nd = len(kernel_size)

    def broadcast(v):
      v = 1 if v is None else v
      return (v,) * nd if isinstance(v, int) else tuple(v)

    if inputs.ndim < nd + 1:
      raise ValueError(f'inputs: expected at least {nd + 1} axes [*batch, *spatial, features] '
                       f'for kernel_size {kernel_size}, received shape {inputs.shape}.')
    batch_shape = inputs.shape[:inputs.ndim - nd - 1]
    inputs = inputs.reshape((-1, *inputs.shape[len(batch_shape):]))  # [N, *spatial, C]
    strides, input_dilation, kernel_dilation = map(
        broadcast, (self.strides, self.input_dilation, self.kernel_dilation))

    padding = canonicalize_padding(self.padding, nd)
    if padding in ('CIRCULAR', 'REFLECT'):
      eff = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation)]
      pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in eff] + [(0, 0)]
      inputs = jnp.pad(inputs, pads, mode={'CIRCULAR': 'wrap', 'REFLECT': 'reflect'}[padding])
      padding = 'VALID'
    elif padding == 'CAUSAL':
      if nd != 1:
        raise ValueError(f"padding: 'CAUSAL' is only implemented for 1-D convolutions, "
                         f'received kernel_size {kernel_size}.')
      inputs = jnp.pad(inputs, [(0, 0), (kernel_dilation[0] * (kernel_size[0] - 1), 0), (0, 0)])
      padding = 'VALID'

    in_features = inputs.shape[-1]
    if in_features % self.feature_group_count:
      raise ValueError(f'feature_group_count: expected a divisor of the input features '
                       f'{in_features}, received {self.feature_group_count}.')
    kernel_shape = (*kernel_size, in_features // self.feature_group_count, self.features)
    if self.mask is not None and self.mask.shape != kernel_shape:
      raise ValueError(f'mask: expected the kernel shape {kernel_shape}, '
                       f'received {self.mask.shape}.')
    kernel = self.param('kernel', self.kernel_init, kernel_shape, self.param_dtype)
    if self.mask is not None:
      kernel = kernel * self.mask
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)

    y = conv(inputs, kernel, strides, padding, input_dilation=input_dilation,
             kernel_dilation=kernel_dilation, feature_group_count=self.feature_group_count,
             precision=self.precision, strategy=self.strategy)
    if bias is not None:
      y = y + bias
    return y.reshape((*batch_shape, *y.shape[1:]))


# --------------------------------------------------------------------- pooling
def max_pool(inputs: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = 'VALID') -> jax.Array:
  """`flax.linen.max_pool` with a cheaper lowering for non-overlapping windows.

  When `strides == window_shape` and `padding == 'VALID'` (the usual 2x2 pool,
  `max_pool(x, (2, 2), (2, 2))`), the pool is a reshape and a `max` over the
  window axes (trailing rows and columns that fill no window are dropped, as
  with 'VALID'). Its derivatives of every order are elementwise selections and
  sums, where `reduce_window`'s gradient is `select_and_scatter`, whose own
  derivative (second-order MAML) XLA's CPU backend runs slowly. Values are
  identical; gradients differ only at ties inside a window, which this lowering
  splits equally among the tied maxima while `reduce_window` gives to one
  (after a ReLU, tied zeros get no gradient either way). Other settings call
  `flax.linen.max_pool`.

  Args:
    inputs: `[*batch, *spatial, features]`, with `len(window_shape)` spatial axes.
    window_shape: the window, one int per spatial axis.
    strides: one int per spatial axis (default: 1, as `flax.linen.max_pool`).
    padding: 'VALID', 'SAME' or `(low, high)` pairs, as `flax.linen.max_pool`.

  Returns:
    `[*batch, *out_spatial, features]`.
  """
  window = tuple(window_shape)
  strides = (1,) * len(window) if strides is None else tuple(strides)
  nd = len(window)
  if inputs.ndim < nd + 1:
    raise ValueError(f'inputs: expected at least {nd + 1} axes [*batch, *spatial, features] for '
                     f'window_shape {window}, received shape {inputs.shape}.')
  if strides != window or not (isinstance(padding, str) and padding.upper() == 'VALID'):
    return nn.max_pool(inputs, window, strides, padding)
  nb = inputs.ndim - nd - 1
  spatial = inputs.shape[nb:nb + nd]
  out = [n // w for n, w in zip(spatial, window)]
  if any(o == 0 for o in out):
    raise ValueError(f'inputs: spatial shape {spatial} is smaller than window_shape {window}.')
  x = inputs[(slice(None),) * nb + tuple(slice(0, o * w) for o, w in zip(out, window))]
  split = [d for o, w in zip(out, window) for d in (o, w)]
  x = x.reshape(*inputs.shape[:nb], *split, inputs.shape[-1])  # [*batch, o1, w1, o2, w2, ..., C]
  return jnp.max(x, axis=tuple(nb + 2 * i + 1 for i in range(nd)))
