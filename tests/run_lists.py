"""The run-list scripts' runs (`experiments/<script> list`) as configs, built as their
experiment builds them: the config file's `get_config(<argument>)`, then each
`--config.key=value` override the way absl's config flags apply it (a string value kept as
text, a number given to a float key made a float; an unknown key or a value of another type
refused)."""

from __future__ import annotations

import ast
import os
import subprocess

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lines(script: str) -> list[list[str]]:
  """`experiments/<script> list`, each line split into `[workdir, argument, overrides...]`."""
  proc = subprocess.run(['bash', os.path.join(ROOT, 'experiments', script), 'list'],
                        capture_output=True, text=True, timeout=60, check=True)
  return [line.split() for line in proc.stdout.splitlines() if line.strip()]


def _value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a string, as absl's config flags read it


def build_config(configs_module, words: list[str]) -> ml_collections.ConfigDict:
  """The config of one listed run (`words`: a line of `lines`); not validated."""
  workdir, arg, overrides = words[0], words[1], words[2:]
  config = configs_module.get_config(arg)
  for override in overrides:
    assert override.startswith('--config.') and '=' in override, (workdir, override)
    key, text = override[len('--config.'):].split('=', 1)
    parent = config
    for part in key.split('.')[:-1]:
      parent = parent[part]
    leaf = key.split('.')[-1]
    assert leaf in parent, f'{workdir}: unknown config key {key!r}'
    value = _value(text)
    if isinstance(parent[leaf], float) and isinstance(value, int):
      value = float(value)
    parent[leaf] = value  # ConfigDict refuses a value of another type
  return config


def listed_config(script: str, configs_module, workdir: str) -> ml_collections.ConfigDict:
  """The config `experiments/<script>` lists for `workdir` (exactly one line must match)."""
  matches = [words for words in lines(script) if words[0] == workdir]
  assert len(matches) == 1, f'{script} lists {workdir!r} {len(matches)} times'
  return build_config(configs_module, matches[0])
