"""The README's example runs and its shapes are what its comments say."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def test_readme_example_runs():
  text = README.read_text()
  code = re.search(r'<!-- readme-example -->\n```python\n(.*?)```', text, re.S).group(1)
  namespace = {}
  exec(compile(code, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  assert namespace['y'].shape == (16, 50, 1)
  assert all(leaf.shape[0] == 16 for leaf in namespace['jax'].tree.leaves(namespace['params']))


def test_readme_has_the_two_commands():
  text = README.read_text()
  commands = re.findall(r'```bash\n(.*?)\n```', text, re.S)
  assert len(commands) == 2, commands
  assert 'python -m experiments.' in commands[0]
  assert 'pytest' in commands[1]
