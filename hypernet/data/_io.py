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
import fcntl
import gzip
import hashlib
import os
import re
import secrets
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
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
                  download_hint: str, fetch_name: str | None = None) -> MissingDataError:
  """A `MissingDataError` listing every acceptable set of files and where to put them (and,
  with `fetch_name`, the `python -m hypernet.data.fetch` command that gets them)."""
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
  if fetch_name:
    lines.append(f'From a shell: python -m hypernet.data.fetch {fetch_name} --dir {folder.parent}')
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


def partial_path(folder: Path, name: str) -> Path:
  """Where `download` keeps the bytes of an unfinished download of `name` (for resuming)."""
  return folder / f'.{name}.part'


def _request(url: str, offset: int) -> urllib.request.Request:
  headers = {'User-Agent': 'hypernet-data-fetch'}
  if offset:
    headers['Range'] = f'bytes={offset}-'
  return urllib.request.Request(url, headers=headers)


def _resumed_from(response, offset: int) -> int:
  """The offset the response's body starts at: `offset` for a 206 answer to our range, else 0."""
  if not offset or getattr(response, 'status', None) != 206:
    return 0
  m = re.match(r'bytes (\d+)-', response.headers.get('Content-Range', ''))
  return offset if m and int(m.group(1)) == offset else 0


def download(known: KnownFile, folder: Path,
             progress: Callable[[int, int], None] | None = None) -> Path:
  """Fetches `known.url` to `folder / known.name`: resumable, sha256-checked, atomic.

  The bytes go to `folder/.<name>.part` (locked against a second concurrent download of the
  same file); an interrupted download keeps them, and the next call asks the server for the
  rest (an HTTP `Range` request; a server that ignores it sends the whole file again). The
  file is moved to its final name only once its sha256 equals `known.sha256`; a complete
  download with another sha256 is deleted.

  Args:
    known: the file (name, sha256, size, url).
    folder: the dataset folder.
    progress: called as `progress(bytes_so_far, known.size)` after every block.

  Raises:
    ChecksumError: the downloaded bytes have another sha256 (nothing is left behind).
    OSError: no network, a refused connection, an HTTP error, or another process is
      downloading the same file (the partial file is kept for the next attempt).
  """
  if not known.url:
    raise ValueError(f'{known.name}: no official URL is known; place the file by hand.')
  folder.mkdir(parents=True, exist_ok=True)
  dest, part = folder / known.name, partial_path(folder, known.name)
  with open(part, 'ab') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      raise OSError(f'{part}: another process is downloading {known.name} into {folder}; wait '
                    'for it to finish.') from e
    offset = f.seek(0, os.SEEK_END)
    if offset == known.size and sha256sum(part) == known.sha256:  # finished, not yet moved
      os.replace(part, dest)
      return dest
    if offset >= known.size:  # not a prefix of the published file
      f.truncate(0)
      offset = 0
    h = hashlib.sha256()
    try:
      with urllib.request.urlopen(_request(known.url, offset), timeout=60) as r:
        start = _resumed_from(r, offset)
        if start:
          with open(part, 'rb') as old:
            for block in iter(lambda: old.read(1 << 20), b''):
              h.update(block)
        else:
          f.truncate(0)
        done = start
        for block in iter(lambda: r.read(1 << 20), b''):
          h.update(block)
          f.write(block)
          done += len(block)
          if progress is not None:
            progress(done, known.size)
      f.flush()
      os.fsync(f.fileno())
      if done < known.size:  # http.client does not raise when the server closes early
        raise ConnectionError(f'the connection closed after {done:,} of {known.size:,} bytes')
    except OSError as e:  # URLError, HTTPError, timeouts, refused connections, a full disk
      with contextlib.suppress(OSError):
        f.flush()
      kept = part.stat().st_size
      if kept:
        resume = (f'{kept:,} of {known.size:,} bytes are kept in {part}, and the next attempt '
                  'resumes from there')
      else:
        part.unlink(missing_ok=True)
        resume = 'nothing was written'
      raise OSError(f'{known.url}: download failed ({type(e).__name__}: {e}); {resume}. '
                    f'Without network, place {known.describe()} at {dest} by hand.') from e
    if h.hexdigest() != known.sha256:
      part.unlink()
      raise ChecksumError(f'{known.url}: downloaded bytes have sha256 {h.hexdigest()} '
                          f'({done:,} bytes), expected {known.sha256} ({known.size:,} bytes); '
                          f'nothing was written to {dest}. Retry later or place the file by '
                          'hand.')
    os.replace(part, dest)
  return dest
