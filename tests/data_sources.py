"""Where the tests get their data, in this order:

1. the staged real files: `$HYPERNET_DATA_DIR/<folder>/`, else `../shared/data/<folder>/` (the
   offline copy beside the repository);
2. small files generated here in the real format, read through the real code path, with
   `verify=False` or a checksum the fixture declares (`declared_files`); MNIST-1D is
   generated exactly, with the PyPI package `mnist1d` (`hypernet.data.generate_mnist1d`),
   and then verified by content like any MNIST-1D file;
3. a skip whose reason says what is missing.

`HYPERNET_TEST_HIDE_SHARED=1` hides the staged files (both places), so the tests run as on
a new user's machine; `.ci/run` runs the data tests once that way (with an empty HOME and no
other `HYPERNET_*` variable), so a test that silently needs the staged data fails in CI.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hypernet.data import _io

HIDE_ENV = 'HYPERNET_TEST_HIDE_SHARED'
SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'


def hidden() -> bool:
  """Whether the staged data are hidden (`HYPERNET_TEST_HIDE_SHARED` set, not '' or '0')."""
  return os.environ.get(HIDE_ENV, '') not in ('', '0')


def staged_root(folder: str, *names: str) -> Path | None:
  """The data directory whose `<folder>/` holds the real files `names` (all of them; with no
  names, the folder itself): `$HYPERNET_DATA_DIR`, else `../shared/data`; None if neither
  does or the staged data are hidden."""
  if hidden():
    return None
  env = os.environ.get(_io.ENV_DATA_DIR)
  for root in ([Path(env)] if env else []) + [SHARED]:
    if (root / folder).is_dir() and all((root / folder / n).exists() for n in names):
      return root
  return None


def not_staged(what: str, folder: str, why: str = 'they cannot be generated') -> str:
  """A skip reason: `what` is not staged (or hidden), and `why` nothing else serves."""
  where = ('hidden by ' + HIDE_ENV) if hidden() else (
      f'not in ${_io.ENV_DATA_DIR}/{folder} nor in {SHARED / folder}')
  return f'{what}: real files {where}, and {why}'


def declared_files(folder: Path, names: list[str]) -> tuple[_io.KnownFile, ...]:
  """`KnownFile`s for generated files: their own sha256, size and a `file://` URL (a checksum
  the fixture declares, so the readers' verification runs on them)."""
  return tuple(_io.KnownFile(n, _io.sha256sum(folder / n), (folder / n).stat().st_size,
                             (folder / n).as_uri()) for n in names)


# ---------------------------------------------------------------------------------------------
# Omniglot: a tiny dataset in the official zip layout.

# split -> alphabet -> number of characters.
TINY_OMNIGLOT = {'background': {'Alpha': 3, 'Beta_(Test)': 2}, 'evaluation': {'Gamma': 2}}


def _drawing(rng: np.random.Generator) -> np.ndarray:
  """A 105x105 mode-'1' style drawing as bool (True = white paper), a few random strokes."""
  im = Image.new('1', (105, 105), 1)
  draw = ImageDraw.Draw(im)
  for _ in range(3):
    draw.line([tuple(rng.integers(5, 100, 2).tolist()) for _ in range(3)], fill=0, width=3)
  return np.asarray(im)


def tiny_omniglot_zips(folder: Path, rng_seed: int = 0) -> dict:
  """Writes `images_{background,evaluation}.zip` in the official layout (7 characters).

  Returns:
    {char_id: (split, alphabet, nn, drawings [20, 105, 105] bool)}.
  """
  rng = np.random.default_rng(rng_seed)
  truth, cid = {}, 0
  folder.mkdir(parents=True, exist_ok=True)
  for split, alphabets in TINY_OMNIGLOT.items():
    with zipfile.ZipFile(folder / f'images_{split}.zip', 'w') as zf:
      zf.writestr(f'images_{split}/', '')
      for alphabet, n in alphabets.items():
        for nn in range(1, n + 1):
          cid += 1
          drawings = np.stack([_drawing(rng) for _ in range(20)])
          truth[cid] = (split, alphabet, nn, drawings)
          for j in range(20):
            buf = io.BytesIO()
            Image.fromarray(drawings[j]).convert('1').save(buf, format='PNG')
            assert Image.open(io.BytesIO(buf.getvalue())).mode == '1'
            zf.writestr(f'images_{split}/{alphabet}/character{nn:02d}/{cid:04d}_{j + 1:02d}.png',
                        buf.getvalue())
      zf.writestr('__MACOSX/._stray', b'ignored')
  return truth


# ---------------------------------------------------------------------------------------------
# MNIST-1D: generated exactly.


def mnist1d_root(tmp_dir: Path) -> Path:
  """A data directory with MNIST-1D: the staged one, else generated into `tmp_dir` (about 2
  s); skips if neither is possible."""
  root = staged_root('mnist1d')
  if root is not None and any((root / 'mnist1d' / n).exists() for n in
                              ('mnist1d_data.npz', 'mnist1d_data.pkl', 'mnist1d_generated.npz')):
    return root
  from hypernet.data import mnist  # pylint: disable=g-import-not-at-top
  try:
    mnist.generate_mnist1d(tmp_dir)
  except ModuleNotFoundError as e:
    pytest.skip(not_staged('MNIST-1D', 'mnist1d', 'the PyPI package mnist1d that regenerates '
                           f'it is not installed ({e}; pip install -e ".[test]")'))
  return tmp_dir
