r"""Collects Omniglot `results.json` files into the README's few-shot table.

    python -m experiments.omniglot_table --runs='workdirs/omniglot/*'
    python -m experiments.omniglot_table --runs='workdirs/omniglot/*' --readme=README.md

Columns: 5-way 1-shot, 5-way 5-shot, 20-way 1-shot test accuracy (mean ± 95% CI over test
episodes, in %). A run fills every setting it was evaluated at (`protonet` and `hyperhead`
are trained once and evaluated at all three; learners with an N-way head at their own). For
each setting the number of inner steps is the one with the best VALIDATION accuracy (model
selection never looks at the test split), and the cell says which. Each row names its config
size ('cpu': at most 45 minutes on 2 CPU cores; 'paper': the publications' training length),
its training episodes and its training time. The published rows come from `PUBLISHED`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from experiments import results_table

START, END = '<!-- results:omniglot:start -->', '<!-- results:omniglot:end -->'
SETTINGS = ((5, 1), (5, 5), (20, 1))
_METRIC = re.compile(r'^(test|val)_acc_(\d+)w(\d+)s_step(\d+)$')
ALGO_ORDER = ('hyperhead', 'amortised', 'latent', 'hypermaml', 'learned_update', 'maml', 'fomaml',
              'metasgd', 'anil', 'reptile', 'protonet')
HYPER_ALGOS = ('hyperhead', 'amortised', 'latent', 'hypermaml', 'learned_update')

# Published Omniglot accuracies (%), 28x28, the 1200/423 character split with rotations:
# MAML: Finn et al. (2017), Table 1 (with their 95% CIs); ProtoNets: Snell et al. (2017),
# Table 1 (trained 60-way; no CIs given).
PUBLISHED = (
    ('MAML (Finn et al. 2017, Table 1)',
     {(5, 1): (98.7, 0.4), (5, 5): (99.9, 0.1), (20, 1): (95.8, 0.3)}),
    ('ProtoNets (Snell et al. 2017, Table 1)',
     {(5, 1): (98.8, None), (5, 5): (99.7, None), (20, 1): (96.0, None)}),
)


def load_runs(pattern: str) -> list[tuple[str, dict[str, Any]]]:
  """The Omniglot runs matching `pattern`, in `ALGO_ORDER`."""
  return results_table.sort_by_algo(results_table.read_results(pattern), ALGO_ORDER)


def select(metrics: dict[str, dict[str, float]], ways: int, shots: int
           ) -> tuple[dict[str, float], int] | None:
  """The test summary at the step count with the best validation mean, and that count."""
  steps = sorted({int(m.group(4)) for name in metrics if (m := _METRIC.match(name))
                  and (int(m.group(2)), int(m.group(3))) == (ways, shots)})
  steps = [k for k in steps if f'test_acc_{ways}w{shots}s_step{k}' in metrics]
  if not steps:
    return None
  best = max(steps, key=lambda k: metrics.get(f'val_acc_{ways}w{shots}s_step{k}',
                                              {'mean': float('-inf')})['mean'])
  return metrics[f'test_acc_{ways}w{shots}s_step{best}'], best


def _cell(summary: dict[str, float], steps: int | None = None) -> str:
  ci = summary.get('ci95')
  text = f'{summary["mean"]:.1f}' + (f' ± {ci:.1f}' if ci is not None else '')
  return text + (f' ({steps} st.)' if steps else '')


def table(runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
  if not runs:
    raise ValueError('runs: no results.json found; expected workdirs of finished Omniglot runs.')
  head = ['method', 'config', *[f'{w}-way {k}-shot' for w, k in SETTINGS], 'trained on',
          'meta-steps', 'train time']
  out = ['**Omniglot few-shot classification**: test accuracy (%, mean ± 95% CI over test '
         'episodes; inner steps chosen on the validation split)\n',
         '| ' + ' | '.join(head) + ' |', '|' + '|'.join([' --- '] * 2 + [' ---: '] * 6) + '|']
  for workdir, r in runs:
    cells = []
    for w, k in SETTINGS:
      sel = select(r['metrics'], w, k)
      cells.append('—' if sel is None else _cell(sel[0], sel[1]))
    kind = 'hypernetwork' if r['algo'] in HYPER_ALGOS else 'baseline'
    label = f'{r["algo"]} ({kind})'
    trained = f'{r.get("train_ways", "?")}-way {r.get("shots", "?")}-shot'
    minutes = f'{r["train_time_s"] / 60:.0f} min' if r.get('train_time_s') else '—'
    if r.get('resumed_from_step'):  # the time of the last invocation only
      minutes += f' (steps {r["resumed_from_step"] + 1:,}-{r["num_steps"]:,})'
    out.append('| ' + ' | '.join([label, r.get('size', '?'), *cells, trained,
                                  f'{r["num_steps"]:,}', minutes]) + ' |')
  for label, values in PUBLISHED:
    cells = [_cell({'mean': values[s][0], 'ci95': values[s][1]}) for s in SETTINGS]
    out.append('| ' + ' | '.join([f'*{label}*', '*paper*', *[f'*{c}*' for c in cells],
                                  '—', '—', '—']) + ' |')
  out.append('')
  out.append('Rows in italics are published numbers, not runs of this code. Each other row is '
             'one run (one seed) of `python -m experiments.omniglot`; "(k st.)" is the number '
             'of inner steps at test; "train time" excludes compilation and evaluation, on 2 CPU cores '
             'shared with other jobs, and for a resumed run covers the steps named. Generated by `python -m experiments.omniglot_table` from '
             'the runs\' `results.json`.')
  return '\n'.join(out) + '\n'


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  section = table(load_runs(flags.FLAGS.runs))
  print(section)
  if flags.FLAGS.readme:
    results_table.update_readme(flags.FLAGS.readme, section, START, END)


if __name__ == '__main__':
  flags.DEFINE_string('runs', 'workdirs/omniglot/*', 'Glob of workdirs holding results.json.')
  flags.DEFINE_string('readme', None, 'Markdown file whose Omniglot section is replaced.')
  app.run(main)
