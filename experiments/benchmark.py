r"""Performance benchmark: `python -m experiments.benchmark`.

    python -m experiments.benchmark                                   # every workload + memory
    python -m experiments.benchmark --workloads=W1,W3 --windows=5
    python -m experiments.benchmark --readme=README.md                # also rewrite the table
    PEERS_PYTHON=... bash experiments/peers/side_by_side.sh           # with the PyTorch peers

For each workload of `experiments.benchmark_workloads` (W1 sinusoid MAML, W2 Omniglot
Conv-4 MAML, W3 task-embedding hypernetwork and its chunked variant, W4 each
hypernetwork meta-learner; `W1-bf16`), the library's meta-step and, where there is one,
a minimal hand-written `jit(vmap(...))` reference of the same computation are measured
in this process, one after the other:

* `compile_s`: lowering and compiling the step (ahead of time, `jit(...).lower().compile()`);
* `first_step_s`: the first call after compiling (allocation, transfers);
* `steps_per_s`: the median over `--windows` timed windows, after warm-up; each window
  runs as many steps as take about `--window_s` seconds and blocks on the result;
* `memory_bytes`: XLA's compiled `memory_analysis()`: `temp + argument + output`
  bytes (parameters, optimiser state and the batch included) and each part;
  `process_max_rss_bytes`: the process's peak resident set so far (monotone over the run);
* `flops_per_step` from the compiled `cost_analysis()` and the achieved `flops_per_s`;
* `overhead`: library time per step / reference time per step (1.0: none), the median of
  the ratios of paired windows: the two programs' timed windows alternate.

The `memory` section compiles the second-order meta-gradient of MAML for 1..50 inner
steps (`--memory_steps`) on W1's shapes (`--memory_model=w2`: W2's Conv-4, whose 24
programs take far longer to compile), plain, `remat=True` (each inner step rematerialised) and
`remat='nested'` (blocks of sqrt(n) steps), and records the compiled peak
(`temp + argument + output` bytes): compilation only, no timing. It writes
`memory.png` next to the JSON.

`--batch_curve=W1,W2` (default) also times the library's program of those workloads at
each meta-batch size of `--batch_sizes` (default 1, 4, 16, 32): steps/s and tasks/s,
a table and `batch_curve.png` (`--batch_curve=` for none).

`--peak_size` (default 2048 on CPU) first times a square float32 matmul, the machine's
measured peak, against which every workload's FLOP/s is a `% of peak`. When W2 runs,
`conv_matmul_probe` also times the three matmuls its convolutions are made of (forward,
input gradient, weight gradient, at its second convolution's im2col shape;
`--conv_probe_rows`) and their harmonic mean, the FLOP/s W2 could reach if it were nothing
but those matmuls: the table says how much of that bound W2 reaches.

`--peers=<glob>,...` adds the PyTorch peers' results for the same workloads (files
written by `experiments/peers/maml_torch.py` for W1, W2 and `experiments/peers/hnet_torch.py`
for W3, W3-chunked; `experiments/peers/side_by_side.sh` runs them and then this module):
this library's steps/s beside learn2learn's and torch.func's (W1, W2), hypnettorch's and
torch.func's (W3, W3-chunked), and the ratios.

Like the experiments, the benchmark first calls `hypernet.runtime.keep_freed_memory()`
(recorded as `keep_freed_memory` in the JSON; `HYPERNET_KEEP_FREED_MEMORY=0` turns it
off), which keeps XLA's per-call temporary buffers from being unmapped and mapped again
at every step; the library's program and its reference share the process, so the
overhead ratios do not depend on it.

Outputs: the JSON (`--out`, default `workdirs/benchmark/<backend>.json`, written
atomically), `memory.png`, a printed table, and with `--readme` the table between
`<!-- results:benchmark:start -->` and `<!-- results:benchmark:end -->` in that file,
naming the device. Timings depend on the machine's load: generate the README table on
an idle machine.
"""

from __future__ import annotations

import datetime
import functools
import glob
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from matplotlib.figure import Figure

from experiments import benchmark_workloads as bw
from experiments import outputs
import hypernet as hn
from hypernet import meta
from hypernet import runtime

README_START = '<!-- results:benchmark:start -->'
README_END = '<!-- results:benchmark:end -->'
MEMORY_MODES = {'plain': False, 'remat': True, 'nested': 'nested'}
DEFAULT_MEMORY_STEPS = (1, 2, 5, 10, 20, 30, 40, 50)
MEMORY_MODELS = ('w1', 'w2')
DEFAULT_BATCH_SIZES = (1, 4, 16, 32)  # 64: see hypernet.runtime (memory)


# ------------------------------------------------------------------ measuring one program
def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  return dict(cost or {})


def memory_bytes(compiled) -> dict[str, int]:
  """`{'temp', 'argument', 'output', 'alias', 'peak'}` bytes of a compiled program.

  `peak = temp + argument + output`: what XLA allocates for one call, inputs and outputs
  included (an upper bound when outputs alias donated inputs; `alias` says how much).
  """
  m = compiled.memory_analysis()
  out = {'temp': int(m.temp_size_in_bytes), 'argument': int(m.argument_size_in_bytes),
         'output': int(m.output_size_in_bytes), 'alias': int(m.alias_size_in_bytes)}
  out['peak'] = out['temp'] + out['argument'] + out['output']
  return out


def _block(tree: Any) -> None:
  jax.block_until_ready(tree)


def measure(program: bw.Program, windows: int, window_s: float) -> dict[str, Any]:
  """Compile time, first step, steps/s (median of `windows`), memory and FLOPs of a program.

  Args:
    program: the jitted step (state donated) and its state and batch.
    windows: number of timed windows (>= 1).
    window_s: target duration of a window in seconds (> 0); the number of steps per
      window is fixed from the warm-up.
  """
  return measure_interleaved([program], windows, window_s)[0]


def measure_interleaved(programs: Sequence[bw.Program], windows: int,
                        window_s: float) -> list[dict[str, Any]]:
  """`measure` for several programs whose timed windows alternate (A B A B ...).

  Each program is compiled, run once and warmed up first; then window i of every program
  runs before window i + 1 of any, so that a drift of the machine's speed (other
  virtual machines on the same host moved this CPU's rates by up to 2x within an hour
  here) falls on all of them alike. Page faults are counted over each program's own
  windows.
  """
  runs = []
  for program in programs:
    t0 = time.perf_counter()
    compiled = program.step.lower(program.state, program.batch).compile()
    compile_s = time.perf_counter() - t0
    state, batch = program.state, program.batch
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    _block((state, metrics))
    first_step_s = time.perf_counter() - t0
    # Warm-up: at least two steps and a quarter of a window, which also sizes the windows.
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < window_s / 4:
      state, metrics = compiled(state, batch)
      _block(state)
      n += 1
    per_step = (time.perf_counter() - t0) / n
    runs.append({'compiled': compiled, 'state': state, 'batch': batch, 'metrics': metrics,
                 'compile_s': compile_s, 'first_step_s': first_step_s,
                 'steps': max(1, round(window_s / per_step)), 'rates': [], 'faults': 0})
  for _ in range(windows):
    for r in runs:
      compiled, state, batch, metrics = r['compiled'], r['state'], r['batch'], r['metrics']
      faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      t0 = time.perf_counter()
      for _ in range(r['steps']):
        state, metrics = compiled(state, batch)
      _block((state, metrics))
      r['rates'].append(r['steps'] / (time.perf_counter() - t0))
      r['faults'] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
      r['state'], r['metrics'] = state, metrics
  out = []
  for r in runs:
    rate = statistics.median(r['rates'])
    flops = _cost(r['compiled']).get('flops')
    out.append({
        'compile_s': r['compile_s'], 'first_step_s': r['first_step_s'], 'steps_per_s': rate,
        'window_steps_per_s': r['rates'], 'steps_per_window': r['steps'],
        'memory_bytes': memory_bytes(r['compiled']),
        'process_max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        'flops_per_step': float(flops) if flops is not None else None,
        'flops_per_s': float(flops) * rate if flops is not None else None,
        'final_loss': float(np.asarray(r['metrics']['loss'])),
        # Minor page faults of this process per timed step: pages the kernel mapped anew
        # (see hypernet.runtime.keep_freed_memory).
        'minor_faults_per_step': r['faults'] / (windows * r['steps']),
    })
  return out


def default_peak_size() -> int:
  """The side of the peak probe's square matmul: 2048 on CPU, 8192 on accelerators (large
  enough to reach the matmul units' throughput, small enough to compile at once)."""
  return 2048 if jax.default_backend() == 'cpu' else 8192


def peak_probe(size: int, windows: int, window_s: float,
               dtype: str = 'float32') -> dict[str, Any]:
  """The machine's measured matmul throughput: `C = A @ B` of two `size x size` `dtype`
  matrices (2 size^3 FLOPs), timed like a workload's step (median of `windows`), in this
  process, so that a workload's `% of peak` compares FLOP/s measured under the same load.

  Returns `{'size', 'dtype', 'flops_per_step', 'steps_per_s', 'flops_per_s'}`.
  """
  if not isinstance(size, int) or size < 1:
    raise ValueError(f'peak_size: expected a positive integer, received {size!r}.')
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), dtype)

  @jax.jit
  def step(state, batch):  # the Program interface: (state, batch) -> (state, metrics)
    c = jnp.matmul(state, batch, precision=jax.lax.Precision.DEFAULT)
    # Keep the scale bounded over many steps: a renormalised product stays a dense matmul.
    c = c * jax.lax.rsqrt(jnp.mean(jnp.square(c)) + 1e-6)
    return c.astype(state.dtype), {'loss': jnp.mean(c)}

  r = measure(bw.Program(step, a, b), windows, window_s)
  flops = 2.0 * size ** 3
  return {'size': size, 'dtype': dtype, 'flops_per_step': flops,
          'steps_per_s': r['steps_per_s'], 'flops_per_s': flops * r['steps_per_s']}


# W2's second convolution (3x3, 64 -> 64 filters, on 14 x 14) as the matmul its im2col
# lowering runs: rows = 32 tasks x 80 images (5 support + 75 query) x 196 positions, 576
# patch values (3 x 3 x 64) -> 64 filters. It holds about 3/4 of W2's convolution FLOPs.
W2_CONV_ROWS, W2_CONV_K, W2_CONV_N = 32 * 80 * 14 * 14, 9 * 64, 64
CONV_PRODUCTS = ('forward', 'input_grad', 'weight_grad')


def conv_matmul_probe(rows: int, windows: int, window_s: float) -> dict[str, Any]:
  """The FLOP/s of the three matmuls a W2 convolution runs, at its shapes, in this process.

  Every convolution of W2's meta-step is one of three products of its im2col matmul
  `Y [rows, 64] = X [rows, 576] @ W [576, 64]`: the forward product, the input gradient
  `dY @ W^T` (inner size 64) and the weight gradient `X^T @ dY` (a reduction over the rows);
  a second-order meta-gradient runs each of them forwards and transposed again. `bound` is the
  FLOP/s of a step made of equal FLOPs of the three (their harmonic mean): what W2 could reach
  if its convolutions were nothing but these matmuls, with no im2col copies, pooling or
  elementwise work. Returns `{'rows', 'k', 'n', '<product>': flops_per_s, 'bound'}`.
  """
  if not isinstance(rows, int) or rows < 1:
    raise ValueError(f'conv_probe_rows: expected a positive integer, received {rows!r}.')
  k, n = W2_CONV_K, W2_CONV_N
  x = jax.random.normal(jax.random.key(0), (rows, k))
  w = jax.random.normal(jax.random.key(1), (k, n)) / k ** 0.5
  dy = jax.random.normal(jax.random.key(2), (rows, n))
  products = {  # (state, batch) -> a result of the product's shape; state: a running sum
      'forward': (lambda b: b[0] @ b[1], (x, w)),
      'input_grad': (lambda b: b[0] @ b[1].T, (dy, w)),
      'weight_grad': (lambda b: b[0].T @ b[1], (x, dy)),
  }
  out: dict[str, Any] = {'rows': rows, 'k': k, 'n': n}
  for name, (product, batch) in products.items():
    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, batch, product=product):  # the Program interface; the sum keeps it all
      total = state + jnp.sum(product(batch))
      return total, {'loss': total}

    r = measure(bw.Program(step, jnp.zeros(()), batch), windows, window_s)
    out[name] = 2.0 * rows * k * n * r['steps_per_s']
  out['bound'] = len(CONV_PRODUCTS) / sum(1.0 / out[p] for p in CONV_PRODUCTS)
  return out


def run_workload(name: str, windows: int, window_s: float) -> dict[str, Any]:
  """The library program of workload `name` and its reference, their windows alternating.

  `overhead` is the median over windows of the paired ratio (library time per step in
  window i) / (reference time per step in window i).
  """
  w = bw.WORKLOADS[name]
  out = {'description': w.description}
  if w.reference is None:
    out['library'] = measure(w.library(), windows, window_s)
    out['reference'], out['overhead'] = None, None
    return out
  out['library'], out['reference'] = measure_interleaved([w.library(), w.reference()], windows,
                                                         window_s)
  out['overhead'] = statistics.median(
      r / l for l, r in zip(out['library']['window_steps_per_s'],
                            out['reference']['window_steps_per_s']))
  return out


# ------------------------------------------------------------------ memory vs inner steps
def memory_program(model: str, num_steps: int, remat: bool | str, meta_batch: int | None = None):
  """(jitted MAML meta-gradient, meta-params, tasks) for the memory curve.

  Args:
    model: 'w1' (W1's MLP and sinusoid tasks) or 'w2' (W2's Conv-4 and episodes).
    num_steps: inner SGD steps (second order).
    remat: `inner_sgd`'s `remat` (False, True or 'nested').
    meta_batch: tasks per batch (default: the workload's).
  """
  if model == 'w1':
    target, tasks, loss, lr = bw.sinusoid_target(), bw.sinusoid_tasks(meta_batch or 25), 'mse', 0.01
  elif model == 'w2':
    target = hn.Target.from_linen(bw.Conv4(), jnp.zeros((1, 28, 28, 1)), key=jax.random.key(0))
    tasks, loss, lr = bw.omniglot_tasks(meta_batch or 32), 'xent', 0.4
  else:
    raise ValueError(f'model: expected one of {MEMORY_MODELS}, received {model!r}.')
  learner = meta.MAML(target=target, loss=loss, inner_lr=lr, inner_steps=num_steps, remat=remat)
  return jax.jit(learner.meta_grad), learner.init(jax.random.key(1)), tasks


def memory_curve(model: str, steps: Sequence[int], modes: Sequence[str] = tuple(MEMORY_MODES),
                 meta_batch: int | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Compiled peak bytes of the meta-gradient for each inner step count and remat mode.

  `progress`, if given, receives one line per compiled program.

  Returns:
    `{'model', 'steps': [n], 'peak_bytes': {mode: [n]}, 'temp_bytes': {mode: [n]},
    'compile_s': {mode: [n]}}`.
  """
  for mode in modes:
    if mode not in MEMORY_MODES:
      raise ValueError(f'modes: expected names in {tuple(MEMORY_MODES)}, received {mode!r}.')
  out = {'model': model, 'steps': [int(s) for s in steps], 'peak_bytes': {}, 'temp_bytes': {},
         'compile_s': {}}
  for mode in modes:
    for key in ('peak_bytes', 'temp_bytes', 'compile_s'):
      out[key][mode] = []
    for n in steps:
      fn, params, tasks = memory_program(model, int(n), MEMORY_MODES[mode], meta_batch)
      t0 = time.perf_counter()
      compiled = fn.lower(params, tasks).compile()
      out['compile_s'][mode].append(time.perf_counter() - t0)
      m = memory_bytes(compiled)
      out['peak_bytes'][mode].append(m['peak'])
      out['temp_bytes'][mode].append(m['temp'])
      if progress is not None:
        progress(f'  {mode:6s} {n:3d} inner steps: peak {m["peak"] / 2**20:.2f} MiB '
                 f'(compiled in {out["compile_s"][mode][-1]:.1f} s)')
  return out


def plot_memory(path: str, curve: dict[str, Any], device: str) -> None:
  """`memory.png`: compiled peak memory (MiB) against inner steps, one line per mode."""
  fig = Figure(figsize=(6, 4), layout='constrained')
  ax = fig.subplots()
  labels = {'plain': 'plain (every activation kept)', 'remat': 'remat=True (each step)',
            'nested': "remat='nested' (sqrt blocks)"}
  for mode, values in curve['peak_bytes'].items():
    ax.plot(curve['steps'], np.asarray(values) / 2**20, marker='o', label=labels.get(mode, mode))
  ax.set(xlabel='inner SGD steps (second order)', ylabel='compiled peak memory (MiB)')
  ax.set_title(f'MAML meta-gradient, {curve["model"].upper()} shapes\n{device}', fontsize='medium')
  ax.legend(fontsize='small')
  outputs.save_figure(fig, path)


def batch_curve(workloads: Sequence[str], sizes: Sequence[int], windows: int, window_s: float,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Steps/s (and tasks/s) of the library's program of each workload at each meta-batch size."""
  unknown = [w for w in workloads if w not in bw.BATCH_CURVE]
  if unknown:
    raise ValueError(f'batch_curve: expected workloads in {tuple(bw.BATCH_CURVE)}, received '
                     f'{unknown}.')
  if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
    raise ValueError(f'batch_sizes: expected positive integers, received {list(sizes)}.')
  out = {'sizes': list(sizes), 'workloads': {}}
  for name in workloads:
    rates, compile_s = [], []
    for n in sizes:
      m = measure(bw.BATCH_CURVE[name](n), windows, window_s)
      rates.append(m['steps_per_s'])
      compile_s.append(m['compile_s'])
      if progress is not None:
        progress(f'  {name} meta-batch {n:4d}: {m["steps_per_s"]:.4g} steps/s, '
                 f'{m["steps_per_s"] * n:.4g} tasks/s')
    out['workloads'][name] = {'steps_per_s': rates, 'compile_s': compile_s,
                              'tasks_per_s': [r * n for r, n in zip(rates, sizes)]}
  return out


def plot_batch_curve(path: str, curve: dict[str, Any], device: str) -> None:
  """`batch_curve.png`: tasks/s against meta-batch size (log-log), one line per workload."""
  fig = Figure(figsize=(6, 4), layout='constrained')
  ax = fig.subplots()
  for name, r in curve['workloads'].items():
    ax.loglog(curve['sizes'], r['tasks_per_s'], marker='o', label=f'{name} ({bw.WORKLOADS[name].description.split(",")[0]})')
  ax.set(xlabel='meta-batch size (tasks per meta-step)', ylabel='tasks per second')
  ax.set_title(f'Throughput against meta-batch size\n{device}', fontsize='medium')
  ax.legend(fontsize='small')
  outputs.save_figure(fig, path)


# ------------------------------------------------------------------ tables and README
def device_name() -> str:
  d = jax.devices()[0]
  kind = getattr(d, 'device_kind', d.platform)
  if d.platform == 'cpu':
    kind = f'{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores'
  return f'{jax.device_count()} x {d.platform.upper()} ({kind})'


def _fmt(x: float | None, digits: int = 3) -> str:
  if x is None:
    return '—'
  if x == 0 or not np.isfinite(x):
    return str(x)
  return f'{x:.{digits}g}' if abs(x) < 10 ** digits else f'{x:,.0f}'


def table(results: dict[str, Any]) -> str:
  """The markdown tables (speed per workload; memory per inner step count) of `results`."""
  kept = {True: 'kept', False: 'not kept'}.get(results.get('keep_freed_memory'), 'not recorded')
  peak = results.get('peak')
  probe = (f'; measured peak {_fmt(peak["flops_per_s"] / 1e9)} GFLOP/s ({peak["dtype"]} matmul '
           f'{peak["size"]} x {peak["size"]}, same windows, before the workloads)' if peak else
           '; no peak probe')
  lines = [f'Device: {results["device"]}; jax {results["jax_version"]}; '
           f'freed host memory {kept} (`hypernet.runtime`); '
           f'{results["windows"]} windows of ~{results["window_s"]} s{probe}; generated '
           f'{results["date"]} by `python -m experiments.benchmark`.', '',
           '| workload | steps/s | reference steps/s | overhead (lib/ref time per step) | compile s '
           '| peak MiB (XLA) | GFLOP/step | GFLOP/s | % of peak | page faults/step |',
           '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for name, r in results['workloads'].items():
    lib, ref = r['library'], r['reference']
    flops = lib['flops_per_step']
    share = (100.0 * lib['flops_per_s'] / peak['flops_per_s']
             if peak and lib['flops_per_s'] else None)
    lines.append(
        f'| {name} | {_fmt(lib["steps_per_s"])} | {_fmt(ref["steps_per_s"]) if ref else "—"} '
        f'| {_fmt(r["overhead"]) if r["overhead"] else "—"} | {_fmt(lib["compile_s"])} '
        f'| {_fmt(lib["memory_bytes"]["peak"] / 2**20)} '
        f'| {_fmt(flops / 1e9 if flops else None)} '
        f'| {_fmt(lib["flops_per_s"] / 1e9 if lib["flops_per_s"] else None)} '
        f'| {_fmt(share, 2)} '
        f'| {_fmt(lib.get("minor_faults_per_step"))} |')
  conv = results.get('conv_probe')
  if conv:
    w2 = results['workloads'].get('W2')
    reached = (f'; W2 reached {_fmt(100.0 * w2["library"]["flops_per_s"] / conv["bound"], 2)}% '
               'of that' if w2 and w2['library']['flops_per_s'] else '')
    of_peak = (f' ({_fmt(100.0 * conv["bound"] / peak["flops_per_s"], 2)}% of the measured peak)'
               if peak else '')
    lines += ['', f'What bounds W2: its convolutions run as im2col matmuls; at the shape of its '
              f'second convolution ({conv["rows"]:,} x {conv["k"]} @ {conv["k"]} x {conv["n"]}), '
              f'measured in the same run, the forward product ran at '
              f'{_fmt(conv["forward"] / 1e9)} GFLOP/s, the input gradient (inner size '
              f'{conv["n"]}) at {_fmt(conv["input_grad"] / 1e9)} and the weight gradient (a '
              f'reduction over the rows) at {_fmt(conv["weight_grad"] / 1e9)}. A meta-step of '
              f'equal FLOPs of the three, with nothing else, would run at '
              f'{_fmt(conv["bound"] / 1e9)} GFLOP/s{of_peak}{reached}.']
  mem = results.get('memory')
  if mem:
    modes = list(mem['peak_bytes'])
    lines += ['', f'Compiled peak memory (MiB) of the second-order MAML meta-gradient, '
              f'{mem["model"].upper()} shapes, by inner steps:', '',
              '| inner steps | ' + ' | '.join(modes) + ' |',
              '| ---: | ' + ' | '.join('---:' for _ in modes) + ' |']
    for i, n in enumerate(mem['steps']):
      lines.append(f'| {n} | ' + ' | '.join(_fmt(mem['peak_bytes'][m][i] / 2**20)
                                           for m in modes) + ' |')
  curve = results.get('batch_curve')
  if curve:
    sizes = curve['sizes']
    lines += ['', 'Tasks per second (meta-steps/s x meta-batch; meta-steps/s in brackets) by '
              'meta-batch size, library programs:', '',
              '| workload | ' + ' | '.join(str(n) for n in sizes) + ' |',
              '| --- | ' + ' | '.join('---:' for _ in sizes) + ' |']
    for name, r in curve['workloads'].items():
      lines.append(f'| {name} | ' + ' | '.join(
          f'{_fmt(t)} ({_fmt(s)})' for t, s in zip(r['tasks_per_s'], r['steps_per_s'])) + ' |')
  lines += peers_table(results)
  return '\n'.join(lines) + '\n'


# Peer implementations, in table order: experiments/peers/maml_torch.py (W1, W2) and
# experiments/peers/hnet_torch.py (W3, W3-chunked).
PEER_IMPLS = {'learn2learn': 'learn2learn', 'torchfunc': 'torch.func',
              'hypnettorch_loop': 'hypnettorch (task loop)',
              'hypnettorch_batched': 'hypnettorch (batched)'}
PEER_KEYS = ('impl', 'workload', 'steps_per_s', 'torch_version', 'threads', 'glibc_tunables')


def load_peers(patterns: Sequence[str]) -> list[dict[str, Any]]:
  """The peer results (`experiments/peers/*_torch.py --out=...` JSON files) matching the
  glob `patterns`, sorted by path; each checked for the keys the table needs."""
  paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
  if patterns and not paths:
    raise FileNotFoundError(f'peers: no file matches {list(patterns)}.')
  peers = []
  for path in paths:
    try:
      with open(path) as f:
        peer = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f'peers: {path!r} is not a readable JSON file ({e}).') from e
    missing = [k for k in PEER_KEYS if k not in peer]
    if missing or peer['impl'] not in PEER_IMPLS:
      raise ValueError(f'peers: {path!r}: expected the keys {PEER_KEYS} with impl in '
                       f'{tuple(PEER_IMPLS)}, missing {missing}, impl {peer.get("impl")!r}.')
    peers.append(dict(peer, path=path))
  seen = {}
  for peer in peers:  # one result per (impl, workload, malloc): the table has one cell for it
    key = (peer['impl'], peer['workload'], bool(peer['glibc_tunables']))
    if key in seen:
      raise ValueError(f'peers: {seen[key]!r} and {peer["path"]!r} are both {key[0]} on '
                       f'{key[1]} with {"kept" if key[2] else "default"} malloc; expected one.')
    seen[key] = peer['path']
  return peers


def peers_table(results: dict[str, Any]) -> list[str]:
  """Tables comparing this library's steps/s with the peers' on the same workloads: one per
  set of peer implementations (the MAML workloads' and the hypernetwork workloads')."""
  peers = results.get('peers') or []
  groups: dict[tuple[str, ...], list[str]] = {}
  for name, r in results['workloads'].items():
    ours = r['library']['steps_per_s']
    impls = tuple(i for i in PEER_IMPLS if any(p['impl'] == i and p['workload'] == name
                                                for p in peers))
    for malloc in ('default', 'kept'):
      found = {p['impl']: p for p in peers if p['workload'] == name
               and bool(p['glibc_tunables']) == (malloc == 'kept')}
      if not found:
        continue
      cells = [_fmt(found[i]['steps_per_s']) if i in found else '—' for i in impls]
      ratios = [_fmt(ours / found[i]['steps_per_s'], 2) if i in found else '—' for i in impls]
      first = next(iter(found.values()))
      groups.setdefault(impls, []).append(
          f'| {name} | {malloc} | {_fmt(ours)} | ' + ' | '.join(cells + ratios)
          + f' | {first["torch_version"]}, {first["threads"]} threads |')
  if not groups:
    return []
  kept = results.get('keep_freed_memory')
  lines = ['', 'Side by side with PyTorch peers on the same machine (meta-steps/s; the peers '
           'from `experiments/peers/maml_torch.py` and `experiments/peers/hnet_torch.py`, run '
           'just before by `experiments/peers/side_by_side.sh`). "peers\' malloc": glibc\'s '
           'default settings, or the freed memory kept as `hypernet.runtime.keep_freed_memory()` '
           f'does (this run of the library: {"kept" if kept else "default"}).']
  for impls, rows in groups.items():
    names = [PEER_IMPLS[i] for i in impls]
    lines += ['', '| workload | peers\' malloc | hypernet | ' + ' | '.join(names) + ' | '
              + ' | '.join(f'hypernet / {n}' for n in names) + ' | torch |',
              '| --- | --- | ---: | ' + ' | '.join(['---:'] * 2 * len(impls)) + ' | --- |',
              *rows]
  checked = {}  # workload -> the largest float64 meta-gradient error of its checked peers
  for p in peers:
    if isinstance(p.get('check'), dict):
      checked[p['workload']] = max(checked.get(p['workload'], 0.0), p['check']['max_rel_grad_err'])
  if checked:
    lines += ['', 'Each hypernetwork peer first computed its meta-loss and meta-gradient in '
              'float64 from the library\'s starting weights and batch (`python -m '
              'experiments.peer_check`); largest error of any gradient relative to its largest '
              'value, over the peers: ' + ', '.join(f'{w} {_fmt(e, 2)}' for w, e in
                                                    checked.items()) + '.']
  return lines


def replace_readme_section(path: str, text: str) -> None:
  """Replaces what lies between the benchmark markers in `path` with `text` (atomically)."""
  with open(path) as f:
    content = f.read()
  start, end = content.find(README_START), content.find(README_END)
  if start < 0 or end < start:
    raise ValueError(f'readme: expected {README_START!r} followed by {README_END!r} in '
                     f'{path!r}, found {"neither" if start < 0 and end < 0 else "one of them"}.')
  content = content[:start + len(README_START)] + '\n' + text + content[end:]
  outputs.write_text(path, content)


# ------------------------------------------------------------------ the run
def run(workloads: Sequence[str], windows: int, window_s: float, out: str,
        memory_model: str | None = 'w1', memory_steps: Sequence[int] = DEFAULT_MEMORY_STEPS,
        readme: str | None = None, peers: Sequence[str] = (),
        keep_freed_memory: bool | None = None, curve_workloads: Sequence[str] = (),
        curve_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
        peak_size: int | None = None, conv_probe_rows: int | None = None) -> dict[str, Any]:
  """Measures `workloads` (and the memory curve unless `memory_model` is None), writes the
  JSON to `out` (and `memory.png` beside it), optionally the README table; returns the
  results. `peers`: glob patterns of peer result files to put beside the workloads;
  `keep_freed_memory`: what `hypernet.runtime.keep_freed_memory()` returned (recorded);
  `curve_workloads`: workloads whose steps/s are also measured at each meta-batch size of
  `curve_sizes` (plotted to `batch_curve.png` beside the JSON); `peak_size`: the side of the
  peak probe's matmul (`peak_probe`; None: `default_peak_size()`, 0: no probe), measured
  first, against which each workload's FLOP/s is a `% of peak`; `conv_probe_rows`: the rows of
  `conv_matmul_probe` (None: W2's, when W2 is measured, else no probe; 0: no probe)."""
  unknown = [w for w in workloads if w not in bw.WORKLOADS]
  if unknown:
    raise ValueError(f'workloads: expected names in {tuple(bw.WORKLOADS)}, received {unknown}.')
  if not isinstance(windows, int) or windows < 1:
    raise ValueError(f'windows: expected a positive integer, received {windows!r}.')
  if not window_s > 0:
    raise ValueError(f'window_s: expected a positive number of seconds, received {window_s!r}.')
  if memory_model is not None and memory_model not in MEMORY_MODELS:
    raise ValueError(f'memory_model: expected one of {MEMORY_MODELS} or none, received '
                     f'{memory_model!r}.')
  peer_results = load_peers(peers)  # before the long run: a bad path fails at once
  unknown = [w for w in curve_workloads if w not in bw.BATCH_CURVE]
  if unknown:
    raise ValueError(f'batch_curve: expected workloads in {tuple(bw.BATCH_CURVE)}, received '
                     f'{unknown}.')
  if peak_size is not None and (not isinstance(peak_size, int) or peak_size < 0):
    raise ValueError(f'peak_size: expected a non-negative integer (0: no probe), received '
                     f'{peak_size!r}.')
  if conv_probe_rows is None:
    conv_probe_rows = W2_CONV_ROWS if 'W2' in workloads else 0
  if not isinstance(conv_probe_rows, int) or conv_probe_rows < 0:
    raise ValueError(f'conv_probe_rows: expected a non-negative integer (0: no probe), '
                     f'received {conv_probe_rows!r}.')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  results = {'keep_freed_memory': keep_freed_memory, 'device': device_name(), 'backend': jax.default_backend(),
             'jax_version': jax.__version__, 'windows': windows, 'window_s': window_s,
             'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
             'load_average': list(os.getloadavg()), 'peak': None, 'workloads': {}}
  size = default_peak_size() if peak_size is None else peak_size
  if size:
    print(f'peak probe: float32 matmul {size} x {size} ...', flush=True)
    results['peak'] = peak_probe(size, windows, window_s)
    print(f'  {results["peak"]["flops_per_s"] / 1e9:.4g} GFLOP/s', flush=True)
  for name in workloads:
    print(f'{name}: {bw.WORKLOADS[name].description} ...', flush=True)
    results['workloads'][name] = r = run_workload(name, windows, window_s)
    ref = r['reference']
    print(f'  {r["library"]["steps_per_s"]:.4g} steps/s (compile {r["library"]["compile_s"]:.1f} s)'
          + (f'; reference {ref["steps_per_s"]:.4g} steps/s, overhead {r["overhead"]:.3f}'
             if ref else ''), flush=True)
    outputs.write_json(out, results)  # after each workload: a long run leaves partial results
  if memory_model is not None:
    print(f'memory: {memory_model} shapes, inner steps {list(memory_steps)} ...', flush=True)
    results['memory'] = memory_curve(memory_model, memory_steps,
                                     progress=lambda line: print(line, flush=True))
    plot_memory(os.path.join(os.path.dirname(os.path.abspath(out)), 'memory.png'),
                results['memory'], results['device'])
  if curve_workloads:
    print(f'meta-batch curve: {list(curve_workloads)} at {list(curve_sizes)} tasks ...', flush=True)
    results['batch_curve'] = batch_curve(curve_workloads, curve_sizes, windows, window_s,
                                         progress=lambda line: print(line, flush=True))
    plot_batch_curve(os.path.join(os.path.dirname(os.path.abspath(out)), 'batch_curve.png'),
                     results['batch_curve'], results['device'])
  if conv_probe_rows:  # last: its ~1 GiB buffers stay out of the heap the workloads were timed in
    print(f'convolution matmuls: {conv_probe_rows} x {W2_CONV_K} @ {W2_CONV_K} x {W2_CONV_N} '
          '...', flush=True)
    results['conv_probe'] = c = conv_matmul_probe(conv_probe_rows, windows, window_s)
    print('  ' + ', '.join(f'{p} {c[p] / 1e9:.4g}' for p in CONV_PRODUCTS)
          + f' GFLOP/s; bound {c["bound"] / 1e9:.4g}', flush=True)
  results['peers'] = peer_results
  outputs.write_json(out, results)
  text = table(results)
  print(text)
  if readme:
    replace_readme_section(readme, text)
  return results


def _define_flags() -> None:
  flags.DEFINE_list('workloads', list(bw.WORKLOADS), f'Workloads to run, of {list(bw.WORKLOADS)}.')
  flags.DEFINE_integer('windows', 5, 'Timed windows per program (the median is reported).')
  flags.DEFINE_float('window_s', 2.0, 'Approximate seconds per timed window.')
  flags.DEFINE_string('out', None, 'JSON path (default workdirs/benchmark/<backend>.json).')
  flags.DEFINE_string('memory_model', 'w1', "Shapes of the memory curve: 'w1', 'w2' or 'none'.")
  flags.DEFINE_list('memory_steps', [str(s) for s in DEFAULT_MEMORY_STEPS],
                    'Inner step counts of the memory curve.')
  flags.DEFINE_string('readme', None, 'Markdown file whose benchmark section is replaced.')
  flags.DEFINE_list('batch_curve', list(bw.BATCH_CURVE),
                    f'Workloads timed at each --batch_sizes (of {list(bw.BATCH_CURVE)}; '
                    'empty: none).')
  flags.DEFINE_list('batch_sizes', [str(n) for n in DEFAULT_BATCH_SIZES],
                    'Meta-batch sizes of the --batch_curve.')
  flags.DEFINE_integer('conv_probe_rows', None, 'Rows of the convolution-matmul probe (default '
                       f'{W2_CONV_ROWS:,}, W2\'s, when W2 is measured; 0: none).')
  flags.DEFINE_integer('peak_size', None, 'Side of the peak probe\'s float32 matmul (default '
                       '2048 on CPU, 8192 on accelerators; 0: no probe).')
  flags.DEFINE_list('peers', [], 'Glob patterns of peer results (experiments/peers/maml_torch.py '
                    '--out files) to show beside the workloads.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  kept = runtime.keep_freed_memory()  # before the first JAX computation (hypernet.runtime)
  f = flags.FLAGS
  out = f.out or os.path.join('workdirs', 'benchmark', f'{jax.default_backend()}.json')
  try:
    steps = [int(s) for s in f.memory_steps]
  except ValueError as e:
    raise app.UsageError(f'--memory_steps: expected integers, received {f.memory_steps}.') from e
  try:
    sizes = [int(n) for n in f.batch_sizes]
  except ValueError as e:
    raise app.UsageError(f'--batch_sizes: expected integers, received {f.batch_sizes}.') from e
  model = None if f.memory_model.lower() == 'none' else f.memory_model
  run(f.workloads, f.windows, f.window_s, out, model, steps, f.readme, f.peers, kept,
      f.batch_curve, sizes, f.peak_size, f.conv_probe_rows)


if __name__ == '__main__':
  _define_flags()
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)  # absl.app.run, with one-line errors
