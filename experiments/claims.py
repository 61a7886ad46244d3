r"""The project's founding claims, measured on sinusoid runs (README section and one plot).

    python -m experiments.claims \
        --runs='workdirs/sinusoid/*,workdirs/sinusoid_seeds/*,workdirs/sinusoid_paper/*' \
        --readme=README.md --plot=docs/claims_heldout_vs_meta_steps.png

The project's seed text claims that hypernetworks bring *less pre-training*, *less model
complexity* and *adaptivity*, and names *training stability* and *computational
efficiency* as their challenges. Each is measured here against MAML (the strongest
gradient-based baseline: the paper's network, data and optimiser, trained for every number
of inner steps it is evaluated with) for every hypernetwork learner
(`CLAIM_ALGOS`), over the seeds found (>= 3 asked; fewer is flagged in the tables), from
the runs' outputs only (`python -m experiments.sinusoid`, float32 runs):

* less pre-training: the held-out K-shot MSE after S steps against meta-steps
  (`heldout_mse_<K>shot_step<S>` in `metrics.jsonl`, measured at every log step on the
  same held-out tasks for every run) as one plot, and the meta-steps (and training seconds)
  each learner needs to reach MAML's final value on those tasks;
* less complexity: meta-parameters, the FLOPs (XLA cost analysis) and seconds of adapting
  one task, against the error (`results.json` groups `metrics` and `cost`);
* adaptivity: the error on out-of-distribution tasks (group `ood`), against MAML;
* training stability: the spread of the final error over seeds, and the largest rise of
  the training loss over its running minimum (`metrics.jsonl`: 500-step means `loss`,
  single meta-batches `loss_max`);
* efficiency: tasks adapted per second (1 / seconds per task) and meta-steps per second.

Before them, the error grid: every learner's held-out error at each number of support points
and adaptation steps evaluated, over seeds, and at how many of those settings it is below the
best MAML row by more than both CIs (MAML's rows: the default, trained on 1..10 steps, and
the paper's one-step training, `algo=maml,paper`, a learner of its own: 'maml (trained 1
step)').

Every value is a mean over seeds with a 95% confidence half-width (Student t, n - 1 degrees
of freedom) of the per-seed values (each a mean over held-out tasks). Timings are wall
times on the machine that ran each run, under the load recorded with them.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import app, flags
from matplotlib.figure import Figure

from experiments import checks, outputs, results_table, rundir
from experiments.configs import sinusoid as sinusoid_config

CLAIM_ALGOS = ('maml', 'amortised', 'latent', 'hypermaml', 'learned_update')
BASELINE = 'maml'
MIN_SEEDS = 3
START, END = '<!-- claims:sinusoid:start -->', '<!-- claims:sinusoid:end -->'
# Config keys that may differ between the seeds of one learner. `optimizer.skip_nonfinite`
# (`optax.apply_if_finite`) is the identity on finite updates: a seed run without it that
# met no non-finite meta-gradient took the same updates as with it, up to the floating-point
# differences of another compiled program; the stability table counts the updates each
# learner's seeds dropped.
SEED_KEYS = ('seed', 'overwrite', 'optimizer.skip_nonfinite')


def learner_name(config: Mapping[str, Any]) -> str:
  """The row a run belongs to: its algorithm, with its inner training in brackets where that
  (`inner.steps`, `inner.multi_step_loss`, `inner.first_step_weight`) is not the algorithm's
  default (`experiments/configs/sinusoid.py`), e.g. MAML in the paper's one-step setting:
  'maml (trained 1 step)'; the learned update on the plain mean over its 10 steps where the
  default weights the first step up: 'learned_update (trained 1-10 steps, first step weight
  0)'."""
  algo = config['algo']
  default = sinusoid_config.get_config(f'algo={algo}').to_dict().get('inner', {})
  inner = config.get('inner', {})

  def weight(d):  # the first step's weight in the loss (0: none, or the plain mean)
    return d.get("first_step_weight", 0.0) if d.get("multi_step_loss") else 0.0

  if (all(inner.get(k) == default.get(k) for k in ('steps', 'multi_step_loss'))
      and weight(inner) == weight(default)):
    return algo
  k = inner.get('steps')
  trained = f'1-{k}' if inner.get('multi_step_loss') and k and k > 1 else str(k)
  parts = [f'trained {trained} step{"s" * (trained != "1")}']
  if weight(inner) != weight(default):
    parts.append(f'first step weight {weight(inner):g}')
  return f'{algo} ({", ".join(parts)})'


def _order(names: Sequence[str]) -> list[str]:
  """Learner names by algorithm (`CLAIM_ALGOS` order), each algorithm's default first."""
  algo = lambda name: name.split(' ')[0]  # noqa: E731
  rank = lambda name: CLAIM_ALGOS.index(algo(name)) if algo(name) in CLAIM_ALGOS else len(  # noqa: E731
      CLAIM_ALGOS)
  return sorted(names, key=lambda n: (rank(n), algo(n), n != algo(n), n))


@dataclasses.dataclass(frozen=True)
class Unfinished:
  """A run of a claim learner without `results.json` (its training diverged, or it was stopped
  or is still running): its workdir, seed and last logged meta-step (0: none)."""
  workdir: str
  algo: str  # the learner's name (`learner_name`)
  seed: int
  last_step: int


def load_unfinished(patterns: str, algos: Sequence[str] = CLAIM_ALGOS) -> list[Unfinished]:
  """The workdirs matching `patterns` (comma-separated globs) holding a float32 run of `algos`
  (`config.json`) but no `results.json`, in path order."""
  out = []
  for pattern in (p.strip() for p in patterns.split(',')):
    for workdir in sorted(glob.glob(pattern)):
      config_path = os.path.join(workdir, rundir.CONFIG_FILE)
      if not os.path.isfile(config_path) or os.path.isfile(os.path.join(workdir, 'results.json')):
        continue
      with open(config_path) as f:
        config = json.load(f)
      if config.get('algo') not in algos or config.get('compute_dtype', 'float32') != 'float32':
        continue
      records = read_records(os.path.join(workdir, rundir.METRICS_FILE))
      out.append(Unfinished(workdir, learner_name(config), config['seed'],
                            records[-1]['step'] if records else 0))
  return out


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished run: its workdir, `config.json`, `results.json` and `metrics.jsonl`."""
  workdir: str
  config: dict[str, Any]
  results: dict[str, Any]
  records: list[dict[str, Any]]


def load_runs(patterns: str, algos: Sequence[str] = CLAIM_ALGOS) -> dict[str, list[Run]]:
  """The float32 runs of `algos` in the workdirs matching `patterns` (comma-separated globs),
  `{learner_name: [Run, ...]}` in seed order (one learner: one algorithm with one inner
  training, e.g. 'maml' and 'maml (trained 1 step)').

  Raises:
    ValueError: no run found; two runs of one learner with the same seed; or seeds of one
      learner whose configs differ in more than `SEED_KEYS` (the message names the keys).
  """
  found = {}
  for pattern in (p.strip() for p in patterns.split(',')):
    for workdir, results in results_table.read_results(pattern):
      found[os.path.abspath(workdir)] = (workdir, results)
  by_algo: dict[str, list[Run]] = collections.defaultdict(list)
  for workdir, results in sorted(found.values()):
    algo = results.get('algo')
    if algo not in algos or results.get('compute_dtype', 'float32') != 'float32':
      continue
    with open(os.path.join(workdir, rundir.CONFIG_FILE)) as f:
      config = json.load(f)
    records = read_records(os.path.join(workdir, rundir.METRICS_FILE))
    by_algo[learner_name(config)].append(Run(workdir, config, results, records))
  if not by_algo:
    raise ValueError(f'runs: no finished float32 run of {tuple(algos)} in {patterns!r}; '
                     'expected workdirs of `python -m experiments.sinusoid` with results.json.')
  for algo, runs in by_algo.items():
    runs.sort(key=lambda r: r.config['seed'])
    seeds = [r.config['seed'] for r in runs]
    if len(set(seeds)) != len(seeds):
      raise ValueError(f'runs: {algo} has two runs with the same seed ({seeds}, in '
                       f'{[r.workdir for r in runs]}); expected one run per seed.')
    first = {k: v for k, v in checks.flatten(runs[0].config).items() if k not in SEED_KEYS}
    for run in runs[1:]:
      other = {k: v for k, v in checks.flatten(run.config).items() if k not in SEED_KEYS}
      diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
      if diff:
        raise ValueError(f'runs: the {algo} runs {runs[0].workdir} and {run.workdir} differ in '
                         f'{diff[:5]}; expected seeds of one config (only {SEED_KEYS} differ).')
  return {name: by_algo[name] for name in _order(list(by_algo))}


# ------------------------------------------------------------------ statistics
def seed_summary(values: Sequence[float | None], skip_missing: bool = False) -> dict[str, Any]:
  """Mean and 95% half-width (Student t, n - 1 dof) of per-seed values.

  A value that is None or not finite (a diverged evaluation: `results.json` holds `null`)
  makes the mean None, unless `skip_missing` (then the summary is over the other values,
  e.g. the seeds that reached a threshold). `ci95` is None for fewer than two values.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top  # a dependency of jax
  given = [None if x is None or not math.isfinite(x) else float(x) for x in values]
  v = np.asarray([x for x in given if x is not None], np.float64)
  n = int(v.size)
  if n == 0 or (n < len(given) and not skip_missing):
    return {'mean': None, 'ci95': None, 'n': n, 'values': given}
  ci = float(stats.t.ppf(0.975, n - 1) * np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else None
  return {'mean': float(np.mean(v)), 'ci95': ci, 'n': n, 'values': given}


def read_records(path: str) -> list[dict[str, Any]]:
  """The records of a run's `metrics.jsonl` ([] without one)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _metric(run: Run, group: str, name: str) -> float | None:
  """A run's mean of `group/name`; where adaptation diverged on some tasks, the mean over the
  others (`results.json`'s `not_diverged`); None if absent."""
  summary = run.results.get(group, {}).get(name)
  if summary is None:
    return None
  kept = run.results.get('not_diverged', {}).get(f'{group}/{name}')
  if kept is not None:
    return kept['mean']
  return summary['mean']


def _diverged(runs: Sequence[Run], group: str, name: str) -> tuple[int, int]:
  """`(tasks whose value diverged, tasks evaluated)`, summed over the runs."""
  bad = total = 0
  for run in runs:
    summary = run.results.get(group, {}).get(name)
    if summary is None:
      continue
    total += summary['n']
    kept = run.results.get('not_diverged', {}).get(f'{group}/{name}')
    if kept is not None:
      bad += summary['n'] - kept['n']
    elif summary['mean'] is None or not math.isfinite(summary['mean']):
      bad += summary['n']  # every task (or a run from before `not_diverged`)
  return bad, total


def _with_diverged(summary: dict[str, Any], counts: tuple[int, int]) -> dict[str, Any]:
  return dict(summary, diverged_tasks=counts[0], tasks=counts[1])


def steps_to_reach(run: Run, key: str, threshold: float) -> int | None:
  """The first logged meta-step whose held-out value `key` is <= `threshold` (None: never)."""
  for r in run.records:
    if key in r and r[key] is not None and r[key] <= threshold:
      return int(r['step'])
  return None


def loss_spikes(records: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
  """`(mean_rise, batch_rise)`: the largest ratio of a logged 500-step mean training loss, and
  of the largest single meta-batch loss since the previous record (`loss_max`), to the lowest
  mean logged before it. 1.0: the mean never rose; NaN with fewer than two records."""
  mean_rise = batch_rise = float('nan')
  best = math.inf
  for r in records:
    if r.get('loss') is None:  # every update of the window dropped (optimizer.skip_nonfinite)
      continue
    if math.isfinite(best):
      mean_rise = max(r['loss'] / best, 1.0 if math.isnan(mean_rise) else mean_rise)
      if 'loss_max' in r:
        batch_rise = max(r['loss_max'] / best, 0.0 if math.isnan(batch_rise) else batch_rise)
    best = min(best, r['loss'])
  return mean_rise, batch_rise


# ------------------------------------------------------------------ the measurements
def measure(runs: Mapping[str, Sequence[Run]], shots: int = 5, steps: int = 10,
            unfinished: Sequence[Unfinished] = ()) -> dict[str, Any]:
  """Every number of the claims section (JSON-able): `{'setting', 'learners': {algo: ...}}`.

  Args:
    runs: `load_runs`'s output; must hold `BASELINE`.
    shots, steps: the K-shot error after `steps` adaptation steps that every claim compares.
    unfinished: `load_unfinished`'s output: runs without results (reported under stability,
      not averaged).

  A learner none of whose runs was evaluated at the compared setting (e.g. MAML trained and
  evaluated with one step, the paper's setting) is in the error grid only (`'grid_only'`).

  Raises:
    ValueError: no `BASELINE` runs, or a `BASELINE` run (or one of several seeds of a
      learner) without the metric compared (e.g. evaluated with other `eval.steps`), naming
      the run and the metric.
  """
  if BASELINE not in runs:
    raise ValueError(f'runs: expected {BASELINE} runs (the baseline of every claim), found '
                     f'only {sorted(runs)}.')
  mse = f'mse_{shots}shot_step{steps}'
  track = f'heldout_{mse}'
  grid_only = set()
  for algo, rs in runs.items():
    missing = [run for run in rs if mse not in run.results.get('metrics', {})]
    if len(missing) == len(rs) and algo != BASELINE:
      grid_only.add(algo)
    elif missing:
      raise ValueError(f'runs: {missing[0].workdir} has no {mse} (its eval.shots/eval.steps); '
                       f'expected it for every run of {algo}, or pass other --shots/--steps.')
  # MAML's final held-out value on the tracked tasks: the mean over its seeds of the last record.
  finals = [r.records[-1].get(track) for r in runs[BASELINE] if r.records]
  threshold = seed_summary(finals)['mean']
  shifts = sorted({n.split('_')[1] for rs in runs.values() for r in rs
                   for n in r.results.get('ood', {})})
  settings = sorted({(int(m.group(1)), int(m.group(2))) for rs in runs.values() for r in rs
                     for name in r.results.get('metrics', {})
                     if (m := results_table._METRIC.match(name)) and int(m.group(2)) > 0})
  out = {'setting': {'shots': shots, 'steps': steps, 'metric': mse, 'tracked': track,
                     'baseline': BASELINE, 'threshold': threshold, 'ood_shifts': shifts,
                     'grid': [f'mse_{k}shot_step{st}' for k, st in settings]},
         'learners': {}}
  for algo in _order(list(runs)):
    rs = runs[algo]
    grid = {}
    for name in out['setting']['grid']:
      if any(name in r.results.get('metrics', {}) for r in rs):
        grid[name] = _with_diverged(seed_summary([_metric(r, 'metrics', name) for r in rs]),
                                    _diverged(rs, 'metrics', name))
    if algo in grid_only:
      out['learners'][algo] = {
          'seeds': [r.config['seed'] for r in rs], 'workdirs': [r.workdir for r in rs],
          'meta_steps': rs[0].results['num_steps'],
          'meta_params': rs[0].results['num_meta_params'],
          'train_inner_steps': rs[0].results.get('train_inner_steps'),
          'trained': results_table._trained(rs[0].results),
          'grid': grid, 'grid_only': True, 'curve': {'step': []}}
      continue
    reach = [steps_to_reach(r, track, threshold) if threshold is not None else None for r in rs]
    reach_s = [None if s is None or not _speed(r) else s / _speed(r) for s, r in zip(reach, rs)]
    spikes = [loss_spikes(r.records) for r in rs]
    seconds = [_metric(r, 'cost', f'adapt_seconds_{shots}shot_step{steps}') for r in rs]
    out['learners'][algo] = {
        'seeds': [r.config['seed'] for r in rs],
        'workdirs': [r.workdir for r in rs],
        'meta_steps': rs[0].results['num_steps'],
        'meta_params': rs[0].results['num_meta_params'],
        'train_inner_steps': rs[0].results.get('train_inner_steps'),
        'trained': results_table._trained(rs[0].results),
        'error': _with_diverged(seed_summary([_metric(r, 'metrics', mse) for r in rs]),
                                _diverged(rs, 'metrics', mse)),
        'error_1step': _with_diverged(
            seed_summary([_metric(r, 'metrics', f'mse_{shots}shot_step1') for r in rs]),
            _diverged(rs, 'metrics', f'mse_{shots}shot_step1')),
        'final_tracked': seed_summary([r.records[-1].get(track) if r.records else None
                                       for r in rs]),
        'steps_to_baseline': {**seed_summary(reach, skip_missing=True),
                              'reached': sum(s is not None for s in reach)},
        'seconds_to_baseline': seed_summary(reach_s, skip_missing=True),
        'flops_per_task': seed_summary([_metric(r, 'cost', f'adapt_flops_{shots}shot_step{steps}')
                                        for r in rs]),
        'seconds_per_task': seed_summary(seconds),
        'tasks_per_s': seed_summary([None if s is None else 1.0 / s for s in seconds]),
        'loadavg': seed_summary([_metric(r, 'cost', 'loadavg_1min') for r in rs]),
        'meta_steps_per_s': seed_summary([_speed(r) for r in rs]),
        'error_sd': _sd([_metric(r, 'metrics', mse) for r in rs]),
        'skipped_updates': sum(r.results.get('skipped_updates', 0) for r in rs),
        'loss_mean_rise': max(s[0] for s in spikes),
        'loss_batch_rise': max(s[1] for s in spikes),
        'ood': {shift: _with_diverged(
            seed_summary([_metric(r, 'ood', f'mse_{shift}_{shots}shot_step{steps}') for r in rs]),
            _diverged(rs, 'ood', f'mse_{shift}_{shots}shot_step{steps}')) for shift in shifts},
        'unfinished': [{'seed': u.seed, 'last_step': u.last_step, 'workdir': u.workdir}
                       for u in unfinished if u.algo == algo],
        'curve': _mean_curve(rs, track),
        'grid': grid,
    }
  _compare_with_baselines(out)
  return out


def _compare_with_baselines(claims: dict[str, Any]) -> None:
  """Adds `'below_baseline'` to each learner not of `BASELINE`'s algorithm: at how many of the
  grid's settings its mean + 95% CI over seeds lies below the mean - 95% CI of the best (lowest
  mean) `BASELINE` learner evaluated there (`'maml'`, `'maml (trained 1 step)'`, ...; a CI
  counts 0 with one seed), of the settings both were evaluated at."""
  learners = claims['learners']
  bases = [n for n in learners if n.split(' ')[0] == BASELINE]
  for name, c in learners.items():
    if name in bases:
      continue
    below = compared = 0
    for metric, mine in c['grid'].items():
      refs = [learners[b]['grid'][metric] for b in bases
              if learners[b]['grid'].get(metric, {}).get('mean') is not None]
      if not refs:
        continue
      compared += 1
      if mine.get('mean') is None:  # diverged on every task of some seed
        continue
      best = min(refs, key=lambda r: r['mean'])
      below += (mine['mean'] + (mine['ci95'] or 0.0)) < (best['mean'] - (best['ci95'] or 0.0))
    c['below_baseline'] = {'below': below, 'compared': compared}


def _speed(run: Run) -> float | None:
  return results_table.training_speed(run.workdir, run.results)


def _sd(values: Sequence[float | None]) -> float | None:
  """Standard deviation over seeds (ddof 1); None with fewer than 2 or a missing value."""
  if len(values) < 2 or any(v is None or not math.isfinite(v) for v in values):
    return None
  return float(np.std(values, ddof=1))


def _mean_curve(rs: Sequence[Run], key: str) -> dict[str, list]:
  """The held-out curve over the seeds at their common log steps: `{'step', 'median', 'low',
  'high'}` (median, minimum and maximum over seeds; None where a seed's value is not finite)."""
  per_seed = [{r['step']: r.get(key) for r in run.records if r.get(key) is not None}
              for run in rs]
  common = sorted(set.intersection(*[set(s) for s in per_seed])) if per_seed else []
  out = {'step': common, 'median': [], 'low': [], 'high': []}
  for step in common:
    v = np.asarray([s[step] for s in per_seed], np.float64)
    finite = np.all(np.isfinite(v))
    for name, fn in (('median', np.median), ('low', np.min), ('high', np.max)):
      out[name].append(float(fn(v)) if finite else None)
  return out


# ------------------------------------------------------------------ outputs
def plot(claims: Mapping[str, Any], path: str) -> None:
  """Held-out error against meta-steps, one line per learner: the median over seeds, the band
  from the lowest to the highest seed. A mean over the tracked tasks in which some task
  diverged can reach 1e30; values above 100x the zero-shot level are drawn at the top edge."""
  s = claims['setting']
  fig = Figure(figsize=(7.5, 4.5), layout='constrained')
  ax = fig.subplots()
  top = 30.0  # ~10x the held-out MSE of predicting E[y | x] (about 3)
  lows = []
  for algo, c in claims['learners'].items():
    curve = c['curve']
    if not curve['step']:
      continue
    arr = lambda name: np.asarray([np.inf if v is None else v for v in curve[name]], np.float64)  # noqa: E731
    median, low, high = (np.minimum(arr(n), top) for n in ('median', 'low', 'high'))
    lows.append(np.min(low))
    line, = ax.plot(curve['step'], median, lw=2 if algo == BASELINE else 1.5,
                    label=f'{algo} (n={len(c["seeds"])})')
    ax.fill_between(curve['step'], low, high, color=line.get_color(), alpha=0.2, lw=0)
  if s['threshold'] is not None:
    ax.axhline(s['threshold'], color='k', ls=':', lw=1,
               label=f'{BASELINE} final = {s["threshold"]:.3f}')
  if lows:
    ax.set_ylim(0.7 * min(lows), top * 1.05)
  ax.set(xscale='log', yscale='log', xlabel='meta-steps',
         ylabel=f'held-out MSE, {s["shots"]}-shot, {s["steps"]} steps',
         title='Held-out error during meta-training (median over seeds; band: min to max)')
  ax.legend(fontsize='small')
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  outputs.save_figure(fig, path)


def _fmt(summary: Mapping[str, Any] | None, digits: int = 3, scale: float = 1.0,
         integer: bool = False) -> str:
  if not summary or summary.get('mean') is None:
    return 'n/a' if not summary or not summary.get('values') else 'diverged or missing'
  m = summary['mean'] * scale
  body = f'{m:,.0f}' if integer else f'{m:.{digits}f}'
  if summary.get('ci95') is not None:
    ci = summary['ci95'] * scale
    body += f' ± {ci:,.0f}' if integer else f' ± {ci:.{digits}f}'
  return body


def _err(summary: Mapping[str, Any]) -> str:
  """An error cell: mean ± CI over seeds, and how many task evaluations diverged (left out)."""
  text = _fmt(summary)
  if summary.get('diverged_tasks'):
    text += f' ({summary["diverged_tasks"]}/{summary["tasks"]} tasks diverged)'
  return text


def _sci(summary: Mapping[str, Any] | None) -> str:
  if not summary or summary.get('mean') is None:
    return 'n/a'
  return f'{summary["mean"]:.3g}'


def markdown(claims: Mapping[str, Any], plot_path: str | None = None) -> str:
  """The README section: one table per claim, each row a learner, MAML first."""
  s, every = claims['setting'], claims['learners']
  k, st, base = s['shots'], s['steps'], every[BASELINE]
  learners = {n: c for n, c in every.items() if not c.get('grid_only')}
  label = lambda algo: f'{algo}' + ('' if len(every[algo]['seeds']) >= MIN_SEEDS  # noqa: E731
                                    else f' (only {len(every[algo]["seeds"])} seed'
                                    f'{"s" * (len(every[algo]["seeds"]) != 1)})')
  out = [f'Setting: {k}-shot held-out MSE after {st} adaptation steps (`{s["metric"]}`), mean ± '
         f'95% CI over seeds (n per learner in the first table); baseline `{BASELINE}`. Where '
         'adaptation diverged on some tasks (MSE not finite or above 10,000, '
         '`experiments.sinusoid.DIVERGED_MSE`), a run\'s mean is over the other tasks and the cell '
         'counts the diverged ones over all seeds.', '']

  grid = [(int(g.split('_')[1][:-4]), int(g.split('step')[1]), g) for g in s['grid']]
  out += ['**The error over seeds.** Held-out MSE at every number of support '
          'points and adaptation steps evaluated, mean ± 95% CI over seeds; the last column '
          f'counts the settings where the learner is below the best {BASELINE} row evaluated '
          f'there by more than both CIs (its mean + CI under {BASELINE}\'s mean - CI). "—": '
          'not evaluated (a learner trained with one step is evaluated after it only).', '',
          '| learner | seeds | trained steps | '
          + ' | '.join(f'{kk}-shot, {ss} step{"s" * (ss != 1)}' for kk, ss, _ in grid)
          + f' | below {BASELINE} (CIs apart) |',
          '| --- | ---: | ---: |' + ' ---: |' * (len(grid) + 1)]
  for algo, c in every.items():
    cells = [_err(c['grid'][g]) if g in c['grid'] else '—' for _, _, g in grid]
    b = c.get('below_baseline')
    below = f'{b["below"]}/{b["compared"]}' if b else '—'
    out.append(f'| {label(algo)} | {len(c["seeds"])} | {c["trained"]} | ' + ' | '.join(cells)
               + f' | {below} |')
  out.append('')

  out += ['**Less pre-training.** Meta-steps until the held-out error (the same '
          f'{k}-shot tasks, logged every 500 meta-steps) first reaches {BASELINE}\'s final value '
          f'({s["threshold"]:.3f}' if s['threshold'] is not None else '(n/a',
          ]
  out[-1] += ('); "reached" counts the seeds that did; the seconds are meta-training time to '
              'that step at each run\'s own speed (shared CPU).')
  out += ['', '| learner | seeds | meta-steps trained | reached | meta-steps to reach | '
          'training s to reach | final error |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
  for algo, c in learners.items():
    r = c['steps_to_baseline']
    out.append(f'| {label(algo)} | {len(c["seeds"])} | {c["meta_steps"]:,} | '
               f'{r["reached"]}/{len(c["seeds"])} | {_fmt(r, integer=True)} | '
               f'{_fmt(c["seconds_to_baseline"], 0)} | {_err(c["error"])} |')
  if plot_path:
    out += ['', f'![held-out error against meta-steps]({plot_path})']

  out += ['', f'**Less complexity.** Meta-parameters, and what adapting one task costs ({k} '
          f'support points, {st} steps; XLA cost analysis of the jitted, vmapped `adapt`, '
          'prediction excluded), against the error.', '',
          '| learner | meta-params | adaptation FLOPs / task | adaptation µs / task | '
          f'error after 1 step | error after {st} steps |',
          '| --- | ---: | ---: | ---: | ---: | ---: |']
  for algo, c in learners.items():
    out.append(f'| {label(algo)} | {c["meta_params"]:,} | {_sci(c["flops_per_task"])} | '
               f'{_fmt(c["seconds_per_task"], 1, 1e6)} | {_err(c["error_1step"])} | '
               f'{_err(c["error"])} |')

  shifts = s['ood_shifts']
  names = {'amplitude': 'A in [5, 10]', 'phase': 'phase in [pi, 2 pi]', 'x': 'x in [5, 10]'}
  out += ['', f'**Adaptivity.** Error on out-of-distribution tasks (training: A in [0.1, 5], '
          f'phase in [0, pi], x in [-5, 5]); in brackets, the ratio to {BASELINE}.', '',
          '| learner | in distribution | ' + ' | '.join(names.get(x, x) for x in shifts) + ' |',
          '| --- | ---: |' + ' ---: |' * len(shifts)]
  for algo, c in learners.items():
    cells = [_err(c['error'])]
    for shift in shifts:
      cell = _err(c['ood'][shift])
      ref, got = base['ood'][shift].get('mean'), c['ood'][shift].get('mean')
      if ref and got is not None and algo != BASELINE:
        cell += f' ({got / ref:.2f}x)'
      cells.append(cell)
    out.append(f'| {label(algo)} | ' + ' | '.join(cells) + ' |')

  out += ['', '**Training stability.** Spread of the final error over seeds, the largest '
          'rise of the training loss above its running minimum over all seeds (the 500-step '
          'mean, and the single worst meta-batch; a ratio, 1.00 = never rose), and the runs '
          'without results (meta-training stopped by a non-finite loss, or not finished; seed: '
          'last logged meta-step), which the other tables leave out; "updates dropped": '
          'meta-steps whose meta-gradient was not finite, left out of training '
          '(`optimizer.skip_nonfinite`, summed over seeds).', '',
          '| learner | final error | s.d. over seeds | largest rise, 500-step mean | '
          'largest rise, one meta-batch | updates dropped | runs without results |',
          '| --- | ---: | ---: | ---: | ---: | ---: | --- |']
  for algo, c in learners.items():
    sd = 'n/a' if c['error_sd'] is None else f'{c["error_sd"]:.3f}'
    stopped = ', '.join(f'seed {u["seed"]}: {u["last_step"]:,}' for u in c['unfinished']) or 'none'
    out.append(f'| {label(algo)} | {_err(c["error"])} | {sd} | {c["loss_mean_rise"]:.2f} | '
               f'{c["loss_batch_rise"]:.2f} | {c["skipped_updates"]} | {stopped} |')

  out += ['', f'**Efficiency.** Tasks adapted per second ({k} shots, {st} steps, batches of '
          'the evaluation\'s held-out tasks, after a warm-up call) and meta-training steps per '
          'second; wall times on 2 CPU cores shared with other jobs (the 1-minute load average '
          'when adaptation was timed in the last column).', '',
          '| learner | tasks adapted / s | meta-steps / s | load average |',
          '| --- | ---: | ---: | ---: |']
  for algo, c in learners.items():
    out.append(f'| {label(algo)} | {_fmt(c["tasks_per_s"], integer=True)} | '
               f'{_fmt(c["meta_steps_per_s"], integer=True)} | {_fmt(c["loadavg"], 1)} |')
  out += ['', 'Generated by `python -m experiments.claims` from the runs\' `results.json` and '
          '`metrics.jsonl`.']
  return '\n'.join(out) + '\n'


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  f = flags.FLAGS
  claims = measure(load_runs(f.runs), f.shots, f.steps, load_unfinished(f.runs))
  rel = None
  if f.plot:
    plot(claims, f.plot)
    base = os.path.dirname(os.path.abspath(f.readme)) if f.readme else os.getcwd()
    rel = os.path.relpath(os.path.abspath(f.plot), base)
  section = markdown(claims, rel)
  print(section)
  if f.json:
    outputs.write_json(f.json, claims)
  if f.readme:
    results_table.update_readme(f.readme, section, START, END)


if __name__ == '__main__':
  flags.DEFINE_string('runs', 'workdirs/sinusoid/*,workdirs/sinusoid_seeds/*',
                      'Comma-separated globs of sinusoid workdirs (results.json, metrics.jsonl).')
  flags.DEFINE_integer('shots', 5, 'Support points of the compared error.')
  flags.DEFINE_integer('steps', 10, 'Adaptation steps of the compared error.')
  flags.DEFINE_string('readme', None, 'Markdown file whose claims section is replaced.')
  flags.DEFINE_string('plot', 'docs/claims_heldout_vs_meta_steps.png',
                      'PNG of held-out error against meta-steps ("" for none).')
  flags.DEFINE_string('json', None, 'Optional JSON file with every measured number.')
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)  # absl.app.run, with one-line errors
