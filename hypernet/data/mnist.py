"""MNIST, Fashion-MNIST (IDX `.gz`), MNIST-1D (`.npz`/`.pkl`) and continual-learning task helpers.

Files, in `<data_dir>/<folder>/` (see `hypernet.data._io` for the data directory):

* `mnist/` and `fashion-mnist/`: the four original files `{train,t10k}-{images-idx3,labels-idx1}
  -ubyte.gz`. Their sha256 are in `MNIST_FILES` / `FASHION_MNIST_FILES` (the values of
  `shared/data/*/README.md`, which equal TensorFlow Datasets' `url_checksums`).
  `download=True` fetches them from:
  - MNIST: `https://storage.googleapis.com/cvdf-datasets/mnist/`, the Common Visual Data
    Foundation mirror that TensorFlow's MNIST tutorial reader and TensorFlow Datasets use. The
    original `http://yann.lecun.com/exdb/mnist/` often refuses downloads now, and torchvision
    tries its own S3 copy first; the files are identical (same sha256), which is checked anyway.
  - Fashion-MNIST: `http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/`, the address in
    Zalando's README (plain http; integrity comes from the sha256 check).
* `mnist1d/`: `mnist1d_data.npz` (the staged conversion; keys `x [4000, 40]`, `y`, `x_test
  [1000, 40]`, `y_test`, `t [40]`, `templates_x [10, 12]`, `templates_t [12]`, `templates_y [10]`)
  or the upstream `mnist1d_data.pkl` (github.com/greydanus/mnist1d, pinned commit), which is
  what `download=True` fetches; the pickle is only read after its sha256 matches, and then
  with an unpickler that only builds numpy arrays. Without network, `generate_mnist1d` (also
  `python -m hypernet.data.fetch mnist1d`) regenerates the same data offline with the PyPI
  package `mnist1d` into `mnist1d_generated.npz` (same keys). Its bytes cannot carry the
  published sha256 (the signals differ from the canonical ones by float rounding, below
  1e-15), so it is verified by content instead (`verify_mnist1d_arrays`): the arrays the
  generator reproduces bit for bit (labels, time axis, templates) by sha256, the two signal
  arrays by four weighted sums each, to 1e-12 of their scale.

IDX format (big-endian): magic `0x0000 <dtype code> <ndim>` (images `0x00000803`, labels
`0x00000801`: uint8 with 3 or 1 dims), then `ndim` int32 sizes, then the data. `read_idx` checks
the magic number, the dimensions and that the payload has exactly the announced size.

Continual learning: `permuted_mnist_tasks` (one fixed pixel permutation per task, from
`np.random.default_rng(seed)`; optionally the identity for the first task) with
`permute_pixels`, and `split_mnist_tasks` (5 tasks of digit pairs 0/1, 2/3, 4/5, 6/7, 8/9).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import random
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hypernet.data import _io
from hypernet.data._io import KnownFile

try:
  from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 1.26
  from numpy.core import multiarray as _multiarray

MNIST_URL = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
FASHION_MNIST_URL = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'
MNIST1D_URL = ('https://github.com/greydanus/mnist1d/raw/'
               '7878d96082abd200c546a07a4101fa90b30fdf7e/mnist1d_data.pkl')

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def _pair(url: str, split: str, sizes: tuple[int, int], shas: tuple[str, str]):
  prefix = 'train' if split == 'train' else 't10k'
  names = (f'{prefix}-images-idx3-ubyte.gz', f'{prefix}-labels-idx1-ubyte.gz')
  return tuple(KnownFile(n, h, s, url + n) for n, h, s in zip(names, shas, sizes))


MNIST_FILES = {
    'train': _pair(MNIST_URL, 'train', (9_912_422, 28_881), (
        '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609',
        '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c')),
    'test': _pair(MNIST_URL, 'test', (1_648_877, 4_542), (
        '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6',
        'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6')),
}
FASHION_MNIST_FILES = {
    'train': _pair(FASHION_MNIST_URL, 'train', (26_421_880, 29_515), (
        '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84',
        'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845')),
    'test': _pair(FASHION_MNIST_URL, 'test', (4_422_102, 5_148), (
        '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073',
        '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5')),
}
MNIST1D_NPZ = KnownFile(
    'mnist1d_data.npz', 'b1adc2b5206f50ab6f7dea5e16da94cabd5294c20563a6f631ab3615a9cb2e10',
    1_544_892)
MNIST1D_PKL = KnownFile(
    'mnist1d_data.pkl', 'e95257676e9fb04568e46dda007da22cc8664ccba1451456afde55d7f6dd6aa5',
    1_642_012, MNIST1D_URL)
MNIST1D_KEYS = ('x', 'y', 'x_test', 'y_test', 't', 'templates_x', 'templates_t', 'templates_y')
# Written by `generate_mnist1d`; verified by content (`verify_mnist1d_arrays`), not by bytes.
MNIST1D_GENERATED = 'mnist1d_generated.npz'
# sha256 of `_canonical_bytes(a)` of the canonical arrays that the generator reproduces exactly.
_MNIST1D_EXACT = {
    'y': '57920b9314eacbbf8866ed9ee458fc97006c7f4c32979191cfc149aab02548bf',
    'y_test': '16ca7bc6f59d11f565bb8b967ed7b17c63be57e599d85459f6e792bfeea949e5',
    't': '84b01f30ff6552a6923bd729666ae3c5b087cfd702a9a08843b165078bfc05b9',
    'templates_x': '4d5e8fac22c50930e019fac745763b8b3e07b5a981d430a14948ebfc4a21482a',
    'templates_t': '8a94bedaabf4c4750fcb209497ca62982e7212fe7788cd373d6bbcb9c80b7419',
    'templates_y': '3b7a53b291f7eaf55b9426edb908adb8fd2ff33d14b4cbde3bcf7ad1d7baf297',
}
# `_signal_sums(a)` of the canonical signals (shape, sums); equal up to rounding when generated.
_MNIST1D_SIGNALS = {
    'x': ((4000, 40), (-51.78746787509559, 159248.2538653486, 103.25562722217227,
                       118338.29510719894)),
    'x_test': ((1000, 40), (51.78746787509186, 40751.74613465136, -17.076472656858925,
                            29977.877540866408)),
}

_IDX_DTYPES = {0x08: np.dtype('u1'), 0x09: np.dtype('i1'), 0x0B: np.dtype('>i2'),
               0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}


def read_idx(path: str | os.PathLike, *, expected_magic: int | None = None) -> np.ndarray:
  """Parses an IDX file (gzip-compressed if its name ends in `.gz`) into a native-endian array.

  Raises:
    CorruptFileError: truncated or damaged gzip, a wrong magic number, or a payload whose size
      differs from the one the header announces.
  """
  path = Path(path)
  with _io.corrupt_file_errors(path, 'a gzip-compressed IDX file' if path.suffix == '.gz'
                               else 'an IDX file'):
    with (gzip.open if path.suffix == '.gz' else open)(path, 'rb') as f:
      raw = f.read()
  if len(raw) < 4:
    raise _io.CorruptFileError(f'{path}: IDX header truncated ({len(raw)} bytes, expected >= 4).')
  (magic,) = struct.unpack('>I', raw[:4])
  code, ndim = raw[2], raw[3]
  if raw[:2] != b'\0\0' or code not in _IDX_DTYPES or (expected_magic is not None
                                                        and magic != expected_magic):
    want = f'0x{expected_magic:08x}' if expected_magic is not None else '0x0000TTNN'
    raise _io.CorruptFileError(f'{path}: not the expected IDX file: magic number 0x{magic:08x}, '
                               f'expected {want}. Is this the right (decompressed) file?')
  if len(raw) < 4 + 4 * ndim:
    raise _io.CorruptFileError(f'{path}: IDX header truncated: {ndim} dimensions announced.')
  dims = struct.unpack(f'>{ndim}I', raw[4:4 + 4 * ndim])
  dtype = _IDX_DTYPES[code]
  payload = memoryview(raw)[4 + 4 * ndim:]
  expected = int(np.prod(dims)) * dtype.itemsize
  if len(payload) != expected:
    raise _io.CorruptFileError(f'{path}: IDX payload has {len(payload):,} bytes, expected '
                               f'{expected:,} for shape {dims} of {dtype}; the file is truncated '
                               'or damaged.')
  return np.frombuffer(payload, dtype).reshape(dims).astype(dtype.newbyteorder('='))


def _fetch(dataset: str, folder: Path, files: tuple[KnownFile, ...], download: bool) -> list[Path]:
  missing = [f for f in files if not (folder / f.name).exists()]
  if missing and download:
    for f in missing:
      _io.download(f, folder)
  elif missing:
    raise _io.missing_error(dataset, folder, [files], 'Or call the loader with download=True to '
                            'fetch them from the official mirror (needs network).',
                            folder.name.replace('-', '_'))
  return [folder / f.name for f in files]


def _load_idx(dataset: str, folder_name: str, table: dict, split: str, data_dir, download: bool,
              verify: bool) -> tuple[np.ndarray, np.ndarray]:
  if split not in table:
    raise ValueError(f"split: expected 'train' or 'test', received {split!r}.")
  folder = _io.data_dir(data_dir) / folder_name
  paths = _fetch(dataset, folder, table[split], download)
  if verify:
    for p, known in zip(paths, table[split]):
      _io.verify(p, known)
  x = read_idx(paths[0], expected_magic=IMAGES_MAGIC)
  y = read_idx(paths[1], expected_magic=LABELS_MAGIC)
  if x.shape[1:] != (28, 28) or x.shape[0] != y.shape[0]:
    raise _io.CorruptFileError(f'{folder}: images {x.shape} and labels {y.shape} do not match '
                               '([N, 28, 28] and [N]).')
  return x, y


def load_mnist(split: str = 'train', data_dir: str | os.PathLike | None = None, *,
               download: bool = False, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """MNIST `split` ('train': 60,000, 'test': 10,000) from `<data_dir>/mnist/`.

  Returns:
    `(images [N, 28, 28] uint8 (0 = background, 255 = ink), labels [N] uint8 in 0..9)`.

  Raises:
    MissingDataError (lists the files and where to place them), ChecksumError, CorruptFileError.
  """
  return _load_idx('MNIST', 'mnist', MNIST_FILES, split, data_dir, download, verify)


def load_fashion_mnist(split: str = 'train', data_dir: str | os.PathLike | None = None, *,
                       download: bool = False, verify: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Fashion-MNIST `split` from `<data_dir>/fashion-mnist/`; same contract as `load_mnist`."""
  return _load_idx('Fashion-MNIST', 'fashion-mnist', FASHION_MNIST_FILES, split, data_dir,
                   download, verify)


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Builds numpy arrays, dtypes and dicts; any other global is refused."""
  _ALLOWED = {'_reconstruct': _multiarray._reconstruct, 'scalar': _multiarray.scalar,
              'ndarray': np.ndarray, 'dtype': np.dtype}

  def find_class(self, module: str, name: str):
    if module in ('numpy', 'numpy.core.multiarray', 'numpy._core.multiarray') and (
        name in self._ALLOWED):
      return self._ALLOWED[name]
    raise pickle.UnpicklingError(f'global {module}.{name} is not allowed in MNIST-1D data')


def read_mnist1d_pkl(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The upstream `mnist1d_data.pkl`, as the `MNIST1D_KEYS` arrays (numpy-only unpickling)."""
  path = Path(path)
  with _io.corrupt_file_errors(path, 'the MNIST-1D pickle'), open(path, 'rb') as f:
    try:
      d = _NumpyOnlyUnpickler(f).load()
    except pickle.UnpicklingError as e:
      raise ValueError(str(e)) from e
    out = {k: d[k] for k in ('x', 'y', 'x_test', 'y_test', 't')}
    out.update({f'templates_{k}': d['templates'][k] for k in ('x', 't', 'y')})
  return {k: np.asarray(out[k]) for k in MNIST1D_KEYS}


def load_mnist1d(data_dir: str | os.PathLike | None = None, *, download: bool = False,
                 verify: bool = True) -> dict[str, np.ndarray]:
  """MNIST-1D from `<data_dir>/mnist1d/`: `mnist1d_data.npz`, else `mnist1d_data.pkl`, else
  `mnist1d_generated.npz` (`generate_mnist1d`), the first one present.

  With `verify`, the npz and the pickle are checked by sha256, the generated file by content
  (`verify_mnist1d_arrays`).

  Returns:
    dict with `x [4000, 40]` float64, `y [4000]` int64, `x_test [1000, 40]`, `y_test [1000]`,
    `t [40]`, `templates_x [10, 12]`, `templates_t [12]`, `templates_y [10]`.
  """
  folder = _io.data_dir(data_dir) / 'mnist1d'
  known = None
  if (folder / MNIST1D_NPZ.name).exists():
    path, known = folder / MNIST1D_NPZ.name, MNIST1D_NPZ
  elif (folder / MNIST1D_PKL.name).exists():
    path, known = folder / MNIST1D_PKL.name, MNIST1D_PKL
  elif (folder / MNIST1D_GENERATED).exists():
    path = folder / MNIST1D_GENERATED
  elif download:
    path, known = _io.download(MNIST1D_PKL, folder), MNIST1D_PKL
  else:
    raise _io.missing_error(
        'MNIST-1D', folder, [[MNIST1D_NPZ], [MNIST1D_PKL]],
        f'Or call load_mnist1d(..., download=True) to fetch the pickle, or run `python -m '
        f'hypernet.data.fetch mnist1d --dir {folder.parent}`, which downloads it, or without '
        f'network regenerates it as {folder / MNIST1D_GENERATED} (needs `pip install mnist1d`).')
  if verify and known is not None:
    _io.verify(path, known)
  d = (read_mnist1d_pkl(path) if path.suffix == '.pkl'
       else _io.load_npz(path, MNIST1D_KEYS, 'the MNIST-1D npz'))
  n, n_test = len(d['y']), len(d['y_test'])
  if d['x'].shape != (n, 40) or d['x_test'].shape != (n_test, 40) or d['t'].shape != (40,):
    raise _io.CorruptFileError(f'{path}: unexpected shapes x {d["x"].shape}, x_test '
                               f'{d["x_test"].shape}, t {d["t"].shape} (expected [N, 40], [40]).')
  if verify and known is None:
    verify_mnist1d_arrays(d, path)
  return d


def _canonical_bytes(a: np.ndarray) -> bytes:
  a = np.asarray(a)
  a = a.astype('<i8') if a.dtype.kind in 'iub' else a.astype('<f8')
  return repr(a.shape).encode() + a.tobytes()


def _signal_sums(a: np.ndarray) -> np.ndarray:
  """Four weighted sums of `a`: plain, squares, a fixed cosine weighting, absolute values."""
  a = np.asarray(a, np.float64).ravel()
  w = np.cos(0.7 * np.arange(a.size))
  return np.array([a.sum(), a @ a, a @ w, np.abs(a).sum()])


def verify_mnist1d_arrays(d: dict[str, np.ndarray], path: str | os.PathLike) -> None:
  """Checks that `d` holds the canonical MNIST-1D (up to float rounding in the signals).

  Labels, time axis and templates must equal the canonical arrays exactly (sha256); `x` and
  `x_test` must have their shapes, and four weighted sums each within 1e-12 of the sum of
  absolute values (float rounding moves them by about 1e-15 of it).

  Raises:
    ChecksumError: naming `path` and the first array that differs.
  """
  for key, want in _MNIST1D_EXACT.items():
    got = hashlib.sha256(_canonical_bytes(d[key])).hexdigest()
    if got != want:
      raise _io.ChecksumError(
          f'{path}: array {key!r} differs from the canonical MNIST-1D (sha256 of its values '
          f'{got}, expected {want}). Regenerate it with `python -m hypernet.data.fetch mnist1d` '
          '(the PyPI package mnist1d with its default arguments), or pass verify=False to read '
          'a deliberately different dataset.')
  for key, (shape, want) in _MNIST1D_SIGNALS.items():
    got = _signal_sums(d[key]) if d[key].shape == shape else None
    if got is None or not np.allclose(got, want, rtol=0, atol=1e-12 * want[3]):
      received = f'shape {d[key].shape}' if got is None else f'sums {got.tolist()}'
      raise _io.ChecksumError(
          f'{path}: array {key!r} differs from the canonical MNIST-1D: expected shape {shape} '
          f'and weighted sums {list(want)}, received {received}. Regenerate it with `python -m '
          'hypernet.data.fetch mnist1d`, or pass verify=False to read a deliberately different '
          'dataset.')


def generate_mnist1d(data_dir: str | os.PathLike | None = None) -> Path:
  """Regenerates MNIST-1D offline into `<data_dir>/mnist1d/mnist1d_generated.npz`.

  Runs `mnist1d.data.make_dataset(get_dataset_args())` of the PyPI package `mnist1d` (pure
  numpy and scipy, no network), which reproduces the canonical data (labels, time axis and
  templates exactly, the signals up to float rounding), checks it with
  `verify_mnist1d_arrays`, and writes it atomically with the keys of the staged npz. The
  package seeds Python's and NumPy's global generators; both are restored afterwards.

  Returns:
    the path written.

  Raises:
    ModuleNotFoundError: the package is not installed (`pip install mnist1d`).
    ChecksumError: this version of the package does not reproduce the canonical data.
  """
  try:
    from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    raise ModuleNotFoundError(
        f'generate_mnist1d needs the PyPI package mnist1d ({e}); `pip install mnist1d`, or '
        f'place {MNIST1D_NPZ.describe()} or {MNIST1D_PKL.describe()} by hand.') from e
  py_state, np_state = random.getstate(), np.random.get_state()
  try:
    made = make_dataset(get_dataset_args())
  finally:
    random.setstate(py_state)
    np.random.set_state(np_state)
  arrays = {k: np.asarray(made[k]) for k in ('x', 'y', 'x_test', 'y_test', 't')}
  arrays.update({f'templates_{k}': np.asarray(made['templates'][k]) for k in ('x', 't', 'y')})
  arrays = {k: arrays[k] for k in MNIST1D_KEYS}
  path = _io.data_dir(data_dir) / 'mnist1d' / MNIST1D_GENERATED
  verify_mnist1d_arrays(arrays, f'{path} (generated by mnist1d.data.make_dataset)')
  _io.save_npz(path, arrays)
  return path


# ---------------------------------------------------------------------------------------------
# Continual-learning benchmarks.


def permuted_mnist_tasks(num_tasks: int, seed: int, *, first_identity: bool = False,
                         num_pixels: int = 784) -> np.ndarray:
  """Fixed pixel permutations, one per task: `[num_tasks, num_pixels]` int64.

  Task `t` uses the `t`-th permutation drawn from `np.random.default_rng(seed)`; with
  `first_identity`, task 0 is the identity instead (plain MNIST) and the others are unchanged.
  """
  if not isinstance(num_tasks, int) or num_tasks <= 0:
    raise ValueError(f'num_tasks: expected a positive integer, received {num_tasks!r}.')
  rng = np.random.default_rng(seed)
  perms = np.stack([rng.permutation(num_pixels) for _ in range(num_tasks)])  # [T, P]
  if first_identity:
    perms[0] = np.arange(num_pixels)
  return perms


def permute_pixels(x, perm):
  """`x [..., H, W]` with its `H * W` pixels reordered by `perm [H * W]` (numpy or jax arrays)."""
  if perm.shape != (x.shape[-2] * x.shape[-1],):
    raise ValueError(f'perm: expected shape ({x.shape[-2] * x.shape[-1]},) for images '
                     f'{tuple(x.shape[-2:])}, received {tuple(perm.shape)}.')
  flat = x.reshape(*x.shape[:-2], -1)  # [..., H * W]
  return flat[..., perm].reshape(x.shape)


SPLIT_MNIST_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


class SplitTask(NamedTuple):
  """One Split-MNIST task: its two digits and, given labels, the indices of their examples."""
  classes: tuple[int, int]
  indices: np.ndarray | None


def split_mnist_tasks(labels: np.ndarray | None = None,
                      pairs: tuple[tuple[int, int], ...] = SPLIT_MNIST_PAIRS) -> list[SplitTask]:
  """Split-MNIST: 5 tasks of digit pairs 0/1, 2/3, 4/5, 6/7, 8/9.

  Args:
    labels: `[N]` labels; if given, each task carries the sorted indices of its examples.
    pairs: the digits of each task.

  Returns:
    one `SplitTask(classes, indices)` per pair (`indices` is None without `labels`). Within a
    task the binary target is `labels[indices] == classes[1]`.
  """
  y = None if labels is None else np.asarray(labels)
  return [SplitTask(tuple(p), None if y is None else np.flatnonzero(np.isin(y, p)))
          for p in pairs]
