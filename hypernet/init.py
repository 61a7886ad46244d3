"""Principled initialisation of hypernetwork output heads.

Hyperfan-in and hyperfan-out (Chang, Flokas & Lipson, "Principled weight
initialization for hypernetworks", ICLR 2020). A head `Dense(P)` maps the
hypernetwork's last hidden features `e` `[d]` to generated values. With head
weights `H_jk ~ N(0, s_j^2)`, a generated value `w_j = sum_k H_jk e_k` has
variance `d * E[e^2] * s_j^2`. Hyperfan chooses

    s_j^2 = v_j / (d * E[e^2]),   v_j = gain / fan_in(leaf of j)     ('hyperfan_in')
                                  v_j = gain / fan_out(leaf of j)    ('hyperfan_out')

so generated kernels start with the variance the target's own initialiser
gives (Flax's LeCun-normal default is `1 / fan_in`, i.e. `gain=1`; use `gain=2`
for He). `E[e^2]` is propagated analytically: the hypernetwork trunks
(`hypernet.hypernets.MLP`) are He-initialised ReLU layers with zero biases, which
keep the second moment of their input, so `E[e^2] = E[cond^2]`
(`cond_second_moment`, 1 for unit-variance task embeddings).

Vector leaves (biases, normalisation scales): their head bias starts at the
target's own initial value (zeros for biases, ones for scales) and their head
columns give a small spread around it, `gain / fan_in` of the kernel beside
them (see `leaf_variances`); the paper's "hyperbias" variance split is not
used, because Flax targets initialise biases to zero. (The chunked
hypernetwork, whose generator is shared by all leaves, puts the same variances
into a fixed output scale; see `hypernet.hypernets.chunked`.)

Other modes (the `head_init` attribute of the hypernetworks): `'target'` makes the initial
generated parameters *equal* a draw of the target's default initialisation for every
conditioning input (zero head kernel, head bias = the flattened draw); `'naive'` is Flax's
default (LeCun-normal head, zero bias), for comparison. Two modes set every layer of the
hypernetwork, its trunk included, with no scaling to the target (`WHOLE_NETWORK_INITS`):
`'torch'` is PyTorch's `nn.Linear` default (`torch_uniform`: weights and biases uniform in
`+-1/sqrt(fan_in)`), what von Oswald et al.'s hypernetwork modules (chrhenning/hypercl) start
with; `'xavier'` is Glorot-uniform weights and zero biases, what their MNIST scripts then
re-initialise every hypernetwork layer to (`mnist/train_utils.py`, after the hypernetwork is
built), for reproducing their PermutedMNIST and SplitMNIST runs. Glorot's `fan_out` term makes a
wide head start small: a 25 -> 78,000 head has weights of std 0.005, where `'torch'` gives 0.115.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hypernet.layout import ParamLayout

HEAD_INITS = ('hyperfan_in', 'hyperfan_out', 'target', 'naive', 'torch', 'xavier')
# Modes that initialise every layer (trunk included) and generate the head's outputs unscaled.
WHOLE_NETWORK_INITS = ('torch', 'xavier')

Initializer = Callable[..., jax.Array]


def torch_uniform(fan_in: int) -> Initializer:
  """PyTorch's `nn.Linear` initialiser: uniform in `+-1/sqrt(fan_in)` (weights and biases)."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def layer_inits(mode: str, fan_in: int) -> tuple[Initializer, Initializer]:
  """`(kernel_init, bias_init)` of a Dense with input size `fan_in` under one of
  `WHOLE_NETWORK_INITS`."""
  if mode == 'torch':
    return torch_uniform(fan_in), torch_uniform(fan_in)
  if mode == 'xavier':
    return jax.nn.initializers.glorot_uniform(), jax.nn.initializers.zeros
  raise ValueError(f'mode: expected one of {WHOLE_NETWORK_INITS}, received {mode!r}.')


def check_init(init: str) -> None:
  if init not in HEAD_INITS:
    raise ValueError(f'head_init: expected one of {HEAD_INITS}, received {init!r}.')


def leaf_variances(layout: ParamLayout, mode: str = 'hyperfan_in', gain: float = 1.0) -> np.ndarray:
  """`[num_generated]` initial variance of each generated value.

  Kernel values: `gain / fan_in` (`gain / fan_out` for `mode='hyperfan_out'`).
  Vector values (biases, scales) vary around the target's own initial value
  with `gain / fan_in` of the kernel beside them (`1 / size` if there is none):
  small, like PyTorch's default bias init, but not zero, so that every head
  and trunk parameter receives a gradient from the first step.
  """
  out = []
  for l in layout.generated:
    if l.is_kernel:
      fan = l.fan_out if mode == 'hyperfan_out' else l.fan_in
      v = gain / fan
    else:
      sib = layout.by_path.get(l.kernel_sibling) if l.kernel_sibling else None
      v = gain / sib.fan_in if sib is not None else 1.0 / max(l.size, 1)
    out.append(np.full(l.size, v, np.float64))
  return np.concatenate(out)


def scaled_normal(std: np.ndarray | float) -> Initializer:
  """Initialiser of a `[d, n]` kernel whose column j is `N(0, std_j^2)` (std `[n]` or scalar)."""
  std = np.asarray(std, np.float32)

  def init(key, shape, dtype=jnp.float32):
    return (jax.random.normal(key, shape, jnp.float32) * std).astype(dtype)

  return init


def head_inits(layout: ParamLayout, draw_fn: Callable[[jax.Array], jax.Array], *, init: str,
               fan_in: int, cond_second_moment: float = 1.0, gain: float = 1.0,
               start: int = 0, stop: int | None = None) -> tuple[Initializer, Initializer]:
  """Kernel and bias initialisers for a head producing generated values `[start:stop]`.

  Args:
    layout: the target's layout.
    draw_fn: `key -> [num_generated]`, a flattened draw of the target's init.
    init: one of `HEAD_INITS`.
    fan_in: the head's input size `d`.
    cond_second_moment: `E[e^2]` of the head's input.
    gain: variance gain (1 = LeCun, the Flax default; 2 = He).
    start, stop: the slice of generated values this head produces.

  Returns:
    `(kernel_init, bias_init)` for `flax.linen.Dense`.
  """
  check_init(init)
  stop = layout.num_generated if stop is None else stop
  vector = ~layout.kernel_mask()[start:stop]
  if init == 'naive':
    return jax.nn.initializers.lecun_normal(), jax.nn.initializers.zeros
  if init in WHOLE_NETWORK_INITS:
    return layer_inits(init, fan_in)
  if init == 'target':
    def bias_init(key, shape, dtype=jnp.float32):
      return draw_fn(key)[start:stop].astype(dtype)
    return jax.nn.initializers.zeros, bias_init
  var = leaf_variances(layout, init, gain)[start:stop]
  std = np.sqrt(var / (fan_in * cond_second_moment))

  def bias_init(key, shape, dtype=jnp.float32):
    return jnp.where(vector, draw_fn(key)[start:stop], 0.0).astype(dtype)

  return scaled_normal(std), bias_init
