"""Omniglot (Lake et al., 2015): reader, 28x28 preprocessing with a reproducible cache, protocols.

Sources, in `<data_dir>/omniglot/` (see `hypernet.data._io` for the data directory):

* `omniglot.npz`, the compact staged copy (uint8 105x105, 1 = white paper, 0 = stroke; layout in
  `shared/data/omniglot/README.md`), sha256 `38247e80...`; or
* the official `images_background.zip` and `images_evaluation.zip` of
  github.com/brendenlake/omniglot (`python/`), mode-'1' PNGs at
  `images_<split>/<alphabet>/characterNN/XXXX_YY.png`. Their sha256 and sizes are the ones
  TensorFlow Datasets lists (`url_checksums/omniglot.txt`; it lists the staged
  `images_background_small{1,2}.zip` with the same sha256 as our README), and the sizes agree
  with the published ones. `download=True` fetches the two zips from
  `https://raw.githubusercontent.com/brendenlake/omniglot/master/python/` (as torchvision does).

`load_omniglot` returns `OmniglotData`: `images [1623, 20, 28, 28]` uint8 *ink* (0 = paper,
255 = stroke; `float_images()` gives `ink / 255` as float32 in [0, 1]), with per-character
`char_id` (official 1..1623, sorted), `alphabet`, `character_number` (NN) and `split`
('background' for ids 1..964, 'evaluation' for 965..1623). Both sources give the same arrays
(checked pixel for pixel on the official small set `images_background_small1.zip`).

Preprocessing (version `PREPROCESS_VERSION`), done once and cached: each 1-bit drawing is
converted to 8-bit grayscale ('L', paper = 255) *before* resizing, then resized to 28x28 with
Pillow's `Image.BOX` filter (exact area averaging: every output pixel is the mean of the input
area it covers, 105 / 28 = 3.75 pixels a side; unlike LANCZOS it has no negative lobes, so no
ringing and no clipping), then inverted, `ink = 255 - L`. (Resizing the mode-'1' image directly
would make Pillow fall back to NEAREST silently; MAML's `resize_images.py` did that.) The result
is written atomically as a reproducible `.npz` (fixed zip timestamps: rebuilding gives the same
bytes) to `<cache_dir>/omniglot_28x28_v1_<key>.npz`, where `<key>` hashes the source files'
sha256, the size and the preprocessing version; later calls load it (0.1 s) instead of
rebuilding. The cache file also records what it was built from (`source_sha256`, `size`,
`preprocess_version`); before it is used, `load_omniglot` checks that record against the
sources and the request, and the arrays' shapes, dtype and character count (1623 for the
published sources), and rebuilds the file, with a warning naming it, when anything differs.
Measured on 2 CPU cores shared with other jobs (load average ~4.5): a build from
`omniglot.npz` takes 4-8 s, about half decompressing the npz and half resizing the 32,460
drawings; the two official zips add PNG decoding (0.6 s per 2,720 PNGs, so roughly 7 s more).
Command: `python -c "import time; from hypernet import data; t = time.perf_counter();
data.load_omniglot('../shared/data', cache_dir='/tmp/omniglot_cache');
print(time.perf_counter() - t)"` (run twice: build, then cached load).

Protocols (both return sorted character indices into `OmniglotData`, by name 'train', 'val',
'test'; `class_images` then turns characters into classes, adding rotations):

* `maml_split` (MAML / ProtoNets style; Santoro et al. 2016, Finn et al. 2017): the 1623
  characters, sorted by char id, are shuffled with `np.random.default_rng(seed).permutation`
  (seed 0 by default) across both official splits; the first 1200 are for meta-training and the
  remaining 423 for test. Validation is carved from the 1200: positions `1100:1200` of the
  permutation (`num_val=100`), so meta-training uses positions `:1100`. With `num_val=0` the
  meta-training set is all 1200 (use that for a final run after model selection). With
  rotations: 4400 / 400 / 1692 classes. (The exact characters differ from MAML's, whose
  shuffle depended on Python's `random` and directory order, and from the alphabet-based
  Vinyals lists of ProtoNets, which are not staged.)
* `official_split` (Lake et al.): train on the 964 background characters, test on the 659
  evaluation characters (20 new alphabets). Validation: `num_val_alphabets=5` whole background
  alphabets, the first 5 of `np.random.default_rng(seed).permutation(30)` over the background
  alphabets in char-id order; with seed 0 these are Asomtavruli_(Georgian), Futurama,
  Ojibwe_(Canadian_Aboriginal_Syllabics), Latin and Anglo-Saxon_Futhorc, 135 characters. So:
  829 / 135 / 659 characters, 3316 / 540 / 2636 classes with rotations.

Rotations (`class_images(..., rotations=True)`): each character gives 4 classes, the drawings
rotated counter-clockwise by 0, 90, 180 and 270 degrees (`np.rot90`); class `4 * i + k` is
character `char_index[i]` rotated by `90 * k`. They are applied within each split, so no
character (in any rotation) is in two splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from hypernet.data import _io
from hypernet.data._io import KnownFile

PREPROCESS_VERSION = 1
DRAWINGS = 20
RAW_SIZE = 105
NUM_CHARACTERS = 1623  # in the published files (both official splits)

_OFFICIAL_URL = 'https://raw.githubusercontent.com/brendenlake/omniglot/master/python/'
NPZ_FILE = KnownFile(
    'omniglot.npz', '38247e800f27f77e0d938079f0785ca8f0940a29ad58e74a36ea7cc556840919', 5_757_659)
ZIP_FILES = (
    KnownFile('images_background.zip',
              'ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640', 9_464_212,
              _OFFICIAL_URL + 'images_background.zip'),
    KnownFile('images_evaluation.zip',
              '1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee', 6_462_886,
              _OFFICIAL_URL + 'images_evaluation.zip'),
)
# The official 5-alphabet minimal background sets (readable with `read_omniglot_zip`).
SMALL_ZIP_FILES = (
    KnownFile('images_background_small1.zip',
              'f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4', 1_319_022,
              _OFFICIAL_URL + 'images_background_small1.zip'),
    KnownFile('images_background_small2.zip',
              '3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f', 1_580_917,
              _OFFICIAL_URL + 'images_background_small2.zip'),
)

_PNG = re.compile(r'^(?P<top>[^/]+)/(?P<alphabet>[^/]+)/character(?P<nn>\d+)/'
                  r'(?P<id>\d{4})_(?P<drawing>\d{2})\.png$')


@dataclasses.dataclass(frozen=True, eq=False)
class OmniglotData:
  """Omniglot characters, axis 0 sorted by official char id.

  Attributes:
    images: `[C, 20, H, W]` uint8 ink: 0 = paper, 255 = stroke (drawing j is file `XXXX_{j+1:02d}`).
    char_id: `[C]` int32 official character ids (1..1623).
    alphabet: `[C]` str, the official alphabet folder name.
    character_number: `[C]` int32, NN of the folder `characterNN` within its alphabet.
    split: `[C]` str, the official split ('background', 'evaluation'; for other zips the top
      folder name without `images_`).
  """
  images: np.ndarray
  char_id: np.ndarray
  alphabet: np.ndarray
  character_number: np.ndarray
  split: np.ndarray

  def __post_init__(self):
    c = self.images.shape[0]
    if self.images.ndim != 4 or self.images.shape[1] != DRAWINGS or self.images.dtype != np.uint8:
      raise ValueError(f'images: expected uint8 [C, {DRAWINGS}, H, W], received '
                       f'{self.images.dtype} {self.images.shape}.')
    for name in ('char_id', 'alphabet', 'character_number', 'split'):
      if getattr(self, name).shape != (c,):
        raise ValueError(f'{name}: expected shape ({c},), received {getattr(self, name).shape}.')

  @property
  def num_characters(self) -> int:
    return self.images.shape[0]

  def float_images(self) -> np.ndarray:
    """`[C, 20, H, W]` float32 ink in [0, 1]."""
    return self.images.astype(np.float32) / 255.0

  def alphabets(self) -> list[str]:
    """Alphabet names in char-id order (the order of the official README tables)."""
    _, first = np.unique(self.alphabet, return_index=True)
    return [str(self.alphabet[i]) for i in sorted(first)]

  def arrays(self) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _metadata(char_id, alphabet, character_number, split) -> dict[str, np.ndarray]:
  return {'char_id': np.asarray(char_id, np.int32), 'alphabet': np.asarray(alphabet, str),
          'character_number': np.asarray(character_number, np.int32),
          'split': np.asarray(split, str)}


def _read_npz_split(path: Path, split: str) -> OmniglotData:
  """One official split ('background' or 'evaluation') of the staged npz, at full size."""
  keys = [f'{k}_{split}' for k in ('images', 'char_id', 'alphabet_index', 'character_number',
                                   'alphabet_names')]
  d = _io.load_npz(path, keys, 'the Omniglot npz')
  images = d[keys[0]]
  with _io.corrupt_file_errors(path, 'the Omniglot npz'):
    if images.ndim != 4 or images.shape[1:] != (DRAWINGS, RAW_SIZE, RAW_SIZE):
      raise ValueError(f'{keys[0]} has shape {images.shape}, expected [C, 20, 105, 105]')
    if images.max(initial=0) > 1:
      raise ValueError(f'{keys[0]} has values above 1, expected 1 = paper, 0 = stroke')
    np.subtract(1, images, out=images)  # in place (245 MB for the background split)
    images *= 255  # [C, 20, 105, 105] ink: 0 / 255
    meta = _metadata(d[keys[1]], d[keys[4]][d[keys[2]]], d[keys[3]],
                     np.full(images.shape[0], split))
  return OmniglotData(images, **meta)


def read_omniglot_npz(path: str | os.PathLike) -> OmniglotData:
  """The staged `omniglot.npz` at full size: `images [1623, 20, 105, 105]` uint8 ink (0 or 255)."""
  return _merge([_read_npz_split(Path(path), s) for s in ('background', 'evaluation')], path)


def read_omniglot_zip(path: str | os.PathLike) -> OmniglotData:
  """A zip in the official layout (`<top>/<alphabet>/characterNN/XXXX_YY.png`), at full size.

  Every character must have drawings 01..20. `split` is `<top>` without a leading `images_`.
  Returns images as uint8 ink, `255 - L` of each PNG converted to 8-bit grayscale.
  """
  path = Path(path)
  found: dict[int, dict] = {}
  with _io.corrupt_file_errors(path, 'an Omniglot zip of PNGs'), zipfile.ZipFile(path) as zf:
    for info in zf.infolist():
      m = _PNG.match(info.filename)
      if m is None:
        continue  # folders, __MACOSX/, stray files
      cid, drawing = int(m['id']), int(m['drawing'])
      entry = found.setdefault(cid, {'alphabet': m['alphabet'], 'nn': int(m['nn']),
                                     'split': m['top'].removeprefix('images_'), 'drawings': {}})
      if (entry['alphabet'], entry['nn']) != (m['alphabet'], int(m['nn'])):
        raise _bad_zip(path, f'character id {cid:04d} appears in two folders '
                       f"({entry['alphabet']}/character{entry['nn']:02d} and "
                       f"{m['alphabet']}/character{m['nn']})")
      with Image.open(io.BytesIO(zf.read(info))) as im:
        entry['drawings'][drawing] = 255 - np.asarray(im.convert('L'))
  if not found:
    raise _bad_zip(path, 'no PNG matches <split>/<alphabet>/characterNN/XXXX_YY.png')
  ids = sorted(found)
  images = []
  for cid in ids:
    drawings = found[cid]['drawings']
    if sorted(drawings) != list(range(1, DRAWINGS + 1)):
      missing = sorted(set(range(1, DRAWINGS + 1)) - set(drawings))
      raise _bad_zip(path, f'character {cid:04d} has drawings {sorted(drawings)}, '
                     f'expected 01..{DRAWINGS} (missing {missing})')
    shapes = {d.shape for d in drawings.values()}
    if len(shapes) != 1:
      raise _bad_zip(path, f'character {cid:04d} has drawings of sizes {shapes}')
    images.append(np.stack([drawings[j] for j in range(1, DRAWINGS + 1)]))
  if len({im.shape for im in images}) != 1:
    raise _bad_zip(path, 'drawings have different sizes')
  meta = _metadata(ids, [found[c]['alphabet'] for c in ids], [found[c]['nn'] for c in ids],
                   [found[c]['split'] for c in ids])
  return OmniglotData(np.stack(images), **meta)


def _bad_zip(path: Path, reason: str) -> _io.CorruptFileError:
  return _io.CorruptFileError(f'{path}: not a valid Omniglot zip: {reason}.')


def resize(data: OmniglotData, size: int = 28) -> OmniglotData:
  """Resizes every drawing to `size x size`: ink -> 'L' (paper 255) -> BOX resize -> ink."""
  if not isinstance(size, int) or size <= 0:
    raise ValueError(f'size: expected a positive integer, received {size!r}.')
  c, d, h, w = data.images.shape
  if (h, w) == (size, size):
    return data
  out = np.empty((c, d, size, size), np.uint8)
  for i in range(c):
    for j in range(d):
      gray = Image.fromarray(255 - data.images[i, j], mode='L')
      out[i, j] = 255 - np.asarray(gray.resize((size, size), Image.Resampling.BOX))
  return dataclasses.replace(data, images=out)


def _sources(folder: Path, source: str, download: bool) -> tuple[str, list[KnownFile]]:
  """Which source to read: ('npz' | 'zip', its known files); downloads the zips if asked."""
  if source not in ('auto', 'npz', 'zip'):
    raise ValueError(f"source: expected 'auto', 'npz' or 'zip', received {source!r}.")
  if source in ('auto', 'npz') and (folder / NPZ_FILE.name).exists():
    return 'npz', [NPZ_FILE]
  if source in ('auto', 'zip'):
    if download:
      for f in ZIP_FILES:
        if not (folder / f.name).exists():
          _io.download(f, folder)
    if all((folder / f.name).exists() for f in ZIP_FILES):
      return 'zip', list(ZIP_FILES)
  options = {'auto': [[NPZ_FILE], list(ZIP_FILES)], 'npz': [[NPZ_FILE]],
             'zip': [list(ZIP_FILES)]}[source]
  hint = ('The npz has no official download; use source="zip" with download=True.'
          if source == 'npz' else
          'Or call load_omniglot(..., download=True) to fetch the official zips (needs network).')
  raise _io.missing_error('Omniglot', folder, options, hint,
                          'omniglot' if source != 'npz' else None)


def cache_path(cache_dir: Path, source_hashes: Sequence[str], size: int) -> Path:
  """The cache file for these sources, this size and `PREPROCESS_VERSION`."""
  key = hashlib.sha256(f'omniglot v{PREPROCESS_VERSION} box {size} {sorted(source_hashes)}'
                       .encode()).hexdigest()[:16]
  return cache_dir / f'omniglot_{size}x{size}_v{PREPROCESS_VERSION}_{key}.npz'


def _merge(parts: Sequence[OmniglotData], where) -> OmniglotData:
  """Concatenates parts (e.g. the two official splits), sorted by char id."""
  merged = {k: np.concatenate([p.arrays()[k] for p in parts]) for k in parts[0].arrays()}
  order = np.argsort(merged['char_id'], kind='stable')
  if len(np.unique(merged['char_id'])) != len(order):
    raise _io.CorruptFileError(f'{where}: the same character id occurs in two sources.')
  if np.array_equal(order, np.arange(len(order))):
    return OmniglotData(**merged)
  return OmniglotData(**{k: v[order] for k, v in merged.items()})


def _build(kind: str, paths: Sequence[Path], size: int) -> OmniglotData:
  """Reads and resizes the sources one part at a time (a full-size part is freed once resized)."""
  if kind == 'npz':
    parts = [resize(_read_npz_split(paths[0], s), size) for s in ('background', 'evaluation')]
  else:
    parts = [resize(read_omniglot_zip(p), size) for p in paths]
  return _merge(parts, [str(p) for p in paths])


def load_omniglot(data_dir: str | os.PathLike | None = None, *,
                  cache_dir: str | os.PathLike | None = None, size: int = 28, source: str = 'auto',
                  download: bool = False, verify: bool = True) -> OmniglotData:
  """Omniglot at `size x size` (default 28), built once and then read from the cache.

  Args:
    data_dir: the data directory; files are read from `<data_dir>/omniglot/`.
    cache_dir: where the resized arrays are cached (see `hypernet.data._io.cache_dir`).
    size: output side length.
    source: 'npz' (`omniglot.npz`), 'zip' (`images_background.zip` + `images_evaluation.zip`),
      or 'auto' (the npz if present, else the zips).
    download: fetch the official zips if no source is present (never done otherwise).
    verify: check the sources' sha256 against the published values (turn off only to read a
      deliberately different file in the same layout).

  Returns:
    `OmniglotData` with `images [1623, 20, size, size]` uint8 ink.

  Raises:
    MissingDataError: no source; the message lists the files to place and where.
    ChecksumError: a source's sha256 differs from the published one.
    CorruptFileError: a source cannot be parsed (nothing is written to the cache).
  """
  folder = _io.data_dir(data_dir) / 'omniglot'
  kind, known = _sources(folder, source, download)
  paths = [folder / f.name for f in known]
  hashes = [_io.verify(p, f) if verify else _io.sha256sum(p) for p, f in zip(paths, known)]
  cached = cache_path(_io.cache_dir(cache_dir), hashes, size)
  if cached.exists():
    data, problem = _read_cache(cached, hashes, size)
    if data is not None:
      return data
    warnings.warn(f'{cached}: {problem}; rebuilding it.', stacklevel=2)
  data = _build(kind, paths, size)
  _io.save_npz(cached, {**data.arrays(), **_cache_record(hashes, size)})
  return data


_CACHE_RECORD = ('source_sha256', 'size', 'preprocess_version')


def _cache_record(source_hashes: Sequence[str], size: int) -> dict[str, np.ndarray]:
  return {'source_sha256': np.array(sorted(source_hashes)), 'size': np.array([size], np.int64),
          'preprocess_version': np.array([PREPROCESS_VERSION], np.int64)}


def _read_cache(path: Path, source_hashes: Sequence[str],
                size: int) -> tuple[OmniglotData | None, str]:
  """The cached arrays if the file is intact and was built from these sources at this size;
  else `(None, what is wrong)`."""
  fields = [f.name for f in dataclasses.fields(OmniglotData)]
  try:
    d = _io.load_npz(path, fields + list(_CACHE_RECORD), 'an Omniglot cache file')
  except _io.CorruptFileError as e:
    return None, f'unreadable cache ({e})'
  record = {'source_sha256': sorted(source_hashes), 'size': [size],
            'preprocess_version': [PREPROCESS_VERSION]}
  for key, want in record.items():
    got = np.ravel(d[key]).tolist()
    if got != want:
      return None, f'a cache built for {key} {got}, expected {want}'
  images = d['images']
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (DRAWINGS, size, size):
    return None, (f'cached images are {images.dtype} {images.shape}, expected uint8 '
                  f'[C, {DRAWINGS}, {size}, {size}]')
  published = {f.sha256 for f in (NPZ_FILE, *ZIP_FILES)}
  if set(source_hashes) <= published and images.shape[0] != NUM_CHARACTERS:
    return None, (f'the cache holds {images.shape[0]} characters, expected {NUM_CHARACTERS} '
                  'for the published sources')
  try:
    data = OmniglotData(**{k: d[k] for k in fields})
  except ValueError as e:
    return None, f'inconsistent cached arrays ({e})'
  if np.any(np.diff(data.char_id) <= 0):
    return None, 'cached character ids are not sorted and unique'
  return data, ''


# ---------------------------------------------------------------------------------------------
# Protocols.


def maml_split(data: OmniglotData, *, seed: int = 0, num_train: int = 1200,
               num_val: int = 100) -> dict[str, np.ndarray]:
  """MAML-style character split across both official splits (see the module docstring).

  Returns:
    dict 'train' / 'val' / 'test' -> sorted character indices into `data`
    (`num_train - num_val`, `num_val`, `C - num_train` of them).
  """
  c = data.num_characters
  if not isinstance(num_train, int) or not 0 < num_train < c:
    raise ValueError(f'num_train: expected an integer in [1, {c - 1}] (the data has {c} '
                     f'characters), received {num_train!r}.')
  if not isinstance(num_val, int) or not 0 <= num_val < num_train:
    raise ValueError(f'num_val: expected an integer in [0, {num_train - 1}], received {num_val!r}.')
  by_id = np.argsort(data.char_id, kind='stable')
  perm = by_id[np.random.default_rng(seed).permutation(c)]
  n_tr = num_train - num_val
  return {'train': np.sort(perm[:n_tr]), 'val': np.sort(perm[n_tr:num_train]),
          'test': np.sort(perm[num_train:])}


def official_split(data: OmniglotData, *, seed: int = 0,
                   num_val_alphabets: int = 5) -> dict[str, np.ndarray]:
  """Background (train, minus validation alphabets) / evaluation (test) split.

  Returns:
    dict 'train' / 'val' / 'test' -> sorted character indices into `data`.
  """
  background = data.split == 'background'
  if not background.any() or not (data.split == 'evaluation').any():
    raise ValueError(f"data: expected characters of both official splits, received splits "
                     f'{sorted(set(data.split.tolist()))}.')
  names = [a for a in data.alphabets() if a in set(data.alphabet[background].tolist())]
  if not isinstance(num_val_alphabets, int) or not 0 <= num_val_alphabets < len(names):
    raise ValueError(f'num_val_alphabets: expected an integer in [0, {len(names) - 1}], received '
                     f'{num_val_alphabets!r}.')
  pick = np.random.default_rng(seed).permutation(len(names))[:num_val_alphabets]
  val = background & np.isin(data.alphabet, [names[i] for i in pick])
  return {'train': np.flatnonzero(background & ~val), 'val': np.flatnonzero(val),
          'test': np.flatnonzero(data.split == 'evaluation')}


def class_images(data: OmniglotData, char_index: np.ndarray, *,
                 rotations: bool = True) -> np.ndarray:
  """Classes from characters: `[len(char_index) * (4 if rotations else 1), 20, H, W]` uint8.

  With rotations, class `4 * i + k` is character `char_index[i]` rotated by `90 * k` degrees
  counter-clockwise.
  """
  images = data.images[np.asarray(char_index)]  # [n, 20, H, W]
  if not rotations:
    return images
  rotated = np.stack([np.rot90(images, k, axes=(-2, -1)) for k in range(4)], axis=1)
  return rotated.reshape(-1, *images.shape[1:])  # [n * 4, 20, H, W]
