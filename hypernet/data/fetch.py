r"""Gets the datasets onto a new machine: `python -m hypernet.data.fetch <dataset> ... [--dir DIR]`.

    python -m hypernet.data.fetch omniglot mnist fashion_mnist mnist1d
    python -m hypernet.data.fetch mnist1d --dir /data/hypernet      # another data directory
    python -m hypernet.data.fetch all --offline                      # check only, no network

For each dataset it first checks the files already in `<dir>/<folder>/` (sha256, or content
for a generated MNIST-1D); if no complete set is there it downloads the official files (with
a progress line, resumable after an interruption, checked against the published sha256 and
moved to their final names only then; see `hypernet.data._io.download`). Where no download
is possible (no network, `--offline`, or no official address, as for the staged
`omniglot.npz`) it prints exactly which files to place where by hand, with their sizes,
sha256 and sources. MNIST-1D can also be regenerated offline with the PyPI package
`mnist1d` (`hypernet.data.generate_mnist1d`), which this command does when the download is
not possible and the package is installed.

| dataset | folder | downloaded | accepted file sets |
| --- | --- | --- | --- |
| `omniglot` | `omniglot/` | `images_background.zip`, `images_evaluation.zip` (github.com/brendenlake/omniglot) | those two, or the staged `omniglot.npz` |
| `mnist` | `mnist/` | the four `*-ubyte.gz` (the CVDF mirror) | those four |
| `fashion_mnist` | `fashion-mnist/` | the four `*-ubyte.gz` (Zalando's S3 address) | those four |
| `mnist1d` | `mnist1d/` | `mnist1d_data.pkl` (github.com/greydanus/mnist1d, pinned commit) | the staged `mnist1d_data.npz`, the pickle, or `mnist1d_generated.npz` |

`--dir` defaults to the readers' data directory (`$HYPERNET_DATA_DIR`, else
`~/.cache/hypernet/data`). The exit status is 0 when every named dataset is complete, else 1.
Nothing already in place is overwritten: a file with the wrong sha256 is reported, to be
deleted by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO


from hypernet.data import _io
from hypernet.data import mnist as mnist_lib
from hypernet.data import omniglot as omniglot_lib
from hypernet.data._io import KnownFile


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset as this command sees it.

  Attributes:
    name: the command-line name.
    folder: its folder in the data directory.
    options: the file sets the readers accept, in their order of preference.
    download: the file set fetched from the network (empty: none has an official address).
    generate: `data_dir -> path` that makes the dataset offline, or None.
  """
  name: str
  folder: str
  options: tuple[tuple[KnownFile, ...], ...]
  download: tuple[KnownFile, ...]
  generate: Callable[[Path], Path] | None = None


def datasets() -> dict[str, Dataset]:
  """The datasets by command-line name (read from the reader modules at call time)."""
  mnist = tuple(mnist_lib.MNIST_FILES['train'] + mnist_lib.MNIST_FILES['test'])
  fashion = tuple(mnist_lib.FASHION_MNIST_FILES['train'] + mnist_lib.FASHION_MNIST_FILES['test'])
  zips = tuple(omniglot_lib.ZIP_FILES)
  return {
      'omniglot': Dataset('omniglot', 'omniglot', ((omniglot_lib.NPZ_FILE,), zips), zips),
      'mnist': Dataset('mnist', 'mnist', (mnist,), mnist),
      'fashion_mnist': Dataset('fashion_mnist', 'fashion-mnist', (fashion,), fashion),
      'mnist1d': Dataset('mnist1d', 'mnist1d',
                         ((mnist_lib.MNIST1D_NPZ,), (mnist_lib.MNIST1D_PKL,)),
                         (mnist_lib.MNIST1D_PKL,), mnist_lib.generate_mnist1d),
  }


class Progress:
  """`progress(done, total)` for `_io.download`: one updating line on a terminal, else a line
  at every quarter."""

  def __init__(self, label: str, stream: TextIO):
    self.label, self.stream = label, stream
    self.tty = stream.isatty()
    self.t0 = time.perf_counter()
    self.shown = -1

  def __call__(self, done: int, total: int) -> None:
    pct = min(100, int(100 * done / total)) if total else 100
    rate = done / max(time.perf_counter() - self.t0, 1e-9) / 1e6
    if self.tty:
      bar = '#' * (pct // 5) + '.' * (20 - pct // 5)
      self.stream.write(f'\r  {self.label} [{bar}] {pct:3d}% {done / 1e6:.1f}/{total / 1e6:.1f} '
                        f'MB {rate:.1f} MB/s')
      if done >= total:
        self.stream.write('\n')
    elif pct // 25 > self.shown:
      self.shown = pct // 25
      self.stream.write(f'  {self.label}: {pct}% of {total / 1e6:.1f} MB ({rate:.1f} MB/s)\n')
    self.stream.flush()


def _check(path: Path, known: KnownFile) -> str | None:
  """None if `path` holds `known`; else what is wrong."""
  if not path.exists():
    return 'missing'
  received = _io.sha256sum(path)
  if received != known.sha256:
    return (f'sha256 {received} ({path.stat().st_size:,} bytes), expected {known.sha256} '
            f'({known.size:,} bytes): damaged or another version; delete it and rerun')
  return None


def _generated_ok(folder: Path) -> str | None:
  """None if the generated MNIST-1D in `folder` verifies by content; else what is wrong."""
  path = folder / mnist_lib.MNIST1D_GENERATED
  if not path.exists():
    return 'missing'
  try:
    mnist_lib.verify_mnist1d_arrays(
        _io.load_npz(path, mnist_lib.MNIST1D_KEYS, 'the generated MNIST-1D npz'), path)
  except (_io.ChecksumError, _io.CorruptFileError) as e:
    return str(e)
  return None


def _place_by_hand(ds: Dataset, folder: Path) -> list[str]:
  lines = [f'  Place {"one of these file sets" if len(ds.options) > 1 else "these files"} '
           'there by hand:']
  for i, files in enumerate(ds.options):
    if len(ds.options) > 1:
      lines.append(f'  option {i + 1}:')
    lines += [f'    {folder / f.name}  ({f.size:,} bytes, sha256 {f.sha256}'
              + (f', from {f.url})' if f.url else ', no official download)') for f in files]
  if ds.generate is not None:
    lines.append(f'  or `pip install mnist1d` and rerun: it regenerates the data offline as '
                 f'{folder / mnist_lib.MNIST1D_GENERATED}.')
  return lines


def _nothing_in_the_way(name: str, problems: dict[str, str], say) -> bool:
  """True if no damaged file would be read before the fetched ones (the readers take the
  first file set present, e.g. a damaged `omniglot.npz` before the zips)."""
  if problems:
    say(f'{name}: NOT USABLE yet: the readers would read {", ".join(problems)} first (wrong '
        'sha256, see above); delete it.')
    return False
  say(f'{name}: ok.')
  return True


def fetch(name: str, data_dir: Path, *, offline: bool = False,
          out: TextIO | None = None) -> bool:
  """Makes dataset `name` complete in `data_dir` (see the module docstring); True if it is.

  Reports on `out` (default: standard output).
  """
  out = out or sys.stdout
  table = datasets()
  if name not in table:
    raise ValueError(f'dataset: expected one of {sorted(table)}, received {name!r}.')
  ds = table[name]
  folder = data_dir / ds.folder
  say = lambda text: print(text, file=out, flush=True)  # noqa: E731

  problems = {}
  for files in ds.options:
    found = {f.name: _check(folder / f.name, f) for f in files}
    if not any(found.values()):
      say(f'{name}: ok in {folder}: {", ".join(f.name for f in files)} (sha256 verified)')
      return True
    problems.update({k: v for k, v in found.items() if v != 'missing' and v})
  if ds.generate is not None and _generated_ok(folder) is None:
    say(f'{name}: ok in {folder}: {mnist_lib.MNIST1D_GENERATED} (generated; verified by content)')
    return True
  for file_name, problem in problems.items():
    say(f'{name}: {folder / file_name}: {problem}.')

  reason = None
  if offline:
    reason = 'not downloaded (--offline)'
  elif not ds.download:
    reason = 'no official download exists'
  elif any(f.name in problems for f in ds.download):
    reason = 'a file in the way has the wrong sha256 (see above)'
  else:
    for f in ds.download:
      if _check(folder / f.name, f) is None:
        continue
      say(f'{name}: downloading {f.url} -> {folder / f.name} ({f.size / 1e6:.1f} MB)')
      try:
        _io.download(f, folder, progress=Progress(f.name, out))
      except _io.ChecksumError as e:
        reason = str(e)
      except OSError as e:
        cause = e.__cause__ or e
        reason = f'the download of {f.url} failed ({type(cause).__name__}: {cause})'
        part = _io.partial_path(folder, f.name)
        if part.exists():
          reason += f'; {part.stat().st_size:,} bytes kept in {part}, rerun to resume'
      if reason:
        break
    else:
      say(f'{name}: downloaded {", ".join(f.name for f in ds.download)} into {folder} (sha256 '
          'verified)')
      return _nothing_in_the_way(name, problems, say)

  if ds.generate is not None:
    try:
      path = ds.generate(data_dir)
    except ModuleNotFoundError as e:
      reason += f'; cannot generate it offline either ({e.msg.split(";")[0]})'
    else:
      say(f'{name}: {reason}; generated offline instead: {path} (verified by content)')
      return _nothing_in_the_way(name, problems, say)
  say(f'{name}: NOT AVAILABLE in {folder}: {reason}.')
  for line in _place_by_hand(ds, folder):
    say(line)
  return False


def main(argv: Sequence[str] | None = None) -> int:
  names = sorted(datasets())
  parser = argparse.ArgumentParser(
      prog='python -m hypernet.data.fetch', description=__doc__.split('\n\n')[0],
      epilog='Datasets: ' + ', '.join(names) + ' (or all).')
  parser.add_argument('datasets', nargs='+', metavar='dataset', choices=names + ['all'],
                      help='what to fetch: ' + ', '.join(names) + ', or all')
  parser.add_argument('--dir', default=None,
                      help=f'data directory (default ${_io.ENV_DATA_DIR}, else '
                           '~/.cache/hypernet/data)')
  parser.add_argument('--offline', action='store_true',
                      help='no network: only check the files and say what to place where')
  args = parser.parse_args(argv)
  chosen = names if 'all' in args.datasets else list(dict.fromkeys(args.datasets))
  root = _io.data_dir(args.dir)
  print(f'data directory: {root}', flush=True)
  missing = [n for n in chosen if not fetch(n, root, offline=args.offline)]
  if missing:
    print(f'incomplete: {", ".join(missing)} (see above).', flush=True)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
