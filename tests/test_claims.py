"""The claims command (`experiments.claims`) on smoke runs: MAML over three seeds and the
learned update rule over one, with held-out tracking, out-of-distribution tasks and
adaptation costs."""

import json
import math

import pytest

from experiments import claims, sinusoid
from experiments.configs import sinusoid as sinusoid_config

SEEDS = (0, 1, 2)


def smoke_config(algo: str, seed: int):
  config = sinusoid_config.get_config(f'algo={algo},smoke')
  config.plots = False
  config.seed = seed
  config.eval.shots = (5,)
  return config


@pytest.fixture(scope='module')
def runs_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('claims_runs')
  for algo, seeds in (('maml', SEEDS), ('learned_update', SEEDS[:1])):
    for seed in seeds:
      sinusoid.train_and_evaluate(smoke_config(algo, seed), str(root / f'{algo}_seed{seed}'))
  return root


def test_claims_command_on_smoke_runs(runs_dir, tmp_path):
  runs = claims.load_runs(str(runs_dir / '*'))
  assert sorted(runs) == ['learned_update', 'maml']
  assert [r.config['seed'] for r in runs['maml']] == list(SEEDS)
  measured = claims.measure(runs, shots=5, steps=1)
  json.dumps(measured, allow_nan=False)  # strict JSON
  setting = measured['setting']
  assert setting['threshold'] == pytest.approx(
      sum(r.records[-1]['heldout_mse_5shot_step1'] for r in runs['maml']) / len(SEEDS))
  assert setting['ood_shifts'] == ['x']
  for algo, c in measured['learners'].items():
    n = len(runs[algo])
    assert c['error']['n'] == n and (c['error']['ci95'] is not None) == (n > 1)
    assert c['error']['mean'] == pytest.approx(
        sum(r.results['metrics']['mse_5shot_step1']['mean'] for r in runs[algo]) / n)
    assert c['flops_per_task']['mean'] > 0 and c['tasks_per_s']['mean'] > 0
    assert c['curve']['step'] == [20, 40] and len(c['curve']['median']) == 2
    assert c['loss_mean_rise'] >= 1.0 and math.isfinite(c['loss_batch_rise'])
    assert c['ood']['x']['n'] == n
  plot_path = str(tmp_path / 'claims.png')
  claims.plot(measured, plot_path)
  with open(plot_path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  text = claims.markdown(measured, 'claims.png')
  for heading in ('Less pre-training', 'Less complexity', 'Adaptivity', 'Training stability',
                  'Efficiency'):
    assert f'**{heading}.**' in text
  assert '| updates dropped |' in text
  assert '| maml | 3 |' in text and '| learned_update (only 1 seed) | 1 |' in text
  readme = tmp_path / 'README.md'
  readme.write_text(f'intro\n{claims.START}\nold\n{claims.END}\nrest\n')
  claims.results_table.update_readme(str(readme), text, claims.START, claims.END)
  assert readme.read_text() == f'intro\n{claims.START}\n{text}{claims.END}\nrest\n'


def test_claims_refuse_mixed_configs_and_missing_baseline(runs_dir, tmp_path):
  with pytest.raises(ValueError, match=r'expected maml runs'):
    claims.measure(claims.load_runs(str(runs_dir / 'learned_update_*')), shots=5, steps=1)
  with pytest.raises(ValueError, match=r'has no mse_5shot_step10'):
    claims.measure(claims.load_runs(str(runs_dir / '*')), shots=5, steps=10)
  with pytest.raises(ValueError, match=r'no finished float32 run'):
    claims.load_runs(str(tmp_path / 'nothing*'))
  other = smoke_config('maml', 3)
  other.eval.num_query = 12  # another config, not only another seed
  sinusoid.train_and_evaluate(other, str(tmp_path / 'maml_other'))
  with pytest.raises(ValueError, match=r"differ in \['eval.num_query'\]"):
    claims.load_runs(f'{runs_dir}/maml_*,{tmp_path}/maml_other')


def test_other_trainings_are_rows_and_the_grid_compares_with_the_best_maml(runs_dir, tmp_path):
  """MAML in the paper's one-step setting is its own learner ('maml (trained 1 step)'), in the
  error grid beside the default MAML; a learner not evaluated at the compared setting is in the
  grid only; each other learner counts the settings where it is below the best MAML row."""
  config = sinusoid_config.get_config('algo=maml,paper,smoke')
  config.plots = False
  config.eval.shots = (5,)
  sinusoid.train_and_evaluate(config, str(tmp_path / 'maml_paper_seed0'))
  runs = claims.load_runs(f'{runs_dir}/*,{tmp_path}/maml_paper_seed0')
  assert list(runs) == ['maml', 'maml (trained 1 step)', 'learned_update']
  measured = claims.measure(runs, shots=5, steps=1)
  assert measured['setting']['grid'] == ['mse_5shot_step1']
  learners = measured['learners']
  mine = learners['learned_update']['grid']['mse_5shot_step1']
  refs = [learners[n]['grid']['mse_5shot_step1'] for n in ('maml', 'maml (trained 1 step)')]
  best = min(refs, key=lambda r: r['mean'])
  below = mine['mean'] + (mine['ci95'] or 0) < best['mean'] - (best['ci95'] or 0)
  assert learners['learned_update']['below_baseline'] == {'below': int(below), 'compared': 1}
  assert 'below_baseline' not in learners['maml (trained 1 step)']

  # Evaluated without the compared metric: in the grid only, '—' there, in no other table.
  results_path = tmp_path / 'maml_paper_seed0' / 'results.json'
  results = json.loads(results_path.read_text())
  del results['metrics']['mse_5shot_step1']
  results_path.write_text(json.dumps(results))
  measured = claims.measure(claims.load_runs(f'{runs_dir}/*,{tmp_path}/maml_paper_seed0'),
                            shots=5, steps=1)
  assert measured['learners']['maml (trained 1 step)']['grid_only']
  text = claims.markdown(measured)
  rows = [line for line in text.splitlines() if line.startswith('| maml (trained 1 step)')]
  assert rows == ['| maml (trained 1 step) (only 1 seed) | 1 | 1 | — | — |']


def test_learner_name_names_a_non_default_inner_training():
  """A run's row: the algorithm alone at its default inner training, else what differs."""
  def name(arg, **inner):
    config = sinusoid_config.get_config(arg).to_dict()
    config['inner'].update(inner)
    return claims.learner_name(config)
  assert name('algo=maml') == 'maml'
  assert name('algo=maml,paper') == 'maml (trained 1 step)'
  assert name('algo=learned_update') == 'learned_update'
  weight = sinusoid_config.get_config('algo=learned_update').inner.first_step_weight
  other = 0.25 if weight != 0.25 else 0.5
  assert (name('algo=learned_update', first_step_weight=other)
          == f'learned_update (trained 1-10 steps, first step weight {other:g})')
  config = sinusoid_config.get_config('algo=learned_update').to_dict()
  del config['inner']['first_step_weight']  # a run from before the key: the plain mean
  assert claims.learner_name(config) == ('learned_update' if weight == 0 else
                                         'learned_update (trained 1-10 steps, first step weight 0)')
