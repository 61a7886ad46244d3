"""`python -m experiments.omniglot_table`: seeds grouped by config, validation-selected steps."""

import json
import math

import pytest

from experiments import omniglot_table, results_table


def s(mean, ci=0.5):
  return {'mean': mean, 'ci95': ci, 'n': 10}


def write_run(root, name, config, results):
  workdir = root / name
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps(config))
  (workdir / 'results.json').write_text(json.dumps(results))


def protonet_run(acc):
  return {'algo': 'protonet', 'size': 'cpu', 'train_ways': 20, 'shots': 1, 'num_steps': 100,
          'train_time_s': 60.0, 'metrics': {'test_acc_5w1s_step0': s(acc, 0.3),
                                            'val_acc_5w1s_step0': s(acc)}}


def config(seed, steps=100, protocol='maml', algo='protonet'):
  return {'algo': algo, 'seed': seed, 'num_steps': steps, 'data': {'protocol': protocol,
                                                                   'dir': f'/somewhere/{seed}'}}


def test_t_quantiles_and_the_interval_across_seeds():
  assert results_table.t_quantile(2) == pytest.approx(4.303)
  assert results_table.t_quantile(100) == 1.96
  mean, ci = results_table.across_seeds([97.0, 98.0, 99.0])
  assert mean == pytest.approx(98.0) and ci == pytest.approx(4.303 * 1.0 / math.sqrt(3))
  assert results_table.across_seeds([97.0]) == (97.0, None)


def test_seeds_of_one_config_are_one_row(tmp_path):
  for seed, acc in enumerate((97.0, 98.0, 99.0)):
    write_run(tmp_path, f'p{seed}', config(seed), protonet_run(acc))
  write_run(tmp_path, 'longer', config(0, steps=200), dict(protonet_run(95.0), num_steps=200))
  write_run(tmp_path, 'official', config(0, protocol='official'), protonet_run(90.0))
  text = omniglot_table.table(omniglot_table.load_runs(str(tmp_path / '*')))
  rows = [line for line in text.splitlines() if line.startswith('| protonet')]
  assert len(rows) == 3, text
  three = next(r for r in rows if '| 3 |' in r)
  # mean 98, t-interval 4.303 / sqrt(3), pooled episodes interval sqrt(3 * 0.09) / 3.
  assert f'98.00 ± {4.303 / math.sqrt(3):.2f} [± {math.sqrt(3 * 0.09) / 3:.2f}]' in three
  assert '| 3 | 10 |' in three  # seeds, then test episodes per setting of each run
  assert 'num_steps=100' in three and '| maml |' in three
  assert any('num_steps=200' in r and '95.00 [± 0.30]' in r for r in rows)
  assert '| official |' in rows[-1] and '90.00' in rows[-1]  # the MAML protocol's rows first


def test_table_selects_steps_on_validation_and_replaces_the_readme_section(tmp_path):
  run = {'algo': 'maml', 'size': 'cpu', 'train_ways': 5, 'shots': 1, 'num_steps': 100,
         'train_time_s': 120.0, 'resumed_from_step': 0,
         # the test split favours 1 step, validation 3: the table must report 3 steps
         'metrics': {'test_acc_5w1s_step1': s(90.0), 'test_acc_5w1s_step3': s(80.0),
                     'val_acc_5w1s_step1': s(70.0), 'val_acc_5w1s_step3': s(75.0)}}
  write_run(tmp_path, 'a', config(0, algo='maml'), run)
  text = omniglot_table.table(omniglot_table.load_runs(str(tmp_path / '*')))
  row = next(line for line in text.splitlines() if line.startswith('| maml'))
  assert '80.00 [± 0.50] (3 st.)' in row and '90.0' not in row
  readme = f'intro\n{omniglot_table.START}\nold\n{omniglot_table.END}\nrest\n'
  new = results_table.replace_section(readme, text, omniglot_table.START, omniglot_table.END)
  assert new.startswith('intro\n') and new.endswith('rest\n') and 'old' not in new
  with pytest.raises(ValueError, match='runs: no results.json'):
    omniglot_table.table([])


def test_a_corrupt_config_names_its_file(tmp_path):
  write_run(tmp_path, 'a', config(0), protonet_run(97.0))
  (tmp_path / 'a' / 'config.json').write_text('{')
  with pytest.raises(ValueError, match=r'a/config.json: not valid JSON'):
    omniglot_table.table(omniglot_table.load_runs(str(tmp_path / '*')))


def test_the_ablation_table_reports_validation_and_maps_the_old_name(tmp_path):
  old = dict(config(0, algo='support_film'), hypernet={'kind': 'film'})
  write_run(tmp_path, 'film', old, dict(protonet_run(97.0), algo='support_film'))
  new = dict(config(0, algo='support_metric'), hypernet={'kind': 'none'},
             head={'refine': 'attention', 'heads': 4})
  run = protonet_run(97.0)
  run['metrics'] = {'test_acc_5w1s_step0': s(91.0), 'val_acc_5w1s_step0': s(99.0)}
  write_run(tmp_path, 'attn', new, dict(run, algo='support_metric'))
  text = omniglot_table.table(omniglot_table.load_runs(str(tmp_path / '*')), split='val')
  assert 'VALIDATION' in text and 'Snell' not in text
  rows = [line for line in text.splitlines() if line.startswith('| support_metric')]
  assert len(rows) == 2
  assert any('head.refine=none' in r and 'hypernet.kind=film' in r for r in rows)
  assert any('head.refine=attention' in r and '99.00' in r and '91.00' not in r for r in rows)
  with pytest.raises(ValueError, match="split: expected one of"):
    omniglot_table.table(omniglot_table.load_runs(str(tmp_path / '*')), split='train')


def test_the_gated_conv4_is_labelled_a_hypernetwork(tmp_path):
  """`model.gate=True` (the seed sketch's hypernetwork in every block) is not the baseline."""
  write_run(tmp_path, 'plain', dict(config(0), model={'gate': False}), protonet_run(97.0))
  write_run(tmp_path, 'gated', dict(config(0), model={'gate': True}), protonet_run(98.0))
  text = omniglot_table.table(omniglot_table.load_runs(str(tmp_path / '*')))
  rows = [line for line in text.splitlines() if line.startswith('| protonet')]
  assert len(rows) == 2, text
  assert any(r.startswith('| protonet (baseline) model.gate=False') and '97.00' in r
             for r in rows), rows
  assert any(r.startswith('| protonet (hypernetwork: gated Conv-4) model.gate=True')
             and '98.00' in r for r in rows), rows


def two_settings_run(acc_5w1s, acc_20w1s):
  metrics = {}
  for name, acc in (('5w1s', acc_5w1s), ('20w1s', acc_20w1s)):
    metrics.update({f'test_acc_{name}_step0': s(acc, 0.3), f'val_acc_{name}_step0': s(acc)})
  return dict(protonet_run(acc_5w1s), metrics=metrics)


def test_rows_against_protonets_on_the_same_budget(tmp_path):
  """The lines under the table: differences, intervals apart or not, paired over seeds, and
  the issue's verdict (>= 3 seeds each, larger than both intervals at 5w1s and 20w1s)."""
  plain = [(97.0, 90.0), (97.2, 90.2), (97.4, 90.1)]
  for seed, accs in enumerate(plain):
    write_run(tmp_path, f'plain{seed}', dict(config(seed), model={'gate': False}),
              two_settings_run(*accs))
  # Gated: 5w1s +1 point each seed (apart); 20w1s +0.1 (overlap).
  for seed, (a, b) in enumerate(plain):
    write_run(tmp_path, f'gated{seed}', dict(config(seed), model={'gate': True}),
              two_settings_run(a + 1.0, b + 0.1))
  # A hypernetwork learner with two seeds, and one on another budget (not compared).
  for seed in (0, 1):
    write_run(tmp_path, f'sm{seed}', config(seed, algo='support_metric'),
              dict(two_settings_run(99.0 + seed, 95.0), algo='support_metric'))
  write_run(tmp_path, 'long', config(0, steps=200, algo='hyperhead'),
            dict(two_settings_run(99.0, 95.0), algo='hyperhead', num_steps=200))
  # Evaluated on other test episodes (their number): not the same budget either.
  write_run(tmp_path, 'more', dict(config(0), model={'gate': True}, eval={'num_episodes': 50}),
            two_settings_run(99.5, 95.0))
  runs = omniglot_table.load_runs(str(tmp_path / '*'))
  text = omniglot_table.comparisons(runs)
  rows = {r.split(' | ')[0]: r for r in text.splitlines() if r.startswith('| ')}
  assert not any('num_episodes=50' in r for r in rows), text
  assert any('num_episodes=50' in r for r in omniglot_table.table(runs).splitlines()), text
  gated = rows['| protonet (hypernetwork: gated Conv-4) model.gate=True']
  assert '+1.00 apart; paired +1.00 ± 0.00 (3)' in gated, gated
  assert '+0.10 overlap; paired +0.10 ± 0.00 (3)' in gated and gated.endswith('| no |'), gated
  sm = rows['| support_metric (hypernetwork)']
  assert '| 2 vs 3 |' in sm and sm.endswith('| no |'), sm
  assert not any(r.startswith('| hyperhead') for r in rows), text
  gated_runs = [(w, r) for w, r in runs if 'gated' in w]
  v = omniglot_table.compare(gated_runs, [(w, r) for w, r in runs if 'plain' in w], 5, 1)
  assert v['apart'] and v['clears'] and v['seeds'] == (3, 3)
  # 20w1s lifted by 0.9 more, so that both settings clear with 3 seeds each: beaten.
  lifted = [(w, two_settings_run(r['metrics']['test_acc_5w1s_step0']['mean'],
                                 r['metrics']['test_acc_20w1s_step0']['mean'] + 0.9)
             if 'gated' in w else r) for w, r in runs]
  gated = [r for r in omniglot_table.comparisons(lifted).splitlines() if 'gated' in r]
  assert gated[0].endswith('| yes |'), gated
