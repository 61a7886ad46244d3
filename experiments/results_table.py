r"""Collects sinusoid `results.json` files into markdown tables (and into the README).

    python -m experiments.results_table --runs='workdirs/sinusoid/*'
    python -m experiments.results_table --runs='workdirs/sinusoid/*,workdirs/sinusoid_paper/*' \
        --readme=README.md

One table per number of support points K (5 and 10): per run, the held-out query MSE
(mean ± 95% CI over tasks) after 0, 1, 5, 10 adaptation steps, the meta-steps trained,
the training speed and the meta-parameter count, plus a published MAML row for
reference. Every number of a run comes from its `results.json`; the published numbers
are in `PUBLISHED` below, with their source. With `--readme`, the text between
`<!-- results:sinusoid:start -->` and `<!-- results:sinusoid:end -->` is replaced.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from experiments import checks

START, END = '<!-- results:sinusoid:start -->', '<!-- results:sinusoid:end -->'
ALGO_ORDER = ('maml', 'fomaml', 'metasgd', 'anil', 'reptile', 'amortised', 'latent', 'hypermaml',
              'learned_update')
_METRIC = re.compile(r'^mse_(\d+)shot_step(\d+)$')

# Published sinusoid numbers, {K: {steps: (mean, ci95 or None)}}: MAML as reported by
# Finn et al. (2017), Appendix C, Table 2 (K=5 support points; MSE after 1, 5 and 10
# gradient steps at evaluation), the values this project's meta-learning issue names.
PUBLISHED = (
    {'label': 'MAML, published (Finn et al. 2017, App. C Table 2)',
     'note': 'K=5, mean MSE only',
     'algo': 'maml',
     'train_inner_steps': 1,  # compared with this code's runs of the same training only
     'mse': {5: {1: (0.67, None), 5: (0.38, None), 10: (0.35, None)}}},
)


# Two-sided 95% quantiles of Student's t, by degrees of freedom (1..30); 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(dof: int) -> float:
  """The 97.5% quantile of Student's t with `dof >= 1` degrees of freedom."""
  if dof < 1:
    raise ValueError(f'dof: expected >= 1, received {dof}.')
  return _T975[dof - 1] if dof <= len(_T975) else 1.96


def across_seeds(means: Sequence[float]) -> tuple[float, float | None]:
  """Mean of per-seed values and the half-width of its 95% t-interval (None for one seed)."""
  n = len(means)
  if n == 0:
    raise ValueError('means: expected at least one value.')
  mean = sum(means) / n
  if n == 1:
    return mean, None
  std = math.sqrt(sum((m - mean) ** 2 for m in means) / (n - 1))
  return mean, t_quantile(n - 1) * std / math.sqrt(n)


def read_results(pattern: str) -> list[tuple[str, dict[str, Any]]]:
  """`(workdir, results)` for every directory matching `pattern` (globs, comma-separated)
  with a `results.json`, in path order (shared by every results-table command)."""
  runs = []
  workdirs = {w for p in pattern.split(',') if p.strip() for w in glob.glob(p.strip())}
  for workdir in sorted(workdirs):
    path = os.path.join(workdir, 'results.json')
    if os.path.isfile(path):
      with open(path) as f:
        runs.append((workdir, json.load(f)))
  return runs


def read_config(workdir: str) -> dict[str, Any] | None:
  """The run's `config.json`, flattened to dotted keys (`checks.flatten`); None without one.
  A damaged file is a ValueError naming it."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    try:
      return checks.flatten(json.load(f))
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not valid JSON ({e}).') from e


def sort_by_algo(runs: Sequence[tuple[str, dict[str, Any]]],
                 algo_order: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
  """Runs in `algo_order` (unknown algorithms last), then by workdir."""
  order = {a: i for i, a in enumerate(algo_order)}
  return sorted(runs, key=lambda r: (order.get(r[1].get('algo'), len(order)), r[0]))


def load_runs(pattern: str) -> list[tuple[str, dict[str, Any]]]:
  """The sinusoid runs matching `pattern`, in `ALGO_ORDER`."""
  return sort_by_algo(read_results(pattern), ALGO_ORDER)


def _cell(summary: dict[str, float] | None) -> str:
  if summary is None:
    return '—'
  if summary['mean'] is None:  # strict JSON (experiments.outputs.strict_json): some task's
    return f'diverged ({summary.get("diverged", "nan")})'  # loss overflowed
  if not math.isfinite(summary['mean']):  # files written before results.json was strict JSON
    return f'diverged ({summary["mean"]})'
  if summary.get('ci95') is None:
    return f'{summary["mean"]:.3f}'
  return f'{summary["mean"]:.3f} ± {summary["ci95"]:.3f}'


def _metric_cell(r: dict[str, Any], name: str) -> str:
  """A run's metric; where adaptation diverged on some tasks (`not_diverged` in the results:
  the others' summary), on how many, and the mean over the others."""
  summary = r['metrics'].get(name)
  kept = r.get('not_diverged', {}).get(f'metrics/{name}')
  if summary is None or kept is None:
    return _cell(summary)
  return (f'diverged on {summary["n"] - kept["n"]}/{summary["n"]} tasks (others: '
          f'{_cell(kept)})')


def training_speed(workdir: str, r: dict[str, Any]) -> float | None:
  """Meta-steps per second: the run's `steps_per_s`, else (a finished run evaluated again trains
  no step) the logged steps of its `metrics.jsonl` over their training seconds."""
  if r.get('steps_per_s'):
    return r['steps_per_s']
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    return None
  steps = seconds = 0.0
  previous = 0
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      rate = record.get('steps_per_s')
      if rate and math.isfinite(rate) and rate > 0:
        steps += record['step'] - previous
        seconds += (record['step'] - previous) / rate
      previous = record['step']
  return steps / seconds if seconds > 0 else None


def _trained(r: dict[str, Any]) -> str:
  """The inner steps a run was trained with: 'k', or '1-k' with the multi-step loss."""
  k = r.get('train_inner_steps')
  if k is None:
    return '—'
  return f'1-{k}' if r.get('multi_step_loss') and k > 1 else str(k)


def run_label(workdir: str, r: dict[str, Any]) -> str:
  """The algorithm, then in brackets what the workdir's name adds to it and the compute
  dtype where not float32: `.../maml` -> 'maml', `.../maml_paper_bfloat16` -> 'maml (paper,
  bfloat16)', `.../full` (an ablation of learned_update) -> 'learned_update (full)'."""
  algo, dtype = r['algo'], r.get('compute_dtype', 'float32')
  name = os.path.basename(os.path.normpath(workdir))
  name = name[len(algo) + 1:] if name.startswith(algo + '_') else ('' if name == algo else name)
  name = name[:-len(dtype) - 1] if name.endswith('_' + dtype) else ('' if name == dtype else name)
  extra = [part for part in (name, '' if dtype == 'float32' else dtype) if part]
  return f'{algo} ({", ".join(extra)})' if extra else algo


def tables(runs: Sequence[tuple[str, dict[str, Any]]], published: bool = True) -> str:
  """The markdown: one table per K found in the runs' metrics (with `published`, the
  published rows of `PUBLISHED` and this code's ratio to them)."""
  if not runs:
    raise ValueError('runs: no results.json found; expected workdirs of finished runs.')
  by_k: dict[int, set[int]] = {}
  for _, results in runs:
    for name in results.get('metrics', {}):
      m = _METRIC.match(name)
      if m:
        by_k.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
  labels = [run_label(workdir, r) for workdir, r in runs]
  out = []
  for k, steps in sorted(by_k.items()):
    steps = sorted(steps)
    head = (['algorithm', 'trained K', 'trained steps']
            + [f'{s} step{"s" * (s != 1)}' for s in steps]
            + ['meta-steps', 'steps/s (CPU)', 'meta-params'])
    out.append(f'**{k}-shot sinusoid regression**: held-out query MSE after adaptation '
               '(mean ± 95% CI over tasks)\n')
    out.append('| ' + ' | '.join(head) + ' |')
    out.append('|' + '|'.join([' --- '] + [' ---: '] * (len(head) - 1)) + '|')
    for workdir, r in runs:
      label = run_label(workdir, r)
      if labels.count(label) > 1:
        label = f'{label} [{workdir}]'
      cells = [_metric_cell(r, f'mse_{k}shot_step{s}') for s in steps]
      speed = training_speed(workdir, r)
      speed = f'{speed:.0f}' if speed else '—'
      out.append('| ' + ' | '.join([label, str(r.get('train_shots', '—')), _trained(r), *cells,
                                    f'{r["num_steps"]:,}', speed,
                                    f'{r["num_meta_params"]:,}']) + ' |')
    baselines = {json.dumps(r.get('baselines', {}).get('mse_mean_function'), sort_keys=True)
                 for _, r in runs}
    if len(baselines) == 1 and (b := json.loads(baselines.pop())):
      out.append('| ' + ' | '.join([r'E[y \| x], no adaptation', '', '', _cell(b)]
                                   + [''] * (len(head) - 4)) + ' |')
    for pub in PUBLISHED if published else ():
      if k in pub['mse']:
        cells = [_cell(dict(zip(('mean', 'ci95'), pub['mse'][k][s]))) if s in pub['mse'][k]
                 else '—' for s in steps]
        out.append('| ' + ' | '.join([f'*{pub["label"]}*', '—', '—', *[f'*{c}*' if c != '—' else c
                                                                  for c in cells], '—', '—', '—'])
                   + ' |')
        for workdir, r in runs:  # this code's run against the published number
          if (r.get('algo') != pub['algo'] or r.get('multi_step_loss')
              or r.get('train_inner_steps') != pub['train_inner_steps']):
            continue
          ratios = []
          for s in steps:
            got = r['metrics'].get(f'mse_{k}shot_step{s}')
            ref = pub['mse'][k].get(s)
            ratios.append(f'{got["mean"] / ref[0]:.2f}x' if got and ref and got['mean'] is not None
                          and math.isfinite(got['mean']) else '—')
          out.append('| ' + ' | '.join([f'{run_label(workdir, r)} / published',
                                        '', '', *ratios, '', '', '']) + ' |')
    out.append('')
  notes = '; '.join(f'*{p["label"]}*: {p["note"]}' for p in PUBLISHED)
  out.append((f'Rows in italics are published numbers, not runs of this code ({notes}). '
              if published else '')
             + '"Trained K": the support points of the meta-training tasks. '
             '"Trained steps": the inner steps of meta-training (1-k: the mean query loss '
             'after each of 1..k steps, the multi-step loss). For learners without an inner '
             'loop in training (`amortised`), steps > 0 fine-tune the generated weights with '
             'SGD. "—": not evaluated. "Diverged on n/N tasks": on n of the N held-out tasks '
             'the MSE overflowed or exceeded 10,000 (`experiments.sinusoid.DIVERGED_MSE`; '
             'predicting 0 scores at most 100 on any task), the mean over the others follows. '
             'Generated by '
             '`python -m experiments.results_table` from the runs\' `results.json`.')
  return '\n'.join(out) + '\n'


def replace_section(text: str, section: str, start: str = START, end: str = END) -> str:
  """`text` with the part between the `start` and `end` markers replaced by `section`."""
  if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
    raise ValueError(f'readme: expected one {start} followed by one {end}.')
  head, rest = text.split(start)
  _, tail = rest.split(end)
  return f'{head}{start}\n{section}{end}{tail}'


def update_readme(path: str, section: str, start: str = START, end: str = END) -> None:
  """Replaces the text between `start` and `end` in the file `path` by `section`, atomically."""
  from experiments.outputs import write_text  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    text = f.read()
  write_text(path, replace_section(text, section, start, end))
  print(f'Updated {path}.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  section = tables(load_runs(flags.FLAGS.runs), published=flags.FLAGS.published)
  print(section)
  if flags.FLAGS.readme:
    name = flags.FLAGS.section
    update_readme(flags.FLAGS.readme, section, f'<!-- results:{name}:start -->',
                  f'<!-- results:{name}:end -->')


if __name__ == '__main__':
  flags.DEFINE_string('runs', 'workdirs/sinusoid/*', 'Glob of workdirs holding results.json.')
  flags.DEFINE_string('readme', None, 'Markdown file whose results section is replaced.')
  flags.DEFINE_string('section', 'sinusoid', 'README section: between <!-- results:<section>:'
                      'start --> and <!-- results:<section>:end -->.')
  flags.DEFINE_bool('published', True, 'Add the published rows and the ratios to them.')
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)  # absl.app.run, with one-line errors
