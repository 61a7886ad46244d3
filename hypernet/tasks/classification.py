"""A synthetic N-way K-shot classification family, sampled on device.

`Blobs`: each task draws `ways` class centres from N(0, I_d) and `points_per_class`
examples per class around them, `x = centre + noise * N(0, I_d)`; labels are
`0..ways-1`. Support holds `shots` examples per class, query the rest. It
exercises classification learners (ProtoNets, MAML with cross-entropy) without
a dataset; real benchmarks read their data files (see the Omniglot reader).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hypernet.tasks.base import Task, check_split


@dataclasses.dataclass(frozen=True)
class Blobs:
  """Gaussian-blob classification tasks.

  Attributes:
    dim: input dimension.
    noise: standard deviation of examples around their class centre.
  """
  dim: int = 8
  noise: float = 0.5

  def sample(self, key: jax.Array, ways: int, shots: int, queries: int) -> Task:
    """ONE task: support `x [ways*shots, dim]`, `y [ways*shots]`; query `[ways*queries, ...]`."""
    if not isinstance(ways, int) or ways < 2:
      raise ValueError(f'ways: expected an integer >= 2, received {ways!r}.')
    check_split(shots + queries, shots, 'shots')
    kc, kx = jax.random.split(key)
    centres = jax.random.normal(kc, (ways, self.dim))  # [N, d]
    per_class = shots + queries
    x = centres[:, None] + self.noise * jax.random.normal(kx, (ways, per_class, self.dim))
    y = jnp.broadcast_to(jnp.arange(ways)[:, None], (ways, per_class))  # [N, K + Q]
    flat = lambda a, lo, hi: a[:, lo:hi].reshape(ways * (hi - lo), *a.shape[2:])
    return Task(flat(x, 0, shots), flat(y, 0, shots), flat(x, shots, per_class),
                flat(y, shots, per_class), {})

  def sample_batch(self, key: jax.Array, num_tasks: int, ways: int, shots: int,
                   queries: int) -> Task:
    """`num_tasks` tasks with a leading task axis."""
    return jax.vmap(lambda k: self.sample(k, ways, shots, queries))(
        jax.random.split(key, num_tasks))
