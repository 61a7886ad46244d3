r"""Few-shot sinusoid regression (Finn et al. 2017, section 5.1): the main job.

    python -m experiments.sinusoid                       # DEFAULT_ALGO (a hypernetwork)
    python -m experiments.sinusoid --config=experiments/configs/sinusoid.py:algo=maml
    python -m experiments.sinusoid --config=experiments/configs/sinusoid.py:algo=maml,smoke \
        --config.num_steps=500 --workdir=/tmp/maml

Tasks `y = A sin(x - phase)` (`hypernet.tasks.Sinusoid`) are sampled on device; any
learner of `experiments.learners` is meta-trained by the shared loop (`experiments.train`)
on K-shot tasks and evaluated on held-out tasks with K = 5 and 10 support points: the
query MSE after 0, 1, 5, 10 inner steps (`config.eval.steps`), and the zero-shot
baseline `E[y | x]` (the best prediction without a support set).

Outputs in `--workdir` (default `./workdirs/sinusoid/<algo>`): `config.json`,
`checkpoints/`, `metrics.jsonl`, `learning_curve.png`, `predictions.png` (held-out tasks:
truth, support points, the prediction after each number of steps), `mse_vs_steps.png`,
and last `results.json` (metrics `mse_<K>shot_step<k>`, each `{"mean", "ci95", "n"}`).
`python -m experiments.results_table` collects `results.json` files into the README table.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import matplotlib
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure

import hypernet
from hypernet import meta
from hypernet.target import PyTree
from hypernet.tasks import Task, make_family
from hypernet.tasks.base import check_split

from experiments import checks, learners, outputs, programs, train


class TargetMLP(nn.Module):
  """The target: `x [N, 1] -> y [N, 1]`, ReLU hidden layers, linear output."""
  hidden: Sequence[int]
  out: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.out)(x)


def build_target(config: ml_collections.ConfigDict, key: jax.Array) -> hypernet.Target:
  """MLP 1 -> `config.target.hidden` -> 1 as a `hypernet.Target` (spec read with `key`)."""
  return hypernet.Target.from_linen(TargetMLP(hidden=tuple(config.target.hidden)),
                                    jnp.zeros((1, 1)), key=key, name='TargetMLP')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the key for invalid values, before anything is built."""
  checks.check_loop_config(config)
  if config.algo not in learners.ALGOS:
    raise ValueError(f'config.algo: expected one of {learners.ALGOS}, received {config.algo!r}.')
  for name in ('meta_batch_size',):
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f'config.{name}: expected a positive integer, received {value!r}.')
  check_split(config.task.num_points, config.task.num_support, name='config.task.num_support')
  for name in ('num_tasks', 'num_query', 'batch_size'):
    value = config.eval[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f'config.eval.{name}: expected a positive integer, received {value!r}.')
  checks.check_int_tuple(config, 'eval.shots', 1)
  checks.check_int_tuple(config, 'eval.steps', 0)
  for shift in config.eval.get('ood', ()):
    try:
      ood_family(config, shift)
    except ValueError as e:
      raise ValueError(f'config.eval.ood: {shift!r} does not apply to config.task.family='
                       f'{config.task.family!r} ({e})') from None
  for name in ('cost_repeats', 'track_tasks'):
    value = config.eval.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f'config.eval.{name}: expected an integer >= 0 (0: off), received '
                       f'{value!r}.')
  if config.eval.get('track_tasks', 0):
    if config.eval.track_tasks > config.eval.num_tasks:
      raise ValueError(f'config.eval.track_tasks: expected at most eval.num_tasks='
                       f'{config.eval.num_tasks}, received {config.eval.track_tasks}.')
    checks.check_int_tuple(config, 'eval.track_steps', 0)
  if not 0 <= config.eval.num_plot_tasks <= config.eval.num_tasks:
    raise ValueError(f'config.eval.num_plot_tasks: expected 0..eval.num_tasks='
                     f'{config.eval.num_tasks}, received {config.eval.num_plot_tasks!r}.')
  if 'inner' in config and 'steps' in config.inner and (
      not isinstance(config.inner.steps, int) or config.inner.steps < 0):
    raise ValueError(f'config.inner.steps: expected an integer >= 0, received '
                     f'{config.inner.steps!r}.')


# ------------------------------------------------------------------ evaluation
def eval_tasks(family, key: jax.Array, num_tasks: int, shots: Sequence[int],
               num_query: int) -> Task:
  """Held-out tasks with `max(shots)` support points `[n, K_max, 1]`, query `[n, Q, 1]`.

  The K-shot support set of a task is its first K support points (`with_shots`), so every
  K is evaluated on the same functions and query points.
  """
  k_max = max(shots)
  return family.sample_batch(key, num_tasks, k_max + num_query, k_max)


def with_shots(tasks: Task, k: int) -> Task:
  """The tasks with their support sets cut to the first `k` points (leading axes kept)."""
  return tasks.replace(x_support=tasks.x_support[..., :k, :], y_support=tasks.y_support[..., :k, :])


def _eval_data(family, num_tasks: int, shots: tuple[int, ...], num_query: int,
               key: jax.Array) -> dict[str, Any]:
  """The held-out tasks and `E[y | x]` (learner-independent: compiled once per process).

  Returns:
    `{'tasks': Task [n, ...], 'mean_query': [n, Q, 1], 'grid': [G], 'mean_grid': [G]}`, the
    mean function by Monte Carlo on a grid `[G]` of 201 points, linearly interpolated at the
    query points.
  """
  task_key, mean_key = jax.random.split(key)
  tasks = eval_tasks(family, task_key, num_tasks, shots, num_query)
  grid = jnp.linspace(*family.x_range, 201)  # [G]
  mean = family.mean_fn(grid[:, None], mean_key)[:, 0]  # [G]
  return {'tasks': tasks, 'mean_query': jnp.interp(tasks.x_query, grid, mean),
          'grid': grid, 'mean_grid': mean}


@dataclasses.dataclass(frozen=True)
class FirstShots:
  """`make_task` of `hypernet.meta.evaluate`: a held-out task cut to its first `k` support
  points (`with_shots`); equal for equal `k`, so the compiled evaluation is reused."""
  k: int

  def __call__(self, task: Task, data: Any = None) -> Task:
    del data
    return with_shots(task, self.k)


def query_mse(learner: meta.MetaLearner, shots: Sequence[int], steps: Sequence[int],
              batch_size: int, meta_params: PyTree, tasks: Task,
              fast_compile: bool = False) -> dict[str, np.ndarray]:
  """`{'mse_<K>shot_step<k>': [n]}` for every K in `shots` and k in `steps`: the query loss
  after exactly k steps from the first K support points (`hypernet.meta.evaluate`)."""
  options = programs.FAST_COMPILE if fast_compile else None
  out = {}
  for k_shot in shots:
    per_step = meta.evaluate(learner, meta_params, tasks, steps, batch_size,
                             make_task=FirstShots(k_shot), compiler_options=options)
    out.update({f'mse_{k_shot}shot_step{k}': np.asarray(per_step[k]['loss']) for k in steps})
  return out


# Out-of-distribution task families (`config.eval.ood`): the training family with one range
# moved outside the training range (Sinusoid: A in [0.1, 5], phase in [0, pi], x in [-5, 5]).
OOD_SHIFTS = {
    'amplitude': {'amplitude_range': (5.0, 10.0)},
    'phase': {'phase_range': (math.pi, 2 * math.pi)},
    'x': {'x_range': (5.0, 10.0)},  # support and query points both outside [-5, 5]
}


def ood_family(config: ml_collections.ConfigDict, shift: str):
  """The task family of `config.task.family` with the `OOD_SHIFTS[shift]` ranges."""
  if shift not in OOD_SHIFTS:
    raise ValueError(f'config.eval.ood: expected names in {tuple(OOD_SHIFTS)}, received '
                     f'{shift!r}.')
  return make_family(config.task.family, **OOD_SHIFTS[shift])


def _adapt_batch(learner, k_shot, num_steps, meta_params, tasks):
  """The adapted state of every task `[n, ...]` from its first `k_shot` support points."""
  t = with_shots(tasks, k_shot)
  return jax.vmap(learner.adapt, in_axes=(None, 0, 0, None))(meta_params, t.x_support,
                                                             t.y_support, num_steps)


def adaptation_cost(learner: meta.MetaLearner, meta_params: PyTree, tasks: Task, k_shot: int,
                    steps: Sequence[int], repeats: int) -> dict[str, np.ndarray]:
  """What adapting costs, per task, after each number of steps in `steps`.

  `n` tasks `[n, ...]` are adapted in one jitted, vmapped call (`learner.adapt`, prediction
  excluded) from `k_shot` support points. Returns `{name: [repeats]}`:
  `adapt_flops_<K>shot_step<k>` (XLA's cost analysis of the compiled call / n, the same
  value each repeat), `adapt_seconds_<K>shot_step<k>` (wall time of one call / n, one value
  per repeat, after a warm-up call) and `loadavg_1min` (the machine's load when timed).
  """
  n = jax.tree.leaves(tasks)[0].shape[0]
  out = {}
  for k in steps:
    compiled = jax.jit(functools.partial(_adapt_batch, learner, k_shot, int(k))).lower(
        meta_params, tasks).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    # No 'flops' entry: a program without arithmetic (e.g. MAML after 0 steps returns its
    # meta-parameters); no analysis at all: unknown.
    flops = float('nan') if analysis is None else float(analysis.get('flops', 0.0)) / n
    jax.block_until_ready(compiled(meta_params, tasks))  # warm-up
    seconds = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(meta_params, tasks))
      seconds.append((time.perf_counter() - t0) / n)
    out[f'adapt_flops_{k_shot}shot_step{k}'] = np.full((repeats,), flops)
    out[f'adapt_seconds_{k_shot}shot_step{k}'] = np.asarray(seconds)
  out['loadavg_1min'] = np.full((repeats,), os.getloadavg()[0])
  return out


def evaluate(learner: meta.MetaLearner, family, config: ml_collections.ConfigDict,
             meta_params: PyTree, key: jax.Array) -> dict[str, dict[str, np.ndarray]]:
  """Per-task query MSEs `[n]` on held-out tasks drawn from `key`.

  Returns:
    `{'metrics': {'mse_<K>shot_step<k>': [n]}, 'baselines': {'mse_mean_function': [n]}}`
    for K in `config.eval.shots` and k in `config.eval.steps`: the query MSE after
    adapting to K support points with k steps (`query_mse`: `hypernet.meta.evaluate`); the
    baseline
    predicts `E[y | x]` without looking at the support set. With `config.eval.ood` (names
    of `OOD_SHIFTS`), also `'ood': {'mse_<shift>_<K>shot_step<k>': [n]}` on `n` tasks of
    each shifted family; with `config.eval.cost_repeats > 0`, `'cost'`: `adaptation_cost`
    of the K = `shots[0]` adaptation after each number of steps (values per repeat). Where
    adaptation diverged on some (not all) tasks (`diverged`), `'not_diverged':
    {'<group>/<name>': the other tasks' values}` (a summary over them).
  """
  shots, steps = tuple(config.eval.shots), tuple(config.eval.steps)
  fast = bool(config.get('fast_compile', False))
  data = programs.jit(_eval_data, (0, 1, 2, 3), fast)(family, config.eval.num_tasks, shots,
                                                   config.eval.num_query, key)
  batch_size = min(config.eval.batch_size, config.eval.num_tasks)
  metrics = query_mse(learner, shots, steps, batch_size, meta_params, data['tasks'], fast)
  baseline = jnp.mean(jnp.square(data['mean_query'] - data['tasks'].y_query), axis=(1, 2))
  names = [f'mse_{k_shot}shot_step{k}' for k_shot in shots for k in steps]
  out = {'metrics': {name: metrics[name] for name in names},
         'baselines': {'mse_mean_function': np.asarray(baseline)}}
  ood = {}
  for i, shift in enumerate(config.eval.get('ood', ())):
    tasks = eval_tasks(ood_family(config, shift), jax.random.fold_in(key, i + 1),
                       config.eval.num_tasks, shots, config.eval.num_query)
    shifted = query_mse(learner, shots, steps, batch_size, meta_params, tasks, fast)
    ood.update({name.replace('mse_', f'mse_{shift}_'): shifted[name] for name in names})
  if ood:
    out['ood'] = ood
  if config.eval.get('cost_repeats', 0):
    out['cost'] = adaptation_cost(learner, meta_params, data['tasks'], shots[0], steps,
                                  config.eval.cost_repeats)
  # Where adaptation diverged on some tasks, the others alone, so that a table can say on how
  # many tasks it diverged and what it reached on the rest (n < num_tasks).
  kept = {f'{group}/{name}': v[~diverged(v)]
          for group in ('metrics', 'ood') for name, v in out.get(group, {}).items()
          if np.any(diverged(v)) and not np.all(diverged(v))}
  if kept:
    out['not_diverged'] = kept
  return out


# A task's adaptation diverged when its query MSE is not finite or above this: no task of these
# families has |y| > 10 (amplitudes up to 10 out of distribution), so predicting 0 scores at
# most 100; this is 100 times that.
DIVERGED_MSE = 1e4


def diverged(mse: np.ndarray) -> np.ndarray:
  """`[n]` bool: the tasks whose query MSE `[n]` is not finite or above `DIVERGED_MSE`."""
  mse = np.asarray(mse)
  return ~np.isfinite(mse) | (np.nan_to_num(mse, nan=np.inf) > DIVERGED_MSE)


def track(learner: meta.MetaLearner, family, config: ml_collections.ConfigDict,
          meta_params: PyTree, key: jax.Array) -> dict[str, float]:
  """Held-out MSE during training: `{'heldout_mse_<K>shot_step<k>': mean}` on the first
  `config.eval.track_tasks` of `evaluate`'s tasks (same key), k in `config.eval.track_steps`."""
  shots, steps = tuple(config.eval.shots), tuple(config.eval.track_steps)
  fast = bool(config.get('fast_compile', False))
  n = config.eval.track_tasks
  data = programs.jit(_eval_data, (0, 1, 2, 3), fast)(family, config.eval.num_tasks, shots,
                                                   config.eval.num_query, key)
  tasks = jax.tree.map(lambda a: a[:n], data['tasks'])
  mse = query_mse(learner, shots, steps, min(config.eval.batch_size, n), meta_params, tasks,
                  fast)
  return {f'heldout_{name}': float(np.mean(v)) for name, v in mse.items()}


# ------------------------------------------------------------------ plots
def _curves(learner, family, shots, steps, meta_params, tasks, grid):
  """Truth and predictions on `grid [G]` for tasks `[P, ...]`: `{'K,k': [P, G]}`."""
  def one(task):  # ONE task
    preds = {}
    for k_shot in shots:
      t = with_shots(task, k_shot)
      for k in steps:
        adapted = learner.adapt(meta_params, t.x_support, t.y_support, k)
        preds[f'{k_shot},{k}'] = learner.predict(meta_params, adapted, grid[:, None])[:, 0]
    return preds
  truth = jax.vmap(family.fn, in_axes=(0, None))(tasks.info, grid[:, None])[..., 0]  # [P, G]
  return jax.vmap(one)(tasks), truth


def plot(learner: meta.MetaLearner, family, config: ml_collections.ConfigDict, workdir: str,
         meta_params: PyTree, key: jax.Array, results: dict[str, Any]) -> None:
  """`predictions.png` (held-out tasks after each number of steps) and `mse_vs_steps.png`."""
  shots, steps = tuple(config.eval.shots), tuple(config.eval.steps)
  num = config.eval.num_plot_tasks
  if num:
    # The first `num` of `evaluate`'s held-out tasks (same key, same compiled sampler).
    fast = bool(config.get('fast_compile', False))
    data = programs.jit(_eval_data, (0, 1, 2, 3), fast)(family, config.eval.num_tasks, shots,
                                                     config.eval.num_query, key)
    tasks = jax.tree.map(lambda a: a[:num], data['tasks'])
    preds, truth = jax.device_get(programs.jit(_curves, (0, 1, 2, 3), fast)(
        learner, family, shots, steps, meta_params, tasks, data['grid']))
    c = {'grid': np.asarray(data['grid']), 'mean': np.asarray(data['mean_grid']),
         'tasks': jax.device_get(tasks), 'preds': preds, 'truth': truth}
    fig = Figure(figsize=(3.6 * num + 2.8, 3.0 * len(shots)), layout='constrained')
    axes = fig.subplots(len(shots), num, squeeze=False)
    colors = matplotlib.colormaps['viridis_r'](np.linspace(0.15, 0.9, len(steps)))
    for row, k_shot in enumerate(shots):
      for i in range(num):
        ax = axes[row, i]
        ax.plot(c['grid'], c['truth'][i], color='k', lw=2, label='truth')
        ax.plot(c['grid'], c['mean'], color='0.6', ls=':', label='E[y | x] (zero-shot)')
        for k, color in zip(steps, colors):  # darker: more steps
          ax.plot(c['grid'], c['preds'][f'{k_shot},{k}'][i], color=color, lw=1.5,
                  ls='--' if k == 0 else '-', label=f'after {k} step{"s" * (k != 1)}')
        ax.scatter(c['tasks'].x_support[i, :k_shot, 0], c['tasks'].y_support[i, :k_shot, 0],
                   color='tab:red', zorder=5, label=f'support ({k_shot} shots)')
        limit = 1.6 * max(float(np.abs(c['truth'][i]).max()), 1.0)  # clip wild curves
        ax.set_ylim(-limit, limit)
        ax.set_title(', '.join(f'{n}={float(v[i]):.2f}' for n, v in c['tasks'].info.items()),
                     fontsize='small')
        if i == 0:
          ax.set_ylabel(f'{k_shot}-shot: y')
        if row == len(shots) - 1:
          ax.set_xlabel('x')
      axes[row, -1].legend(fontsize='x-small', loc='center left', bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f'{config.algo}: held-out tasks, prediction after 0..{max(steps)} '
                 'adaptation steps')
    outputs.save_figure(fig, os.path.join(workdir, 'predictions.png'))

  fig = Figure(figsize=(5.5, 3.8), layout='constrained')
  ax = fig.subplots()
  for k_shot in shots:
    means = [results['metrics'][f'mse_{k_shot}shot_step{k}']['mean'] for k in steps]
    cis = [results['metrics'][f'mse_{k_shot}shot_step{k}']['ci95'] for k in steps]
    ax.errorbar(steps, means, yerr=cis, marker='o', capsize=3, label=f'{k_shot}-shot')
  base = results['baselines']['mse_mean_function']['mean']
  ax.axhline(base, color='0.5', ls=':', label=f'E[y | x] (zero-shot) = {base:.3f}')
  ax.set(xlabel='adaptation steps', ylabel='held-out query MSE', yscale='log',
         title=f'{config.algo}: {config.eval.num_tasks} held-out tasks, 95% CI')
  ax.legend(fontsize='small')
  outputs.save_figure(fig, os.path.join(workdir, 'mse_vs_steps.png'))


# ------------------------------------------------------------------ the run
@dataclasses.dataclass(frozen=True)
class MetaBatchSampler:
  """`sample_tasks(key)`: one meta-batch `[batch, ...]` of `family`'s tasks. A value (equal
  for equal fields), so the compiled training loop is shared by equal experiments."""
  family: Any
  batch: int
  num_points: int
  num_support: int

  def __call__(self, key: jax.Array) -> Task:
    return self.family.sample_batch(key, self.batch, self.num_points, self.num_support)


def build_experiment(config: ml_collections.ConfigDict) -> train.Experiment:
  """Validates `config`; the target, the learner, the task sampler, evaluation and plots.

  Not cached: the learner, its target and the sampler are values (equal when built from
  configs that agree on what they read), so runs of equal experiments share their compiled
  programs through caches keyed by value (`jax.jit`'s static arguments,
  `programs.make_train_chunk`), and a changed config can never reach a stale program.
  """
  validate_config(config)
  family = make_family(config.task.family)
  target = build_target(config, jax.random.key(config.seed))  # the key only reads the spec
  learner = learners.build_learner(config, target)
  num_points, num_support = config.task.num_points, config.task.num_support
  return train.Experiment(
      learner=learner,
      sample_tasks=MetaBatchSampler(family, config.meta_batch_size, num_points, num_support),
      evaluate=functools.partial(evaluate, learner, family, config),
      plot=functools.partial(plot, learner, family, config),
      # The held-out counterpart of the training loss, if evaluated.
      curve_metrics=(f'mse_{num_support}shot_step{learner.inner_steps}',),
      info={'num_target_params': target.num_params, 'task_family': config.task.family,
            'train_shots': num_support, 'train_inner_steps': learner.inner_steps,
            'multi_step_loss': learner.multi_step_loss},
      track=(functools.partial(track, learner, family, config)
             if config.eval.get('track_tasks', 0) else None))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates `config` in `workdir` (resuming a run there); returns the results."""
  return train.train_and_evaluate(config, workdir, build_experiment(config))


def summary(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Trains and evaluates (`train_and_evaluate`); the lines the program prints."""
  results = train_and_evaluate(config, workdir)
  lines = [f'  {name}: {v["mean"]:.4f} ± {v["ci95"]:.4f} (n={v["n"]})'
           for name, v in results['metrics'].items()]
  return (f'{config.algo}: {results["num_steps"]} meta-steps at '
          f'{results["steps_per_s"] or float("nan"):.0f} steps/s; held-out query MSE:\n'
          + '\n'.join(lines))


if __name__ == '__main__':
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.launch(
      config_file=os.path.join(os.path.dirname(__file__), 'configs', 'sinusoid.py'),
      config_help='Config file, optionally with `:algo=<name>` and variants, e.g. '
      '`...sinusoid.py:algo=maml,smoke`.',
      default_workdir=lambda config: os.path.join('workdirs', 'sinusoid', config.algo),
      run_experiment=summary)
