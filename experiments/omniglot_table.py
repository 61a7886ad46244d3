r"""Collects Omniglot `results.json` files into the README's few-shot table.

    python -m experiments.omniglot_table --runs='workdirs/omniglot/*'
    python -m experiments.omniglot_table --runs='workdirs/omniglot/*' --readme=README.md
    python -m experiments.omniglot_table --runs='workdirs/omniglot_ablation/*' --split=val \
        --readme=README.md   # the ablation table: validation accuracy, its own README section

Runs whose configs (`config.json` in the workdir) differ only in `seed` (and in keys that
do not change what is trained: paths, logging, checkpointing, `overwrite`) are one row:
the seeds of one method. Columns: 5-way 1-shot, 5-way 5-shot and 20-way 1-shot test
accuracy (%), as `mean ± 95% CI across seeds [± 95% CI over test episodes]`: the mean of
the per-seed means, the t-interval of that mean over seeds (Student's t with `seeds - 1`
degrees of freedom; none for one seed), and the per-episode interval pooled over seeds
(`sqrt(sum ci_i^2) / seeds`). A run fills every setting it was evaluated at (the metric
learners `protonet`, `hyperhead`, `support_metric` are trained once and evaluated at all
three; learners with an N-way head at their own). For each setting and seed the number of
inner steps is the one with the best VALIDATION accuracy (model selection never looks at the
test split). Each row names its protocol ('maml': the 1200/423 character split with
rotations; 'official': background alphabets for training, evaluation alphabets for test),
its config size ('cpu': at most 45 minutes on 2 CPU cores; 'paper': the publications'
training length), its training episodes, meta-steps, seeds and mean training time. Rows of
the same method that differ in other keys name the differing keys. The published rows come
from `PUBLISHED`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from experiments import results_table

START, END = '<!-- results:omniglot:start -->', '<!-- results:omniglot:end -->'
# The ablations are chosen on the validation split; `--split=val` writes this section.
ABLATION_START = '<!-- results:omniglot_ablation:start -->'
ABLATION_END = '<!-- results:omniglot_ablation:end -->'
SPLITS = ('test', 'val')
# Runs recorded under an earlier name of the same learner (same code): `support_film` was
# `SupportMetric` before its rename, when its config had no `head.refine` / `head.heads`.
ALGO_ALIASES = {'support_film': 'support_metric'}
ABSENT_MEANS = {'head.refine': 'none', 'head.heads': 4}
SETTINGS = ((5, 1), (5, 5), (20, 1))
_METRIC = re.compile(r'^(test|val)_acc_(\d+)w(\d+)s_step(\d+)$')
ALGO_ORDER = ('support_metric', 'hyperhead', 'amortised', 'latent', 'hypermaml', 'learned_update',
              'protonet', 'maml', 'fomaml', 'metasgd', 'anil', 'reptile')
HYPER_ALGOS = ('support_metric', 'hyperhead', 'amortised', 'latent', 'hypermaml', 'learned_update')
# Config keys that do not change what a run trains or how it is evaluated.
IGNORED_KEYS = ('seed', 'overwrite', 'plots', 'steps_per_call', 'log_every', 'checkpoint_every',
                'keep_checkpoints', 'fast_compile', 'shard_tasks', 'data.dir', 'data.cache_dir',
                'data.source', 'data.download', 'eval.batch_size', 'eval.conv_strategy',
                'model.conv_strategy')

# Published Omniglot accuracies (%), 28x28, the 1200/423 character split with rotations:
# MAML: Finn et al. (2017), Table 1 (with their 95% CIs); ProtoNets: Snell et al. (2017),
# Table 1 (trained 60-way; no CIs given).
PUBLISHED = (
    ('MAML (Finn et al. 2017, Table 1)',
     {(5, 1): (98.7, 0.4), (5, 5): (99.9, 0.1), (20, 1): (95.8, 0.3)}),
    ('ProtoNets (Snell et al. 2017, Table 1)',
     {(5, 1): (98.8, None), (5, 5): (99.7, None), (20, 1): (96.0, None)}),
)

def run_config(workdir: str, results: dict[str, Any]) -> dict[str, Any]:
  """The run's flattened `config.json` (or, without one, what `results.json` says)."""
  config = results_table.read_config(workdir)
  if config is None:
    config = {k: results.get(k) for k in ('algo', 'size', 'train_ways', 'shots', 'num_steps')}
  if config.get('algo') in ALGO_ALIASES:
    config['algo'] = ALGO_ALIASES[config['algo']]
    for k, v in ABSENT_MEANS.items():
      config.setdefault(k, v)
  return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def load_runs(pattern: str) -> list[tuple[str, dict[str, Any]]]:
  """The Omniglot runs matching `pattern`, in `ALGO_ORDER`, the MAML protocol's first."""
  runs = results_table.sort_by_algo(results_table.read_results(pattern), ALGO_ORDER)
  protocol = lambda run: (results_table.read_config(run[0]) or {}).get('data.protocol', 'maml')
  return sorted(runs, key=lambda run: protocol(run) != 'maml')  # stable: keeps the rest


def group_runs(runs: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
  """Runs grouped by config (seeds of one setup), in order of first appearance.

  Returns:
    `[{'config': flattened config without `IGNORED_KEYS`, 'runs': [(workdir, results)]}]`.
  """
  groups: dict[str, dict[str, Any]] = {}
  for workdir, r in runs:
    config = run_config(workdir, r)
    key = json.dumps(config, sort_keys=True, default=str)
    groups.setdefault(key, {'config': config, 'runs': []})['runs'].append((workdir, r))
  return list(groups.values())


def select(metrics: dict[str, dict[str, float]], ways: int, shots: int, split: str = 'test'
           ) -> tuple[dict[str, float], int] | None:
  """The `split` summary at the step count with the best validation mean, and that count."""
  steps = sorted({int(m.group(4)) for name in metrics if (m := _METRIC.match(name))
                  and (int(m.group(2)), int(m.group(3))) == (ways, shots)})
  steps = [k for k in steps if f'{split}_acc_{ways}w{shots}s_step{k}' in metrics]
  if not steps:
    return None
  best = max(steps, key=lambda k: metrics.get(f'val_acc_{ways}w{shots}s_step{k}',
                                              {'mean': float('-inf')})['mean'])
  return metrics[f'{split}_acc_{ways}w{shots}s_step{best}'], best


def cell_values(group_runs_: Sequence[tuple[str, dict[str, Any]]], ways: int, shots: int,
                split: str = 'test') -> dict[str, Any] | None:
  """`{'mean', 'ci_seeds', 'ci_episodes', 'seeds', 'steps'}` of one setting over a group's
  runs, or None where a run lacks the setting."""
  picked = [select(r['metrics'], ways, shots, split) for _, r in group_runs_]
  if not picked or any(p is None for p in picked):
    return None
  mean, ci_seeds = results_table.across_seeds([p[0]['mean'] for p in picked])
  cis = [p[0].get('ci95') for p in picked]
  ci_episodes = (math.sqrt(sum(c * c for c in cis)) / len(cis)
                 if all(c is not None for c in cis) else None)
  return {'mean': mean, 'ci_seeds': ci_seeds, 'ci_episodes': ci_episodes, 'seeds': len(picked),
          'steps': sorted({p[1] for p in picked})}


def _cell(v: dict[str, Any] | None) -> str:
  if v is None:
    return '—'
  text = f'{v["mean"]:.2f}'
  if v['ci_seeds'] is not None:
    text += f' ± {v["ci_seeds"]:.2f}'
  if v['ci_episodes'] is not None:
    text += f' [± {v["ci_episodes"]:.2f}]'
  if any(v['steps']):
    text += f' ({"/".join(map(str, v["steps"]))} st.)'
  return text


def _labels(groups: Sequence[dict[str, Any]]) -> list[str]:
  """Method labels; groups of the same algorithm and protocol name the keys they differ in."""
  labels = []
  for g in groups:
    c = g['config']
    algo = c.get('algo') or g['runs'][0][1]['algo']
    # The gated Conv-4 (`model.gate`) is the seed sketch's hypernetwork inside the embedding.
    kind = ('hypernetwork: gated Conv-4' if c.get('model.gate') else
            'hypernetwork' if algo in HYPER_ALGOS else 'baseline')
    label = f'{algo} ({kind})'
    same = [o['config'] for o in groups if o is not g and o['config'].get('algo') == algo
            and o['config'].get('data.protocol') == c.get('data.protocol')]
    if same:
      keys = sorted(k for k in c if any(o.get(k) != c[k] for o in same))
      if keys:
        label += ' ' + ', '.join(f'{k}={c[k]}' for k in keys)  # all: a row is its config
    labels.append(label)
  return labels


def _is_baseline(config: dict[str, Any]) -> bool:
  """Plain ProtoNets: the baseline every hypernetwork row is compared with."""
  return config.get('algo') == 'protonet' and not config.get('model.gate')


def _budget(config: dict[str, Any]) -> tuple[Any, ...]:
  """What a fair comparison holds fixed: protocol, size, training episodes and their number,
  and the number of test episodes."""
  return tuple(config.get(k) for k in ('data.protocol', 'size', 'train_ways', 'shots', 'queries',
                                       'num_steps', 'eval.num_episodes'))


def _seed(workdir: str) -> Any:
  return (results_table.read_config(workdir) or {}).get('seed')


def compare(row: Sequence[tuple[str, dict[str, Any]]], base: Sequence[tuple[str, dict[str, Any]]],
            ways: int, shots: int, split: str = 'test') -> dict[str, Any] | None:
  """One row against the baseline at one setting, or None where either lacks it.

  Returns:
    `{'diff'`: difference of the means over seeds (points), `'apart'`: the row's interval
    across seeds lies above the baseline's (both with >= 2 seeds), `'clears'`: the difference
    exceeds both intervals across seeds, `'seeds'`: (row's, baseline's), `'paired'`: (mean,
    95% t-interval or None, number) of the per-seed differences over the seeds both ran (the
    same seed draws the same test episodes), or None without a shared seed}.
  """
  a, b = cell_values(row, ways, shots, split), cell_values(base, ways, shots, split)
  if a is None or b is None:
    return None
  diff = a['mean'] - b['mean']
  both = a['ci_seeds'] is not None and b['ci_seeds'] is not None
  base_by_seed = {_seed(w): select(r['metrics'], ways, shots, split)[0]['mean'] for w, r in base}
  diffs = [select(r['metrics'], ways, shots, split)[0]['mean'] - base_by_seed[seed]
           for w, r in row if (seed := _seed(w)) is not None and seed in base_by_seed]
  paired = (*results_table.across_seeds(diffs), len(diffs)) if diffs else None
  return {'diff': diff, 'seeds': (a['seeds'], b['seeds']), 'paired': paired,
          'apart': both and a['mean'] - a['ci_seeds'] > b['mean'] + b['ci_seeds'],
          'clears': both and diff > max(a['ci_seeds'], b['ci_seeds'])}


def comparisons(runs: Sequence[tuple[str, dict[str, Any]]], split: str = 'test') -> str:
  """Every hypernetwork row against plain ProtoNets trained on the same budget (`_budget`):
  the lines under the table that say whether a row beats the baseline (issue 13's standard:
  at least 3 seeds each, the difference larger than both 95% intervals across seeds)."""
  groups = group_runs(runs)
  labels = dict(zip(map(id, groups), _labels(groups)))
  lines = []
  for g in groups:
    c = g['config']
    if _is_baseline(c) or not (c.get('model.gate') or c.get('algo') in HYPER_ALGOS):
      continue
    base = [o for o in groups if _is_baseline(o['config'])
            and _budget(o['config']) == _budget(c)]
    if not base:
      continue
    cells = []
    compared = {(w, k): compare(g['runs'], base[0]['runs'], w, k, split) for w, k in SETTINGS}
    for (w, k), v in compared.items():
      if v is None:
        cells.append('—')
        continue
      text = f'{v["diff"]:+.2f}'
      if min(v['seeds']) >= 2:
        text += ' apart' if v['apart'] else ' clears' if v['clears'] else ' overlap'
      if v['paired'] and v['paired'][2] >= 2:
        mean, ci, n = v['paired']
        text += f'; paired {mean:+.2f} ± {ci:.2f} ({n})'
      cells.append(text)
    rs, bs = len(g['runs']), len(base[0]['runs'])
    beats = all((v := compared[setting]) is not None and min(v['seeds']) >= 3 and v['clears']
                for setting in ((5, 1), (20, 1)))
    lines.append('| ' + ' | '.join([labels[id(g)], c.get('data.protocol', 'maml'),
                                    f'{rs} vs {bs}', *cells, 'yes' if beats else 'no']) + ' |')
  if not lines:
    return ''
  head = ['row', 'protocol', 'seeds (row vs ProtoNets)',
          *[f'{w}-way {k}-shot' for w, k in SETTINGS], 'beats ProtoNets']
  return '\n'.join([
      f'**Against ProtoNets** on the same budget (protocol, size, training episodes, '
      f'meta-steps): difference of the means over seeds ({split} accuracy, points)\n',
      '| ' + ' | '.join(head) + ' |',
      '|' + '|'.join([' --- '] * 3 + [' ---: '] * (len(head) - 3)) + '|',
      *lines, '',
      '"apart": the row\'s 95% interval across seeds lies wholly above ProtoNets\'; "clears": '
      'not apart, but the difference exceeds both intervals; "overlap": neither (all need 2 '
      'seeds or more on both sides). "paired": the mean ± 95% t-interval of the per-seed '
      'differences over the seeds both ran (the same seed draws the same test episodes, so '
      'the pairing removes their sampling noise). "beats ProtoNets": at least 3 seeds each '
      'and the difference larger than both intervals across seeds at 5-way 1-shot and at '
      '20-way 1-shot (issue 13\'s standard).']) + '\n'


def table(runs: Sequence[tuple[str, dict[str, Any]]], split: str = 'test') -> str:
  """The markdown table of `split` accuracies ('test': the results; 'val': the ablations)."""
  if not runs:
    raise ValueError('runs: no results.json found; expected workdirs of finished Omniglot runs.')
  if split not in SPLITS:
    raise ValueError(f'split: expected one of {SPLITS}, received {split!r}.')
  groups = group_runs(runs)
  head = ['method', 'protocol', 'config', *[f'{w}-way {k}-shot' for w, k in SETTINGS],
          'trained on', 'meta-steps', 'seeds', f'{split} episodes', 'train time (mean)']
  title = ('**Omniglot few-shot classification**: test accuracy' if split == 'test' else
           '**Omniglot ablations**: VALIDATION accuracy (the split the choices were made on)')
  out = [f'{title} (%), mean over seeds ± 95% CI across seeds [± 95% CI over {split} '
         'episodes]; inner steps chosen on the validation split\n',
         '| ' + ' | '.join(head) + ' |',
         '|' + '|'.join([' --- '] * 3 + [' ---: '] * (len(head) - 3)) + '|']
  for g, label in zip(groups, _labels(groups)):
    rs = [r for _, r in g['runs']]
    first = rs[0]
    cells = [_cell(cell_values(g['runs'], w, k, split)) for w, k in SETTINGS]
    protocol = g['config'].get('data.protocol', 'maml')
    trained = f'{first.get("train_ways", "?")}-way {first.get("shots", "?")}-shot'
    times = [r['train_time_s'] for r in rs if r.get('train_time_s')]
    minutes = f'{sum(times) / len(times) / 60:.0f} min' if times else '—'
    if any(r.get('resumed_from_step') for r in rs):
      minutes += ' (resumed runs: last part only)'
    steps = sorted({r['num_steps'] for r in rs})
    episodes = sorted({m['n'] for r in rs for name, m in r.get('metrics', {}).items()
                       if name.startswith(f'{split}_') and isinstance(m, dict) and 'n' in m})
    out.append('| ' + ' | '.join([label, protocol, first.get('size', '?'), *cells, trained,
                                  '/'.join(f'{s:,}' for s in steps), str(len(rs)),
                                  '/'.join(f'{n:,}' for n in episodes) or '—', minutes])
               + ' |')
  for label, values in PUBLISHED if split == 'test' else ():
    cells = []
    for s in SETTINGS:
      mean, ci = values[s]
      cells.append(f'*{mean:.1f}' + (f' ± {ci:.1f}*' if ci is not None else '*'))
    out.append('| ' + ' | '.join([f'*{label}*', '*maml*', '*paper*', *cells, '—', '—', '—', '—',
                                  '—']) + ' |')
  out.append('')
  out.append(('Rows in italics are published numbers, not runs of this code (their ± is over '
              'test episodes). ' if split == 'test' else '') + 'Each other row is one setup of `python -m experiments.omniglot` '
             'run with the number of seeds shown; "(k st.)" is the number of inner steps at '
             'test; "episodes" is the number per setting of each run; "train time" excludes '
             'compilation and evaluation, on 2 CPU cores shared '
             'with other jobs. Generated by `python -m experiments.omniglot_table` from the '
             'runs\' `config.json` and `results.json`' + ('' if split == 'test' else
                                                         f' (--split={split})') + '.')
  return '\n'.join(out) + '\n'


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  split = flags.FLAGS.split
  runs = load_runs(flags.FLAGS.runs)
  section = table(runs, split)
  if split == 'test' and (against := comparisons(runs, split)):
    section += '\n' + against
  print(section)
  if flags.FLAGS.readme:
    start, end = (START, END) if split == 'test' else (ABLATION_START, ABLATION_END)
    results_table.update_readme(flags.FLAGS.readme, section, start, end)


if __name__ == '__main__':
  flags.DEFINE_string('runs', 'workdirs/omniglot/*', 'Glob of workdirs holding results.json.')
  flags.DEFINE_string('readme', None, 'Markdown file whose Omniglot section is replaced.')
  flags.DEFINE_enum('split', 'test', SPLITS, "'test': the results table; 'val': the ablation "
                    'table (validation accuracy, its own README section).')
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)  # absl.app.run, with one-line errors
