"""Executes every notebook in `notebooks/` so that they never rot.

Each notebook runs top to bottom in a fresh `python3` kernel (ipykernel) with the
notebooks folder as working directory; a failing cell raises nbclient's
`CellExecutionError` with the cell's source and traceback. The kernel must be this
interpreter (so it imports the same `hypernet`), which `test_kernel_is_this_python`
checks. The repository root is put on the kernel's `PYTHONPATH`, so the notebooks
run without an installed `hypernet` too.

A notebook that reads data names the dataset folders in its metadata
(`hypernet.requires_data`); its kernel gets `$HYPERNET_DATA_DIR` pointing at a folder that
holds them, each the staged real one or, where none is staged, one generated exactly
(MNIST-1D); a notebook whose data can be neither is skipped, naming what is missing.
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

import data_sources

nbclient = pytest.importorskip(
    'nbclient', reason='nbclient is not installed (pip install -e ".[test]" to run notebooks)')
nbformat = pytest.importorskip(
    'nbformat', reason='nbformat is not installed (pip install -e ".[test]" to run notebooks)')
pytest.importorskip(
    'ipykernel', reason='ipykernel is not installed (pip install -e ".[test]" to run notebooks)')

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / 'notebooks'
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob('*.ipynb'))
KERNEL_NAME = 'python3'
CELL_TIMEOUT_S = 300


def _kernel_env() -> dict[str, str]:
  """This process's environment with the repository root first on PYTHONPATH."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (str(REPO_ROOT), env.get('PYTHONPATH', '')) if p)
  return env


def _execute(nb: 'nbformat.NotebookNode') -> 'nbformat.NotebookNode':
  """Runs `nb` in place in a fresh kernel; raises CellExecutionError on a failing cell."""
  client = nbclient.NotebookClient(
      nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
      resources={'metadata': {'path': str(NOTEBOOK_DIR)}})
  client.execute(env=_kernel_env())
  return nb


def test_notebooks_found():
  assert NOTEBOOKS, f'no notebooks found in {NOTEBOOK_DIR}'


def test_kernel_is_this_python():
  """The 'python3' kernel runs in this interpreter's environment, not some other Python."""
  nb = nbformat.v4.new_notebook(cells=[
      nbformat.v4.new_code_cell('import sys; print(sys.prefix); print(sys.executable)')])
  _execute(nb)
  text = ''.join(out.get('text', '') for out in nb.cells[0].outputs)
  prefix, executable = text.split()
  assert os.path.realpath(prefix) == os.path.realpath(sys.prefix), (
      f'kernel {KERNEL_NAME!r} runs {executable} (prefix {prefix}), but the tests run '
      f'{sys.executable} (prefix {sys.prefix}); check `jupyter kernelspec list`.')


# Notebook metadata `hypernet.requires_data` names the dataset folders a notebook reads from
# `$HYPERNET_DATA_DIR`; the folders that can be generated exactly when not staged:
GENERATED = {'mnist1d': data_sources.mnist1d_root}


def _data_dir(nb: 'nbformat.NotebookNode', tmp_path: pathlib.Path) -> str | None:
  """A data directory with every dataset the notebook needs (`data_sources`: staged, else
  generated); None if it needs none. Skips, naming what is missing, where neither serves."""
  needed = nb.metadata.get('hypernet', {}).get('requires_data', [])
  if not needed:
    return None
  root = tmp_path / 'data'
  root.mkdir()
  for name in needed:
    staged = data_sources.staged_root(name)
    if staged is not None:
      (root / name).symlink_to(staged / name)
    elif name in GENERATED:
      source = GENERATED[name](tmp_path / f'generated_{name}')
      (root / name).symlink_to(source / name)
    else:
      pytest.skip(data_sources.not_staged(f'{name} (read by this notebook)', name))
  return str(root)


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: pathlib.Path, tmp_path, monkeypatch):
  nb = nbformat.read(path, as_version=4)
  data_dir = _data_dir(nb, tmp_path)
  if data_dir is not None:  # the notebooks read $HYPERNET_DATA_DIR first
    monkeypatch.setenv('HYPERNET_DATA_DIR', data_dir)
  _execute(nb)  # raises nbclient.exceptions.CellExecutionError naming the failing cell
