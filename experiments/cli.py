"""Command-line entry points: `run(main)` in place of `absl.app.run(main)`, with clean errors.

A mistake a user can fix ends the program with exit status 1 and one line on stderr, not a
Python traceback whose last line is the message:

* flag errors, including a value `ml_collections` cannot parse, an unknown config key
  (`--config.num_stepz=3`) and an error raised by the config file's `get_config` (a bad
  `--config=...:algo=nope`): `FATAL Flags parsing error: <message>`, as absl prints its own;
* errors raised by `main` for bad input: `ValueError` (config values, a refused workdir, a
  damaged or wrong data file), `OSError` (missing data: `MissingDataError` lists the files to
  place, so that message has a line per file; a failed download; permissions) and
  `FloatingPointError` (a run that diverged): `FATAL <program>: <message>`.

`--verbosity=1` also logs the traceback of such an error. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import ast
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags, logging

# Exceptions raised for input a user can fix (see the module docstring).
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def _fatal(prefix: str, message: str) -> None:
  sys.stderr.write(f'FATAL {prefix}: {message.strip()}\n')
  sys.stderr.flush()
  sys.exit(1)


def _program() -> str:
  main = sys.modules.get('__main__')
  spec = getattr(main, '__spec__', None)
  return spec.name if spec is not None and spec.name else os.path.basename(sys.argv[0])


def _config_file_error(message: str) -> str:
  """absl's message for an error raised while a config file ran: its traceback dropped."""
  head, sep, tail = message.partition('Traceback (most recent call last):')
  if not sep:
    return ' '.join(message.split())
  last = [line.strip() for line in tail.splitlines() if line.strip()][-1]
  return f'{" ".join(head.split())} {last}'


def _unknown_key(error: Exception) -> str:
  """ml_collections' KeyError text for an unknown key, as one line."""
  text = str(error)
  try:
    text = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    pass
  return 'no such config key: ' + ' '.join(str(text).split())


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, each error as one `FATAL Flags parsing error: ...` line."""
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    _fatal('Flags parsing error', _config_file_error(str(e)))
  except (KeyError, AttributeError) as e:  # ml_collections: --config.<unknown key>=...
    _fatal('Flags parsing error', _unknown_key(e))
  raise AssertionError('unreachable')


def clean_errors(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
  """`main`, with the errors of `USER_ERRORS` printed as one `FATAL <program>: ...` line."""
  @functools.wraps(main)
  def wrapped(argv: list[str]) -> Any:
    try:
      return main(argv)
    except USER_ERRORS as e:
      logging.debug('traceback of the error below:\n%s', traceback.format_exc())
      _fatal(_program(), str(e) or type(e).__name__)
  return wrapped


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)` with clean one-line errors (see the module docstring)."""
  app.run(clean_errors(main), flags_parser=parse_flags)


def launch(*, config_file: str, config_help: str, default_workdir: Callable[[Any], str],
           run_experiment: Callable[[Any, str], str]) -> None:
  """The program of an experiment (`python -m experiments.<name>`): its flags, then `run`.

  Flags: `--config` (`config_file`, with `:args` and `--config.<key>=<value>` overrides),
  `--workdir` (default `default_workdir(config)`), and for a run over several processes
  (hosts) `--distributed`, which joins this process to the others before any JAX
  computation (`hypernet.parallel.initialize_distributed`: the cluster environment, SLURM,
  Open MPI or Cloud TPU, is detected, or `--coordinator_address`, `--num_processes` and
  `--process_id` name it). Every process trains on its share of each meta-batch; process 0
  writes the outputs and prints `run_experiment(config, workdir)`, the run's summary.
  """
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', config_file, config_help, lock_config=True)
  flags.DEFINE_string('workdir', None, 'Output directory (default: see the experiment).')
  flags.DEFINE_bool('distributed', False, 'Join the processes of a multi-host run '
                    '(jax.distributed) before any JAX computation; one process per host.')
  flags.DEFINE_string('coordinator_address', None, 'With --distributed: host:port of process '
                      '0 (default: detected from SLURM, Open MPI or Cloud TPU).')
  flags.DEFINE_integer('num_processes', None, 'With --distributed: the number of processes '
                       '(default: detected).')
  flags.DEFINE_integer('process_id', None, 'With --distributed: this process\'s rank in '
                       '[0, num_processes) (default: detected).')

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
    from experiments import rundir  # pylint: disable=g-import-not-at-top
    from hypernet import parallel, runtime  # pylint: disable=g-import-not-at-top
    runtime.keep_freed_memory()  # before the first JAX computation (see hypernet.runtime)
    f = flags.FLAGS
    if f.distributed:
      parallel.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)
    else:
      for name in ('coordinator_address', 'num_processes', 'process_id'):
        if f[name].value is not None:
          raise ValueError(f'--{name}: applies only with --distributed, received '
                           f'{f[name].value!r} without it.')
    config = f.config
    workdir = f.workdir or default_workdir(config)
    rundir.quiet_orbax_logs()
    t0 = time.perf_counter()
    text = run_experiment(config, workdir)
    if parallel.is_primary():
      print(f'{text}\nDone in {time.perf_counter() - t0:.1f} s. Outputs in '
            f'{os.path.abspath(workdir)}.')

  run(main)
