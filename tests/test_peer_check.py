"""`experiments.peer_check`: the arrays the PyTorch hypernetwork peers load and check against.

The peers (`experiments/peers/hnet_torch.py`, torch and hypnettorch, not installed here) read
the npz as its module doc describes. These tests recompute the meta-loss from the exported
arrays alone, in NumPy and float64, following that description (the trunk, the head, the
chunks concatenated and cut, the flat vector cut row-major into the listed tensors, the
target MLP): if the layout or the order were not as documented, the loss would differ.
"""

import json

import numpy as np
import pytest

from experiments import benchmark, peer_check


def _numpy_loss(a: dict) -> float:
  """The W3 meta-loss from the exported arrays, as the module doc describes it."""
  f64 = {k: np.asarray(v, np.float64) for k, v in a.items() if k not in (
      'y', 'target_paths', 'target_shapes')}
  shapes = [tuple(s) for s in json.loads(str(a['target_shapes']))]
  sizes = [int(np.prod(s)) for s in shapes]
  num_trunk = sum(k.startswith('trunk_w') for k in a)
  losses = []
  for t in range(a['embed'].shape[0]):
    h = f64['embed'][t]
    if 'chunks' in a:
      h = np.concatenate([np.broadcast_to(h, (a['chunks'].shape[0], h.shape[0])),
                          f64['chunks']], -1)
    for i in range(num_trunk):
      h = np.maximum(h @ f64[f'trunk_w{i}'] + f64[f'trunk_b{i}'], 0.0)
    flat = (h @ f64['head_w'] + f64['head_b']).reshape(-1)[:sum(sizes)]
    tensors = [v.reshape(s) for v, s in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes)]
    z = f64['x'][t]
    for layer in range(len(tensors) // 2):
      z = z @ tensors[2 * layer + 1] + tensors[2 * layer]
      if layer < len(tensors) // 2 - 1:
        z = np.maximum(z, 0.0)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    losses.append(-logp[np.arange(len(a['y'][t])), a['y'][t]].mean())
  return float(np.mean(losses))


@pytest.mark.parametrize('workload', peer_check.WORKLOADS)
def test_exported_arrays_reproduce_the_library_loss(workload, tmp_path):
  a = peer_check.check_arrays(workload)
  chunked = workload == 'W3-chunked'
  assert ('chunks' in a) == chunked
  assert json.loads(str(a['target_paths'])) == [
      f'layers_{i}/{leaf}' for i in (0, 2, 4) for leaf in ('bias', 'kernel')]
  assert a['head_w'].shape == (100, 7000 if chunked else 89_610)
  assert a['trunk_w0'].shape == (40 if chunked else 32, 100)
  # every parameter has its gradient, of its shape, finite and not all zero
  params = [k for k in a if k not in ('x', 'y', 'loss', 'target_paths', 'target_shapes')
            and not k.startswith('grad_')]
  assert sorted(k[5:] for k in a if k.startswith('grad_')) == sorted(params)
  for k in params:
    g = a[f'grad_{k}']
    assert g.shape == a[k].shape and np.all(np.isfinite(g)) and np.any(g != 0), k
  assert _numpy_loss(a) == pytest.approx(float(a['loss']), rel=1e-5)
  # written atomically, read back whole
  path = tmp_path / f'{workload}.npz'
  peer_check.write(str(path), {k: a[k] for k in ('loss', 'target_shapes')})
  assert [p.name for p in tmp_path.iterdir()] == [path.name]
  with np.load(path) as back:
    assert float(back['loss']) == float(a['loss'])


def test_unknown_workload_is_named():
  with pytest.raises(ValueError, match=r"workload: expected one of \('W3', 'W3-chunked'\), "
                                       r"received 'W2'"):
    peer_check.check_arrays('W2')


def test_peer_tables_group_the_maml_and_hypernetwork_peers():
  def peer(impl, workload, rate, kept=False, check=None):
    out = {'impl': impl, 'workload': workload, 'steps_per_s': rate, 'torch_version': '2.x',
           'threads': 2, 'glibc_tunables': 'x' if kept else None}
    return dict(out, check=check) if check else out
  results = {
      'keep_freed_memory': True,
      'workloads': {'W1': {'library': {'steps_per_s': 100.0}},
                    'W3': {'library': {'steps_per_s': 12.0}}},
      'peers': [peer('learn2learn', 'W1', 4.0), peer('torchfunc', 'W1', 20.0),
                peer('torchfunc', 'W3', 6.0, check={'max_rel_grad_err': 3e-7}),
                peer('hypnettorch_loop', 'W3', 1.5, check={'max_rel_grad_err': 5e-7}),
                peer('hypnettorch_batched', 'W3', 3.0, kept=True)]}
  lines = benchmark.peers_table(results)
  headers = [l for l in lines if l.startswith('| workload |')]
  assert len(headers) == 2
  assert '| learn2learn | torch.func |' in headers[0] and 'hypnettorch' not in headers[0]
  assert ('| torch.func | hypnettorch (task loop) | hypnettorch (batched) |' in headers[1])
  w1 = next(l for l in lines if l.startswith('| W1 | default |'))
  assert '| 100 | 4 | 20 | 25 | 5 |' in w1, w1
  w3 = next(l for l in lines if l.startswith('| W3 | default |'))
  assert '| 12 | 6 | 1.5 | — | 2 | 8 | — |' in w3, w3
  w3_kept = next(l for l in lines if l.startswith('| W3 | kept |'))
  assert '| 12 | — | — | 3 | — | — | 4 |' in w3_kept, w3_kept
  assert any('W3 5e-07' in l for l in lines)
