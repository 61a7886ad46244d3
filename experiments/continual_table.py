r"""Collects continual-learning `results.json` files into markdown tables (and into the README).

    python -m experiments.continual_table --runs='workdirs/continual/*'
    python -m experiments.continual_table --runs='workdirs/continual/*' --readme=README.md
    python -m experiments.continual_table --runs='workdirs/continual_vandeven/*' \
        --readme=README.md --section=vandeven

One table per benchmark, protocol and scenario; one row per setup (runs whose `config.json`
agree but for the seed and `IGNORED_KEYS`): the final average accuracy, backward transfer and
learning accuracy (mean over seeds ± 95% CI across seeds), the published figure for van de
Ven & Tolias's protocol (`experiments.configs.continual.VANDEVEN_PUBLISHED`), the accuracy
with the task inferred by lowest predictive entropy, the trainable parameter count, the
compression ratio (trainable / target parameters), the steps per task, the mean training time
and the number of seeds. With `--min_seeds=N`, setups with fewer than N seeds (single-run
ablations, runs still going) are set apart in a second table under each, so that the main
tables hold only the setups measured over N seeds. Every number comes from the runs' files.
With `--readme`, the text between the section's markers (`<!-- results:continual:start -->` /
`...:end -->`, or `<!-- results:continual_vandeven:start -->` ...) is replaced; with
`--plot=PATH`, a PNG of each task's final accuracy per setup (`plot_final_accuracy`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from experiments import outputs, results_table, rundir
from experiments.configs import continual as continual_config
from hypernet.continual import metrics as cl_metrics

# README sections: `--section=<name>` writes `<!-- results:continual_<name>:start -->` ...
SECTIONS = ('default', 'vandeven')
_SEED_SUFFIX = re.compile(r'_s(eed)?\d+$')
# Config keys that do not change what a run trains or how it is evaluated.
IGNORED_KEYS = ('seed', 'overwrite', 'plots', 'fast_compile', 'data.dir', 'data.verify',
                'train.steps_per_call', 'train.log_every', 'keep_checkpoints')
BENCHMARK_ORDER = ('permuted_mnist', 'split_mnist', 'permuted_mnist1d', 'split_mnist1d')
METHOD_ORDER = ('hnet', 'hnet_chunked', 'finetune', 'ewc', 'online_ewc', 'si')
TITLES = {'split_mnist': 'SplitMNIST (5 tasks)', 'permuted_mnist1d': 'PermutedMNIST-1D',
          'split_mnist1d': 'SplitMNIST-1D'}


def title(benchmark: str, num_tasks: int) -> str:
  """'PermutedMNIST-<num_tasks>', or the benchmark's name in `TITLES`."""
  if benchmark == 'permuted_mnist':
    return f'PermutedMNIST-{num_tasks}'
  return TITLES.get(benchmark, benchmark)


def table_key(results: dict[str, Any]) -> tuple[str, str, str, int]:
  """The table a run belongs to: benchmark, protocol, scenario and number of tasks."""
  return (results['benchmark'], results.get('protocol', 'default'), results.get('scenario', ''),
          results['num_tasks'])


def load_runs(pattern: str) -> list[tuple[str, dict[str, Any]]]:
  """`(workdir, results)` for every directory matching `pattern` with a continual `results.json`."""
  runs = [(w, r) for w, r in results_table.read_results(pattern) if 'accuracy_matrix' in r]
  rank = lambda v, order: order.index(v) if v in order else len(order)
  return sorted(runs, key=lambda r: (rank(r[1]['benchmark'], BENCHMARK_ORDER),
                                     r[1].get('scenario', ''),
                                     rank(r[1]['method'], METHOD_ORDER), r[0]))


def run_config(workdir: str, results: dict[str, Any]) -> dict[str, Any]:
  """The run's flattened `config.json` without `IGNORED_KEYS` (what `results.json` says
  without one)."""
  config = results_table.read_config(workdir)
  if config is None:
    config = {k: results.get(k) for k in ('benchmark', 'method', 'protocol', 'steps_per_task')}
  # runs recorded under older key names, or before a key was added, group with new ones
  config = {**rundir.ABSENT_MEANS, **rundir.renamed(config)}
  return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def group_runs(runs: Sequence[tuple[str, dict[str, Any]]]) -> list[list[tuple[str, dict]]]:
  """Runs grouped by config (the seeds of one setup), in order of first appearance."""
  groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
  for workdir, r in runs:
    key = json.dumps(run_config(workdir, r), sort_keys=True, default=str)
    groups.setdefault(key, []).append((workdir, r))
  return list(groups.values())


def label(workdir: str, results: dict[str, Any]) -> str:
  """The method, with the workdir's name (seed suffix removed) where it names a variant: a
  name that does not end in `_<method>`."""
  name = _SEED_SUFFIX.sub('', os.path.basename(os.path.normpath(workdir)))
  method = results['method']
  return method if name.endswith(f'_{method}') or name == method else f'{method} ({name})'


def _percent(values: Sequence[float]) -> str:
  """Per-seed fractions -> '97.12' (one seed) or '97.12 ± 0.10' (mean ± 95% CI across
  seeds, percent)."""
  mean, ci = results_table.across_seeds([100 * v for v in values])
  return f'{mean:.2f}' if ci is None else f'{mean:.2f} ± {ci:.2f}'


def published(results: dict[str, Any]) -> str:
  """The published figure for this run's protocol, benchmark, scenario and method, or '—'."""
  if results.get('protocol') != 'vandeven':
    return '—'
  sizes = continual_config.VANDEVEN.get(results['benchmark'], {})
  if (results['num_tasks'], results['steps_per_task']) != (sizes.get('num_tasks'),
                                                          sizes.get('steps_per_task')):
    return '—'  # a longer sequence or shorter training than the published protocol's
  scenario = 'task' if results.get('heads') == 'one per task' else 'domain'
  value = continual_config.VANDEVEN_PUBLISHED.get((results['benchmark'], scenario), {}).get(
      results['method'])
  return '—' if value is None else f'*{value:.2f}*'


def _row(group: Sequence[tuple[str, dict[str, Any]]]) -> str:
  """One setup's markdown row: the means over its seeds."""
  workdir, r = group[0]
  results = [res for _, res in group]
  inferred = [res['inferred_task']['accuracy']['mean'] for res in results
              if res.get('inferred_task')]
  return '| ' + ' | '.join([
      label(workdir, r),
      _percent([res['final_avg_accuracy']['mean'] for res in results]),
      published(r),
      _percent([res['bwt']['mean'] for res in results]),
      # From the matrix, so that runs written before `learning_accuracy` was saved count.
      _percent([cl_metrics.learning_accuracy(res['accuracy_matrix']) for res in results]),
      _percent(inferred) if len(inferred) == len(results) else '—',
      f'{r["num_trainable_params"]:,}', f'{r["compression_ratio"]:.3f}', r.get('heads', '—'),
      f'{r["steps_per_task"]:,}',
      f'{sum(res["train_time_s"] for res in results) / len(results) / 60:.1f}',
      str(len(results))]) + ' |'


def _table(groups: Sequence[Sequence[tuple[str, dict[str, Any]]]], head: Sequence[str],
           caption: str) -> list[str]:
  """The caption, the header and one row per setup, then a blank line."""
  return ([caption + '\n', '| ' + ' | '.join(head) + ' |',
           '| --- |' + ' ---: |' * 7 + ' --- |' + ' ---: |' * 3]
          + [_row(g) for g in groups] + [''])


def tables(runs: Sequence[tuple[str, dict[str, Any]]], min_seeds: int = 1) -> str:
  """The markdown: one table per benchmark, protocol and scenario found in `runs`; one row
  per setup, the mean over its seeds. Setups with fewer than `min_seeds` seeds go to a second
  table below their own, titled as such."""
  if not isinstance(min_seeds, int) or min_seeds < 1:
    raise ValueError(f'min_seeds: expected an integer >= 1, received {min_seeds!r}.')
  if not runs:
    raise ValueError('runs: no continual-learning results.json found; expected workdirs of '
                     'finished `python -m experiments.continual` runs.')
  head = ['method', 'final avg. accuracy (%)', 'published (%)', 'BWT (points)', 'LA (%)',
          'task inferred (%)', 'trainable params', 'compression ratio', 'heads', 'steps/task',
          'train time (min)', 'seeds']
  out = []
  tables_: dict[tuple[str, str, str, int], list[list[tuple[str, dict]]]] = {}
  for group in group_runs(runs):
    tables_.setdefault(table_key(group[0][1]), []).append(group)
  vandeven = False
  for (bench, protocol, scenario, num_tasks), groups in tables_.items():
    protocol_text = ('van de Ven & Tolias (2019)' if protocol == 'vandeven'
                     else 'this project\'s default')
    vandeven |= protocol == 'vandeven'
    name = (f'**{title(bench, num_tasks)}**, {scenario or "task-incremental"}, '
            f'{num_tasks} tasks, protocol: {protocol_text}')
    full = [g for g in groups if len(g) >= min_seeds]
    few = [g for g in groups if len(g) < min_seeds]
    for rows, caption in ((full, name), (few, f'{name}: setups with fewer than {min_seeds} '
                                               'seeds (single-run ablations, runs going on)')):
      if rows:
        out.extend(_table(rows, head, caption))
  out.append('Accuracy, BWT and LA: mean over seeds ± 95% CI across seeds (Student\'s t; none '
             'for one seed). BWT: mean change of each earlier task\'s accuracy between the end of '
             'its own training and the end of the sequence (negative: forgetting). LA (learning '
             'accuracy, Riemer et al. 2019): mean accuracy of each task right after its own '
             'training, before any forgetting; final = LA + (T - 1) / T x BWT. "Task inferred": '
             'accuracy when each test input is given the task whose predictions have the lowest '
             'entropy (SplitMNIST: the class must be right among all 10 digits; a single shared '
             'head makes the choice void). Compression ratio: trainable parameters (hypernetwork '
             'and task embeddings) / target network parameters. Train time: mean per seed, on a '
             '2-core CPU shared with other jobs, indicative only.')
  if vandeven:
    out.append(f'Published: {continual_config.VANDEVEN_PUBLISHED_SOURCE}.')
  out.append('Generated by `python -m experiments.continual_table` from the runs\' '
             '`config.json` and `results.json`.')
  return '\n'.join(out) + '\n'


def plot_final_accuracy(path: str, runs: Sequence[tuple[str, dict[str, Any]]]) -> None:
  """A PNG of each task's final test accuracy (the last column of the accuracy matrix, mean
  over a setup's seeds; the band spans the seeds' lowest and highest), one panel per table,
  one line per setup: where in a long sequence each method forgets."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  panels: dict[tuple[str, str, str, int], list[list[tuple[str, dict]]]] = {}
  for group in group_runs(runs):
    panels.setdefault(table_key(group[0][1]), []).append(group)
  if not panels:
    raise ValueError('runs: no continual-learning results.json found to plot.')
  fig = Figure(figsize=(7, 3.2 * len(panels)))
  for i, ((bench, protocol, scenario, num_tasks), groups) in enumerate(panels.items()):
    ax = fig.add_subplot(len(panels), 1, i + 1)
    for group in groups:
      final = np.array([np.asarray(r['accuracy_matrix'])[:, -1] for _, r in group]) * 100
      tasks = np.arange(1, final.shape[1] + 1)
      line, = ax.plot(tasks, final.mean(0), marker='.' if final.shape[1] <= 20 else None,
                      label=f'{label(*group[0])} ({len(group)} seed{"s" * (len(group) > 1)})')
      if len(group) > 1:
        ax.fill_between(tasks, final.min(0), final.max(0), color=line.get_color(), alpha=0.15)
    ax.set_title(f'{title(bench, num_tasks)}, {scenario.split(" (")[0] or "task-incremental"}, '
                 f'protocol {protocol}', fontsize=9)
    ax.set_xlabel("task")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel('final test accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  outputs.save_figure(fig, path)


def markers(section: str) -> tuple[str, str]:
  """The README markers of `section` (one of `SECTIONS`)."""
  if section not in SECTIONS:
    raise ValueError(f'section: expected one of {SECTIONS}, received {section!r}.')
  name = 'continual' if section == 'default' else f'continual_{section}'
  return f'<!-- results:{name}:start -->', f'<!-- results:{name}:end -->'


def replace_section(text: str, section_text: str, section: str = 'default') -> str:
  """`text` with the part between `section`'s markers replaced by `section_text`."""
  return results_table.replace_section(text, section_text, *markers(section))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  section = tables(load_runs(flags.FLAGS.runs), flags.FLAGS.min_seeds)
  print(section)
  if flags.FLAGS.readme:
    results_table.update_readme(flags.FLAGS.readme, section, *markers(flags.FLAGS.section))
  if flags.FLAGS.plot:
    plot_final_accuracy(flags.FLAGS.plot, load_runs(flags.FLAGS.runs))


if __name__ == '__main__':
  flags.DEFINE_string('runs', 'workdirs/continual/*', 'Glob of workdirs holding results.json.')
  flags.DEFINE_string('readme', None, 'Markdown file whose results section is replaced.')
  flags.DEFINE_integer('min_seeds', 1, 'Setups with fewer seeds go to a second table under '
                       'their own (ablations; runs going on).')
  flags.DEFINE_string('plot', None, 'PNG of each task\'s final accuracy per setup (optional).')
  flags.DEFINE_enum('section', 'default', SECTIONS, 'The README section written: default '
                    '(the default protocol) or vandeven (van de Ven & Tolias\'s protocol).')
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)  # absl.app.run, with one-line errors
