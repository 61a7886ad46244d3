"""Shared file helpers for the dataset readers: directories, checksums, atomic writes, downloads.

Directories (always arguments; these are only the defaults):

* data directory: `data_dir` argument, else `$HYPERNET_DATA_DIR`, else `~/.cache/hypernet/data`.
  It holds one folder per dataset (`omniglot/`, `mnist/`, `fashion-mnist/`, `mnist1d/`), the
  layout of the staged offline copy (`shared/data`), so that folder can be passed as is.
* cache directory (derived, rebuildable files such as Omniglot at 28x28): `cache_dir`
  argument, else `$HYPERNET_CACHE_DIR`, else `~/.cache/hypernet/cache`. It is separate from the
  data directory because the data directory may be read-only.

Every write goes to a temporary file in the destination folder and is moved into place with
`os.replace` only when complete, so an interrupted or failed build or download leaves no
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import secrets
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np

ENV_DATA_DIR = 'HYPERNET_DATA_DIR'
ENV_CACHE_DIR = 'HYPERNET_CACHE_DIR'

# Errors raised while parsing a damaged file; readers wrap them into `CorruptFileError`.
DECODE_ERRORS = (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error, ValueError, OSError,
                 KeyError, TypeError)


class MissingDataError(FileNotFoundError):
  """A dataset's files are not where the reader looks; the message lists what to place where."""


class ChecksumError(ValueError):
  """A known file's sha256 differs from the published one."""


class CorruptFileError(ValueError):
  """A file could not be parsed (truncated, damaged, or not in the expected format)."""


@dataclasses.dataclass(frozen=True)
class KnownFile:
  """A published data file: its name inside the dataset folder, sha256, size and official URL."""
  name: str
  sha256: str
  size: int
  url: str | None = None

  def describe(self) -> str:
    src = f', from {self.url}' if self.url else ''
    return f'{self.name} ({self.size:,} bytes, sha256 {self.sha256}{src})'


def data_dir(path: str | os.PathLike | None = None) -> Path:
  """The data directory: `path`, else `$HYPERNET_DATA_DIR`, else `~/.cache/hypernet/data`."""
  if path is not None:
    return Path(path).expanduser()
  env = os.environ.get(ENV_DATA_DIR)
  return Path(env).expanduser() if env else Path.home() / '.cache' / 'hypernet' / 'data'


def cache_dir(path: str | os.PathLike | None = None) -> Path:
  """The cache directory: `path`, else `$HYPERNET_CACHE_DIR`, else `~/.cache/hypernet/cache`."""
  if path is not None:
    return Path(path).expanduser()
  env = os.environ.get(ENV_CACHE_DIR)
  return Path(env).expanduser() if env else Path.home() / '.cache' / 'hypernet' / 'cache'


def sha256sum(path: str | os.PathLike) -> str:
  """Hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def verify(path: Path, known: KnownFile, *, received: str | None = None) -> str:
  """Checks `path` against `known.sha256`; returns the hash. Raises `ChecksumError` naming both."""
  received = received or sha256sum(path)
  if received != known.sha256:
    size = path.stat().st_size
    fix = (f'place the official file from {known.url} there (download=True fetches it)'
           if known.url else 'place a fresh copy of the published file there')
    raise ChecksumError(
        f'{path}: sha256 mismatch: expected {known.sha256} ({known.size:,} bytes), received '
        f'{received} ({size:,} bytes). The file is damaged, truncated or a different version; '
        f'delete it and {fix}, or pass verify=False to read a deliberately different file.')
  return received


def missing_error(dataset: str, folder: Path, options: Sequence[Sequence[KnownFile]],
                  download_hint: str) -> MissingDataError:
  """A `MissingDataError` listing every acceptable set of files and where to put them."""
  lines = [f'{dataset} data not found in {folder} (data directory: the data_dir argument, else '
           f'${ENV_DATA_DIR}, else ~/.cache/hypernet/data). Place '
           + ('one of these file sets' if len(options) > 1 else 'these files') + ' there:']
  for i, files in enumerate(options):
    present = [f for f in files if (folder / f.name).exists()]
    lines.append(f'  option {i + 1}:' if len(options) > 1 else '  files:')
    for f in files:
      mark = 'present' if f in present else 'MISSING'
      lines.append(f'    [{mark}] {folder / f.name}: {f.describe()}')
  lines.append(download_hint)
  return MissingDataError('\n'.join(lines))


@contextlib.contextmanager
def corrupt_file_errors(path: Path, what: str) -> Iterator[None]:
  """Re-raises a parsing error as `CorruptFileError` naming `path`, the format and the fix."""
  try:
    yield
  except (MissingDataError, ChecksumError, CorruptFileError, FileNotFoundError, PermissionError,
          IsADirectoryError):
    raise
  except DECODE_ERRORS as e:
    raise CorruptFileError(
        f'{path}: cannot read it as {what} ({type(e).__name__}: {e}). The file is truncated or '
        'damaged; delete it and place a fresh copy (see the dataset README for its checksum).'
    ) from e


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
  """Opens a temporary file next to `path` for writing; moves it onto `path` only on success."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Not mkstemp: its files are private (0600); `open(..., 'xb')` honours the umask.
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
  try:
    with open(tmp, 'xb') as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes a deflated `.npz` atomically and reproducibly.

  `np.savez_compressed` stamps each member with the current time, so two builds of the same
  arrays differ in bytes; here every member has a fixed timestamp (1980-01-01) and mode, and
  members are written in the mapping's order, so equal arrays give equal files.
  """
  with atomic_write(path) as f, zipfile.ZipFile(f, 'w') as zf:
    for name, a in arrays.items():
      info = zipfile.ZipInfo(f'{name}.npy', date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      info.external_attr = 0o644 << 16
      with zf.open(info, 'w', force_zip64=True) as member:
        np.lib.format.write_array(member, np.ascontiguousarray(a), allow_pickle=False)


def load_npz(path: Path, keys: Sequence[str], what: str) -> dict[str, np.ndarray]:
  """Reads `keys` from an `.npz` (no pickle); a damaged file raises `CorruptFileError`."""
  with corrupt_file_errors(path, what):
    with np.load(path, allow_pickle=False) as z:
      missing = [k for k in keys if k not in z.files]
      if missing:
        raise CorruptFileError(f'{path}: expected {what} with arrays {list(keys)}, but '
                               f'{missing} are missing (it has {z.files}).')
      return {k: z[k] for k in keys}


def download(known: KnownFile, folder: Path) -> Path:
  """Fetches `known.url` to `folder / known.name`; sha256 is checked before it is moved there."""
  if not known.url:
    raise ValueError(f'{known.name}: no official URL is known; place the file by hand.')
  dest = folder / known.name
  h = hashlib.sha256()
  try:
    with atomic_write(dest) as f, urllib.request.urlopen(known.url, timeout=60) as r:
      for block in iter(lambda: r.read(1 << 20), b''):
        h.update(block)
        f.write(block)
      if h.hexdigest() != known.sha256:
        raise ChecksumError(f'{known.url}: downloaded bytes have sha256 {h.hexdigest()}, expected '
                            f'{known.sha256}; nothing was written to {dest}. Retry later or place '
                            'the file by hand.')
  except OSError as e:  # URLError, timeouts, refused connections
    raise OSError(f'{known.url}: download failed ({type(e).__name__}: {e}); nothing was written '
                  f'to {dest}. Without network, place {known.describe()} there by hand.') from e
  return dest
