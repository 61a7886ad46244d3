"""MNIST / Fashion-MNIST IDX readers, MNIST-1D, and the continual-learning task helpers.

The real files are read where `data_sources.staged_root` finds them (`$HYPERNET_DATA_DIR` or
`../shared/data`); MNIST-1D, when not staged, is generated exactly (PyPI `mnist1d`); the format
and error tests run on small files generated here in the real formats.
"""

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from hypernet import data
from hypernet.data import _io
from hypernet.data import mnist as mn

import data_sources

MNIST = data_sources.staged_root('mnist', *(f.name for f in mn.MNIST_FILES['train']
                                            + mn.MNIST_FILES['test']))
FASHION = data_sources.staged_root('fashion-mnist', *(
    f.name for f in mn.FASHION_MNIST_FILES['train'] + mn.FASHION_MNIST_FILES['test']))


def _needs(root, what: str, folder: str):
  return pytest.mark.skipif(root is None, reason=data_sources.not_staged(
      what, folder, 'its 70,000 images cannot be generated'))


@pytest.fixture(scope='module')
def mnist1d_root(tmp_path_factory):
  """The staged MNIST-1D, else one generated exactly with the PyPI package mnist1d."""
  return data_sources.mnist1d_root(tmp_path_factory.mktemp('mnist1d'))


MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _idx_bytes(a: np.ndarray) -> bytes:
  """`a` uint8 in IDX format: magic 0x000008NN, big-endian dims, data."""
  return struct.pack('>I', 0x0800 | a.ndim) + struct.pack(f'>{a.ndim}I', *a.shape) + a.tobytes()


def _write_fake_mnist(root: Path, n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Generated `mnist/train-*-ubyte.gz` in the real format; returns (images, labels)."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  y = rng.integers(0, 10, n, dtype=np.uint8)
  (root / 'mnist').mkdir(parents=True, exist_ok=True)
  for f, a in zip(mn.MNIST_FILES['train'], (x, y)):
    (root / 'mnist' / f.name).write_bytes(gzip.compress(_idx_bytes(a)))
  return x, y


# ---------------------------------------------------------------------------------------------
# Real files.


@_needs(MNIST, 'MNIST', 'mnist')
def test_real_mnist_parses_with_checksums():
  x, y = data.load_mnist('train', MNIST)
  assert x.shape == (60000, 28, 28) and x.dtype == np.uint8 and y.shape == (60000,)
  assert x.flags.writeable and x.max() == 255 and x.min() == 0
  np.testing.assert_array_equal(np.bincount(y, minlength=10), MNIST_TRAIN_COUNTS)
  xt, yt = data.load_mnist('test', MNIST)
  assert xt.shape == (10000, 28, 28)
  np.testing.assert_array_equal(np.bincount(yt, minlength=10), MNIST_TEST_COUNTS)

  tasks = data.split_mnist_tasks(y)
  assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
  assert [len(t.indices) for t in tasks] == [
      MNIST_TRAIN_COUNTS[2 * i] + MNIST_TRAIN_COUNTS[2 * i + 1] for i in range(5)]
  assert np.array_equal(np.sort(np.concatenate([t.indices for t in tasks])), np.arange(60000))
  assert set(y[tasks[3].indices]) == {6, 7}


@_needs(FASHION, 'Fashion-MNIST', 'fashion-mnist')
def test_real_fashion_mnist_parses_with_checksums():
  for split, n in (('train', 60000), ('test', 10000)):
    x, y = data.load_fashion_mnist(split, FASHION)
    assert x.shape == (n, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [n // 10] * 10)


def test_real_mnist1d(mnist1d_root):
  """The staged file (sha256-checked) or the generated one (checked by content)."""
  d = data.load_mnist1d(mnist1d_root)
  assert d['x'].shape == (4000, 40) and d['x_test'].shape == (1000, 40)
  assert d['templates_x'].shape == (10, 12) and d['t'].shape == (40,)
  np.testing.assert_array_equal(np.bincount(d['y']),
                                [398, 396, 411, 394, 394, 402, 401, 404, 402, 398])
  np.testing.assert_array_equal(np.bincount(d['y_test']),
                                [102, 104, 89, 106, 106, 98, 99, 96, 98, 102])


def test_checksum_mismatch_names_file_and_hashes(tmp_path, monkeypatch):
  """A damaged copy of the real test files; generated ones with declared checksums if the real
  ones are not staged."""
  (tmp_path / 'mnist').mkdir()
  if MNIST is not None:
    for f in mn.MNIST_FILES['test']:
      (tmp_path / 'mnist' / f.name).write_bytes((MNIST / 'mnist' / f.name).read_bytes())
  else:
    rng = np.random.default_rng(1)
    arrays = (rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, 50, dtype=np.uint8))
    for f, a in zip(mn.MNIST_FILES['test'], arrays):
      (tmp_path / 'mnist' / f.name).write_bytes(gzip.compress(_idx_bytes(a)))
    declared = data_sources.declared_files(tmp_path / 'mnist',
                                           [f.name for f in mn.MNIST_FILES['test']])
    monkeypatch.setitem(mn.MNIST_FILES, 'test', tuple(
        _io.KnownFile(d.name, d.sha256, d.size, f.url)
        for d, f in zip(declared, mn.MNIST_FILES['test'])))
    data.load_mnist('test', tmp_path)  # intact: passes verification
  path = tmp_path / 'mnist' / 't10k-labels-idx1-ubyte.gz'
  blob = bytearray(path.read_bytes())
  blob[len(blob) // 2] ^= 0x01
  path.write_bytes(blob)
  with pytest.raises(data.ChecksumError) as e:
    data.load_mnist('test', tmp_path)
  msg = str(e.value)
  assert str(path) in msg and mn.MNIST_FILES['test'][1].sha256 in msg
  assert hashlib.sha256(blob).hexdigest() in msg and 'cvdf-datasets' in msg


# ---------------------------------------------------------------------------------------------
# Generated files: format and errors.


def test_generated_idx_round_trip_and_verification(tmp_path):
  x, y = _write_fake_mnist(tmp_path)
  gx, gy = data.load_mnist('train', tmp_path, verify=False)
  np.testing.assert_array_equal(gx, x)
  np.testing.assert_array_equal(gy, y)
  with pytest.raises(data.ChecksumError, match='train-images-idx3-ubyte.gz: sha256 mismatch'):
    data.load_mnist('train', tmp_path)
  raw = tmp_path / 'raw-idx1'
  raw.write_bytes(struct.pack('>II', 0x0C01, 2) + struct.pack('>ii', -5, 7))  # int32, not gz
  np.testing.assert_array_equal(data.read_idx(raw), [-5, 7])


def test_missing_files_are_listed(tmp_path, monkeypatch):
  with pytest.raises(data.MissingDataError) as e:
    data.load_mnist('train', tmp_path)
  msg = str(e.value)
  for f in mn.MNIST_FILES['train']:
    assert str(tmp_path / 'mnist' / f.name) in msg and f.sha256 in msg and f.url in msg
  assert 'download=True' in msg
  monkeypatch.setenv('HYPERNET_DATA_DIR', str(tmp_path / 'elsewhere'))
  with pytest.raises(data.MissingDataError, match=r'elsewhere/fashion-mnist.*t10k-images'):
    data.load_fashion_mnist('test')
  with pytest.raises(data.MissingDataError,
                     match=r'(?s)mnist1d_data\.npz.*mnist1d_data\.pkl.*download=True'):
    data.load_mnist1d(tmp_path)
  with pytest.raises(ValueError, match=r"split: expected 'train' or 'test', received 'val'"):
    data.load_mnist('val', tmp_path)


def test_truncated_and_damaged_gz(tmp_path):
  _write_fake_mnist(tmp_path)
  path = tmp_path / 'mnist' / 'train-images-idx3-ubyte.gz'
  blob = path.read_bytes()
  path.write_bytes(blob[:len(blob) // 2])
  with pytest.raises(data.CorruptFileError, match=r'train-images-idx3-ubyte\.gz: cannot read it '
                                                  r'as a gzip-compressed IDX file \(EOFError'):
    data.load_mnist('train', tmp_path, verify=False)
  damaged = bytearray(blob)
  damaged[-6] ^= 0xFF  # in the CRC/size trailer
  path.write_bytes(damaged)
  with pytest.raises(data.CorruptFileError, match=r'train-images-idx3-ubyte\.gz: cannot read'):
    data.load_mnist('train', tmp_path, verify=False)
  path.write_bytes(b'not gzip at all')
  with pytest.raises(data.CorruptFileError, match=r'BadGzipFile'):
    data.read_idx(path)


def test_bad_magic_and_truncated_payload(tmp_path):
  x, y = _write_fake_mnist(tmp_path)
  images = tmp_path / 'mnist' / 'train-images-idx3-ubyte.gz'
  images.write_bytes(gzip.compress(b'\x00\x00\x08\x02' + _idx_bytes(x)[4:]))
  with pytest.raises(data.CorruptFileError, match=r'magic number 0x00000802, expected 0x00000803'):
    data.load_mnist('train', tmp_path, verify=False)
  images.write_bytes(gzip.compress(_idx_bytes(y)))  # a label file where images belong
  with pytest.raises(data.CorruptFileError, match=r'magic number 0x00000801, expected 0x00000803'):
    data.load_mnist('train', tmp_path, verify=False)
  images.write_bytes(gzip.compress(_idx_bytes(x)[:-100]))  # valid gzip, short payload
  with pytest.raises(data.CorruptFileError, match=r'payload has 5,388 bytes, expected 5,488'):
    data.load_mnist('train', tmp_path, verify=False)
  images.write_bytes(gzip.compress(b'PK\x03\x04' + bytes(20)))
  with pytest.raises(data.CorruptFileError, match=r'magic number 0x504b0304'):
    data.read_idx(images)


def test_mnist1d_npz_pkl_and_unsafe_pickle(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {'x': rng.normal(size=(6, 40)), 'y': np.arange(6), 'x_test': rng.normal(size=(2, 40)),
            'y_test': np.arange(2), 't': np.linspace(0, 1, 40), 'templates_x': np.ones((10, 12)),
            'templates_t': np.arange(12.0), 'templates_y': np.arange(10)}
  folder = tmp_path / 'mnist1d'
  folder.mkdir()
  upstream = {k: arrays[k] for k in ('x', 'y', 'x_test', 'y_test', 't')}
  upstream['templates'] = {k: arrays[f'templates_{k}'] for k in ('x', 't', 'y')}
  (folder / 'mnist1d_data.pkl').write_bytes(pickle.dumps(upstream))
  d = data.load_mnist1d(tmp_path, verify=False)
  for k, v in arrays.items():
    np.testing.assert_array_equal(d[k], v, err_msg=k)
  with pytest.raises(data.ChecksumError, match='mnist1d_data.pkl'):
    data.load_mnist1d(tmp_path)

  class Evil:
    def __reduce__(self):
      return (print, ('pwned',))

  (folder / 'mnist1d_data.pkl').write_bytes(pickle.dumps({'x': Evil()}))
  with pytest.raises(data.CorruptFileError, match=r'builtins\.print is not allowed'):
    data.load_mnist1d(tmp_path, verify=False)

  np.savez(folder / 'mnist1d_data.npz', **arrays)  # the npz takes precedence
  d = data.load_mnist1d(tmp_path, verify=False)
  np.testing.assert_array_equal(d['templates_x'], arrays['templates_x'])
  blob = (folder / 'mnist1d_data.npz').read_bytes()
  (folder / 'mnist1d_data.npz').write_bytes(blob[:len(blob) // 3])
  with pytest.raises(data.CorruptFileError, match=r'mnist1d_data\.npz: cannot read'):
    data.load_mnist1d(tmp_path, verify=False)


def test_generated_mnist1d_is_verified_by_content(mnist1d_root, tmp_path):
  """`generate_mnist1d` (PyPI mnist1d) reproduces the canonical data; any other content is a
  ChecksumError naming the file and the array; NumPy's global generator is left as it was."""
  pytest.importorskip('mnist1d', reason='the PyPI package mnist1d is not installed')
  state = np.random.get_state()[1].copy()
  path = data.generate_mnist1d(tmp_path)
  np.testing.assert_array_equal(np.random.get_state()[1], state)
  assert path == tmp_path / 'mnist1d' / 'mnist1d_generated.npz'
  generated = data.load_mnist1d(tmp_path)  # verify=True: by content
  canonical = data.load_mnist1d(mnist1d_root)
  for key, value in canonical.items():
    np.testing.assert_allclose(generated[key], value, rtol=0, atol=1e-12, err_msg=key)
  for key, change in (('x', 1e-6), ('y_test', 1)):
    arrays = dict(generated)
    arrays[key] = arrays[key].copy()
    arrays[key][3] += change
    _io.save_npz(path, arrays)
    with pytest.raises(data.ChecksumError, match=rf'{path}: array {key!r} differs'):
      data.load_mnist1d(tmp_path)
    assert data.load_mnist1d(tmp_path, verify=False)[key][3].tolist() == arrays[key][3].tolist()


def test_download_uses_official_file_names_and_verifies(tmp_path, monkeypatch):
  """`download=True` with the URLs replaced by local file:// URLs (no network in tests)."""
  src = tmp_path / 'src'
  x, y = _write_fake_mnist(src)
  local = tuple(_io.KnownFile(f.name, _io.sha256sum(src / 'mnist' / f.name),
                              (src / 'mnist' / f.name).stat().st_size,
                              (src / 'mnist' / f.name).as_uri()) for f in mn.MNIST_FILES['train'])
  monkeypatch.setitem(mn.MNIST_FILES, 'train', local)
  gx, gy = data.load_mnist('train', tmp_path / 'dst', download=True)
  np.testing.assert_array_equal(gx, x)
  assert sorted(p.name for p in (tmp_path / 'dst' / 'mnist').iterdir()) == [
      'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz']
  missing = _io.KnownFile('x.gz', '0' * 64, 1, (tmp_path / 'absent.gz').as_uri())
  with pytest.raises(OSError, match=r'download failed.*place x\.gz'):
    _io.download(missing, tmp_path / 'dst2')
  assert list((tmp_path / 'dst2').iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Continual-learning helpers.


def test_permuted_mnist_tasks():
  p = data.permuted_mnist_tasks(4, seed=0)
  assert p.shape == (4, 784)
  for row in p:
    np.testing.assert_array_equal(np.sort(row), np.arange(784))
  np.testing.assert_array_equal(p, data.permuted_mnist_tasks(4, seed=0))
  assert not np.array_equal(p, data.permuted_mnist_tasks(4, seed=1))
  assert len({row.tobytes() for row in p}) == 4
  q = data.permuted_mnist_tasks(4, seed=0, first_identity=True)
  np.testing.assert_array_equal(q[0], np.arange(784))
  np.testing.assert_array_equal(q[1:], p[1:])

  x = np.arange(2 * 28 * 28).reshape(2, 28, 28)
  xp = data.permute_pixels(x, p[1])
  np.testing.assert_array_equal(xp.reshape(2, -1), x.reshape(2, -1)[:, p[1]])
  np.testing.assert_array_equal(data.permute_pixels(xp, np.argsort(p[1])), x)
  np.testing.assert_array_equal(data.permute_pixels(jnp.asarray(x), jnp.asarray(p[1])), xp)
  with pytest.raises(ValueError, match=r'perm: expected shape \(784,\).*received \(10,\)'):
    data.permute_pixels(x, np.arange(10))
  with pytest.raises(ValueError, match=r'num_tasks: expected a positive integer, received 0'):
    data.permuted_mnist_tasks(0, seed=0)


def test_split_mnist_tasks_without_labels():
  tasks = data.split_mnist_tasks()
  assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
  assert all(t.indices is None for t in tasks)
  y = np.array([9, 0, 1, 8, 2, 3, 3])
  np.testing.assert_array_equal(data.split_mnist_tasks(y)[1].indices, [4, 5, 6])
