"""Standard target networks of the few-shot literature, as Flax Linen modules.

`Conv4` is the four-block CNN of Vinyals et al. (2016), used by MAML, ProtoNets and the
hypernetwork few-shot methods on Omniglot: four blocks of [3x3 convolution with `filters`
filters, SAME padding, (BatchNorm), ReLU, 2x2 max-pool], then (unless `ways=0`) a linear
head. On 28x28x1 inputs the spatial size goes 28 -> 14 -> 7 -> 3 -> 1, so the embedding has
`filters` features.

Convolutions are `hypernet.nn.Conv` (per-backend lowering that stays fast when weights differ
per task under `vmap`; the parameters are `flax.linen.Conv`'s) and pooling is
`hypernet.nn.max_pool` (the same values as `flax.linen.max_pool`).

BatchNorm. With `batch_norm=True` use the target with `batch_stats='task'`
(`hypernet.Target.from_linen(..., batch_stats='task', apply_kwargs={'train': True})`): every
call normalises with the statistics of the examples passed in that call (per task under
`vmap`; the support and query sets of a task are separate calls, so each is normalised by its
own statistics, as in MAML's reference code, i.e. transductively), and running averages are
never read. Without BatchNorm (the default) every prediction depends on its own input only.
A convolution bias is dropped before BatchNorm, which cancels it.

Input-conditioned gating (`gate=True`): the project's seed sketch (a Dense-64-ReLU
hypernetwork whose output multiplies the output of a bias-free Dense target) inside every
block. A small hypernetwork reads the block's pre-activation averaged over space, `[C]`, and
outputs a per-channel scale that multiplies it, i.e. it FiLMs (scale only) the convolution's
kernel for that example: `h * 2 sigmoid(W2 relu(W1 mean_hw(h)))` (squeeze-and-excitation,
Hu et al. 2018, is the same form). `W2` starts at zero, so every gate starts at 1 and the
network at the plain Conv-4. The gates are computed per example, so predictions still depend
on their own input only. Each block's gates `[N, C]` are sown as `intermediates/gate_<i>`:
`Conv4(..., gate=True).apply(variables, x, mutable=['intermediates'])` returns them.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from hypernet import nn as hnn


class Conv4(nn.Module):
  """Conv-4: `x [N, H, W, C] -> [N, ways]` (or the embedding `[N, D]` with `ways=0`).

  Attributes:
    filters: filters per convolution (64 in the literature).
    ways: output classes of the linear head (`Dense_0`); 0: no head, the flattened features.
    batch_norm: BatchNorm after each convolution (see the module docstring for the policy).
    conv_strategy: `hypernet.nn.Conv`'s lowering: 'auto' (per backend, for weights that
      differ per task), or 'xla' for weights shared by all tasks (an embedding network).
    gate: input-conditioned gating of every block (see the module docstring).
    gate_hidden: the gating hypernetwork's hidden width.
  """
  filters: int = 64
  ways: int = 5
  batch_norm: bool = False
  conv_strategy: str = 'auto'
  gate: bool = False
  gate_hidden: int = 16

  def __post_init__(self):
    for name, low in (('filters', 1), ('ways', 0)):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f'{name}: expected an integer >= {low}, received {value!r}.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f'x: expected images [N, H, W, C], received shape {x.shape}.')
    for i in range(4):
      x = hnn.Conv(self.filters, (3, 3), padding='SAME', use_bias=not self.batch_norm,
                   strategy=self.conv_strategy)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train)(x)
      if self.gate:  # [N, H, W, C] * [N, 1, 1, C]
        h = nn.relu(nn.Dense(self.gate_hidden, name=f'Gate_{i}_hidden')(x.mean((1, 2))))
        g = nn.Dense(self.filters, kernel_init=nn.initializers.zeros, name=f'Gate_{i}_out')(h)
        gate = 2.0 * nn.sigmoid(g)  # [N, C], in (0, 2)
        self.sow('intermediates', f'gate_{i}', gate)  # kept with mutable=['intermediates']
        x = x * gate[:, None, None, :]
      x = hnn.max_pool(nn.relu(x), (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)  # [N, D]
    return nn.Dense(self.ways)(x) if self.ways else x
