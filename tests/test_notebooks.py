"""Executes every notebook in `notebooks/` so that they never rot.

Each notebook runs top to bottom in a fresh `python3` kernel (ipykernel) with the
notebooks folder as working directory; a failing cell raises nbclient's
`CellExecutionError` with the cell's source and traceback. The kernel must be this
interpreter (so it imports the same `hypernet`), which `test_kernel_is_this_python`
checks. The repository root is put on the kernel's `PYTHONPATH`, so the notebooks
run without an installed `hypernet` too.
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

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


SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'


def _missing_data(nb: 'nbformat.NotebookNode') -> list[str]:
  """Dataset folders the notebook needs (metadata `hypernet.requires_data`) that are absent
  both from `$HYPERNET_DATA_DIR` and from `../shared/data`."""
  needed = nb.metadata.get('hypernet', {}).get('requires_data', [])
  roots = [pathlib.Path(p) for p in (os.environ.get('HYPERNET_DATA_DIR'),) if p] + [SHARED_DATA]
  return [name for name in needed if not any((root / name).is_dir() for root in roots)]


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: pathlib.Path):
  nb = nbformat.read(path, as_version=4)
  missing = _missing_data(nb)
  if missing:
    pytest.skip(f'{path.name} reads real data {missing}, found neither in $HYPERNET_DATA_DIR '
                f'nor in {SHARED_DATA}, and the real datasets cannot be generated')
  _execute(nb)  # raises nbclient.exceptions.CellExecutionError naming the failing cell
