"""Omniglot: readers (real files and generated official-layout zips), cache, protocols, episodes.

The real data are read where `data_sources.staged_root` finds them (`$HYPERNET_DATA_DIR` or
`../shared/data`); everything else runs on small files generated here in the official formats.
"""

import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from hypernet import data
from hypernet.data import _io
from hypernet.data import omniglot as om
from hypernet.tasks.omniglot import OmniglotEpisodes, episodes_for_protocol

import data_sources
from data_sources import tiny_omniglot_zips as _tiny_zips

ROOT = data_sources.staged_root('omniglot', 'omniglot.npz')  # the data directory, or None
REAL = ROOT is not None
needs_real = pytest.mark.skipif(not REAL, reason=data_sources.not_staged(
    'Omniglot', 'omniglot', 'its 1623 characters cannot be generated'))
SMALL = ROOT / 'omniglot' / 'original' if REAL else None  # the official small sets, if staged


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
  """(data_dir with omniglot/images_*.zip, ground truth)."""
  root = tmp_path_factory.mktemp('tiny_omniglot')
  return root, _tiny_zips(root / 'omniglot')


@pytest.fixture(scope='session')
def full(tmp_path_factory):
  """The real Omniglot at 28x28, built once per session into a temporary cache (~10 s)."""
  if not REAL:
    pytest.skip(data_sources.not_staged('Omniglot', 'omniglot'))
  cache = tmp_path_factory.mktemp('omniglot_cache')
  return data.load_omniglot(ROOT, cache_dir=cache), cache


def _files(folder: Path) -> list[str]:
  return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# Real data.


@needs_real
def test_real_data_counts_checksums_and_layout(full):
  d, cache = full
  assert d.images.shape == (1623, 20, 28, 28) and d.images.dtype == np.uint8
  np.testing.assert_array_equal(d.char_id, np.arange(1, 1624))
  assert (d.split == 'background').sum() == 964 and (d.split == 'evaluation').sum() == 659
  assert len(set(d.alphabet[d.split == 'background'])) == 30
  assert len(set(d.alphabet[d.split == 'evaluation'])) == 20
  counts = {a: int((d.alphabet == a).sum()) for a in ('Arcadian', 'Tifinagh', 'ULOG', 'Braille')}
  assert counts == {'Arcadian': 26, 'Tifinagh': 55, 'ULOG': 26, 'Braille': 26}
  # README: ink covers ~7.8% / 8.4% of pixels; area averaging keeps the mean.
  ink = d.float_images()
  assert ink.dtype == np.float32 and 0.0 <= ink.min() and ink.max() == 1.0
  assert 0.07 < ink[d.split == 'background'].mean() < 0.09
  # The one exact duplicate of the source: Braille character01, drawings 03 and 19.
  c = np.flatnonzero((d.alphabet == 'Braille') & (d.character_number == 1))[0]
  np.testing.assert_array_equal(d.images[c, 2], d.images[c, 18])
  assert not np.array_equal(d.images[c, 2], d.images[c, 3])
  assert len(list(cache.glob('omniglot_28x28_v1_*.npz'))) == 1
  for known in om.SMALL_ZIP_FILES:  # the staged official small sets pass verification
    if (SMALL / known.name).exists():
      _io.verify(SMALL / known.name, known)


@needs_real
def test_official_zip_reader_matches_npz(full):
  d, _ = full
  if not (SMALL / 'images_background_small1.zip').exists():
    pytest.skip(f'the official images_background_small1.zip is not staged in {SMALL}')
  small = om.read_omniglot_zip(SMALL / 'images_background_small1.zip')
  assert small.alphabets() == ['Balinese', 'Early_Aramaic', 'Greek', 'Korean', 'Latin']
  assert small.images.shape == (136, 20, 105, 105) and set(small.images.ravel()) == {0, 255}
  idx = small.char_id - 1
  np.testing.assert_array_equal(small.alphabet, d.alphabet[idx])
  np.testing.assert_array_equal(small.character_number, d.character_number[idx])
  np.testing.assert_array_equal(om.resize(small).images, d.images[idx])


@needs_real
def test_cache_is_reused(full, monkeypatch):
  d, cache = full
  [path] = cache.glob('*.npz')
  mtime = path.stat().st_mtime_ns

  def no_rebuild(*args):
    raise AssertionError('rebuilt although the cache exists')

  monkeypatch.setattr(om, '_build', no_rebuild)
  again = data.load_omniglot(ROOT, cache_dir=cache)
  np.testing.assert_array_equal(again.images, d.images)
  np.testing.assert_array_equal(again.alphabet, d.alphabet)
  assert path.stat().st_mtime_ns == mtime


@needs_real
def test_protocol_sizes_disjoint_and_seeded(full):
  d, _ = full
  s = data.maml_split(d)
  assert {k: len(v) for k, v in s.items()} == {'train': 1100, 'val': 100, 'test': 423}
  assert len(set(np.concatenate(list(s.values())))) == 1623
  assert not set(s['train']) & set(s['test']) and not set(s['val']) & set(s['test'])
  assert set(d.split[s['test']]) == {'background', 'evaluation'}  # drawn across both
  np.testing.assert_array_equal(data.maml_split(d)['test'], s['test'])
  assert not np.array_equal(data.maml_split(d, seed=1)['test'], s['test'])
  full_train = data.maml_split(d, num_val=0)
  assert len(full_train['train']) == 1200 and len(full_train['val']) == 0
  np.testing.assert_array_equal(full_train['test'], s['test'])

  o = data.official_split(d)
  assert {k: len(v) for k, v in o.items()} == {'train': 829, 'val': 135, 'test': 659}
  assert set(d.alphabet[o['val']]) == {'Asomtavruli_(Georgian)', 'Futurama', 'Latin',
                                       'Ojibwe_(Canadian_Aboriginal_Syllabics)',
                                       'Anglo-Saxon_Futhorc'}
  assert set(d.split[o['test']]) == {'evaluation'}
  assert not set(d.alphabet[o['train']]) & set(d.alphabet[o['val']])

  fams = episodes_for_protocol(d, 'maml')
  assert {k: f.num_classes for k, f in fams.items()} == {'train': 4400, 'val': 400, 'test': 1692}
  t = fams['test'].sample_batch(jax.random.key(0), 4, 5, 1, 15)
  assert t.x_query.shape == (4, 75, 28, 28, 1) and t.x_query.dtype == jnp.float32
  assert 0.05 < float(t.x_query.mean()) < 0.12


# ---------------------------------------------------------------------------------------------
# Generated files in the official layout.


def test_tiny_official_zip_is_read(tiny):
  root, truth = tiny
  d = om.read_omniglot_zip(root / 'omniglot' / 'images_background.zip')
  assert d.images.shape == (5, 20, 105, 105) and d.images.dtype == np.uint8
  np.testing.assert_array_equal(d.char_id, [1, 2, 3, 4, 5])
  assert d.alphabet.tolist() == ['Alpha'] * 3 + ['Beta_(Test)'] * 2
  assert d.character_number.tolist() == [1, 2, 3, 1, 2]
  assert set(d.split) == {'background'}
  for i, cid in enumerate(d.char_id):
    np.testing.assert_array_equal(d.images[i], np.where(truth[cid][3], 0, 255))


def test_npz_and_zip_readers_agree(tiny, tmp_path):
  """A generated npz in the staged layout (1 = paper) reads as the same ink as the zips."""
  root, truth = tiny
  arrays = {}
  for split, first in (('background', 1), ('evaluation', 6)):
    ids = [c for c in truth if truth[c][0] == split]
    names = list(dict.fromkeys(truth[c][1] for c in ids))
    arrays |= {
        f'images_{split}': np.stack([truth[c][3] for c in ids]).astype(np.uint8),
        f'char_id_{split}': np.array(ids, np.int16),
        f'alphabet_index_{split}': np.array([names.index(truth[c][1]) for c in ids], np.int16),
        f'character_number_{split}': np.array([truth[c][2] for c in ids], np.int16),
        f'alphabet_names_{split}': np.array(names)}
  np.savez_compressed(tmp_path / 'omniglot.npz', **arrays)
  from_npz = om.read_omniglot_npz(tmp_path / 'omniglot.npz')
  from_zip = om._merge([om.read_omniglot_zip(root / 'omniglot' / f.name) for f in om.ZIP_FILES],
                       'tiny zips')
  for k, v in from_zip.arrays().items():
    np.testing.assert_array_equal(getattr(from_npz, k), v, err_msg=k)


def test_tiny_build_cache_reproducible_and_reused(tiny, tmp_path, monkeypatch):
  root, _ = tiny
  c1, c2 = tmp_path / 'c1', tmp_path / 'c2'
  d1 = data.load_omniglot(root, cache_dir=c1, verify=False)
  assert d1.images.shape == (7, 20, 28, 28) and d1.split.tolist() == ['background'] * 5 + [
      'evaluation'] * 2
  # 1-bit -> 'L' -> BOX: antialiased grey levels, not only 0/255 (NEAREST would give only those).
  assert len(np.unique(d1.images)) > 10
  [f1] = c1.iterdir()
  assert f1.name.startswith('omniglot_28x28_v1_')
  d2 = data.load_omniglot(root, cache_dir=c2, verify=False)
  [f2] = c2.iterdir()
  assert f1.name == f2.name and f1.read_bytes() == f2.read_bytes()  # reproducible bytes
  for k, v in d1.arrays().items():
    np.testing.assert_array_equal(getattr(d2, k), v)

  calls = []
  real_resize = om.resize
  monkeypatch.setattr(om, 'resize', lambda *a, **k: calls.append(1) or real_resize(*a, **k))
  mtime = f1.stat().st_mtime_ns
  d3 = data.load_omniglot(root, cache_dir=c1, verify=False)
  assert calls == [] and f1.stat().st_mtime_ns == mtime  # reused, not rebuilt
  np.testing.assert_array_equal(d3.images, d1.images)
  data.load_omniglot(root, cache_dir=c1, size=20, verify=False)  # another size: another entry
  assert len(calls) == 2 and len(list(c1.iterdir())) == 2  # one resize per zip
  f1.write_bytes(f1.read_bytes()[:100])  # a damaged cache file is rebuilt, with a warning
  with pytest.warns(UserWarning, match=r'unreadable cache .*; rebuilding it'):
    d4 = data.load_omniglot(root, cache_dir=c1, verify=False)
  np.testing.assert_array_equal(d4.images, d1.images)
  assert f1.read_bytes() == f2.read_bytes()


@pytest.mark.parametrize('damage', ['16x16', '14x14', 'float', 'other sources', 'no record'])
def test_wrong_cache_is_rebuilt_with_a_warning_naming_it(tiny, tmp_path, damage):
  """Issue 11, item 3: a cache is checked (shape, dtype, count, claimed sources) before use."""
  root, _ = tiny
  good = data.load_omniglot(root, cache_dir=tmp_path, verify=False)
  [path] = tmp_path.iterdir()
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  small = {'16x16': 16, '14x14': 14}.get(damage)
  if small:  # a readable npz of smaller images under the 28x28 name
    arrays['images'] = np.ascontiguousarray(arrays['images'][..., :small, :small])
  elif damage == 'float':
    arrays['images'] = arrays['images'].astype(np.float32)
  elif damage == 'other sources':
    arrays['source_sha256'] = np.array(['0' * 64, '1' * 64])
  else:  # written before caches recorded their sources
    for key in ('source_sha256', 'size', 'preprocess_version'):
      del arrays[key]
  _io.save_npz(path, arrays)
  with pytest.warns(UserWarning, match=rf'{path}: .*; rebuilding it'):
    again = data.load_omniglot(root, cache_dir=tmp_path, verify=False)
  assert again.images.shape == (7, 20, 28, 28) and again.images.dtype == np.uint8
  np.testing.assert_array_equal(again.images, good.images)
  with np.load(path) as z:  # the file itself was rebuilt
    assert z['images'].shape == (7, 20, 28, 28)


def test_tiny_protocols_and_rotations(tiny, tmp_path):
  root, _ = tiny
  d = data.load_omniglot(root, cache_dir=tmp_path, verify=False)
  s = data.maml_split(d, num_train=5, num_val=1)
  assert [len(s[k]) for k in ('train', 'val', 'test')] == [4, 1, 2]
  assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(7))
  o = data.official_split(d, num_val_alphabets=1)
  assert set(d.split[o['test']]) == {'evaluation'} and len(set(d.alphabet[o['val']])) == 1
  classes = data.class_images(d, o['test'])
  assert classes.shape == (8, 20, 28, 28)
  for k in range(4):
    np.testing.assert_array_equal(classes[4 + k], np.rot90(d.images[o['test'][1]], k, (-2, -1)))
  assert data.class_images(d, o['test'], rotations=False).shape == (2, 20, 28, 28)
  fams = episodes_for_protocol(d, 'official', num_val_alphabets=1, rotations=False)
  assert fams['test'].num_classes == 2 and fams['val'].num_classes == len(o['val'])
  with pytest.raises(ValueError,
                     match=r'num_train: expected an integer in \[1, 6\].*received 1200'):
    data.maml_split(d)


# ---------------------------------------------------------------------------------------------
# Errors.


def test_missing_data_lists_files_to_place(tmp_path, monkeypatch):
  with pytest.raises(data.MissingDataError) as e:
    data.load_omniglot(tmp_path / 'nowhere', cache_dir=tmp_path / 'cache')
  msg = str(e.value)
  for part in (str(tmp_path / 'nowhere' / 'omniglot'), 'omniglot.npz', 'images_background.zip',
               'images_evaluation.zip', om.NPZ_FILE.sha256, om.ZIP_FILES[0].url, 'download=True',
               'HYPERNET_DATA_DIR'):
    assert part in msg
  monkeypatch.setenv('HYPERNET_DATA_DIR', str(tmp_path / 'env_dir'))
  with pytest.raises(data.MissingDataError, match='env_dir'):
    data.load_omniglot(cache_dir=tmp_path / 'cache')
  assert not (tmp_path / 'cache').exists()


def test_checksum_mismatch_names_file_and_both_hashes(tiny, tmp_path):
  folder = tmp_path / 'omniglot'
  folder.mkdir()
  blob = bytearray((ROOT / 'omniglot' / 'omniglot.npz').read_bytes() if REAL
                   else b'not the published omniglot.npz')
  blob[len(blob) // 2] ^= 0xFF
  (folder / 'omniglot.npz').write_bytes(blob)
  received = hashlib.sha256(blob).hexdigest()
  with pytest.raises(data.ChecksumError) as e:
    data.load_omniglot(tmp_path, cache_dir=tmp_path / 'cache')
  msg = str(e.value)
  assert str(folder / 'omniglot.npz') in msg and om.NPZ_FILE.sha256 in msg and received in msg
  assert 'delete it' in msg
  with pytest.raises(data.ChecksumError, match='images_background.zip'):  # the zips too
    data.load_omniglot(tiny[0], cache_dir=tmp_path / 'cache')
  assert not (tmp_path / 'cache').exists()


@pytest.mark.parametrize('damage', ['truncate', 'flip'])
def test_corrupt_zip_is_a_clear_error_and_leaves_no_cache(tiny, tmp_path, damage):
  root, _ = tiny
  folder = tmp_path / 'omniglot'
  shutil.copytree(root / 'omniglot', folder)
  path = folder / 'images_evaluation.zip'
  blob = bytearray(path.read_bytes())
  if damage == 'truncate':
    blob = blob[:len(blob) // 2]
  else:  # damage the stored PNG bytes of one member: CRC error
    with zipfile.ZipFile(path) as zf:
      info = zf.infolist()[5]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 40, start + 60):
      blob[i] ^= 0xFF
  path.write_bytes(blob)
  cache = tmp_path / 'cache'
  cache.mkdir()
  with pytest.raises(data.CorruptFileError, match=r'images_evaluation\.zip.*truncated or damaged'):
    data.load_omniglot(tmp_path, cache_dir=cache, verify=False)
  assert _files(cache) == []  # neither a cache file nor a temporary one


def test_corrupt_npz_and_bad_layout(tmp_path):
  np.savez_compressed(tmp_path / 'omniglot.npz', images_background=np.zeros((2, 20, 105, 105),
                                                                           np.uint8))
  blob = (tmp_path / 'omniglot.npz').read_bytes()
  (tmp_path / 'omniglot.npz').write_bytes(blob[:len(blob) // 2])
  with pytest.raises(data.CorruptFileError, match=r'omniglot\.npz: cannot read.*BadZipFile'):
    om.read_omniglot_npz(tmp_path / 'omniglot.npz')
  (tmp_path / 'omniglot.npz').write_bytes(blob)
  with pytest.raises(data.CorruptFileError, match=r"char_id_background.*missing"):
    om.read_omniglot_npz(tmp_path / 'omniglot.npz')
  with zipfile.ZipFile(tmp_path / 'gaps.zip', 'w') as zf:  # a character without drawing 07
    buf = io.BytesIO()
    Image.new('1', (105, 105), 1).save(buf, format='PNG')
    for j in range(1, 21):
      if j != 7:
        zf.writestr(f'images_background/A/character01/0001_{j:02d}.png', buf.getvalue())
  with pytest.raises(data.CorruptFileError, match=r'character 0001 .*missing \[7\]'):
    om.read_omniglot_zip(tmp_path / 'gaps.zip')


def test_atomic_write_and_reproducible_npz(tmp_path):
  with pytest.raises(RuntimeError):
    with _io.atomic_write(tmp_path / 'x.bin') as f:
      f.write(b'half')
      raise RuntimeError('interrupted')
  assert _files(tmp_path) == []
  arrays = {'a': np.arange(10, dtype=np.int32), 'names': np.array(['x', 'yy'])}
  _io.save_npz(tmp_path / 'a.npz', arrays)
  os.utime(tmp_path / 'a.npz', (0, 0))
  _io.save_npz(tmp_path / 'b.npz', arrays)
  assert (tmp_path / 'a.npz').read_bytes() == (tmp_path / 'b.npz').read_bytes()
  with np.load(tmp_path / 'a.npz') as z:
    np.testing.assert_array_equal(z['names'], arrays['names'])


def test_download_verifies_and_writes_atomically(tiny, tmp_path, monkeypatch):
  """`download=True` with the official URLs replaced by local file:// URLs (no network in tests)."""
  root, _ = tiny
  src = root / 'omniglot'
  local = tuple(_io.KnownFile(f.name, _io.sha256sum(src / f.name), (src / f.name).stat().st_size,
                              (src / f.name).as_uri()) for f in om.ZIP_FILES)
  monkeypatch.setattr(om, 'ZIP_FILES', local)
  d = data.load_omniglot(tmp_path / 'data', cache_dir=tmp_path / 'cache', download=True)
  assert d.images.shape == (7, 20, 28, 28)
  assert _files(tmp_path / 'data' / 'omniglot') == ['images_background.zip',
                                                    'images_evaluation.zip']
  bad = (local[0], _io.KnownFile(local[1].name, '0' * 64, local[1].size, local[1].url))
  monkeypatch.setattr(om, 'ZIP_FILES', bad)
  with pytest.raises(data.ChecksumError, match='downloaded bytes have sha256'):
    data.load_omniglot(tmp_path / 'data2', cache_dir=tmp_path / 'cache', download=True)
  assert _files(tmp_path / 'data2' / 'omniglot') == ['images_background.zip']


# ---------------------------------------------------------------------------------------------
# Episodes.


@pytest.fixture(scope='module')
def coded():
  """12 classes x 20 drawings, drawing (c, d) filled with the value 20 c + d: decodable episodes."""
  codes = (np.arange(12)[:, None] * 20 + np.arange(20)).astype(np.uint8)  # [12, 20]
  return OmniglotEpisodes.from_classes(np.broadcast_to(codes[..., None, None], (12, 20, 28, 28)))


def _decode(x):
  code = np.rint(np.asarray(x)[..., 0, 0, 0] * 255).astype(int)  # [..., N * K]
  return code // 20, code % 20


def test_episode_shapes_labels_and_distinct_draws(coded):
  t = coded.sample(jax.random.key(0), 5, 2, 3)
  assert t.x_support.shape == (10, 28, 28, 1) and t.x_support.dtype == jnp.float32
  assert t.y_support.shape == (10,) and t.y_support.dtype == jnp.int32
  assert t.x_query.shape == (15, 28, 28, 1) and t.y_query.shape == (15,)
  np.testing.assert_array_equal(t.y_support, np.repeat(np.arange(5), 2))
  np.testing.assert_array_equal(t.y_query, np.repeat(np.arange(5), 3))
  classes = np.asarray(t.info['classes'])
  assert len(set(classes.tolist())) == 5
  cs, ds = _decode(t.x_support)
  cq, dq = _decode(t.x_query)
  np.testing.assert_array_equal(cs, classes[t.y_support])  # label i <-> class classes[i]
  np.testing.assert_array_equal(cq, classes[t.y_query])
  for i in range(5):  # support and query drawings of a class are distinct
    draws = np.concatenate([ds[cs == classes[i]], dq[cq == classes[i]]])
    assert len(set(draws.tolist())) == 5


def test_episodes_deterministic_batched_uniform_and_jittable(coded):
  # The same sizes as above (5, 2, 3): the per-episode function is compiled once.
  key = jax.random.key(3)
  a = jax.tree.map(np.asarray, coded.sample_batch(key, 500, 5, 2, 3))
  b = coded.sample_batch(key, 500, 5, 2, 3)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert a.x_support.shape == (500, 10, 28, 28, 1) and a.info['classes'].shape == (500, 5)
  keys = jax.random.split(key, 500)
  loop = [coded.sample(k, 5, 2, 3) for k in keys[:4]]
  jax.tree.map(lambda batch, *one: np.testing.assert_array_equal(batch[:4], np.stack(one)),
               a, *loop)
  assert not np.array_equal(a.info['classes'][0], a.info['classes'][1])
  jitted = jax.jit(lambda fam, k: fam.sample(k, 5, 2, 3))(coded, keys[1])  # family as an argument
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x[1], y), a, jitted)

  counts = np.bincount(np.asarray(a.info['classes']).ravel(), minlength=12)
  expected = 500 * 5 / 12
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
  _, d = _decode(a.x_support)
  draws = np.bincount(d.ravel(), minlength=20)
  assert np.all(np.abs(draws - 250) < 5 * np.sqrt(250)), draws


def test_episode_size_errors(coded):
  with pytest.raises(ValueError, match=r'ways: expected at most 12 \(the classes in this split\), '
                                       r'received 13'):
    coded.sample(jax.random.key(0), 13, 1, 1)
  with pytest.raises(ValueError, match=r'shots \+ queries: expected at most 20 \(drawings per '
                                       r'class\), received 5 \+ 16 = 21'):
    coded.sample_batch(jax.random.key(0), 4, 5, 5, 16)
  with pytest.raises(ValueError, match=r'shots: expected an integer >= 1, received 0'):
    coded.sample(jax.random.key(0), 5, 0, 1)
  with pytest.raises(ValueError, match=r'images: expected uint8 \[C, drawings, H, W\]'):
    OmniglotEpisodes.from_classes(np.zeros((3, 20, 28, 28), np.float32))
