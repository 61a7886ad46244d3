"""The wheel installs the library, `hypernet`, and no generic top-level package: the
`experiments` package runs from a clone (`python -m experiments.<name>` from its root)."""

import pathlib
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_wheel_holds_hypernet_only():
  setuptools = pytest.importorskip('setuptools', reason='setuptools is not installed')
  find = tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['setuptools']['packages']
  packages = setuptools.find_packages(str(ROOT), **find['find'])
  assert 'hypernet' in packages and 'hypernet.meta' in packages
  assert all(p == 'hypernet' or p.startswith('hypernet.') for p in packages), packages
  # ... and every subpackage of the library is in it (none lacks its __init__.py).
  folders = {'.'.join(p.relative_to(ROOT).parts) for p in (ROOT / 'hypernet').rglob('*')
             if p.is_dir() and any(p.glob('*.py'))}
  assert folders <= set(packages), folders - set(packages)
