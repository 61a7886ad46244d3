"""The run-list scripts behind the README's tables: every listed run has a valid config.

`experiments/{sinusoid_seeds,continual_vandeven,omniglot_seeds}.sh list` print one run per
line (`<workdir> <config argument> [--config.key=value ...]`); a typo in one (an unknown key,
a value of the wrong type, an impossible setting) would only show hours into a queue. Each
line's config is built here as its experiment builds it (the config file's `get_config`, the
overrides, the experiment's `validate_config`), without training.
"""

import ast
import importlib
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {'sinusoid_seeds.sh': 'sinusoid', 'continual_vandeven.sh': 'continual',
           'omniglot_seeds.sh': 'omniglot'}


def _lines(script: str) -> list[list[str]]:
  proc = subprocess.run(['bash', os.path.join(ROOT, 'experiments', script), 'list'],
                        capture_output=True, text=True, timeout=60, check=True)
  return [line.split() for line in proc.stdout.splitlines() if line.strip()]


def _value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a string, as absl's config flags read it


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_every_listed_run_builds_a_valid_config(script):
  experiment = SCRIPTS[script]
  configs = importlib.import_module(f'experiments.configs.{experiment}')
  module = importlib.import_module(f'experiments.{experiment}')
  lines = _lines(script)
  assert lines, script
  workdirs = [words[0] for words in lines]
  assert len(set(workdirs)) == len(workdirs), 'a workdir listed twice'
  for words in lines:
    workdir, arg, overrides = words[0], words[1], words[2:]
    assert workdir.startswith('workdirs/'), words
    config = configs.get_config(arg)
    for override in overrides:
      assert override.startswith('--config.') and '=' in override, (workdir, override)
      key, text = override[len('--config.'):].split('=', 1)
      node, *path = key.split('.')
      parent = config
      for part in [node, *path][:-1]:
        parent = parent[part]
      leaf = key.split('.')[-1]
      assert leaf in parent, f'{workdir}: unknown config key {key!r}'
      value = _value(text)
      if isinstance(parent[leaf], float) and isinstance(value, int):
        value = float(value)
      parent[leaf] = value  # ConfigDict refuses a value of another type
    module.validate_config(config)
