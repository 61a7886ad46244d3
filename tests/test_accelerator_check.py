"""`python -m experiments.accelerator_check --tiny` on the CPU, and its failure handling.

Speed is only measured here, never asserted: the checks are on the fields, that the values
are finite and positive, and that the README section is filled.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from experiments import accelerator_check as ac
from experiments import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')


def _positive(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _readme(path):
  path.write_text(f'# x\nbefore\n{ac.README_START}\nNot measured yet.\n{ac.README_END}\nafter\n')
  return path


def _errors(tree, where=''):
  """Every `error` / `skipped` entry in the results, with where it is."""
  found = []
  if isinstance(tree, dict):
    for k, v in tree.items():
      if k in ('error', 'skipped'):
        found.append((where, v))
      found += _errors(v, f'{where}/{k}')
  return found


def test_tiny_run_writes_json_and_readme(tmp_path):
  readme = _readme(tmp_path / 'README.md')
  out = tmp_path / 'check' / 'cpu.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.accelerator_check', '--tiny', f'--out={out}',
       f'--readme={readme}'], cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
  assert proc.returncode == 0, proc.stderr[-4000:]
  r = json.loads(out.read_text())
  assert _errors(r) == []
  assert r['tool'] == 'experiments.accelerator_check' and r['tiny'] and r['finished']
  assert r['backend'] == 'cpu' and 'CPU' in r['device'] and _positive(r['wall_s'])
  assert r['windows'] == 2 and r['window_s'] == 0.05
  peak = r['peak']
  assert peak['size'] == 256 and peak['flops_per_step'] == 2 * 256 ** 3
  assert _positive(peak['flops_per_s'])
  # 2. the workloads: library and reference, memory, FLOPs and the share of the peak
  assert list(r['workloads']) == ['W1']
  w1 = r['workloads']['W1']
  assert _positive(w1['overhead']) and _positive(w1['percent_of_peak'])
  assert w1['percent_of_peak'] == pytest.approx(
      100 * w1['library']['flops_per_s'] / peak['flops_per_s'])
  for side in ('library', 'reference'):
    m = w1[side]
    for key in ('compile_s', 'steps_per_s', 'flops_per_step', 'flops_per_s', 'final_loss'):
      assert _positive(m[key]), (side, key, m[key])
    assert m['memory_bytes']['peak'] > 0
  # 3. Omniglot MAML: the paper's model (BatchNorm, second order) shrunk by `smoke`
  o = r['omniglot']
  assert o['config']['batch_norm'] and not o['config']['first_order']
  assert o['config']['argument'] == 'algo=maml,size=paper,smoke'
  assert o['steps'] == 3 and o['paper_num_steps'] == 60_000
  for key in ('compile_s', 'steps_per_s', 'run_s', 'projected_paper_s', 'first_loss',
              'final_loss', 'num_target_params'):
    assert _positive(o[key]), (key, o[key])
  assert o['projected_paper_s'] == pytest.approx(60_000 / o['steps_per_s'])
  # 3b. the flagship (ProtoNets on the gated Conv-4) at the paper's size, shrunk by `smoke`
  f = r['omniglot_flagship']
  assert f['config']['argument'] == 'algo=protonet,gated,size=paper,smoke'
  assert f['config']['algo'] == 'protonet' and f['config']['gate']
  assert not f['config']['batch_norm'] and f['steps'] == 3 and f['paper_num_steps'] == 20_000
  for key in ('compile_s', 'steps_per_s', 'run_s', 'projected_paper_s', 'final_loss',
              'num_target_params'):
    assert _positive(f[key]), (key, f[key])
  # 4. the meta-batch curve, point by point
  assert list(r['batch_curve']) == ['W1'] and list(r['batch_curve']['W1']) == ['1', '2']
  for n, p in r['batch_curve']['W1'].items():
    assert _positive(p['steps_per_s']) and _positive(p['percent_of_peak'])
    assert p['tasks_per_s'] == pytest.approx(p['steps_per_s'] * int(n))
    assert p['memory_bytes']['peak'] > 0
  # The README: only the section between the markers changed.
  text = readme.read_text()
  assert text.startswith(f'# x\nbefore\n{ac.README_START}\n')
  assert text.endswith(f'{ac.README_END}\nafter\n')
  assert 'Not measured yet' not in text and r['device'] in text and '--tiny' in text
  assert '| W1 |' in text and '% of peak' in text and 'meta-steps/s' in text
  assert f'{benchmark._fmt(peak["flops_per_s"] / 1e9)} GFLOP/s' in text
  assert ac.duration(o['projected_paper_s']) in text
  assert 'ProtoNets on the gated Conv-4' in text and ac.duration(f['projected_paper_s']) in text
  # --from_json writes the same section from the saved JSON.
  again = _readme(tmp_path / 'AGAIN.md')
  ac.write_readme(str(again), ac.load_results(str(out)))
  assert again.read_text() == text


def test_bad_argument_is_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.accelerator_check', '--tiny', '--workloads=W1,W9',
       f'--out={tmp_path / "a.json"}'], cwd=ROOT, capture_output=True, text=True, timeout=120,
      env=ENV)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and 'workloads' in lines[0] and "['W9']" in lines[0], proc.stderr
  assert not (tmp_path / 'a.json').exists()


def test_bad_arguments_name_themselves(tmp_path):
  out = str(tmp_path / 'a.json')
  with pytest.raises(ValueError, match=r'budget_s: expected a positive number.*-1'):
    ac.run(out, tiny=True, budget_s=-1)
  with pytest.raises(ValueError, match=r'omniglot_steps: expected a positive integer.*0'):
    ac.run(out, tiny=True, omniglot_steps=0)
  (tmp_path / 'R.md').write_text('no markers\n')
  with pytest.raises(ValueError, match='readme: expected'):
    ac.run(out, readme=str(tmp_path / 'R.md'), tiny=True)
  assert not os.path.exists(out)  # refused before anything ran
  (tmp_path / 'bad.json').write_text('{"device": "x"}')
  with pytest.raises(ValueError, match='from_json: .*bad.json.*missing'):
    ac.load_results(str(tmp_path / 'bad.json'))


def test_a_failure_is_recorded_and_the_rest_runs(tmp_path, monkeypatch):
  out = tmp_path / 'a.json'

  def out_of_memory(*args, **kwargs):
    raise RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB.')

  def omniglot_after_the_workloads(*args, **kwargs):
    # The JSON already holds the parts before this one.
    partial = json.loads(out.read_text())
    assert 'error' in partial['peak'] and 'error' in partial['workloads']['W1']
    assert partial['finished'] is False
    raise ValueError('no Omniglot today')

  monkeypatch.setattr(benchmark, 'peak_probe', out_of_memory)
  monkeypatch.setattr(benchmark, 'run_workload', out_of_memory)
  monkeypatch.setattr(ac, 'omniglot_maml', omniglot_after_the_workloads)
  r = ac.run(str(out), tiny=True)
  assert r['peak']['error'].startswith('RuntimeError: RESOURCE_EXHAUSTED')
  assert r['workloads']['W1']['error'].startswith('RuntimeError: RESOURCE_EXHAUSTED')
  assert r['omniglot']['error'] == 'ValueError: no Omniglot today'
  assert r['omniglot_flagship']['error'] == 'ValueError: no Omniglot today'  # its own item
  for p in r['batch_curve']['W1'].values():  # measured after the failures, without a peak
    assert _positive(p['steps_per_s']) and p['percent_of_peak'] is None
  assert r['finished'] and json.loads(out.read_text()) == r
  text = ac.section(r)
  assert 'Peak probe: failed: RuntimeError: RESOURCE_EXHAUSTED' in text
  assert '| W1 | failed: RuntimeError: RESOURCE_EXHAUSTED' in text
  assert "Omniglot MAML at the paper's size: failed: ValueError: no Omniglot today." in text
  assert "The flagship at the paper's size: failed: ValueError: no Omniglot today." in text
  assert '| W1 | 2 |' in text


def test_items_after_the_budget_are_skipped():
  clock = ac._Clock(1e-9)
  r = ac.attempt(lambda: pytest.fail('started after the budget'), clock)
  assert 'time budget' in r['skipped'] and '--budget_s=1e-09' in r['skipped']
  assert ac.section({'device': 'd', 'jax_version': 'v', 'windows': 1, 'window_s': 1.0,
                     'date': 'today', 'peak': r, 'workloads': {'W2': r},
                     'omniglot': r}).count('skipped (time budget)') == 3
  assert ac.duration(41) == '41 s' and ac.duration(720) == '12 min'
  assert ac.duration(3 * 3600 + 25 * 60) == '3 h 25 min'
