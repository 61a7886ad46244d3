"""`hypernet.runtime.keep_freed_memory`: XLA's per-call temporary buffer stops page-faulting.

Each case runs in a fresh process (the setting is process-wide and must come before JAX
starts its threads). The measure is the number of minor page faults of one call of a
jitted function with a 32 MiB temporary buffer: with glibc's defaults the buffer is mapped
anew at every call (8,192 faults of 4 KiB pages, every call); with the memory kept, once
the heap has grown to hold the call's buffers (a call or a few), none.
"""

import os
import platform
import subprocess
import sys

import pytest

from hypernet import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r'''
import resource, sys
from hypernet import runtime
applied = runtime.keep_freed_memory() if sys.argv[1] == 'keep' else False
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.sin(x)[:, ::-1] * 2.0 + jnp.cos(x).T.reshape(x.shape)).sum())
x = jnp.ones((1024, 4096))  # 16 MiB; 32 MiB of temporaries
faults = []
for _ in range(15):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, min(faults[1:]))  # the fewest of the calls after the first
'''


def _faults(mode: str, **env) -> tuple[str, int]:
  proc = subprocess.run([sys.executable, '-c', _SCRIPT, mode], cwd=ROOT, capture_output=True,
                        text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu', **env))
  assert proc.returncode == 0, proc.stderr[-3000:]
  applied, faults = proc.stdout.split()
  return applied, int(faults)


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                    reason='keep_freed_memory acts on glibc malloc (Linux) only')
def test_kept_memory_is_reused_without_page_faults():
  applied, kept = _faults('keep')
  _, default = _faults('default')
  assert applied == 'True'
  # 32 MiB in 4 KiB pages is 8,192: the default pays them at every call.
  assert default > 4_000, default
  assert kept < default / 100, (kept, default)


def test_env_var_turns_it_off():
  applied, _ = _faults('keep', **{runtime.ENV_VAR: '0'})
  assert applied == 'False'


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                    reason='keep_freed_memory acts on glibc malloc (Linux) only')
def test_late_call_warns():
  script = ('import warnings, jax.numpy as jnp\n'
            'from hypernet import runtime\n'
            'jnp.zeros(1).block_until_ready()\n'  # JAX's backend is up
            'with warnings.catch_warnings(record=True) as w:\n'
            '  warnings.simplefilter("always")\n'
            '  print(runtime.keep_freed_memory(), [str(x.message) for x in w])\n')
  proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith('True') and 'after JAX started its backends' in proc.stdout
