r"""Demo of the four-step loop on sinusoid regression (temporary main job).

    python -m experiments.demo --workdir=./workdirs/demo
    python -m experiments.demo --config=experiments/configs/demo.py:smoke --config.hypernet=film

1. Init both networks: the target (a Linen MLP 1-40-40-1, `hypernet.Target`) and
   an amortised hypernetwork: `hypernet.SetEncoder` over the K-shot support set
   -> task code `[features]` -> `hypernet.FullHypernet` (or `ModulationHypernet`
   with `kind='film'`) -> a full target parameter tree.
2. Adjust the target weights per task: one forward pass of the hypernetwork on the
   task's support set (no inner gradient steps).
3. Train: the query MSE of ONE task (`_task_loss`), vmapped over a meta-batch of
   tasks sampled on device, minimised with Adam in one jitted step.
4. Generalise: the query MSE on held-out tasks (a key never used in training),
   against zero-shot baselines: the untrained hypernetwork and the task
   distribution's mean function `E[y | x]` (the best predictor without the support set).

Outputs in `--workdir`: `config.json` (before the first step), `metrics.jsonl`
(one line per log step), `results.json`, `predictions.png`, `learning_curve.png`;
every file is written to a temporary name and moved into place (`os.replace`).

Tasks are dicts of arrays; one task has

    x_support [K, 1], y_support [K, 1], x_query [Q, 1], y_query [Q, 1],
    amplitude [], phase []

and a batch of tasks has a leading task axis `[T, ...]` on every leaf.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from matplotlib.figure import Figure
from ml_collections import config_flags

import hypernet

PyTree = Any
Task = dict[str, jax.Array]

HYPERNETS = ('full', 'film')


# ------------------------------------------------------------------ tasks
def sample_task(key: jax.Array, *, num_support: int, num_query: int,
                amplitude_range: tuple[float, float], phase_range: tuple[float, float],
                x_range: tuple[float, float]) -> Task:
  """ONE sinusoid task `y = amplitude * sin(x - phase)` with K support and Q query points.

  Returns:
    `{'x_support': [K, 1], 'y_support': [K, 1], 'x_query': [Q, 1], 'y_query': [Q, 1],
    'amplitude': [], 'phase': []}`.
  """
  amp_key, phase_key, x_key = jax.random.split(key, 3)
  amplitude = jax.random.uniform(amp_key, (), minval=amplitude_range[0], maxval=amplitude_range[1])
  phase = jax.random.uniform(phase_key, (), minval=phase_range[0], maxval=phase_range[1])
  x = jax.random.uniform(x_key, (num_support + num_query, 1),
                         minval=x_range[0], maxval=x_range[1])  # [K + Q, 1]
  y = amplitude * jnp.sin(x - phase)  # [K + Q, 1]
  return {'x_support': x[:num_support], 'y_support': y[:num_support],
          'x_query': x[num_support:], 'y_query': y[num_support:],
          'amplitude': amplitude, 'phase': phase}


def sample_tasks(key: jax.Array, num_tasks: int, **task_kwargs) -> Task:
  """`num_tasks` tasks, every leaf with a leading task axis `[T, ...]`."""
  sample = functools.partial(sample_task, **task_kwargs)
  return jax.vmap(sample)(jax.random.split(key, num_tasks))


def mean_function(x: jax.Array, *, amplitude_range: tuple[float, float],
                  phase_range: tuple[float, float]) -> jax.Array:
  """`E[y | x]` over the task distribution (uniform amplitude and phase); same shape as `x`."""
  mean_amp = 0.5 * (amplitude_range[0] + amplitude_range[1])
  lo, hi = phase_range
  if hi == lo:
    return mean_amp * jnp.sin(x - lo)
  # E_phase[sin(x - phase)] = (cos(x - hi) - cos(x - lo)) / (hi - lo).
  return mean_amp * (jnp.cos(x - hi) - jnp.cos(x - lo)) / (hi - lo)


# ------------------------------------------------------------------ models
class TargetMLP(nn.Module):
  """The target: `x [N, 1] -> y [N, out]`, ReLU hidden layers, linear output."""
  hidden: Sequence[int]
  out: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.out)(x)


class AmortisedHypernet(nn.Module):
  """ONE task's support set -> target parameters: `encoder(x, y) [features] -> hypernet`."""
  encoder: nn.Module
  hypernet: nn.Module

  def __call__(self, x_support: jax.Array, y_support: jax.Array) -> PyTree:
    """`x_support [K, 1]`, `y_support [K, 1]` -> params matching the target's `param_spec`."""
    return self.hypernet(self.encoder(x_support, y_support))


def build_models(config: ml_collections.ConfigDict,
                 key: jax.Array) -> tuple[hypernet.Target, AmortisedHypernet]:
  """The target (spec read with `key`) and the amortised hypernetwork (not yet initialised)."""
  if config.hypernet not in HYPERNETS:
    raise ValueError(f'config.hypernet: expected one of {HYPERNETS}, received {config.hypernet!r}.')
  target = hypernet.Target.from_linen(TargetMLP(hidden=tuple(config.target_hidden)),
                                      jnp.zeros((1, 1)), key=key, name='TargetMLP')
  encoder = hypernet.SetEncoder(features=config.encoder.features,
                                hidden=tuple(config.encoder.hidden),
                                rho_hidden=tuple(config.encoder.rho_hidden),
                                pooling=config.encoder.pooling)
  if config.hypernet == 'full':
    hnet = hypernet.FullHypernet(target=target, cond_dim=config.encoder.features,
                                 hidden=tuple(config.hnet_hidden))
  else:
    hnet = hypernet.ModulationHypernet(target=target, cond_dim=config.encoder.features,
                                       kind='film', hidden=tuple(config.hnet_hidden),
                                       init_scale=config.film_init_scale)
  return target, AmortisedHypernet(encoder=encoder, hypernet=hnet)


def _predict(meta_params: PyTree, x_support: jax.Array, y_support: jax.Array, x: jax.Array, *,
             model: AmortisedHypernet, target: hypernet.Target) -> jax.Array:
  """ONE task: adapt on the support set `[K, 1]`, predict at `x [N, 1]` -> `[N, 1]`."""
  target_params = model.apply({'params': meta_params}, x_support, y_support)
  return target.apply(target_params, x)


# ------------------------------------------------------------------ loss and step
def _task_loss(meta_params: PyTree, task: Task, *, model: AmortisedHypernet,
               target: hypernet.Target) -> jax.Array:
  """Query MSE of ONE task after adapting to its support set; a scalar."""
  pred = _predict(meta_params, task['x_support'], task['y_support'], task['x_query'],
                  model=model, target=target)  # [Q, 1]
  return jnp.mean(jnp.square(pred - task['y_query']))


def batch_task_losses(meta_params: PyTree, tasks: Task, *, model: AmortisedHypernet,
                      target: hypernet.Target) -> jax.Array:
  """`_task_loss` of every task in a batch: tasks `[T, ...]` -> `[T]`."""
  loss_fn = functools.partial(_task_loss, model=model, target=target)
  return jax.vmap(loss_fn, in_axes=(None, 0))(meta_params, tasks)


@flax.struct.dataclass
class TrainState:
  """Outer-loop state: `step` (int32 scalar, updates done), `meta_params`, `opt_state`."""
  step: jax.Array
  meta_params: PyTree
  opt_state: optax.OptState


def train_step(state: TrainState, key: jax.Array, *, model: AmortisedHypernet,
               target: hypernet.Target, tx: optax.GradientTransformation,
               meta_batch_size: int, task_kwargs: dict[str, Any]) -> tuple[TrainState, dict]:
  """One outer update on a meta-batch sampled from `fold_in(key, step)`.

  Returns:
    the new state and `{'loss': []}`, the mean query MSE before the update.
  """
  tasks = sample_tasks(jax.random.fold_in(key, state.step), meta_batch_size, **task_kwargs)

  def loss_fn(meta_params):
    return jnp.mean(batch_task_losses(meta_params, tasks, model=model, target=target))

  loss, grads = jax.value_and_grad(loss_fn)(state.meta_params)
  updates, opt_state = tx.update(grads, state.opt_state, state.meta_params)
  meta_params = optax.apply_updates(state.meta_params, updates)
  return TrainState(state.step + 1, meta_params, opt_state), {'loss': loss}


# ------------------------------------------------------------------ outputs
def _atomic_write(path: str, write_fn: Callable[[str], None]) -> None:
  """Calls `write_fn(tmp_path)` on a temporary file next to `path`, then moves it into place."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.',
                             prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  os.close(fd)
  try:
    write_fn(tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are for everyone to read.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _write_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, 'w') as f:
      f.write(text)
  _atomic_write(path, write)


def _summary(per_task: np.ndarray) -> dict[str, float | int]:
  """Mean and 95% confidence half-width (normal approximation) of per-task values `[n]`."""
  n = int(per_task.shape[0])
  std = float(np.std(per_task, ddof=1)) if n > 1 else float('nan')
  return {'mean': float(np.mean(per_task)), 'ci95': 1.96 * std / math.sqrt(n), 'n': n}


def _plot_predictions(path: str, x: np.ndarray, curves: dict[str, np.ndarray],
                      tasks: dict[str, np.ndarray]) -> None:
  """One panel per task. `x [N]`; each curve `[P, N]`; tasks' support `[P, K, 1]`."""
  num = curves['truth'].shape[0]
  fig = Figure(figsize=(4 * num + 2.5, 3.2), layout='constrained')
  axes = fig.subplots(1, num, squeeze=False)[0]
  styles = {'truth': dict(color='k', lw=2, label='truth'),
            'mean function': dict(color='0.6', ls=':', label='mean function (zero-shot)'),
            'untrained': dict(color='tab:orange', ls='--', label='untrained hypernet'),
            'trained': dict(color='tab:blue', lw=2, label='trained hypernet')}
  for i, ax in enumerate(axes):
    for name, curve in curves.items():
      ax.plot(x, curve[i], **styles[name])
    ax.scatter(tasks['x_support'][i, :, 0], tasks['y_support'][i, :, 0], color='tab:red',
               zorder=5, label='support')
    limit = 1.6 * max(float(np.abs(curves['truth'][i]).max()), 1.0)  # Clip wild curves.
    ax.set_ylim(-limit, limit)
    ax.set_title(f'A={tasks["amplitude"][i]:.2f}, phase={tasks["phase"][i]:.2f}')
    ax.set_xlabel('x')
  axes[0].set_ylabel('y')
  fig.legend(*axes[0].get_legend_handles_labels(), loc='outside right upper', fontsize='small')
  _atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))


def _plot_learning_curve(path: str, records: list[dict], results: dict) -> None:
  """Training loss per log step, with the held-out query MSEs as horizontal lines."""
  fig = Figure(figsize=(6, 4), layout='constrained')
  ax = fig.subplots()
  ax.plot([r['step'] for r in records], [r['loss'] for r in records], marker='.',
          label='train loss (meta-batch query MSE)')
  for name, color in (('query_mse', 'tab:blue'), ('untrained_hypernet', 'tab:orange'),
                      ('mean_function', '0.5')):
    value = results[name]['mean'] if name == 'query_mse' else results['baselines'][name]['mean']
    ax.axhline(value, color=color, ls='--', label=f'held-out: {name} = {value:.3f}')
  ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.set_ylabel('MSE')
  ax.legend(fontsize='small')
  _atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))


# ------------------------------------------------------------------ the run
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains on sampled tasks, evaluates on held-out ones, writes outputs into `workdir`.

  Returns:
    the contents of `results.json`: `{'query_mse': {'mean', 'ci95', 'n'}, 'baselines':
    {'untrained_hypernet': {...}, 'mean_function': {...}}, 'train_loss': {'first', 'last'},
    'hypernet', 'num_steps', 'num_meta_params'}`.

  Raises:
    FloatingPointError: the training loss is not finite (the message names the step).
  """
  os.makedirs(workdir, exist_ok=True)
  _write_text(os.path.join(workdir, 'config.json'), config.to_json(indent=2) + '\n')
  task_kwargs = dict(num_support=config.task.num_support,
                     amplitude_range=tuple(config.task.amplitude_range),
                     phase_range=tuple(config.task.phase_range),
                     x_range=tuple(config.task.x_range))
  target_key, init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 4)

  # 1. Init both networks.
  target, model = build_models(config, target_key)
  dummy = jnp.zeros((config.task.num_support, 1))
  meta_params = model.init(init_key, dummy, dummy)['params']
  tx = optax.adam(config.learning_rate)
  state = TrainState(jnp.zeros((), jnp.int32), meta_params, tx.init(meta_params))
  num_meta_params = hypernet.count_params(meta_params)
  logging.info('target %s: %d params; %s hypernetwork + set encoder: %d meta-params.',
               target.name, target.num_params, config.hypernet, num_meta_params)

  # 2. Adjust target weights per task: the model maps a support set to target params.
  predict = functools.partial(_predict, model=model, target=target)
  eval_losses = jax.jit(functools.partial(batch_task_losses, model=model, target=target))
  eval_tasks = sample_tasks(eval_key, config.eval.num_tasks, num_query=config.eval.num_query,
                            **task_kwargs)
  untrained_mse = np.asarray(eval_losses(state.meta_params, eval_tasks))  # [n]
  plot_tasks = jax.tree.map(lambda a: a[:config.eval.num_plot_tasks], eval_tasks)
  grid = jnp.linspace(*config.task.x_range, 200)[:, None]  # [N, 1]
  plot_fn = jax.jit(jax.vmap(predict, in_axes=(None, 0, 0, None)))
  untrained_curves = np.asarray(plot_fn(state.meta_params, plot_tasks['x_support'],
                                        plot_tasks['y_support'], grid))  # [P, N, 1]

  # 3. Train.
  step_fn = jax.jit(
      functools.partial(train_step, model=model, target=target, tx=tx,
                        meta_batch_size=config.meta_batch_size,
                        task_kwargs=dict(task_kwargs, num_query=config.task.num_query)),
      donate_argnums=(0,))
  t0 = time.perf_counter()
  step_fn = step_fn.lower(state, train_key).compile()
  logging.info('train step compiled in %.1f s.', time.perf_counter() - t0)

  records: list[dict[str, float]] = []
  pending: list[jax.Array] = []  # per-step losses on device, fetched at log steps only.
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  t_start = t_last = time.perf_counter()
  last_logged = 0
  for step in range(1, config.num_steps + 1):
    state, metrics = step_fn(state, train_key)
    pending.append(metrics['loss'])
    if step == 1 or step % config.log_every == 0 or step == config.num_steps:
      losses = np.asarray(jax.device_get(pending))  # steps last_logged+1 .. step
      pending = []
      bad = np.flatnonzero(~np.isfinite(losses))
      if bad.size:
        raise FloatingPointError(
            f'train loss is {losses[bad[0]]} (non-finite) at step {last_logged + 1 + bad[0]} '
            f'(config.learning_rate={config.learning_rate}).')
      now = time.perf_counter()
      steps_per_s = (step - last_logged) / (now - t_last)
      eta = (config.num_steps - step) / steps_per_s
      records.append({'step': step, 'loss': float(losses.mean()), 'steps_per_s': steps_per_s,
                      'elapsed_s': now - t_start})
      _write_text(metrics_path, ''.join(json.dumps(r) + '\n' for r in records))
      if step == 1:  # The first call also allocates and warms up: no rate worth showing.
        logging.info('step %6d/%d  loss %.4f', step, config.num_steps, losses.mean())
      else:
        logging.info('step %6d/%d  loss %.4f  %.0f steps/s  ETA %s', step, config.num_steps,
                     losses.mean(), steps_per_s, datetime.timedelta(seconds=round(eta)))
      t_last, last_logged = now, step

  # 4. Generalise: held-out tasks, against zero-shot baselines.
  trained_mse = np.asarray(eval_losses(state.meta_params, eval_tasks))  # [n]
  mean_fn = functools.partial(mean_function, amplitude_range=task_kwargs['amplitude_range'],
                              phase_range=task_kwargs['phase_range'])
  mean_fn_mse = np.asarray(jnp.mean(jnp.square(mean_fn(eval_tasks['x_query'])
                                               - eval_tasks['y_query']), axis=(1, 2)))  # [n]
  results = {
      'query_mse': _summary(trained_mse),
      'baselines': {'untrained_hypernet': _summary(untrained_mse),
                    'mean_function': _summary(mean_fn_mse)},
      'train_loss': {'first': records[0]['loss'], 'last': records[-1]['loss']},
      'hypernet': config.hypernet,
      'num_steps': config.num_steps,
      'num_meta_params': num_meta_params,
  }
  _write_text(os.path.join(workdir, 'results.json'), json.dumps(results, indent=2) + '\n')

  truth = plot_tasks['amplitude'][:, None] * jnp.sin(grid[None, :, 0]
                                                     - plot_tasks['phase'][:, None])  # [P, N]
  trained_curves = plot_fn(state.meta_params, plot_tasks['x_support'], plot_tasks['y_support'],
                           grid)  # [P, N, 1]
  curves = {'truth': np.asarray(truth),
            'mean function': np.broadcast_to(np.asarray(mean_fn(grid[:, 0])), truth.shape),
            'untrained': untrained_curves[..., 0],
            'trained': np.asarray(trained_curves)[..., 0]}
  _plot_predictions(os.path.join(workdir, 'predictions.png'), np.asarray(grid[:, 0]), curves,
                    jax.tree.map(np.asarray, plot_tasks))
  _plot_learning_curve(os.path.join(workdir, 'learning_curve.png'), records, results)

  r, b = results['query_mse'], results['baselines']
  logging.info('held-out query MSE over %d tasks: trained %.4f ± %.4f | untrained %.4f ± %.4f | '
               'mean function %.4f ± %.4f', r['n'], r['mean'], r['ci95'],
               b['untrained_hypernet']['mean'], b['untrained_hypernet']['ci95'],
               b['mean_function']['mean'], b['mean_function']['ci95'])
  return results


def _define_flags() -> None:
  """`--config` and `--workdir`; defined only when run as a program, so that importing this
  module (tests, notebooks, other experiments with their own `--config`) defines no flags."""
  config_flags.DEFINE_config_file(
      'config', os.path.join(os.path.dirname(__file__), 'configs', 'demo.py'),
      'Path to the config file, optionally with a variant: `...demo.py:smoke`.', lock_config=True)
  flags.DEFINE_string('workdir', './workdirs/demo', 'Directory for outputs.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  workdir = flags.FLAGS.workdir
  t0 = time.perf_counter()
  train_and_evaluate(flags.FLAGS.config, workdir)
  print(f'Done in {time.perf_counter() - t0:.1f} s. Outputs in {os.path.abspath(workdir)}: '
        'config.json, metrics.jsonl, results.json, predictions.png, learning_curve.png')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
