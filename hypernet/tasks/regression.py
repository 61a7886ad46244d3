"""Regression task families, sampled on device from a key.

Each family samples ONE task with `family.sample(key, num_points, num_support)`:
`num_points` inputs x ~ U[x_range] `[num_points, 1]`, the first `num_support` of them
support and the rest query; `family.fn(info, x)` is the task's true function
(for plots). A batch is `family.sample_batch(key, num_tasks, ...)`, i.e.
`jax.vmap(family.sample)` over split keys.

* `Sinusoid` (MAML protocol, Finn et al. 2017): `A sin(x - phase)`,
  A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5].
* `Harmonic`: a mixture of two harmonics, `a1 sin(w x + b1) + a2 sin(2 w x + b2)`
  (after the harmonic family of Lacoste et al. 2018): w ~ U[0.5, 1.0], a ~ N(0, 1), b ~ U[0, 2 pi].
* `Polynomial`: lines and quadratics, `c0 + c1 x + c2 x^2` with c ~ U[-1, 1] and
  c2 = 0 on half the tasks.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from hypernet.tasks.base import Task, check_split


@dataclasses.dataclass(frozen=True)
class RegressionFamily:
  """Base class: subclasses define `_sample_info(key)` and `fn(info, x)`."""
  x_range: tuple[float, float] = (-5.0, 5.0)

  def _sample_info(self, key: jax.Array) -> dict[str, jax.Array]:
    raise NotImplementedError

  def fn(self, info: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """The true function of the task with parameters `info`: `x [N, 1] -> y [N, 1]`."""
    raise NotImplementedError

  def sample(self, key: jax.Array, num_points: int, num_support: int) -> Task:
    """ONE task: `[num_support, 1]` support and `[num_points - num_support, 1]` query points."""
    check_split(num_points, num_support)
    info_key, x_key = jax.random.split(key)
    info = self._sample_info(info_key)
    x = jax.random.uniform(x_key, (num_points, 1), minval=self.x_range[0],
                           maxval=self.x_range[1])  # [N, 1]
    y = self.fn(info, x)  # [N, 1]
    return Task(x[:num_support], y[:num_support], x[num_support:], y[num_support:], info)

  def sample_batch(self, key: jax.Array, num_tasks: int, num_points: int,
                   num_support: int) -> Task:
    """`num_tasks` tasks: every leaf has a leading task axis `[T, ...]`."""
    if not isinstance(num_tasks, int) or num_tasks <= 0:
      raise ValueError(f'num_tasks: expected a positive integer, received {num_tasks!r}.')
    return jax.vmap(lambda k: self.sample(k, num_points, num_support))(
        jax.random.split(key, num_tasks))

  def mean_fn(self, x: jax.Array, key: jax.Array, num_samples: int = 4096) -> jax.Array:
    """`E[y | x]` over the family (Monte Carlo): the best prediction without a support set."""
    infos = jax.vmap(self._sample_info)(jax.random.split(key, num_samples))
    return jnp.mean(jax.vmap(lambda i: self.fn(i, x))(infos), axis=0)


@dataclasses.dataclass(frozen=True)
class Sinusoid(RegressionFamily):
  """`A sin(x - phase)` with the MAML protocol's ranges."""
  amplitude_range: tuple[float, float] = (0.1, 5.0)
  phase_range: tuple[float, float] = (0.0, math.pi)

  def _sample_info(self, key):
    ka, kp = jax.random.split(key)
    return {'amplitude': jax.random.uniform(ka, (), minval=self.amplitude_range[0],
                                            maxval=self.amplitude_range[1]),
            'phase': jax.random.uniform(kp, (), minval=self.phase_range[0],
                                        maxval=self.phase_range[1])}

  def fn(self, info, x):
    return info['amplitude'] * jnp.sin(x - info['phase'])


@dataclasses.dataclass(frozen=True)
class Harmonic(RegressionFamily):
  """`a1 sin(w x + b1) + a2 sin(2 w x + b2)`."""
  frequency_range: tuple[float, float] = (0.5, 1.0)

  def _sample_info(self, key):
    kw, ka, kb = jax.random.split(key, 3)
    a = jax.random.normal(ka, (2,))
    b = jax.random.uniform(kb, (2,), maxval=2 * math.pi)
    w = jax.random.uniform(kw, (), minval=self.frequency_range[0], maxval=self.frequency_range[1])
    return {'frequency': w, 'a1': a[0], 'a2': a[1], 'b1': b[0], 'b2': b[1]}

  def fn(self, info, x):
    w = info['frequency']
    return info['a1'] * jnp.sin(w * x + info['b1']) + info['a2'] * jnp.sin(2 * w * x + info['b2'])


@dataclasses.dataclass(frozen=True)
class Polynomial(RegressionFamily):
  """Lines and quadratics: `c0 + c1 x + c2 x^2`, c2 = 0 with probability 1/2."""

  def _sample_info(self, key):
    kc, kq = jax.random.split(key)
    c = jax.random.uniform(kc, (3,), minval=-1.0, maxval=1.0)
    quadratic = jax.random.bernoulli(kq)
    return {'c0': c[0], 'c1': c[1], 'c2': jnp.where(quadratic, c[2], 0.0)}

  def fn(self, info, x):
    return info['c0'] + info['c1'] * x + info['c2'] * x ** 2


FAMILIES = {'sinusoid': Sinusoid, 'harmonic': Harmonic, 'polynomial': Polynomial}


def make_family(name: str, **kwargs) -> RegressionFamily:
  """A family by name (`FAMILIES`), with its dataclass fields as keyword arguments."""
  if name not in FAMILIES:
    raise ValueError(f'task family: expected one of {tuple(FAMILIES)}, received {name!r}.')
  fields = {f.name for f in dataclasses.fields(FAMILIES[name])}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f'task family {name!r}: unknown options {unknown}; expected some of '
                     f'{sorted(fields)}.')
  return FAMILIES[name](**{k: tuple(v) if isinstance(v, (list, np.ndarray)) else v
                           for k, v in kwargs.items()})
