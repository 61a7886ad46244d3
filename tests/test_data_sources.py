"""The tests' data rule (`data_sources`): staged real files, else generated, else a skip."""

import ast
import pathlib

import data_sources

TESTS = pathlib.Path(__file__).resolve().parent


def test_only_data_sources_knows_where_the_staged_data_are():
  """A test that reads `../shared/data` itself would pass in CI and fail on a new machine;
  every test module goes through `data_sources` (which `.ci/run` hides in its second pass)."""
  offenders = []
  for path in sorted(TESTS.glob('*.py')):
    if path.name in ('data_sources.py', 'test_data_sources.py'):
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Constant) and node.value in ('shared', 'HYPERNET_TEST_HIDE_SHARED'):
        offenders.append(f'{path.name}:{node.lineno}')
  assert not offenders, f'use data_sources.staged_root instead of the path in {offenders}'


def test_hidden_staged_data_and_the_environment(tmp_path, monkeypatch):
  (tmp_path / 'mnist').mkdir()
  (tmp_path / 'mnist' / 'a.gz').write_bytes(b'x')
  monkeypatch.setenv('HYPERNET_DATA_DIR', str(tmp_path))
  monkeypatch.delenv(data_sources.HIDE_ENV, raising=False)
  assert data_sources.staged_root('mnist', 'a.gz') == tmp_path  # $HYPERNET_DATA_DIR first
  assert data_sources.staged_root('mnist', 'a.gz', 'b.gz') in (None, data_sources.SHARED)
  monkeypatch.setenv(data_sources.HIDE_ENV, '1')
  assert data_sources.staged_root('mnist', 'a.gz') is None
  assert data_sources.staged_root('omniglot') is None
  assert 'hidden by HYPERNET_TEST_HIDE_SHARED' in data_sources.not_staged('MNIST', 'mnist')
  monkeypatch.setenv(data_sources.HIDE_ENV, '0')
  assert data_sources.staged_root('mnist', 'a.gz') == tmp_path
