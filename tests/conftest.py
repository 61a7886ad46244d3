"""Shared small targets for the tests: an MLP, a Conv-4 CNN, an NNX module, a BatchNorm module."""

import functools

import flax.linen as nn
import jax
import pytest
from flax import nnx

import hypernet as hn



class MLP(nn.Module):
  """Linen MLP `[N, d] -> [N, out]`."""
  features: tuple = (32, 32, 4)

  @nn.compact
  def __call__(self, x):
    for f in self.features[:-1]:
      x = nn.relu(nn.Dense(f)(x))
    return nn.Dense(self.features[-1])(x)


class Conv4(nn.Module):
  """Conv-4: four [3x3 conv, (BatchNorm), ReLU, 2x2 max-pool] blocks and a linear head.

  `[N, H, W, 1] -> [N, ways]`.
  """
  filters: int = 8
  ways: int = 5
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = True):
    for _ in range(4):
      # A bias before BatchNorm is cancelled by it (and would get no gradient).
      x = nn.Conv(self.filters, (3, 3), padding='SAME', use_bias=not self.batch_norm)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train)(x)
      x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
    return nn.Dense(self.ways)(x.reshape(x.shape[0], -1))


class NnxMLP(nnx.Module):
  """NNX MLP `[N, 16] -> [N, 4]`, optionally with BatchNorm."""

  def __init__(self, rngs: nnx.Rngs, batch_norm: bool = False):
    self.l1 = nnx.Linear(16, 32, rngs=rngs)
    self.bn = nnx.BatchNorm(32, rngs=rngs) if batch_norm else None
    self.l2 = nnx.Linear(32, 4, rngs=rngs)

  def __call__(self, x):
    h = self.l1(x)
    if self.bn is not None:
      h = self.bn(h)
    return self.l2(nnx.relu(h))


@functools.cache
def _make_target(name: str, batch_stats: str | None = None) -> tuple[hn.Target, jax.Array]:
  kwargs = {} if batch_stats is None else {'batch_stats': batch_stats}
  if batch_stats == 'frozen' and name == 'conv4_bn':
    kwargs['apply_kwargs'] = {'train': False}
  key = jax.random.key(0)
  if name == 'mlp':
    x = jax.random.normal(jax.random.key(1), (8, 16))
    return hn.Target.from_linen(MLP(), x, key=key, **kwargs), x
  if name in ('conv4', 'conv4_bn'):
    x = jax.random.normal(jax.random.key(1), (8, 16, 16, 1))  # 28x28 in the benchmarks
    bn = name == 'conv4_bn'
    kw = {'apply_kwargs': {'train': True}} if bn else {}
    kw.update(kwargs)
    return hn.Target.from_linen(Conv4(batch_norm=bn), x, key=key, **kw), x
  if name in ('nnx', 'nnx_bn'):
    x = jax.random.normal(jax.random.key(1), (8, 16))
    bn = name == 'nnx_bn'
    return hn.Target.from_nnx(lambda rngs: NnxMLP(rngs, batch_norm=bn), key=key, **kwargs), x
  raise ValueError(name)


def make_target(name: str, batch_stats: str | None = None) -> tuple[hn.Target, jax.Array]:
  """(target, a batch of inputs `[8, ...]`) by name (built once per session)."""
  return _make_target(name, batch_stats)


TARGETS = ('mlp', 'conv4', 'nnx', 'conv4_bn')


def pytest_collection_modifyitems(items):
  """Marks `data` every test of a module that gets data through `data_sources` (`.ci/run` runs
  them once more with the staged data hidden, as on a new user's machine)."""
  for item in items:
    module = getattr(item, 'module', None)
    if module is not None and 'data_sources' in vars(module):
      item.add_marker(pytest.mark.data)


@pytest.fixture(params=TARGETS)
def target_and_x(request):
  return make_target(request.param)
