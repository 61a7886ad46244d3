"""Continual-learning benchmarks as device-ready arrays (`python -m experiments.continual`).

A `Benchmark` holds one shared training and test set and, per task, the indices of its
examples (padded to a common length), its input permutation and its label offset, so that
a jitted step can draw a batch of any task from a traced task id:

    idx = train_idx[t, randint(0, train_count[t])];  x = x_train[idx][:, perm[t]]

Labels are task-local (`0..C-1`); `class_offset[t] + y` is the global class (0 for every
permuted task: the digits keep their meaning; `2t` for SplitMNIST), used by task inference.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections
import numpy as np

from hypernet.data import mnist as mnist_lib


class Benchmark(NamedTuple):
  """Arrays of a continual-learning benchmark (see the module docstring).

  Attributes:
    x_train: `[N, D]` float32 in [0, 1] (MNIST) or standardised (MNIST-1D).
    y_train: `[N]` int32 task-local labels.
    train_idx: `[T, Nmax]` int32 example indices per task (padding repeats index 0).
    train_count: `[T]` int32 valid indices per task.
    x_test, y_test, test_idx, test_count: the same for the test set.
    perm: `[T, D]` int32 input permutation per task (identity for split benchmarks).
    class_offset: `[T]` int32 global class of a task's local label 0.
  """
  x_train: np.ndarray
  y_train: np.ndarray
  train_idx: np.ndarray
  train_count: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  test_idx: np.ndarray
  test_count: np.ndarray
  perm: np.ndarray
  class_offset: np.ndarray

  @property
  def num_tasks(self) -> int:
    return int(self.perm.shape[0])

  @property
  def input_dim(self) -> int:
    return int(self.x_train.shape[1])


def _pad(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  width = max(len(g) for g in groups)
  idx = np.zeros((len(groups), width), np.int32)
  for i, g in enumerate(groups):
    idx[i, :len(g)] = g
  return idx, np.array([len(g) for g in groups], np.int32)


def _subset(groups: list[np.ndarray], limit: int, rng: np.random.Generator) -> list[np.ndarray]:
  if limit <= 0:
    return groups
  return [np.sort(rng.permutation(g)[:limit]) if len(g) > limit else g for g in groups]


def _raw(benchmark: str, data_dir: str | None, verify: bool, pad: int = 0):
  """`(x [N, D], y [N], x_test, y_test)`; MNIST images zero-padded by `pad` pixels on each
  side before flattening (`pad=2`: 32 x 32, van de Ven & Tolias's permuted MNIST)."""
  if benchmark.endswith('mnist1d'):
    if pad:
      raise ValueError(f'data.pad: expected 0 for {benchmark} (MNIST-1D has no image to pad), '
                       f'received {pad}.')
    d = mnist_lib.load_mnist1d(data_dir, verify=verify)
    mean, std = d['x'].mean(), d['x'].std()
    return (((d['x'] - mean) / std).astype(np.float32), d['y'].astype(np.int64),
            ((d['x_test'] - mean) / std).astype(np.float32), d['y_test'].astype(np.int64))
  x, y = mnist_lib.load_mnist('train', data_dir, verify=verify)
  xt, yt = mnist_lib.load_mnist('test', data_dir, verify=verify)
  def flat(a):  # [N, (28 + 2 pad)^2] in [0, 1]
    a = np.pad(a, ((0, 0), (pad, pad), (pad, pad))) if pad else a
    return (a.reshape(a.shape[0], -1) / 255.0).astype(np.float32)
  return flat(x), y.astype(np.int64), flat(xt), yt.astype(np.int64)


def load_benchmark(config: ml_collections.ConfigDict) -> Benchmark:
  """The benchmark of `config` (`benchmark`, `seed`, `data.*`), as numpy arrays."""
  num_tasks = config.data.num_tasks
  x, y, xt, yt = _raw(config.benchmark, config.data.dir or None,
                      bool(config.data.verify), int(config.data.get('pad', 0)))
  rng = np.random.default_rng(config.seed)
  d = x.shape[1]
  if config.benchmark.startswith('permuted'):
    perm = mnist_lib.permuted_mnist_tasks(num_tasks, config.seed, first_identity=True,
                                          num_pixels=d)
    train_groups = [np.arange(len(y))] * num_tasks
    test_groups = [np.arange(len(yt))] * num_tasks
    y_local, yt_local = y, yt
    offset = np.zeros(num_tasks, np.int32)
  else:
    pairs = mnist_lib.SPLIT_MNIST_PAIRS[:num_tasks]
    train_groups = [t.indices for t in mnist_lib.split_mnist_tasks(y, pairs)]
    test_groups = [t.indices for t in mnist_lib.split_mnist_tasks(yt, pairs)]
    # Task-local label: 1 for the second digit of the pair (the pairs are disjoint).
    second = np.array([p[1] for p in mnist_lib.SPLIT_MNIST_PAIRS])
    y_local, yt_local = np.isin(y, second), np.isin(yt, second)
    perm = np.tile(np.arange(d), (num_tasks, 1))
    offset = 2 * np.arange(num_tasks, dtype=np.int32)
  train_idx, train_count = _pad(_subset(train_groups, config.data.max_train_per_task, rng))
  test_idx, test_count = _pad(_subset(test_groups, config.data.max_test_per_task, rng))
  return Benchmark(x, y_local.astype(np.int32), train_idx, train_count, xt,
                   yt_local.astype(np.int32), test_idx, test_count, perm.astype(np.int32),
                   offset)


def num_classes(benchmark: str) -> int:
  """Classes per task: 10 (permuted) or 2 (split)."""
  return 10 if benchmark.startswith('permuted') else 2
