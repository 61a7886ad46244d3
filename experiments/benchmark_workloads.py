"""The benchmark's fixed workloads (`python -m experiments.benchmark`), each built twice.

Every workload is one meta-step, `step(state, batch) -> (state, metrics)`, jitted with
the state donated, on a fixed batch of random data of the workload's shapes (the
benchmark measures compute, not data loading):

* `library`: the step as a user of this library writes it (`hypernet.Target`, the
  learners of `hypernet.meta`, `make_meta_step`, the hypernetwork modules);
* `reference`: a minimal hand-written `jit(vmap(...))` of the same computation (plain
  dicts of arrays, the layers written out, `optax.adam`), so that the library's
  overhead is a ratio measured in the same process.

Workloads (float32 unless named otherwise; Adam 1e-3 throughout):

* `W1` sinusoid MAML: MLP 1-40-40-1 ReLU, 10 support + 10 query points, meta-batch 25,
  1 inner SGD step (lr 0.01), second order. `W1-bf16`: the same with
  `compute_dtype='bfloat16'` (library only).
* `W2` Omniglot Conv-4 MAML: 4 x [3x3 conv, 64 filters, SAME, ReLU, 2x2 max-pool], no
  BatchNorm, 28x28x1, linear head to 5 classes; 5-way 1-shot, 15 queries per class,
  meta-batch 32, 1 inner step (lr 0.4), second order. Both sides use `hypernet.nn.conv`
  and `max_pool` (the backend's convolution strategy): a plain `lax.conv` reference
  would measure XLA's CPU grouped convolution, not the library (see `hypernet.nn`).
* `W3` task-embedding hypernetwork to an MLP 784-100-100-10 (89,610 target weights):
  embedding 32, hypernetwork MLP 32-100-100 and a full output head, cross-entropy on 128
  inputs per task, meta-batch 16. `W3-chunked`: chunk size 7000, chunk embedding 8
  (13 chunks). The library's generators also scale their output by a fixed per-value
  hyperfan factor and add learned offsets on the bias values; W3's reference does the same,
  W3-chunked's is the minimal chunked form (chunks concatenated, cut and unflattened, no
  scale, no offsets), so its overhead column bounds what the library's extras cost.
* `W4-<algo>`: each hypernetwork meta-learner (`amortised`, `latent`, `hypermaml`,
  `learned_update`) at the sinusoid shape (W1's tasks), built from the sinusoid
  experiment's default config for that algorithm; no hand-written reference.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import hypernet as hn
from hypernet import meta
from hypernet import nn as hnn
from hypernet.tasks import Sinusoid, Task

LEARNING_RATE = 1e-3


@dataclasses.dataclass
class Program:
  """A jitted `step(state, batch) -> (state, metrics)` (state donated) and its inputs."""
  step: Callable[..., Any]
  state: Any
  batch: Any


@dataclasses.dataclass(frozen=True)
class Workload:
  """A named workload: its `library` program, and its hand-written `reference` (or None)."""
  name: str
  description: str
  library: Callable[[], Program]
  reference: Callable[[], Program] | None = None


def _adam_step(loss_fn: Callable[[Any, Any], jax.Array]) -> tuple[Callable, optax.GradientTransformation]:
  """A jitted Adam step on `loss_fn(params, batch)`: `((params, opt), batch) -> (state, metrics)`."""
  tx = optax.adam(LEARNING_RATE)

  def step(state, batch):
    params, opt_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), {
        'loss': loss, 'grad_norm': optax.tree.norm(grads)}

  return jax.jit(step, donate_argnums=(0,)), tx


def _dense_init(key: jax.Array, sizes: list[int]) -> dict[str, jax.Array]:
  """LeCun-normal kernels `w{i} [n_in, n_out]` and zero biases `b{i} [n_out]`."""
  params = {}
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, sub = jax.random.split(key)
    params[f'w{i}'] = jax.random.normal(sub, (a, b)) / math.sqrt(a)
    params[f'b{i}'] = jnp.zeros((b,))
  return params


def _mlp(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """ReLU MLP over `w0, b0, w1, ...`; `x [N, d] -> [N, out]` (no ReLU on the output)."""
  n = len(params) // 2
  for i in range(n):
    x = x @ params[f'w{i}'] + params[f'b{i}']
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def _library_maml_program(learner: meta.MetaLearner, tasks: Task,
                          compute_dtype: str | None = None) -> Program:
  tx = optax.adam(LEARNING_RATE)
  state = jax.jit(meta.init_state, static_argnums=(0, 1))(learner, tx, jax.random.key(1))
  return Program(meta.make_meta_step(learner, tx, compute_dtype=compute_dtype), state, tasks)


def _reference_maml_program(apply_fn: Callable, params: Any, tasks: Task, inner_lr: float,
                            loss_fn: Callable) -> Program:
  """Second-order MAML with one inner SGD step, written out."""
  def task_loss(p, xs, ys, xq, yq):  # ONE task
    g = jax.grad(lambda q: loss_fn(apply_fn(q, xs), ys))(p)
    adapted = jax.tree.map(lambda w, d: w - inner_lr * d, p, g)
    return loss_fn(apply_fn(adapted, xq), yq)

  def loss(p, batch):
    return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, *batch))

  step, tx = _adam_step(loss)
  batch = (tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query)
  return Program(step, (params, tx.init(params)), batch)


def _mse(pred, y):
  return jnp.mean(jnp.square(pred - y))


def _xent(logits, labels):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


# ------------------------------------------------------------------ W1: sinusoid MAML
class SinusoidMLP(nn.Module):
  """`x [N, 1] -> [N, 1]`: MLP 1-40-40-1, ReLU."""

  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = nn.relu(nn.Dense(40)(x))
    return nn.Dense(1)(x)


def sinusoid_tasks(meta_batch: int = 25) -> Task:
  """`meta_batch` sinusoid tasks, 10 support + 10 query points `[T, 10, 1]`."""
  return Sinusoid().sample_batch(jax.random.key(0), meta_batch, 20, 10)


def sinusoid_target() -> hn.Target:
  return hn.Target.from_linen(SinusoidMLP(), jnp.zeros((1, 1)), key=jax.random.key(0))


def w1_library(compute_dtype: str | None = None, meta_batch: int = 25) -> Program:
  learner = meta.MAML(target=sinusoid_target(), inner_lr=0.01, inner_steps=1)
  return _library_maml_program(learner, sinusoid_tasks(meta_batch), compute_dtype)


def w1_reference() -> Program:
  return _reference_maml_program(_mlp, _dense_init(jax.random.key(1), [1, 40, 40, 1]),
                                 sinusoid_tasks(), 0.01, _mse)


# ------------------------------------------------------------------ W2: Omniglot Conv-4 MAML
class Conv4(nn.Module):
  """`[N, 28, 28, 1] -> [N, 5]`: 4 x [3x3 conv (64, SAME), ReLU, 2x2 max-pool], linear head."""
  filters: int = 64
  ways: int = 5

  @nn.compact
  def __call__(self, x):
    for _ in range(4):
      x = hnn.max_pool(nn.relu(hnn.Conv(self.filters, (3, 3), padding='SAME')(x)), (2, 2), (2, 2))
    return nn.Dense(self.ways)(x.reshape(x.shape[0], -1))


def omniglot_tasks(meta_batch: int = 32, ways: int = 5, shots: int = 1,
                   queries: int = 15) -> Task:
  """Random 28x28x1 episodes: support `[T, ways * shots, 28, 28, 1]`, query `[T, ways * queries, ...]`."""
  k1, k2 = jax.random.split(jax.random.key(0))
  labels = lambda n: jnp.tile(jnp.arange(ways, dtype=jnp.int32), (meta_batch, n))  # noqa: E731
  return Task(jax.random.uniform(k1, (meta_batch, ways * shots, 28, 28, 1)), labels(shots),
              jax.random.uniform(k2, (meta_batch, ways * queries, 28, 28, 1)), labels(queries))


def w2_library(meta_batch: int = 32) -> Program:
  target = hn.Target.from_linen(Conv4(), jnp.zeros((1, 28, 28, 1)), key=jax.random.key(0))
  learner = meta.MAML(target=target, loss='xent', inner_lr=0.4, inner_steps=1)
  return _library_maml_program(learner, omniglot_tasks(meta_batch))


def _conv4_apply(params, x):
  for i in range(4):
    y = hnn.conv(x, params[f'conv{i}'], padding='SAME') + params[f'cbias{i}']
    x = hnn.max_pool(jax.nn.relu(y), (2, 2), (2, 2))
  return x.reshape(x.shape[0], -1) @ params['w'] + params['b']


def w2_reference() -> Program:
  keys = jax.random.split(jax.random.key(1), 5)
  params = {}
  for i, cin in enumerate((1, 64, 64, 64)):
    params[f'conv{i}'] = jax.random.normal(keys[i], (3, 3, cin, 64)) / math.sqrt(9 * cin)
    params[f'cbias{i}'] = jnp.zeros((64,))
  params['w'] = jax.random.normal(keys[4], (64, 5)) / 8.0
  params['b'] = jnp.zeros((5,))
  return _reference_maml_program(_conv4_apply, params, omniglot_tasks(), 0.4, _xent)


# ------------------------------------------------------------------ W3: task-embedding hypernetwork
W3_SIZES = [784, 100, 100, 10]
W3_TASKS, W3_INPUTS, W3_EMB = 16, 128, 32
W3_CHUNK, W3_CHUNK_EMB = 7000, 8  # W3-chunked: 13 chunks


def w3_batch() -> tuple[jax.Array, jax.Array, jax.Array]:
  """(task ids `[16]`, inputs `[16, 128, 784]`, integer labels `[16, 128]`)."""
  k1, k2 = jax.random.split(jax.random.key(0))
  return (jnp.arange(W3_TASKS, dtype=jnp.int32),
          jax.random.normal(k1, (W3_TASKS, W3_INPUTS, W3_SIZES[0])),
          jax.random.randint(k2, (W3_TASKS, W3_INPUTS), 0, W3_SIZES[-1]))


def w3_target() -> hn.Target:
  mlp = nn.Sequential([nn.Dense(100), nn.relu, nn.Dense(100), nn.relu, nn.Dense(10)])
  return hn.Target.from_linen(mlp, jnp.zeros((1, 784)), key=jax.random.key(0))


def w3_loss(chunked: bool = False, head_init: str = 'hyperfan_in') -> tuple[Callable, Any]:
  """W3's meta-loss `loss(meta_params, batch)` and its starting `meta_params` (`{'embed':
  TaskEmbedding params, 'hnet': hypernetwork params}`), as a library user writes them.
  `head_init='torch'`: the chunked hypernetwork without its output scale and offsets (the
  form of the PyTorch peers, `experiments/peer_check.py`)."""
  target = w3_target()
  embed = hn.TaskEmbedding(num_tasks=W3_TASKS, features=W3_EMB)
  if chunked:
    hnet = hn.ChunkedHypernet(target=target, cond_dim=W3_EMB, chunk_size=W3_CHUNK,
                              chunk_emb_dim=W3_CHUNK_EMB, hidden=(100, 100), head_init=head_init)
  else:
    hnet = hn.FullHypernet(target=target, cond_dim=W3_EMB, hidden=(100, 100),
                           head_init=head_init)
  k1, k2 = jax.random.split(jax.random.key(1))
  meta_params = {'embed': embed.init(k1, jnp.zeros((), jnp.int32)),
                 'hnet': hnet.init(k2, jnp.zeros((W3_EMB,)))}

  def _task_loss(meta_params, task_id, x, y):  # ONE task
    target_params = hnet.apply(meta_params['hnet'], embed.apply(meta_params['embed'], task_id))
    return _xent(target.apply(target_params, x), y)

  def loss(meta_params, batch):
    return jnp.mean(jax.vmap(_task_loss, in_axes=(None, 0, 0, 0))(meta_params, *batch))

  return loss, meta_params


def w3_library(chunked: bool = False) -> Program:
  loss, meta_params = w3_loss(chunked)
  step, tx = _adam_step(loss)
  return Program(step, (meta_params, tx.init(meta_params)), w3_batch())


def _w3_unflatten(flat: jax.Array) -> dict[str, jax.Array]:
  """A flat vector `[89610]` -> `w0 [784, 100], b0 [100], ..., b2 [10]` (static slices)."""
  out, i = {}, 0
  for n, (a, b) in enumerate(zip(W3_SIZES[:-1], W3_SIZES[1:])):
    out[f'w{n}'] = flat[i:i + a * b].reshape(a, b)
    out[f'b{n}'] = flat[i + a * b:i + a * b + b]
    i += a * b + b
  return out


def w3_reference(chunked: bool = False) -> Program:
  num = sum(a * b + b for a, b in zip(W3_SIZES[:-1], W3_SIZES[1:]))  # 89,610
  chunk, chunk_emb = W3_CHUNK, W3_CHUNK_EMB
  num_chunks = math.ceil(num / chunk)
  keys = jax.random.split(jax.random.key(1), 4)
  cond = W3_EMB + chunk_emb if chunked else W3_EMB
  out = chunk if chunked else num
  params = {'embed': jax.random.normal(keys[0], (W3_TASKS, W3_EMB)),
            'trunk': _dense_init(keys[1], [cond, 100, 100]),
            'head_w': jax.random.normal(keys[2], (100, out)) * 0.01, 'head_b': jnp.zeros((out,))}
  if chunked:
    params['chunks'] = jax.random.normal(keys[3], (num_chunks, chunk_emb))
  else:
    params['offsets'] = {f'b{n}': jnp.zeros((b,)) for n, b in enumerate(W3_SIZES[1:])}
  scale = jnp.full((num,), 0.05)  # the fixed per-value output scale

  def generate(p, e):  # e [32] -> target params
    if chunked:  # the minimal chunked form: chunks concatenated and cut, nothing else
      h = jnp.concatenate([jnp.broadcast_to(e, (num_chunks, W3_EMB)), p['chunks']], -1)
      h = jax.nn.relu(_mlp(p['trunk'], h))  # [C, 100]
      return _w3_unflatten((h @ p['head_w'] + p['head_b']).reshape(-1)[:num])
    h = jax.nn.relu(_mlp(p['trunk'], e))  # [100]
    w = _w3_unflatten(scale * (h @ p['head_w'] + p['head_b']))  # [P]
    return {k: v + p['offsets'][k] if k in p['offsets'] else v for k, v in w.items()}

  def task_loss(p, task_id, x, y):  # ONE task
    return _xent(_mlp(generate(p, p['embed'][task_id]), x), y)

  def loss(p, batch):
    return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0))(p, *batch))

  step, tx = _adam_step(loss)
  return Program(step, (params, tx.init(params)), w3_batch())


# ------------------------------------------------------------------ W4: hypernetwork learners
W4_ALGOS = ('amortised', 'latent', 'hypermaml', 'learned_update')


def w4_library(algo: str) -> Program:
  from experiments import learners  # pylint: disable=g-import-not-at-top
  from experiments.configs import sinusoid as sinusoid_config  # pylint: disable=g-import-not-at-top
  config = sinusoid_config.get_config(f'algo={algo}')
  target = sinusoid_target()
  learner = learners.build_learner(config, target)
  return _library_maml_program(learner, sinusoid_tasks(config.meta_batch_size))


# ------------------------------------------------------------------ meta-batch curve
# The library programs whose meta-batch size the benchmark's `--batch_curve` varies.
BATCH_CURVE: dict[str, Callable[[int], Program]] = {
    'W1': lambda meta_batch: w1_library(meta_batch=meta_batch),
    'W2': w2_library,
}


# ------------------------------------------------------------------ registry
WORKLOADS: dict[str, Workload] = {
    'W1': Workload('W1', 'sinusoid MAML, MLP 1-40-40-1, 10+10 points, 25 tasks, 1 step',
                   w1_library, w1_reference),
    'W1-bf16': Workload('W1-bf16', 'W1 with bfloat16 compute, float32 master weights',
                        lambda: w1_library('bfloat16')),
    'W2': Workload('W2', 'Omniglot Conv-4 MAML, 64 filters, 5-way 1-shot, 15 queries, 32 tasks',
                   w2_library, w2_reference),
    'W3': Workload('W3', 'task embedding 32 -> hypernet 32-100-100 -> MLP 784-100-100-10, '
                   '128 inputs, 16 tasks', w3_library, w3_reference),
    'W3-chunked': Workload('W3-chunked', 'W3 with chunks of 7000 and chunk embeddings of 8',
                           lambda: w3_library(True), lambda: w3_reference(True)),
    **{f'W4-{a}': Workload(f'W4-{a}', f'{a} at the sinusoid shape (W1 tasks, default config)',
                           lambda a=a: w4_library(a)) for a in W4_ALGOS},
}
