"""The shared loop (`experiments.train`): resumption, determinism, workdirs, non-finite losses.

The runs use the sinusoid experiment's MAML `smoke` config (40 steps, checkpoints at 20
and 40, 10 steps per call). One `Experiment` object is shared by the runs of one config,
as a notebook sweep would share it, so that they reuse its compiled programs.
"""

import json
import os
import re
import shutil

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import checks, events, loop, outputs, programs, progress, rundir, sinusoid, train
from experiments.configs import sinusoid as sinusoid_config
from hypernet import meta


def smoke_config(**overrides):
  config = sinusoid_config.get_config('algo=maml,smoke')
  config.plots = False
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.fixture(scope='module')
def experiment():
  return sinusoid.build_experiment(smoke_config())


@pytest.fixture(scope='module')
def uninterrupted(experiment, tmp_path_factory):
  """An uninterrupted run: (workdir, results, final TrainState)."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  results = train.train_and_evaluate(smoke_config(), workdir, experiment)
  return workdir, results, _final_state(workdir, experiment)


def _final_state(workdir, experiment):
  like = programs.init_state(experiment.learner, programs.make_optimizer(smoke_config()),
                          jax.random.key(0), fast_compile=True)
  return rundir.restore_state(workdir, like)


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_same_seed_same_metrics_and_parameters(experiment, uninterrupted, tmp_path):
  workdir, results, state = uninterrupted
  again = train.train_and_evaluate(smoke_config(), str(tmp_path), experiment)
  assert again['metrics'] == results['metrics'] and again['baselines'] == results['baselines']
  assert [r['loss'] for r in _records(str(tmp_path))] == [r['loss'] for r in _records(workdir)]
  chex.assert_trees_all_equal(_final_state(str(tmp_path), experiment), state)


def test_restore_reads_a_run_back(uninterrupted, tmp_path):
  """`rundir.restore`: the run's config, its experiment and newest state; evaluating the
  restored parameters with the run's evaluation key gives the run's results."""
  workdir, results, state = uninterrupted
  run = rundir.restore(workdir, sinusoid.build_experiment)
  assert run.config.to_json() == smoke_config().to_json()  # (tuples read back as lists)
  chex.assert_trees_all_equal(run.state, state)
  eval_key = jax.random.split(jax.random.key(run.config.seed), 3)[2]  # the loop's
  again = run.experiment.evaluate(run.meta_params, eval_key)['metrics']
  for name, values in again.items():
    assert outputs.summary(values) == results['metrics'][name], name
  with pytest.raises(ValueError, match=r"overrides: 'data.dir' is not a key of the config"):
    rundir.restore(workdir, sinusoid.build_experiment, {'data.dir': 'elsewhere'})
  with pytest.raises(ValueError, match=r'workdir: expected a run folder with config.json'):
    rundir.restore(str(tmp_path), sinusoid.build_experiment)


def test_checkpoints_in_the_older_layout_resume(experiment, uninterrupted, tmp_path):
  """Runs written before the learned initialisation moved to `meta_params['init']` (MAML's
  meta-parameters were the target's tree itself) restore and resume to the same state."""
  workdir, results, state = uninterrupted
  old_dir = str(tmp_path / 'old')
  shutil.copytree(workdir, old_dir, ignore=shutil.ignore_patterns('checkpoints', 'results.json'))
  legacy = rundir.legacy_layout(type(experiment.learner))
  old_state = legacy.old_like(state, state.meta_params)
  assert jax.tree.structure(old_state.meta_params) == jax.tree.structure(
      state.meta_params['init'])  # the target's tree itself, as MAML's checkpoints held it
  manager = rundir.open_checkpoints(os.path.join(old_dir, 'checkpoints'))
  manager.save(40, args=ocp.args.StandardSave(old_state))
  manager.close()
  chex.assert_trees_all_equal(rundir.restore(old_dir, sinusoid.build_experiment).state, state)
  again = train.train_and_evaluate(smoke_config(), old_dir, experiment)  # a finished run
  assert again['metrics'] == results['metrics']
  # Meta-SGD's and HyperMAML's older keys, 'params' and 'base', and back.
  for learner_type, old_key in ((meta.MetaSGD, 'params'), (meta.HyperMAML, 'base')):
    new = {'init': {'w': np.ones(2)}, 'other': np.zeros(1)}
    layout = rundir.legacy_layout(learner_type)
    old = layout.old_like({'meta_params': new, 'moment': new}, new)
    assert set(old['meta_params']) == set(old['moment']) == {old_key, 'other'}
    chex.assert_trees_all_equal(layout.upgrade(old, old['meta_params']),
                                {'meta_params': new, 'moment': new})
  assert rundir.legacy_layout(meta.ProtoNet) is None


def test_interrupted_run_resumes_to_the_same_parameters(experiment, uninterrupted, tmp_path,
                                                        monkeypatch):
  _, results, state = uninterrupted
  workdir = str(tmp_path)
  check_finite = checks.check_finite_metrics

  def interrupt_after_step_20(metrics, first_step, config, where=''):
    if first_step > 20:  # the call after the checkpoint at step 20
      raise KeyboardInterrupt('simulated interruption')
    check_finite(metrics, first_step, config, where)

  monkeypatch.setattr(checks, 'check_finite_metrics', interrupt_after_step_20)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(smoke_config(), workdir, experiment)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['20']
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  assert [r['step'] for r in _records(workdir)] == [20]

  monkeypatch.setattr(checks, 'check_finite_metrics', check_finite)
  resumed = train.train_and_evaluate(smoke_config(), workdir, experiment)
  assert resumed['resumed_from_step'] == 20
  assert [r['step'] for r in _records(workdir)] == [20, 40]
  chex.assert_trees_all_equal(_final_state(workdir, experiment), state)
  assert resumed['metrics'] == results['metrics']


def test_longer_run_continues_a_finished_one(experiment, uninterrupted, tmp_path):
  """`num_steps` may change: training 20 steps, then 40 ends where 40 steps do."""
  _, _, state = uninterrupted
  workdir = str(tmp_path)
  train.train_and_evaluate(smoke_config(num_steps=20), workdir, experiment)
  longer = train.train_and_evaluate(smoke_config(num_steps=40), workdir, experiment)
  assert longer['resumed_from_step'] == 20 and longer['num_steps'] == 40
  chex.assert_trees_all_equal(_final_state(workdir, experiment), state)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['num_steps'] == 40
  with pytest.raises(ValueError, match='beyond'):  # cannot go back to fewer steps
    train.train_and_evaluate(smoke_config(num_steps=10), workdir, experiment)


def test_workdir_with_a_different_config_is_refused(tmp_path):
  workdir = str(tmp_path)
  rundir.prepare_workdir(smoke_config(), workdir)
  os.makedirs(os.path.join(workdir, 'checkpoints', '20'))
  with pytest.raises(ValueError, match=r'seed: 0 -> 1.*overwrite'):
    rundir.prepare_workdir(smoke_config(seed=1), workdir)
  with pytest.raises(ValueError, match='inner.lr'):
    config = smoke_config()
    config.inner.lr = 0.1
    rundir.prepare_workdir(config, workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['seed'] == 0  # untouched
  rundir.prepare_workdir(smoke_config(num_steps=80), workdir)  # a longer run: accepted
  rundir.prepare_workdir(smoke_config(seed=1, overwrite=True), workdir)  # starts afresh
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['seed'] == 1


def test_checkpoints_without_config_are_refused(tmp_path):
  os.makedirs(tmp_path / 'checkpoints')
  with pytest.raises(ValueError, match='no config.json'):
    rundir.prepare_workdir(smoke_config(), str(tmp_path))


def test_non_finite_loss_names_the_step_and_metric(tmp_path):
  config = smoke_config()
  config.optimizer.skip_nonfinite = 0  # (MAML's sinusoid config drops up to 10; see below)
  config.optimizer.learning_rate = 1e38  # the first Adam update makes every parameter ~1e38.
  with pytest.raises(FloatingPointError, match=r"'loss' is .* at step 2\b"):
    sinusoid.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints' / '20')  # nothing non-finite saved
  assert not os.path.exists(tmp_path / 'results.json')


def test_check_finite_reports_the_first_bad_step():
  config = smoke_config()
  config.optimizer.skip_nonfinite = 0
  metrics = {'grad_norm': np.array([1.0, np.inf, 1.0]), 'loss': np.array([1.0, 2.0, np.nan])}
  with pytest.raises(FloatingPointError, match=r"'grad_norm' is inf .* at step 12\b"):
    checks.check_finite_metrics(metrics, 11, config)
  checks.check_finite_metrics({'loss': np.ones(3)}, 1, config)


def test_skip_nonfinite_drops_such_updates_and_counts_them(tmp_path):
  """`optimizer.skip_nonfinite`: a non-finite meta-gradient leaves the parameters and Adam's
  state as they were (counted); more than n in a row is the run's end, naming the update."""
  import optax  # pylint: disable=g-import-not-at-top
  tx = programs._optimizer(1e-3, 1.0, skip_nonfinite=2)
  params = {'w': np.ones(3, np.float32)}
  state = tx.init(params)
  good = {'w': np.full(3, 0.5, np.float32)}
  bad = {'w': np.array([0.5, np.nan, 0.5], np.float32)}
  updates, after_bad = tx.update(bad, state, params)
  np.testing.assert_array_equal(updates['w'], 0.0)
  assert programs.skipped_updates(after_bad) == 1 and programs.skipped_updates(state) == 0
  reference = programs._optimizer(1e-3, 1.0)
  expected, _ = reference.update(good, reference.init(params), params)
  updates, _ = tx.update(good, after_bad, params)  # Adam's state untouched by the dropped one
  np.testing.assert_allclose(updates['w'], expected['w'], rtol=1e-6)
  assert programs.skipped_updates(optax.adam(1e-3).init(params)) == 0
  config = smoke_config()
  config.optimizer.skip_nonfinite = 2
  checks.check_finite_metrics({'loss': np.array([1.0, np.nan])}, 1, config)  # no error: dropped
  assert progress.finite_mean(np.array([1.0, np.nan, 3.0, np.inf])) == 2.0
  assert progress.finite_mean(np.array([np.nan])) is None
  # Every update after the first is non-finite (see the test above): after 2 dropped in a row
  # optax applies the third, and the loop names the non-finite parameters.
  config.optimizer.learning_rate = 1e38
  with pytest.raises(FloatingPointError, match=r'meta-parameters are not finite after the '
                     r'update of step 10\b'):
    sinusoid.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.json')


def test_calls_end_at_log_and_checkpoint_steps():
  config = smoke_config(num_steps=95, steps_per_call=30, log_every=20, checkpoint_every=50)
  ends, step = [], 0
  while step < config.num_steps:
    step = loop.next_boundary(step, config.num_steps, (config.steps_per_call,
                                                       config.log_every, config.checkpoint_every))
    ends.append(step)
  assert ends == [20, 30, 40, 50, 60, 80, 90, 95]


def test_run_steps_calls_records_and_checks(tmp_path):
  """The shared loop: calls end at the boundaries, one record per log step (and at the
  stop), `after_call` after each call, and a non-finite parameter stops it naming the step."""
  config = smoke_config()
  writer = events.EventWriter(str(tmp_path), 0)
  log = progress.MetricLog(str(tmp_path / 'metrics.jsonl'), writer, [], 35, 10)
  calls, after = [], []

  def advance(state, step, n):
    calls.append((step, n))
    return (state + n, {'loss': np.full(n, float(step))}), 0.01

  state = loop.run_steps(advance, 10.0, start=10, stop=35, log=log, config=config,
                         log_every=10, every=(4,), params=lambda s: {'w': np.asarray(s)},
                         message=lambda r, eta: f'{r["step"]}', record_step=100,
                         fields={'task': 2}, after_call=lambda s, step: after.append(step))
  writer.close()
  assert state == 35.0
  assert calls == [(10, 2), (12, 4), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (32, 3)]
  assert after == [12, 16, 20, 24, 28, 30, 32, 35]
  assert [(r['task'], r['step']) for r in log.records] == [(2, 20), (2, 30), (2, 35)]
  assert [r['loss'] for r in log.records] == pytest.approx([13.2, 23.2, 31.2])  # per-step means

  def diverge(state, step, n):
    return (state + (np.inf if step >= 20 else n), {'loss': np.zeros(n)}), 0.01

  with pytest.raises(FloatingPointError, match=r"parameters are not finite after the update "
                     r"of task 2, step 24\b"):
    loop.run_steps(diverge, 10.0, start=10, stop=35, log=log, config=config, log_every=10,
                   every=(4,), params=lambda s: {'w': np.asarray(s)}, what='parameters',
                   where='task 2, ', message=lambda r, eta: '')


def test_summary():
  s = outputs.summary(np.array([1.0, 2.0, 3.0, 4.0]))
  assert s['n'] == 4 and s['mean'] == 2.5
  np.testing.assert_allclose(s['ci95'], 1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  path = str(tmp_path / 'out.json')
  outputs.write_json(path, {'a': 1})

  def fail(tmp):
    with open(tmp, 'w') as f:
      f.write('{"a": ')
    raise RuntimeError('disk full')

  with pytest.raises(RuntimeError):
    outputs.atomic_write(path, fail)
  assert os.listdir(tmp_path) == ['out.json']
  with open(path) as f:
    assert json.load(f) == {'a': 1}


# ------------------------------------------------------------------ refusals change nothing
def _snapshot(workdir):
  """{relative path: (bytes, mtime)} of every file under `workdir`."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = (f.read(), os.stat(path).st_mtime_ns)
  return out


def _corrupt_checkpoint(workdir, step):
  """Empties every data file of checkpoint `step` (as a copy cut short would leave it)."""
  for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', str(step))):
    if os.path.basename(root) == 'd':
      for name in files:
        open(os.path.join(root, name), 'w').close()


@pytest.fixture
def finished(uninterrupted, tmp_path):
  """A copy of the finished 40-step run (checkpoints 20 and 40, results.json)."""
  import shutil
  workdir = str(tmp_path / 'finished')
  shutil.copytree(uninterrupted[0], workdir)
  return workdir


def test_refused_reruns_change_nothing_in_the_workdir(experiment, finished, capfd):
  """Issue 11, item 1: every refusal comes before the first change to a finished run."""
  before = _snapshot(finished)
  assert 'results.json' in before and 'config.json' in before
  with pytest.raises(ValueError, match=r'checkpoint at step 40, beyond config.num_steps=20'):
    train.train_and_evaluate(smoke_config(num_steps=20), finished, experiment)
  assert _snapshot(finished) == before
  with pytest.raises(ValueError, match=r'seed: 0 -> 1'):
    train.train_and_evaluate(smoke_config(seed=1), finished, experiment)
  assert _snapshot(finished) == before
  for step in (20, 40):
    _corrupt_checkpoint(finished, step)
  before = _snapshot(finished)
  with pytest.raises(ValueError, match=r'checkpoints: no checkpoint can be restored \(step 40: '
                                       r'.*; step 20: .*overwrite'):
    train.train_and_evaluate(smoke_config(num_steps=60), finished, experiment)
  assert _snapshot(finished) == before
  assert 'Event loop is closed' not in capfd.readouterr().err  # no traceback flood


def test_corrupt_newest_checkpoint_resumes_from_the_intact_one(experiment, uninterrupted,
                                                               finished, capfd, caplog):
  """Issue 11, item 4: one warning naming the checkpoint, no traceback flood, an exact resume."""
  _, results, state = uninterrupted
  _corrupt_checkpoint(finished, 40)
  os.remove(os.path.join(finished, 'results.json'))
  with caplog.at_level('WARNING'):
    resumed = train.train_and_evaluate(smoke_config(), finished, experiment)
  warned = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING'
            and 'cannot be restored' in r.getMessage()]
  assert len(warned) == 1
  assert os.path.join(finished, 'checkpoints', '40') in warned[0]
  assert 'resuming from the newest readable one, step 20' in warned[0]
  assert 'Event loop is closed' not in capfd.readouterr().err
  assert resumed['resumed_from_step'] == 20 and resumed['metrics'] == results['metrics']
  chex.assert_trees_all_equal(_final_state(finished, experiment), state)
  assert os.path.isdir(os.path.join(finished, 'unreadable_checkpoints', '40'))  # kept, aside


def test_damaged_config_and_metrics_files_are_named(experiment, finished):
  """Issue 11, item 6: an empty config.json or a damaged metrics.jsonl names the file."""
  metrics = os.path.join(finished, 'metrics.jsonl')
  with open(metrics) as f:
    lines = f.read().splitlines()
  assert len(lines) == 2
  with open(metrics, 'w') as f:  # a damaged first line: refused, naming file and line
    f.write(lines[0][:10] + '\n' + lines[1] + '\n')
  before = _snapshot(finished)
  with pytest.raises(ValueError, match=rf'{metrics}: line 1 is not a JSON object'):
    train.train_and_evaluate(smoke_config(num_steps=60), finished, experiment)
  assert _snapshot(finished) == before
  with open(metrics, 'w') as f:  # a last line cut short: dropped with a warning
    f.write(lines[0] + '\n' + lines[1][:10])
  with pytest.warns(UserWarning, match=rf'{metrics}: line 2 is not valid JSON.*dropping it'):
    assert [r['step'] for r in rundir.records_up_to(metrics, 40)] == [20]
  config_path = os.path.join(finished, 'config.json')
  open(config_path, 'w').close()
  before = _snapshot(finished)
  with pytest.raises(ValueError, match=rf'{config_path}: not valid JSON .*empty, truncated'):
    train.train_and_evaluate(smoke_config(), finished, experiment)
  assert _snapshot(finished) == before


# ------------------------------------------------------------------ a diverged last update
def test_a_diverged_last_update_writes_no_checkpoint_and_no_results(experiment, tmp_path):
  """Issue 11, item 2: the final parameters are checked before evaluation and any write."""
  one_step = dict(num_steps=1, steps_per_call=1, log_every=1, checkpoint_every=1)
  config = smoke_config(**one_step)
  config.optimizer.learning_rate = 1e38  # finite parameters (~1e38) that overflow
  with pytest.raises(FloatingPointError, match=r'after the last update \(step 1\) give a '
                                               r'training loss of (nan|inf)'):
    train.train_and_evaluate(config, str(tmp_path / 'a'), experiment)
  config.optimizer.learning_rate = 1e39  # inf in float32: the parameters themselves
  with pytest.raises(FloatingPointError, match=r'meta-parameters are not finite after the '
                                               r"update of step 1 \(leaf '"):
    train.train_and_evaluate(config, str(tmp_path / 'b'), experiment)
  for workdir in ('a', 'b'):
    assert not os.path.exists(tmp_path / workdir / 'results.json')
    assert not os.path.exists(tmp_path / workdir / 'checkpoints' / '1')


def test_results_json_is_strict_json(experiment, tmp_path):
  """A diverged evaluation value is reported in results.json without NaN or Infinity."""
  import dataclasses

  def evaluate(meta_params, key):
    out = experiment.evaluate(meta_params, key)
    out['metrics']['mse_overstepped'] = np.array([1.0, np.nan, 2.0])
    return out

  workdir = str(tmp_path)
  results = train.train_and_evaluate(
      smoke_config(num_steps=20), workdir, dataclasses.replace(experiment, evaluate=evaluate))
  assert np.isnan(results['metrics']['mse_overstepped']['mean'])  # in memory: the value
  with open(os.path.join(workdir, 'results.json')) as f:
    on_disk = json.loads(f.read(), parse_constant=lambda c: pytest.fail(f'{c} in results.json'))
  assert on_disk['metrics']['mse_overstepped'] == {'mean': None, 'ci95': None, 'n': 3,
                                                   'diverged': 'nan'}
  assert on_disk['metrics']['mse_5shot_step1'] == results['metrics']['mse_5shot_step1']


# ------------------------------------------------------------------ config numbers
@pytest.mark.parametrize('algo, key, value, message', [
    ('maml', 'inner.lr', float('nan'), 'a finite number, received nan'),
    ('maml', 'inner.lr', float('inf'), 'a finite number, received inf'),
    ('amortised', 'inner.lr', -0.5, 'a finite number >= 0, received -0.5'),
    ('hypermaml', 'delta_scale', float('nan'), 'a finite number, received nan'),
    ('maml', 'inner.steps', -1, 'an integer >= 0, received -1'),
])
def test_config_numbers_are_checked_before_anything_is_built(algo, key, value, message,
                                                             monkeypatch):
  """Issue 11, item 5: the message names the key the user set (not a learner field, e.g.
  `inner_lr`)."""
  config = sinusoid_config.get_config(f'algo={algo},smoke')
  section, _, name = key.rpartition('.')
  (config[section] if section else config)[name] = value
  monkeypatch.setattr(sinusoid, 'build_target',
                      lambda *a: pytest.fail('built despite an invalid config'))
  with pytest.raises(ValueError, match=rf'config\.{re.escape(key)}: expected {message}'):
    sinusoid.build_experiment(config)


def test_programs_are_shared_by_value_and_never_stale():
  """Issue 12, item 2: no hand-kept key list. Experiments built twice from configs that agree
  on what the builder reads have equal learners and samplers, hence one compiled training
  loop (`programs.make_train_chunk`, cached by value); a config that changes what the builder
  reads (the inner learning rate, the target's width, the meta-batch) gets its own."""
  tx = programs.make_optimizer(smoke_config())
  chunk = lambda e: programs.make_train_chunk(e.learner, tx, e.sample_tasks, True)  # noqa: E731
  a = sinusoid.build_experiment(smoke_config())
  b = sinusoid.build_experiment(smoke_config(num_steps=80, seed=3, log_every=40))
  assert a is not b and a.learner == b.learner and a.sample_tasks == b.sample_tasks
  assert chunk(a) is chunk(b)
  for key, value in (('inner.lr', 0.02), ('target.hidden', (16, 8)), ('meta_batch_size', 8)):
    config = smoke_config()
    section, _, name = key.rpartition('.')
    (config[section] if section else config)[name] = value
    c = sinusoid.build_experiment(config)
    assert (c.learner, c.sample_tasks) != (a.learner, a.sample_tasks), key
    assert chunk(c) is not chunk(a), key
