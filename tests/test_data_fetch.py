"""`python -m hypernet.data.fetch` and the resumable download, without network.

Files generated here in the real formats are served by an HTTP server on the loopback
interface (with `Range` support, and a mode that cuts a response short); the datasets'
`KnownFile`s are replaced by ones with these files' checksums and local URLs.
"""

import dataclasses
import fcntl
import hashlib
import http.server
import os
import re
import socket
import threading

import numpy as np
import pytest

from hypernet.data import _io, fetch
from hypernet.data import mnist as mn
from hypernet.data import omniglot as om

import data_sources


class _Server:
  """Serves `files` {name: bytes} on 127.0.0.1; records each request's Range header.

  `cut[name] = n`: the response to the next request for `name` announces the full length but
  sends only `n` bytes, then closes the connection (an interrupted download).
  """

  def __init__(self, files):
    self.files, self.ranges, self.cut = dict(files), [], {}
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):  # noqa: N802
        name = self.path.lstrip('/')
        if name not in server.files:
          self.send_error(404)
          return
        blob = server.files[name]
        header = self.headers.get('Range')
        server.ranges.append((name, header))
        start = int(re.match(r'bytes=(\d+)-', header).group(1)) if header else 0
        body = blob[start:]
        self.send_response(206 if header else 200)
        if header:
          self.send_header('Content-Range', f'bytes {start}-{len(blob) - 1}/{len(blob)}')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if name in server.cut:
          body = body[:server.cut.pop(name)]
        self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def known(self, name, **changes):
    blob = self.files[name]
    fields = dict(name=name, sha256=hashlib.sha256(blob).hexdigest(),
                  size=len(blob), url=self.url + name)
    fields.update(changes)
    return _io.KnownFile(**fields)


@pytest.fixture
def server(tmp_path, monkeypatch):
  """Generated Omniglot zips and MNIST files served locally, declared in the readers' tables."""
  src = tmp_path / 'src'
  data_sources.tiny_omniglot_zips(src)
  files = {f.name: (src / f.name).read_bytes() for f in om.ZIP_FILES}
  rng = np.random.default_rng(0)
  for f in mn.MNIST_FILES['train'] + mn.MNIST_FILES['test']:
    files[f.name] = rng.bytes(3000 if 'images' in f.name else 50)  # contents are not parsed
  s = _Server(files)
  monkeypatch.setattr(om, 'ZIP_FILES', tuple(s.known(f.name) for f in om.ZIP_FILES))
  for split in ('train', 'test'):
    monkeypatch.setitem(mn.MNIST_FILES, split, tuple(s.known(f.name)
                                                     for f in mn.MNIST_FILES[split]))
  yield s
  s.httpd.shutdown()


def _names(folder):
  return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_downloads_verifies_and_reports(server, tmp_path, capsys):
  root = tmp_path / 'data'
  assert fetch.main(['omniglot', 'mnist', '--dir', str(root)]) == 0
  out = capsys.readouterr().out
  for f in om.ZIP_FILES + mn.MNIST_FILES['train'] + mn.MNIST_FILES['test']:
    folder = root / ('omniglot' if f in om.ZIP_FILES else 'mnist')
    assert (folder / f.name).read_bytes() == server.files[f.name]
  assert _names(root / 'omniglot') == ['images_background.zip', 'images_evaluation.zip']
  assert f'downloading {server.url}images_background.zip' in out and '100% of' in out
  assert 'omniglot: ok.' in out and 'mnist: ok.' in out
  # The readers accept what was fetched (the declared checksums verify).
  assert om.load_omniglot(root, cache_dir=tmp_path / 'cache').images.shape == (7, 20, 28, 28)
  # A second run checks and downloads nothing.
  server.ranges.clear()
  assert fetch.main(['omniglot', 'mnist', '--dir', str(root)]) == 0
  assert server.ranges == [] and 'sha256 verified' in capsys.readouterr().out
  # A damaged file that the reader would take first (the npz before the zips) is reported.
  other = tmp_path / 'other'
  (other / 'omniglot').mkdir(parents=True)
  (other / 'omniglot' / 'omniglot.npz').write_bytes(b'not it')
  assert fetch.main(['omniglot', '--dir', str(other)]) == 1
  out = capsys.readouterr().out
  assert 'omniglot.npz: sha256' in out and 'NOT USABLE yet' in out and 'delete it' in out
  assert (other / 'omniglot' / 'images_background.zip').exists()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path, capsys):
  root = tmp_path / 'data'
  name = 'images_evaluation.zip'
  size = len(server.files[name])
  server.cut[name] = size // 3
  assert fetch.main(['omniglot', '--dir', str(root)]) == 1
  out = capsys.readouterr().out
  part = root / 'omniglot' / f'.{name}.part'
  assert f'{size // 3:,} bytes kept in {part}, rerun to resume' in out
  assert part.stat().st_size == size // 3 and not (root / 'omniglot' / name).exists()
  server.ranges.clear()
  assert fetch.main(['omniglot', '--dir', str(root)]) == 0
  assert server.ranges == [(name, f'bytes={size // 3}-')]  # only the rest was asked for
  assert (root / 'omniglot' / name).read_bytes() == server.files[name]
  assert _names(root / 'omniglot') == ['images_background.zip', 'images_evaluation.zip']


def test_wrong_bytes_leave_nothing_and_a_concurrent_download_is_refused(server, tmp_path,
                                                                        monkeypatch, capsys):
  folder = tmp_path / 'data' / 'omniglot'
  bad = server.known('images_background.zip', sha256='0' * 64)
  monkeypatch.setattr(om, 'ZIP_FILES', (bad, om.ZIP_FILES[1]))
  assert fetch.main(['omniglot', '--dir', str(tmp_path / 'data')]) == 1
  assert 'downloaded bytes have sha256' in capsys.readouterr().out
  assert _names(folder) == []  # neither the file nor a partial one
  good = server.known('images_background.zip')
  folder.mkdir(parents=True, exist_ok=True)
  with open(_io.partial_path(folder, good.name), 'ab') as f:  # another process holds it
    fcntl.flock(f, fcntl.LOCK_EX)
    with pytest.raises(OSError, match='another process is downloading images_background.zip'):
      _io.download(good, folder)
  assert _io.download(good, folder).read_bytes() == server.files[good.name]


def test_without_network_it_says_what_to_place_where(server, tmp_path, monkeypatch, capsys):
  """An unreachable address (a closed port) and --offline: the files, sizes, sha256, paths."""
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    closed = sock.getsockname()[1]  # nothing listens here once the socket is closed
  monkeypatch.setattr(om, 'ZIP_FILES', tuple(
      dataclasses.replace(f, url=f'http://127.0.0.1:{closed}/{f.name}') for f in om.ZIP_FILES))
  root = tmp_path / 'data'
  (root / 'mnist').mkdir(parents=True)
  (root / 'mnist' / 'train-labels-idx1-ubyte.gz').write_bytes(b'someone else\'s file')
  assert fetch.main(['omniglot', 'mnist', '--dir', str(root)]) == 1
  out = capsys.readouterr().out
  assert 'omniglot: NOT AVAILABLE' in out and 'failed (URLError' in out
  for f in (om.NPZ_FILE, *om.ZIP_FILES):
    assert f'{root / "omniglot" / f.name}  ({f.size:,} bytes, sha256 {f.sha256}' in out
  assert 'no official download' in out  # the npz
  # A file in the way with the wrong sha256 is reported and left alone.
  assert re.search(r'train-labels-idx1-ubyte\.gz: sha256 \w+ \(19 bytes\), expected', out)
  assert (root / 'mnist' / 'train-labels-idx1-ubyte.gz').read_bytes() == b'someone else\'s file'
  assert 'incomplete: omniglot, mnist' in out
  assert fetch.main(['mnist', '--offline', '--dir', str(root)]) == 1
  assert 'not downloaded (--offline)' in capsys.readouterr().out


def test_mnist1d_is_generated_offline(tmp_path, capsys):
  pytest.importorskip('mnist1d', reason='the PyPI package mnist1d is not installed')
  root = tmp_path / 'data'
  assert fetch.main(['mnist1d', '--offline', '--dir', str(root)]) == 0
  out = capsys.readouterr().out
  assert 'generated offline instead' in out
  assert mn.load_mnist1d(root)['x'].shape == (4000, 40)  # verified by content
  assert fetch.main(['mnist1d', '--offline', '--dir', str(root)]) == 0
  assert 'mnist1d_generated.npz (generated; verified by content)' in capsys.readouterr().out


def test_command_line(tmp_path):
  """The module runs as a program; an unknown dataset is an argparse error (status 2)."""
  import subprocess
  import sys
  env = {**os.environ, 'HYPERNET_DATA_DIR': str(tmp_path)}
  done = subprocess.run([sys.executable, '-m', 'hypernet.data.fetch', 'mnist', '--offline'],
                        capture_output=True, text=True, env=env, timeout=120)
  assert done.returncode == 1 and f'data directory: {tmp_path}' in done.stdout
  assert f'{tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"}  (4,542 bytes' in done.stdout
  done = subprocess.run([sys.executable, '-m', 'hypernet.data.fetch', 'cifar'],
                        capture_output=True, text=True, env=env, timeout=120)
  assert done.returncode == 2 and "invalid choice: 'cifar'" in done.stderr
