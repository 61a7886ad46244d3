"""The run-list scripts behind the README's tables: every listed run has a valid config.

`experiments/{sinusoid_seeds,continual_vandeven,omniglot_seeds,*_ablation}.sh list` print one
run per line (`<workdir> <config argument> [--config.key=value ...]`); a typo in one (an
unknown key, a value of the wrong type, an impossible setting) would only show hours into a
queue. Each
line's config is built here as its experiment builds it (the config file's `get_config`, the
overrides, the experiment's `validate_config`), without training. Then the records a finished
run leaves in `results/` (`experiments/claim_run.sh`), which the scripts' tables read.
"""

import importlib
import os
import subprocess

import pytest

import run_lists

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {'sinusoid_seeds.sh': 'sinusoid', 'continual_vandeven.sh': 'continual',
           'omniglot_seeds.sh': 'omniglot', 'sinusoid_ablation.sh': 'sinusoid',
           'omniglot_ablation.sh': 'omniglot'}


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_every_listed_run_builds_a_valid_config(script):
  experiment = SCRIPTS[script]
  configs = importlib.import_module(f'experiments.configs.{experiment}')
  module = importlib.import_module(f'experiments.{experiment}')
  lines = run_lists.lines(script)
  assert lines, script
  workdirs = [words[0] for words in lines]
  assert len(set(workdirs)) == len(workdirs), 'a workdir listed twice'
  for words in lines:
    assert words[0].startswith('workdirs/'), words
    config = run_lists.build_config(configs, words)
    module.validate_config(config)


def _claim(tmp_path, *command: str) -> subprocess.CompletedProcess:
  """`claim_and_run workdirs/run <command...>` in `tmp_path`, records in `tmp_path/results`."""
  script = (f'source {os.path.join(ROOT, "experiments", "claim_run.sh")}; '
            'claim_and_run workdirs/run "$@"')
  return subprocess.run(['bash', '-c', script, '_', *command], cwd=tmp_path, capture_output=True,
                        text=True, timeout=60, env={**os.environ, 'HYPERNET_RECORDS': 'results'})


# A stand-in for an experiment: writes a finished run's files into its --workdir (the last
# argument), or fails before writing results.json.
_FINISHES = ('d=${@: -1}; d=${d#--workdir=}; mkdir -p "$d";'
             ' echo \'{"seed": 0}\' > "$d/config.json"; echo \'{"acc": 1}\' > "$d/results.json"; echo big > "$d/checkpoint"')
_FAILS = 'd=${@: -1}; d=${d#--workdir=}; mkdir -p "$d"; echo "{}" > "$d/config.json"; exit 3'


def test_a_finished_run_leaves_its_record_and_is_then_skipped(tmp_path):
  proc = _claim(tmp_path, 'bash', '-c', _FINISHES, '_')
  assert proc.returncode == 0, proc.stderr
  record = tmp_path / 'results' / 'run'
  assert sorted(p.name for p in record.iterdir()) == ['config.json', 'results.json']
  assert (record / 'results.json').read_text().strip() == '{"acc": 1}'
  assert not (tmp_path / 'workdirs' / 'run.claim').exists()
  # with the workdir gone (another machine), the record alone marks the run finished
  for p in (tmp_path / 'workdirs' / 'run').iterdir():
    p.unlink()
  proc = _claim(tmp_path, 'bash', '-c', 'touch ran', '_')
  assert proc.returncode == 0 and not (tmp_path / 'ran').exists()


def test_a_failed_run_leaves_no_record(tmp_path):
  proc = _claim(tmp_path, 'bash', '-c', _FAILS, '_')
  assert proc.returncode == 1
  assert 'failed: workdirs/run' in proc.stdout
  assert not (tmp_path / 'results').exists() or not any((tmp_path / 'results').iterdir())
  assert not (tmp_path / 'workdirs' / 'run.claim').exists()


def test_a_run_finished_before_records_existed_is_recorded_without_rerunning(tmp_path):
  workdir = tmp_path / 'workdirs' / 'run'
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text('{}')
  (workdir / 'results.json').write_text('{"acc": 0.5}')
  proc = _claim(tmp_path, 'bash', '-c', 'touch ran', '_')
  assert proc.returncode == 0, proc.stderr
  assert not (tmp_path / 'ran').exists()
  assert (tmp_path / 'results' / 'run' / 'results.json').read_text() == '{"acc": 0.5}'


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_tables_read_the_records(script):
  """Each script's table command reads `results/`, the committed records, not workdirs."""
  with open(os.path.join(ROOT, 'experiments', script)) as f:
    text = f.read()
  tables = text[text.index('tables() {'):]
  tables = tables[:tables.index('\n}')]
  assert "--runs='results/" in tables and 'workdirs/' not in tables, tables
