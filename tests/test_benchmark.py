"""`python -m experiments.benchmark` on few, short windows of W1 and W3.

Speed is only measured here, never asserted: the checks are on the fields and that the
values are finite and positive. (The memory curve is tested in `tests/test_inner_remat.py`.)
"""

import json
import math
import os
import subprocess
import sys

import pytest

from experiments import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_module_writes_json_and_readme_table(tmp_path):
  readme = tmp_path / 'README.md'
  readme.write_text(f'# x\nbefore\n{benchmark.README_START}\nold table\n'
                    f'{benchmark.README_END}\nafter\n')
  out = tmp_path / 'bench' / 'cpu.json'
  # A peer result in the format experiments/peers/maml_torch.py writes (torch is not
  # installed here): its steps/s go beside the library's, with the ratio.
  peer = {'impl': 'learn2learn', 'workload': 'W1', 'steps_per_s': 40.0, 'torch_version': '2.x',
          'threads': 2, 'glibc_tunables': None}
  (tmp_path / 'peers').mkdir()
  (tmp_path / 'peers' / 'learn2learn_W1.json').write_text(json.dumps(peer))
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', '--workloads=W1,W3', '--windows=2',
       '--window_s=0.05', '--memory_model=none', f'--out={out}', f'--readme={readme}',
       '--batch_curve=W1', '--batch_sizes=1,4', '--peak_size=256', '--conv_probe_rows=512',
       f'--peers={tmp_path / "peers" / "*.json"}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-4000:]
  results = json.loads(out.read_text())
  assert results['backend'] == 'cpu' and 'CPU' in results['device']
  assert results['keep_freed_memory'] in (True, False)
  curve = results['batch_curve']
  assert curve['sizes'] == [1, 4] and list(curve['workloads']) == ['W1']
  w1 = curve['workloads']['W1']
  assert all(map(_positive, w1['steps_per_s']))
  assert w1['tasks_per_s'] == [r * n for r, n in zip(w1['steps_per_s'], [1, 4])]
  assert (out.parent / 'batch_curve.png').stat().st_size > 0
  assert [p['impl'] for p in results['peers']] == ['learn2learn']
  assert list(results['workloads']) == ['W1', 'W3']
  peak = results['peak']  # the matmul probe: 2 n^3 FLOPs per step, measured in the same run
  assert peak['size'] == 256 and peak['flops_per_step'] == 2 * 256 ** 3
  assert _positive(peak['flops_per_s']) and peak['flops_per_s'] == pytest.approx(
      peak['flops_per_step'] * peak['steps_per_s'])
  conv = results['conv_probe']  # the three products of W2's convolution matmul, and their bound
  assert (conv['rows'], conv['k'], conv['n']) == (512, 576, 64)
  rates = [conv[p] for p in benchmark.CONV_PRODUCTS]
  assert all(map(_positive, rates)) and min(rates) <= conv['bound'] <= max(rates)
  assert conv['bound'] == pytest.approx(3 / sum(1 / r for r in rates))
  for name, r in results['workloads'].items():
    assert _positive(r['overhead']), name
    for side in ('library', 'reference'):
      m = r[side]
      for key in ('compile_s', 'first_step_s', 'steps_per_s', 'flops_per_step', 'flops_per_s',
                  'process_max_rss_bytes', 'final_loss'):
        assert _positive(m[key]), (name, side, key, m[key])
      assert len(m['window_steps_per_s']) == 2 and all(map(_positive, m['window_steps_per_s']))
      assert m['minor_faults_per_step'] >= 0
      mem = m['memory_bytes']
      assert mem['peak'] == mem['temp'] + mem['argument'] + mem['output'] > 0
    # the library and the reference compute the same thing: the same FLOPs within 25%
    ratio = r['library']['flops_per_step'] / r['reference']['flops_per_step']
    assert 0.75 < ratio < 1.25, (name, ratio)
  # W3's parameters and Adam state (~9M values, 3 copies) are in the arguments.
  assert results['workloads']['W3']['library']['memory_bytes']['argument'] > 3 * 9e6 * 4
  text = readme.read_text()
  assert text.startswith('# x\nbefore\n') and text.endswith(f'{benchmark.README_END}\nafter\n')
  assert 'old table' not in text and '| W1 |' in text and '| W3 |' in text
  assert results['device'] in text
  ours = results['workloads']['W1']['library']['steps_per_s']
  row = next(line for line in text.splitlines() if line.startswith('| W1 | default |'))
  assert f'| {benchmark._fmt(ours / 40.0, 2)} |' in row and '| 40 |' in row, row
  assert 'Tasks per second' in text
  assert '% of peak' in text and 'measured peak' in text
  assert f'would run at {benchmark._fmt(conv["bound"] / 1e9)} GFLOP/s' in text
  share = 100 * results['workloads']['W3']['library']['flops_per_s'] / peak['flops_per_s']
  w3 = next(line for line in text.splitlines() if line.startswith('| W3 |'))
  assert f'| {benchmark._fmt(share, 2)} |' in w3, w3


def test_bad_peer_files_and_curves_name_themselves(tmp_path):
  with pytest.raises(FileNotFoundError, match='peers: no file matches'):
    benchmark.load_peers([str(tmp_path / 'none*.json')])
  (tmp_path / 'bad.json').write_text('{"impl": "learn2learn"')
  with pytest.raises(ValueError, match='bad.json.*not a readable JSON'):
    benchmark.load_peers([str(tmp_path / 'bad.json')])
  (tmp_path / 'short.json').write_text('{"impl": "jax", "workload": "W1"}')
  with pytest.raises(ValueError, match=r"short.json.*missing \['steps_per_s'"):
    benchmark.load_peers([str(tmp_path / 'short.json')])
  good = {'impl': 'learn2learn', 'workload': 'W1', 'steps_per_s': 1.0, 'torch_version': 'x',
          'threads': 1, 'glibc_tunables': None}
  for name in ('d1.json', 'd2.json'):
    (tmp_path / name).write_text(json.dumps(good))
  with pytest.raises(ValueError, match='d1.json.*d2.json.*expected one'):
    benchmark.load_peers([str(tmp_path / 'd*.json')])
  with pytest.raises(ValueError, match=r"batch_curve: .*\['W3'\]"):
    benchmark.run(['W1'], 1, 0.1, str(tmp_path / 'a.json'), curve_workloads=['W3'])
  with pytest.raises(ValueError, match='batch_sizes'):
    benchmark.batch_curve(['W1'], [0], 1, 0.1)


def test_bad_arguments_name_themselves(tmp_path):
  with pytest.raises(ValueError, match=r"workloads: .*\['W9'\]"):
    benchmark.run(['W9'], 1, 0.1, str(tmp_path / 'a.json'))
  with pytest.raises(ValueError, match='windows'):
    benchmark.run(['W1'], 0, 0.1, str(tmp_path / 'a.json'))
  with pytest.raises(ValueError, match=r'peak_size: expected a non-negative integer.*-1'):
    benchmark.run(['W1'], 1, 0.1, str(tmp_path / 'a.json'), peak_size=-1)
  readme = tmp_path / 'R.md'
  readme.write_text('no markers\n')
  with pytest.raises(ValueError, match='readme: expected'):
    benchmark.replace_readme_section(str(readme), 'table')

