"""`python -m experiments.results_table`: results.json files -> markdown, README section."""

import json
import pathlib
import re

import pytest

from experiments import outputs, results_table

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def _write_run(root, name, algo, metrics, num_steps=100):
  workdir = root / name
  workdir.mkdir()
  results = {'algo': algo, 'num_steps': num_steps, 'steps_per_s': 123.4, 'num_meta_params': 4567,
             'metrics': {k: {'mean': m, 'ci95': m / 10, 'n': 1000} for k, m in metrics.items()},
             'baselines': {'mse_mean_function': {'mean': 3.0, 'ci95': 0.2, 'n': 1000}}}
  (workdir / 'results.json').write_text(json.dumps(results))
  return workdir


def test_tables_from_results(tmp_path):
  _write_run(tmp_path, 'b', 'amortised', {'mse_5shot_step0': 0.04, 'mse_10shot_step0': 0.01})
  a = _write_run(tmp_path, 'a', 'maml', {f'mse_{k}shot_step{s}': 1.0 / (s + 1)
                                         for k in (5, 10) for s in (0, 1, 5, 10)}, num_steps=70000)
  results = json.loads((a / 'results.json').read_text())
  (a / 'results.json').write_text(json.dumps(dict(results, train_inner_steps=1, train_shots=10)))
  # MAML trained on the multi-step loss: a row, but not compared with the paper's one step.
  other = tmp_path / 'other'
  other.mkdir()
  c = _write_run(other, 'c', 'maml', {'mse_5shot_step1': 0.4})
  results = json.loads((c / 'results.json').read_text())
  (c / 'results.json').write_text(json.dumps(dict(results, train_inner_steps=10,
                                                  multi_step_loss=True)))
  (tmp_path / 'unfinished').mkdir()  # no results.json: skipped
  runs = results_table.load_runs(f'{tmp_path / "*"},{other / "*"}')  # comma-separated globs
  assert [r['algo'] for _, r in runs] == ['maml', 'maml', 'amortised']
  text = results_table.tables(runs)
  assert '**5-shot' in text and '**10-shot' in text
  five = text.split('**10-shot')[0]
  assert ('| maml (a) | 10 | 1 | 1.000 ± 0.100 | 0.500 ± 0.050 | 0.167 ± 0.017 | 0.091 ± 0.009 | '
          '70,000 | 123 | 4,567 |') in five  # named by their workdirs
  assert '| maml (c) | — | 1-10 | — | 0.400 ± 0.040 |' in five
  assert '| amortised (b) | — | — | 0.040 ± 0.004 | — | — | — |' in five  # '—': not recorded
  assert r'| E[y \| x], no adaptation |  |  | 3.000 ± 0.200 |' in five  # a literal | would split the cell
  published = [line for line in five.splitlines() if 'published' in line]
  assert published and published[0].startswith('| *MAML, published')
  assert '| *0.670* | *0.380* | *0.350* |' in published[0]
  # This code's MAML against the published numbers: 0.5 / 0.67, 0.167 / 0.38, 0.091 / 0.35.
  assert '| maml (a) / published |  |  | — | 0.75x | 0.44x | 0.26x |' in five
  assert 'maml (c) / published' not in five  # trained on 1..10 steps, not the paper's one


def test_run_labels():
  label = results_table.run_label
  assert label('workdirs/sinusoid/maml', {'algo': 'maml'}) == 'maml'
  assert label('workdirs/sinusoid_paper/maml_paper/', {'algo': 'maml'}) == 'maml (paper)'
  assert label('w/maml_paper_bfloat16', {'algo': 'maml', 'compute_dtype': 'bfloat16'}) == (
      'maml (paper, bfloat16)')
  assert label('w/maml_bfloat16', {'algo': 'maml', 'compute_dtype': 'bfloat16'}) == (
      'maml (bfloat16)')
  assert label('w/full', {'algo': 'learned_update'}) == 'learned_update (full)'


def test_non_finite_means_read_diverged(tmp_path):
  _write_run(tmp_path, 'a', 'metasgd', {'mse_5shot_step1': 0.5, 'mse_5shot_step10': float('inf')})
  text = results_table.tables(results_table.load_runs(str(tmp_path / '*')))
  assert '| metasgd (a) | — | — | 0.500 ± 0.050 | diverged (inf) |' in text


def test_strict_json_diverged_means_read_diverged(tmp_path):
  """results.json is strict JSON now: a diverged mean is null with `diverged` (outputs.strict_json)."""
  workdir = tmp_path / 'a'
  workdir.mkdir()
  results = {'algo': 'metasgd', 'num_steps': 100, 'steps_per_s': 1.0, 'num_meta_params': 10,
             'metrics': {'mse_5shot_step1': outputs.summary([0.4, 0.6]),
                         'mse_5shot_step10': outputs.summary([0.4, float('nan')])},
             'baselines': {'mse_mean_function': outputs.summary([3.0])}}
  outputs.write_results(str(workdir / 'results.json'), results)
  on_disk = json.loads((workdir / 'results.json').read_text(),
                       parse_constant=lambda c: pytest.fail(f'{c} in results.json'))
  assert on_disk['metrics']['mse_5shot_step10'] == {'mean': None, 'ci95': None, 'n': 2,
                                                    'diverged': 'nan'}
  assert on_disk['baselines']['mse_mean_function']['ci95'] is None  # one value: no interval
  text = results_table.tables(results_table.load_runs(str(tmp_path / '*')))
  assert '| metasgd (a) | — | — | 0.500 ± 0.196 | diverged (nan) |' in text


def test_trained_steps_diverged_tasks_and_no_published_rows(tmp_path):
  """The trained-steps column, a cell where some tasks diverged (their count and the mean
  over the others, from the run's `not_diverged`), and a table without published rows."""
  workdir = _write_run(tmp_path, 'a', 'maml', {'mse_5shot_step1': 0.5, 'mse_5shot_step10': 0.3})
  results = json.loads((workdir / 'results.json').read_text())
  results.update(train_inner_steps=10, multi_step_loss=True)
  results['metrics']['mse_5shot_step10'] = {'mean': None, 'ci95': None, 'n': 1000,
                                            'diverged': 'inf'}
  results['not_diverged'] = {'metrics/mse_5shot_step10': {'mean': 0.25, 'ci95': 0.01, 'n': 998}}
  (workdir / 'results.json').write_text(json.dumps(results))
  _write_run(tmp_path, 'b', 'reptile', {'mse_5shot_step1': 0.9})
  results = json.loads((tmp_path / 'b' / 'results.json').read_text())
  (tmp_path / 'b' / 'results.json').write_text(json.dumps(dict(results, train_inner_steps=5)))
  text = results_table.tables(results_table.load_runs(str(tmp_path / '*')), published=False)
  assert ('| maml (a) | — | 1-10 | 0.500 ± 0.050 | diverged on 2/1000 tasks (others: 0.250 ± 0.010) |'
          in text)
  assert '| reptile (b) | — | 5 | 0.900 ± 0.090 | — |' in text
  assert 'published' not in text


def test_no_runs_is_an_error(tmp_path):
  with pytest.raises(ValueError, match='results.json'):
    results_table.tables(results_table.load_runs(str(tmp_path / '*')))


def test_replace_section():
  text = f'intro\n{results_table.START}\nold table\n{results_table.END}\noutro\n'
  new = results_table.replace_section(text, 'new table\n')
  assert new == f'intro\n{results_table.START}\nnew table\n{results_table.END}\noutro\n'
  with pytest.raises(ValueError, match='expected one'):
    results_table.replace_section('no markers', 'x')


def test_readme_has_the_markers():
  text = README.read_text()
  assert text.count(results_table.START) == 1 and text.count(results_table.END) == 1
  section = re.search(re.escape(results_table.START) + '(.*)' + re.escape(results_table.END),
                      text, re.S).group(1)
  assert 'experiments.results_table' in section  # generated, not typed
