"""The README's result sections are what the run-list scripts' `tables` build from the records.

Each script's `tables` (`experiments/*_seeds.sh`, `continual_vandeven.sh`, `*_ablation.sh`)
rewrites its README sections from the committed run records in `results/`
(`experiments/claim_run.sh`). Here it runs on a copy of the repository, and every section it
writes must equal the README's: a number edited by hand, a record added without rebuilding the
table, or a table whose records were not committed fails. A section still marked as not yet
rebuilt from the records (its runs predate them; README, "Run records") is skipped, by name.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_REBUILT = '*Not yet rebuilt from the run records'
# Each script's README sections (the names between `<!-- ` and `:start -->`).
SECTIONS = {
    'continual_vandeven.sh': ('results:continual_vandeven',),
    'omniglot_seeds.sh': ('results:omniglot',),
    'omniglot_ablation.sh': ('results:omniglot_ablation',),
    'sinusoid_seeds.sh': ('results:sinusoid', 'claims:sinusoid'),
    'sinusoid_ablation.sh': ('results:sinusoid_ablation',),
}


def section(text: str, name: str) -> str | None:
  """The text between `name`'s markers in `text`, None without them."""
  match = re.search(f'<!-- {name}:start -->(.*?)<!-- {name}:end -->', text, re.S)
  return match.group(1) if match else None


def _readme() -> str:
  with open(os.path.join(ROOT, 'README.md')) as f:
    return f.read()


@pytest.mark.parametrize('script', sorted(SECTIONS))
def test_readme_sections_are_built_from_the_records(script, tmp_path):
  readme = _readme()
  present = {n: section(readme, n) for n in SECTIONS[script]}
  rebuilt = [n for n, s in present.items() if s is not None and NOT_REBUILT not in s]
  if not rebuilt:
    pytest.skip(f'{script}: README sections {sorted(present)} absent or marked not yet '
                'rebuilt from the records')
  for name in ('experiments', 'hypernet', 'results', 'docs', 'README.md'):
    source = os.path.join(ROOT, name)
    if os.path.isdir(source):
      shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns('__pycache__'))
    else:
      shutil.copy(source, tmp_path / name)
  proc = subprocess.run(['bash', f'experiments/{script}', 'tables'], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, 'PYTHON': sys.executable, 'MPLBACKEND': 'Agg'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  built = (tmp_path / 'README.md').read_text()
  for name in rebuilt:
    assert section(built, name) == present[name], (
        f'README section {name} differs from what `bash experiments/{script} tables` builds '
        'from results/: rebuild it with that command (and commit the records it reads).')


def test_every_section_is_either_rebuilt_or_marked():
  """A marked section holds the marker right after its start, where a rebuild replaces it."""
  readme = _readme()
  for names in SECTIONS.values():
    for name in names:
      text = section(readme, name)
      if text is not None and NOT_REBUILT in text:
        assert text.lstrip('\n').startswith(NOT_REBUILT), name
