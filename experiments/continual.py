r"""Continual learning with task-conditioned hypernetworks (von Oswald et al., ICLR 2020).

    python -m experiments.continual --config=experiments/configs/continual.py:benchmark=permuted_mnist,method=hnet
    python -m experiments.continual --config=experiments/configs/continual.py:benchmark=split_mnist,method=ewc \
        --workdir=workdirs/continual/split_mnist_ewc

Tasks are learned one after the other (`experiments.configs.continual` lists benchmarks,
methods, protocols and scenarios); after each task the test accuracy on every task is measured
with the task identity given (which a baseline with one shared head does not use: the
domain-incremental scenario), filling column `j` of the accuracy matrix `acc[i, j]` (task `i`
after training task `j`). Outputs in the workdir (default
`workdirs/continual/<benchmark>_<method>`):

* `config.json` (before the first step; a workdir holding another config is refused, see
  `experiments.rundir.check_workdir`; nothing changes in a refused workdir),
  `metrics.jsonl` (training loss per log step, steps/s without compilation; the same
  scalars for TensorBoard in `tensorboard/`): each task is one `experiments.loop.run_steps`,
  the step loop of `experiments.train` (finiteness checks, records, progress lines), and
  the task sequence an outer driver on it,
* orbax checkpoints after every task (the newest `config.keep_checkpoints` kept): a rerun
  resumes after the last finished task and ends
  with exactly the result of an uninterrupted run (an unreadable newest checkpoint is moved
  aside with a warning, see `experiments.rundir.restore_newest`),
* `accuracy_matrix.md` and `accuracy_matrix.png` (heatmap),
* `results.json`: the protocol and scenario, the matrix, the final average accuracy and
  backward transfer as
  `{"mean", "ci95", "n"}` (`n` = seeds run, here 1: ci95 is null, see
  `experiments.outputs.strict_json`), the final per-task accuracies summarised over tasks, the
  trainable parameter count and the compression ratio (trainable / target parameters), and,
  with `eval.infer_task`, the accuracy when the task is inferred by lowest predictive entropy.

Randomness: one root `jax.random.key(config.seed)` split into `init`, `train`, `fisher`;
the batch of step `s` of task `t` is drawn with `fold_in(fold_in(train_key, t), s)`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from matplotlib.figure import Figure

import hypernet
from hypernet import continual as cl
from experiments import checks, events, loop, outputs, progress, rundir
from experiments.programs import FAST_COMPILE
from experiments.configs import continual as configs
from experiments.continual_data import Benchmark, load_benchmark, num_classes

HNET_KINDS = ('full', 'chunked')
LR_SCHEDULES = ('constant', 'cosine')
TARGET_INITS = ('lecun', 'torch')


# ------------------------------------------------------------------ config
def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the key, the expected and the received value."""
  checks.check_numbers(config)  # every number finite
  if config.benchmark not in configs.BENCHMARKS:
    checks.fail('benchmark', f'one of {configs.BENCHMARKS}', config.benchmark)
  if config.method not in configs.METHODS:
    checks.fail('method', f'one of {configs.METHODS}', config.method)
  if config.get('protocol', 'default') not in configs.PROTOCOLS:
    checks.fail('protocol', f'one of {configs.PROTOCOLS}', config.protocol)
  for key in ('data.num_tasks', 'train.steps_per_task', 'train.batch_size',
              'train.steps_per_call', 'train.log_every'):
    checks.check_int(config, key)
  for key in ('data.max_train_per_task', 'data.max_test_per_task'):
    checks.check_int(config, key, minimum=0)
  if 'pad' in config.data:
    checks.check_int(config, 'data.pad', minimum=0)
    if config.data.pad and config.benchmark.endswith('mnist1d'):
      checks.fail('data.pad', f'0 for {config.benchmark} (no image to pad)', config.data.pad)
  if not isinstance(config.optimizer.get('reset_per_task', True), bool):
    checks.fail('optimizer.reset_per_task', 'True or False', config.optimizer.reset_per_task)
  if config.target.get('init', 'lecun') not in TARGET_INITS:
    checks.fail('target.init', f'one of {TARGET_INITS}', config.target.init)
  checks.check_float(config, 'optimizer.learning_rate', positive=True)
  if config.optimizer.schedule not in LR_SCHEDULES:
    checks.fail('optimizer.schedule', f'one of {LR_SCHEDULES}', config.optimizer.schedule)
  if not config.benchmark.startswith('permuted') and config.data.num_tasks > 5:
    checks.fail('data.num_tasks', 'at most 5 for a split benchmark (5 digit pairs)',
          config.data.num_tasks)
  if config.train.steps_per_task % config.train.steps_per_call:
    checks.fail('train.steps_per_call', f'a divisor of train.steps_per_task='
          f'{config.train.steps_per_task}', config.train.steps_per_call)
  checks.check_int(config, 'keep_checkpoints')
  hidden = config.target.hidden
  if not isinstance(hidden, (tuple, list)) or not all(
      isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
    checks.fail('target.hidden', 'a tuple of positive integers', hidden)
  if config.method.startswith('hnet'):
    if config.hnet.kind not in HNET_KINDS:
      checks.fail('hnet.kind', f'one of {HNET_KINDS}', config.hnet.kind)
    checks.check_int(config, 'hnet.emb_dim')
    if config.hnet.get('activation', 'relu') not in hypernet.TRUNK_ACTIVATIONS:
      checks.fail('hnet.activation', f'one of {tuple(hypernet.TRUNK_ACTIVATIONS)}',
                  config.hnet.activation)
    if config.hnet.get('head_init', 'hyperfan_in') not in hypernet.init.HEAD_INITS:
      checks.fail('hnet.head_init', f'one of {tuple(hypernet.init.HEAD_INITS)}',
                  config.hnet.head_init)
    checks.check_float(config, 'hnet.beta')
    checks.check_float(config, 'hnet.lookahead_lr')
    if 'reg_samples' in config.hnet:
      checks.check_int(config, 'hnet.reg_samples', minimum=0)
    if config.hnet.get('reg_chunks', 0):
      checks.check_int(config, 'hnet.reg_chunks', minimum=0)
      if not config.hnet.get('reg_samples', 0):
        checks.fail('hnet.reg_chunks', '0 with hnet.reg_samples=0 (chunks are drawn for the '
                    'drawn earlier tasks)', config.hnet.reg_chunks)
    if config.hnet.kind == 'chunked':
      if 'chunk_size' not in config.hnet:
        checks.fail('hnet.kind', "'full' for method hnet (the chunk keys live in "
              "method=hnet_chunked's config)", config.hnet.kind)
      checks.check_int(config, 'hnet.chunk_size')
      checks.check_int(config, 'hnet.chunk_emb_dim')
      if not isinstance(config.hnet.get('cond_chunk_embs', False), bool):
        checks.fail('hnet.cond_chunk_embs', 'True or False', config.hnet.cond_chunk_embs)
    if not isinstance(config.hnet.get('init_with_prev_emb', False), bool):
      checks.fail('hnet.init_with_prev_emb', 'True or False', config.hnet.init_with_prev_emb)
  if config.method in ('ewc', 'online_ewc'):
    checks.check_float(config, 'ewc.strength')
    checks.check_int(config, 'ewc.fisher_samples')
    if config.ewc.fisher_samples % 100:
      checks.fail('ewc.fisher_samples', 'a multiple of 100', config.ewc.fisher_samples)
    if config.method == 'online_ewc':
      checks.check_float(config, 'ewc.gamma')
    if config.ewc.get('fisher_labels', 'sample') not in cl.ewc.FISHER_LABELS:
      checks.fail('ewc.fisher_labels', f'one of {cl.ewc.FISHER_LABELS}', config.ewc.fisher_labels)
  if config.method == 'si':
    checks.check_float(config, 'si.c')
    checks.check_float(config, 'si.xi', positive=True)
    if config.si.path_grad not in cl.si.PATH_GRADS:
      checks.fail('si.path_grad', f'one of {cl.si.PATH_GRADS}', config.si.path_grad)


# ------------------------------------------------------------------ the method
class MLP(nn.Module):
  """`x [N, D] -> logits [N, out]`, ReLU hidden layers; `initializer` one of `TARGET_INITS`."""
  hidden: tuple[int, ...]
  out: int
  initializer: str = 'lecun'

  def _dense(self, width: int, fan_in: int) -> nn.Dense:
    if self.initializer == 'torch':
      return nn.Dense(width, kernel_init=hypernet.init.torch_uniform(fan_in),
                      bias_init=hypernet.init.torch_uniform(fan_in))
    return nn.Dense(width)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for h in self.hidden:
      x = nn.relu(self._dense(h, x.shape[-1])(x))
    return self._dense(self.out, x.shape[-1])(x)


def build_method(config: ml_collections.ConfigDict, input_dim: int) -> cl.ContinualMethod:
  """The `ContinualMethod` of `config` on an MLP target with `input_dim` inputs."""
  classes, tasks = num_classes(config.benchmark), config.data.num_tasks
  hnet_method = config.method.startswith('hnet')
  heads = tasks if (config.multi_head and not hnet_method) else 1
  mlp = MLP(tuple(config.target.hidden), heads * classes, config.target.get('init', 'lecun'))
  target = hypernet.Target.from_linen(mlp, jnp.zeros((1, input_dim)), key=jax.random.key(0))
  if hnet_method:
    h = config.hnet
    if h.kind == 'full':
      module = hypernet.FullHypernet(target, h.emb_dim, hidden=tuple(h.hidden),
                                     activation=h.get('activation', 'relu'),
                                     head_init=h.get('head_init', 'hyperfan_in'))
    else:
      module = hypernet.ChunkedHypernet(target, h.emb_dim, chunk_size=h.chunk_size,
                                        chunk_emb_dim=h.chunk_emb_dim, hidden=tuple(h.hidden),
                                        activation=h.get('activation', 'relu'),
                                        head_init=h.get('head_init', 'hyperfan_in'),
                                        cond_chunk_embs=h.get('cond_chunk_embs', False))
    # Each task's embedding: `emb_dim` values, and its own chunk embeddings with
    # `cond_chunk_embs` (`ChunkedHypernet.cond_size`).
    cond_size = getattr(module, 'cond_size', h.emb_dim)
    return cl.HnetMethod(target, module, tasks, cond_size, h.beta, h.lookahead_lr,
                         reg_samples=h.get('reg_samples', 0), reg_chunks=h.get('reg_chunks', 0),
                         init_with_prev_emb=h.get('init_with_prev_emb', False))
  penalty = {'finetune': 'none', 'ewc': 'ewc', 'online_ewc': 'online_ewc',
             'si': 'si'}[config.method]
  if penalty == 'si':
    s = config.si
    return cl.TargetMethod(target, tasks, classes, bool(config.multi_head), penalty,
                           strength=s.c, xi=s.xi, path_grad=s.path_grad)
  e = config.get('ewc', ml_collections.ConfigDict())
  return cl.TargetMethod(target, tasks, classes, bool(config.multi_head), penalty,
                         strength=e.get('strength', 0.0), gamma=e.get('gamma', 1.0),
                         fisher_samples=e.get('fisher_samples', 1000),
                         fisher_labels=e.get('fisher_labels', 'sample'))


# ------------------------------------------------------------------ jitted pieces
class Programs:
  """The jitted functions of one method and batch size, compiled once per process."""

  def __init__(self, method: cl.ContinualMethod, batch_size: int, learning_rate: float,
               schedule: str, steps_per_task: int, fisher_samples: int, fast_compile: bool):
    self.method = method
    if schedule == 'cosine':  # restarts with each task's fresh optimiser state
      learning_rate = optax.cosine_decay_schedule(learning_rate, steps_per_task)
    tx = optax.adam(learning_rate)
    self.tx = tx
    opts = FAST_COMPILE if fast_compile else None

    def sample(data: dict, task_id, key):  # one batch of one task
      i = jax.random.randint(key, (batch_size,), 0, data['train_count'][task_id])
      idx = data['train_idx'][task_id, i]
      return data['x_train'][idx][:, data['perm'][task_id]], data['y_train'][idx]

    def train_chunk(params, opt_state, memory, data, task_id, task_key, start, length):
      """`length` Adam steps on task `task_id`; step `s` uses `fold_in(task_key, s)`. The
      memory is carried through the steps (`method.step_memory`: SI's path integral)."""
      def body(carry, s):
        params, opt_state, memory = carry
        step_key = jax.random.fold_in(task_key, s)
        x, y = sample(data, task_id, step_key)
        grads, metrics = jax.grad(method.loss, has_aux=True)(
            params, memory, task_id, x, y, jax.random.fold_in(step_key, 1))
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics['grad_norm'] = optax.tree.norm(grads)
        new_params = optax.apply_updates(params, updates)
        memory = method.step_memory(memory, params, new_params, grads)
        return (new_params, opt_state, memory), metrics
      (params, opt_state, memory), metrics = jax.lax.scan(body, (params, opt_state, memory),
                                                          start + jnp.arange(length))
      return params, opt_state, memory, metrics

    def end_task(params, memory, data, task_id, key):
      # The task's training examples without replacement, in random order (the first ones
      # again where fisher_samples exceeds the task's size).
      count = data['train_count'][task_id]
      slots = jnp.arange(data['train_idx'].shape[1])
      score = jnp.where(slots < count, jax.random.uniform(jax.random.fold_in(key, 0),
                                                          slots.shape), 2.0)
      order = jnp.argsort(score)  # the valid slots first
      idx = data['train_idx'][task_id, order[jnp.arange(fisher_samples) % count]]
      x = data['x_train'][idx][:, data['perm'][task_id]]
      return method.end_task(params, memory, task_id, x, jax.random.fold_in(key, 1))

    def test_inputs(data, task_id):
      idx = data['test_idx'][task_id]
      valid = jnp.arange(idx.shape[0]) < data['test_count'][task_id]
      return data['x_test'][idx][:, data['perm'][task_id]], data['y_test'][idx], valid

    def accuracy(params, data, task_id):
      """Test accuracy on task `task_id`, its identity given."""
      x, y, valid = test_inputs(data, task_id)
      correct = jnp.argmax(method.predict(params, task_id, x), -1) == y
      return jnp.sum(correct * valid) / jnp.sum(valid)

    def inferred(params, data, task_id):
      """`(accuracy, task-inference rate)` on task `task_id` with the task inferred by lowest
      predictive entropy among all tasks; correct = right global class."""
      x, y, valid = test_inputs(data, task_id)
      tasks = jnp.arange(method.num_tasks)
      logits = jax.vmap(lambda t: method.predict(params, t, x))(tasks)  # [T, M, C]
      task, chosen = cl.entropy_task_inference(logits)
      offset = data['class_offset']
      correct = offset[task] + jnp.argmax(chosen, -1) == offset[task_id] + y
      n = jnp.sum(valid)
      return jnp.sum(correct * valid) / n, jnp.sum((task == task_id) * valid) / n

    self.train_chunk = progress.Compiled(train_chunk, static_argnums=(7,),
                                         donate_argnums=(0, 1), compiler_options=opts)
    self.end_task = jax.jit(end_task, compiler_options=opts)
    self.accuracy = jax.jit(accuracy, compiler_options=opts)
    self.inferred = jax.jit(inferred, compiler_options=opts)
    self.init = jax.jit(method.init, compiler_options=opts)
    self.init_memory = jax.jit(method.init_memory, compiler_options=opts)


def programs(config: ml_collections.ConfigDict, input_dim: int) -> Programs:
  """`Programs` for `config`, cached by value: the method (a value, equal for configs that
  agree on what `build_method` reads) and the training numbers `Programs` takes, so reruns
  in one process (other seeds, data subsets, logging) reuse their compilations and a changed
  config can never reach a stale program."""
  method = build_method(config, input_dim)
  fisher = config.ewc.fisher_samples if 'ewc' in config else 100
  t, o = config.train, config.optimizer
  return _programs(method, t.batch_size, o.learning_rate, o.schedule, t.steps_per_task,
                   fisher, bool(config.fast_compile))


@functools.lru_cache(maxsize=8)
def _programs(method: cl.ContinualMethod, batch_size: int, learning_rate: float, schedule: str,
              steps_per_task: int, fisher_samples: int, fast_compile: bool) -> Programs:
  return Programs(method, batch_size, learning_rate, schedule, steps_per_task, fisher_samples,
                  fast_compile)


@functools.lru_cache(maxsize=4)
def _cached_benchmark(config_json: str) -> Benchmark:
  return load_benchmark(ml_collections.ConfigDict(json.loads(config_json)))


def benchmark_for(config: ml_collections.ConfigDict) -> Benchmark:
  """The benchmark arrays of `config`, cached per (benchmark, seed, data) in this process."""
  key = {'benchmark': config.benchmark, 'seed': config.seed, 'data': config.data.to_dict()}
  return _cached_benchmark(json.dumps(key, sort_keys=True))


# ------------------------------------------------------------------ outputs
def accuracy_table(acc: np.ndarray) -> str:
  """Markdown table of `acc [T, T]` in percent; entries of untrained tasks in italics."""
  t = acc.shape[0]
  lines = ['| task \\ after task | ' + ' | '.join(str(j) for j in range(t)) + ' |',
           '| --- |' + ' ---: |' * t]
  for i in range(t):
    cells = [(f'{100 * acc[i, j]:.2f}' if i <= j else f'*{100 * acc[i, j]:.2f}*')
             for j in range(t)]
    lines.append(f'| {i} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot_accuracy_matrix(ax, acc: np.ndarray, title: str) -> None:
  """Heatmap of `acc [T, T]` on a matplotlib axis (percent annotated, every task ticked, up
  to `MATRIX_ANNOTATED_TASKS` tasks; beyond, e.g. PermutedMNIST-100, the colours only)."""
  t = acc.shape[0]
  im = ax.imshow(100 * acc, vmin=50 if t and acc.min() >= 0.5 else 0, vmax=100, cmap='viridis')
  if t <= MATRIX_ANNOTATED_TASKS:
    for i in range(t):
      for j in range(t):
        ax.text(j, i, f'{100 * acc[i, j]:.0f}', ha='center', va='center', fontsize=7,
                color='white' if acc[i, j] < 0.8 else 'black', alpha=1.0 if i <= j else 0.5)
    ax.set(xticks=range(t), yticks=range(t))
  ax.set(xlabel='after training task j', ylabel='accuracy on task i', title=title)
  return im


MATRIX_ANNOTATED_TASKS = 20


# ------------------------------------------------------------------ the run
def _data_arrays(bench: Benchmark) -> dict[str, jax.Array]:
  return {k: jnp.asarray(v) for k, v in bench._asdict().items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Learns the tasks of `config` in sequence in `workdir` (resuming a run there).

  Returns:
    the contents of `results.json`.

  Raises:
    ValueError: an invalid config value (naming the key), or a workdir holding another run.
    FloatingPointError: a training metric is not finite (naming task, step and metric).
  """
  validate_config(config)
  rundir.check_workdir(config, workdir)  # reads only; the workdir changes after every check
  bench = benchmark_for(config)
  prog = programs(config, bench.input_dim)
  method, num_tasks = prog.method, config.data.num_tasks
  steps = config.train.steps_per_task
  init_key, train_key, fisher_key = jax.random.split(jax.random.key(config.seed), 3)
  data = _data_arrays(bench)

  params = prog.init(init_key)
  state = {'params': params, 'memory': prog.init_memory(params),
           'acc': jnp.zeros((num_tasks, num_tasks)), 'seconds': jnp.zeros(num_tasks)}
  # One Adam state through all tasks (van de Ven & Tolias) is checkpointed with the rest.
  carry_optimizer = not config.optimizer.get('reset_per_task', True)
  if carry_optimizer:
    state['opt_state'] = prog.tx.init(params)
  num_trainable = hypernet.count_params(params)
  ratio = hypernet.compression_ratio(params, method.target)  # every trainable value counted
  logging.info('%s on %s: %d trainable parameters (target %d, ratio %.3f); %d tasks x %d '
               'steps.', config.method, config.benchmark, num_trainable,
               method.target.num_params, ratio, num_tasks, steps)

  ckpt_dir = os.path.abspath(os.path.join(workdir, rundir.CHECKPOINT_DIR))
  metrics_path = os.path.join(workdir, rundir.METRICS_FILE)
  start_task, unreadable, records = 0, [], []
  if not config.overwrite:  # a checkpoint after task t is step t + 1
    start_task, state, unreadable = rundir.restore_newest(ckpt_dir, state)
    start_task = start_task or 0
    if start_task:
      logging.info('resumed after task %d from %s.', start_task - 1, ckpt_dir)
    # the log lines of the tasks the checkpoint backs
    records = outputs.read_records(metrics_path, lambda r: r['task'] < start_task)
  rundir.commit_workdir(config, workdir, unreadable)
  manager = rundir.open_checkpoints(ckpt_dir, keep=config.keep_checkpoints)
  writer = events.EventWriter(workdir, start_task * steps)  # global step: task * steps + step
  log = progress.MetricLog(metrics_path, writer, records, num_tasks * steps, start_task * steps)
  try:
    log.rewrite()
    acc = np.array(state['acc'])
    seconds = np.array(state['seconds'])
    params, memory = state['params'], state['memory']
    opt_state = state.get('opt_state')
    for task in range(start_task, num_tasks):
      t_task = time.perf_counter()
      task_id = jnp.asarray(task, jnp.int32)
      task_key = jax.random.fold_in(train_key, task)
      params = method.begin_task(params, task)  # resumes too: it reads finished tasks only
      if not carry_optimizer:
        opt_state = prog.tx.init(params)  # fresh optimiser state per task

      def advance(carry, step, n, task_id=task_id, task_key=task_key):
        (params, opt_state, memory, metrics), seconds = prog.train_chunk.timed(
            *carry, data, task_id, task_key, jnp.asarray(step), n)
        return ((params, opt_state, memory), metrics), seconds

      def message(r, eta, task=task):
        return (f'task {task + 1}/{num_tasks} step {r["step"]:5d}/{steps}  loss '
                f'{r["loss"]:.4f}  ce {r["ce"]:.4f}  reg {r["reg"]:.4g}  acc {r["acc"]:.3f}  '
                f'{r["steps_per_s"]:.0f} steps/s  ETA {eta}')

      params, opt_state, memory = loop.run_steps(
          advance, (params, opt_state, memory), start=0, stop=steps, log=log, config=config,
          log_every=config.train.log_every, every=(config.train.steps_per_call,),
          params=lambda carry: carry[0], what='parameters', where=f'task {task}, ',
          record_step=task * steps, fields={'task': task}, message=message)
      memory = prog.end_task(params, memory, data, task_id, jax.random.fold_in(fisher_key, task))
      column = [float(prog.accuracy(params, data, jnp.asarray(i, jnp.int32)))
                for i in range(num_tasks)]
      acc[:, task] = column
      seconds[task] = time.perf_counter() - t_task
      logging.info('after task %d: accuracy on tasks 0..%d: %s (%.1f s)', task, task,
                   ' '.join(f'{100 * a:.2f}' for a in column[:task + 1]), seconds[task])
      state = {'params': params, 'memory': memory, 'acc': jnp.asarray(acc),
               'seconds': jnp.asarray(seconds)}
      if carry_optimizer:
        state['opt_state'] = opt_state
      manager.save(task + 1, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
  finally:
    manager.close()
    writer.close()

  results = {
      'benchmark': config.benchmark, 'method': config.method, 'seed': config.seed,
      'num_tasks': num_tasks, 'steps_per_task': steps,
      'protocol': config.get('protocol', 'default'),
      'scenario': ('task-incremental (task identity given)'
                   if config.method.startswith('hnet') or config.multi_head
                   else 'domain-incremental (one shared head: the task identity is not used)'),
      'heads': ('generated per task' if config.method.startswith('hnet')
                else 'one per task' if config.multi_head else 'one shared'),
      'accuracy_matrix': acc.tolist(),
      'final_avg_accuracy': outputs.summary([cl.average_accuracy(acc)]),
      'bwt': outputs.summary([cl.backward_transfer(acc)]),
      'learning_accuracy': outputs.summary([cl.learning_accuracy(acc)]),
      'final_accuracy_over_tasks': outputs.summary(acc[:, -1]),
      'num_trainable_params': num_trainable,
      'num_target_params': method.target.num_params,
      'compression_ratio': ratio,
      'train_time_s': float(seconds.sum()),
      'resumed_after_task': start_task - 1 if start_task else None,
  }
  if config.eval.infer_task:
    pairs = [prog.inferred(params, data, jnp.asarray(i, jnp.int32)) for i in range(num_tasks)]
    results['inferred_task'] = {
        'accuracy': outputs.summary([np.mean([float(a) for a, _ in pairs])]),
        'task_inference_rate': outputs.summary([np.mean([float(r) for _, r in pairs])])}
  outputs.write_text(os.path.join(workdir, 'accuracy_matrix.md'), accuracy_table(acc))
  if config.plots:
    side = min(num_tasks, MATRIX_ANNOTATED_TASKS)  # the figure stops growing beyond
    fig = Figure(figsize=(max(5.0, 1.5 + 0.55 * side), max(4.0, 0.8 + 0.5 * side)),
                 layout='constrained')
    ax = fig.subplots()
    im = plot_accuracy_matrix(ax, acc, f'{config.method} on {config.benchmark}\nfinal average '
                              f'accuracy {100 * cl.average_accuracy(acc):.2f}%')
    fig.colorbar(im, ax=ax, label='test accuracy (%)')
    outputs.save_figure(fig, os.path.join(workdir, 'accuracy_matrix.png'))
  outputs.write_results(os.path.join(workdir, rundir.RESULTS_FILE), results)  # last: complete.
  return results


def summary(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Trains and evaluates (`train_and_evaluate`); the lines the program prints."""
  r = train_and_evaluate(config, workdir)
  return (f'{config.method} on {config.benchmark}: final average accuracy '
          f'{100 * r["final_avg_accuracy"]["mean"]:.2f}%, BWT {100 * r["bwt"]["mean"]:.2f} '
          f'points, {r["num_trainable_params"]:,} trainable parameters (compression ratio '
          f'{r["compression_ratio"]:.3f}).')


if __name__ == '__main__':
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.launch(
      config_file=os.path.join(os.path.dirname(__file__), 'configs', 'continual.py'),
      config_help='Config file, optionally with `:benchmark=<name>,method=<name>` and '
      'variants, e.g. `...continual.py:benchmark=split_mnist,method=hnet,smoke`.',
      default_workdir=lambda config: os.path.join('workdirs', 'continual',
                                                  f'{config.benchmark}_{config.method}'),
      run_experiment=summary)
