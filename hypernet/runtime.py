"""Process settings for training on the CPU: keep freed host memory for reuse.

XLA's CPU runtime allocates each executable's temporary buffer with `malloc` at every
call and frees it when the call ends. glibc serves allocations this large with a fresh
`mmap` and returns them to the kernel on `free`, so every call touches new pages: the
kernel zeroes and maps them one 4 KiB page at a time. For second-order Conv-4 MAML on
Omniglot shapes (the benchmark's W2: a 3.7 GiB temporary buffer) that was about one
million minor page faults and 3 s of kernel time in every 4.5 s meta-step on this
project's 2-core CPU; with the memory kept, 0 faults and about 2.8 s a step (measured
with `resource.getrusage` around single steps, `jax` 0.10.2).

`keep_freed_memory()` asks glibc to keep it: one malloc arena for all threads (the
threads' own arenas can only `mmap` blocks this large), no `mmap` for large blocks
(the heap grows with `brk` instead), and no trimming of the heap's free top. The
process then keeps its peak host memory until it exits, as GPU allocators keep device
memory; memory freed inside the process is reused. Caveat: a block can only be reused
by requests that fit in it, so a process that runs programs of growing sizes one after
the other can hold far more than its largest program needs (seen: the benchmark ran out
of this machine's 24 GB after many programs when it reached W2 at meta-batch 64, a
7.4 GB temporary buffer; the default curve now stops at 32). One training run, which
calls the same programs again and again, does not have that pattern. glibc reads the same settings from
the environment, which also works for notebooks and other programs (set it before
Python starts)::

    GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736

The experiments call `keep_freed_memory()` first thing in `main`; set
`HYPERNET_KEEP_FREED_MEMORY=0` to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import warnings

ENV_VAR = 'HYPERNET_KEEP_FREED_MEMORY'
GLIBC_TUNABLES = ('glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:'
                  'glibc.malloc.trim_threshold=68719476736')

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def _backends_started() -> bool:
  """Whether JAX has created its backends (and with them its thread pools)."""
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
    return False


def keep_freed_memory() -> bool:
  """Ask glibc's malloc to keep freed memory in the process for reuse.

  Call it before the first JAX computation: JAX's CPU threads take their malloc arena
  when they first allocate, and a thread that already has its own arena keeps it
  (then large blocks are still mapped and unmapped at every call; a warning says so).

  Returns:
    True when the settings were applied; False where they do not apply (not Linux
    with glibc) or where `HYPERNET_KEEP_FREED_MEMORY=0` turns them off.

  Raises:
    RuntimeError: glibc refused one of the settings.
  """
  if os.environ.get(ENV_VAR, '1').strip().lower() in ('0', 'false', 'no', 'off'):
    return False
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  # -1 converts to SIZE_MAX inside glibc: the heap's free top is never trimmed.
  for name, param, value in (('M_ARENA_MAX', _M_ARENA_MAX, 1), ('M_MMAP_MAX', _M_MMAP_MAX, 0),
                             ('M_TRIM_THRESHOLD', _M_TRIM_THRESHOLD, -1)):
    if libc.mallopt(param, value) != 1:
      raise RuntimeError(f'keep_freed_memory: mallopt({name}, {value}) failed.')
  if _backends_started():
    warnings.warn(
        'keep_freed_memory() was called after JAX started its backends: threads that '
        'already have their own malloc arena keep unmapping large blocks. Call it before '
        f'the first JAX computation, or start Python with GLIBC_TUNABLES={GLIBC_TUNABLES}.',
        RuntimeWarning, stacklevel=2)
  return True
