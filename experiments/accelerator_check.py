r"""The prepared accelerator run: `python -m experiments.accelerator_check`, one command.

    python -m experiments.accelerator_check       # JSON: workdirs/accelerator_check/<backend>.json
    python -m experiments.accelerator_check --out=$OUT/gpu.json  # on a lent GPU machine
    python -m experiments.accelerator_check --from_json=gpu.json --readme=README.md
    python -m experiments.accelerator_check --tiny --out=/tmp/a.json   # seconds on a CPU (tests)

Meant for a machine with an accelerator that is lent for a few minutes: on one GPU the
default run starts no new measurement after `--budget_s` (360 s) and times at most
`OMNIGLOT_MAX_TIMED_S` (120 s) of Omniglot meta-steps, so that it ends within about seven
minutes unless one compilation alone takes minutes. It measures, in this order, with
`experiments.benchmark`'s functions (the same timing: median of timed windows after
warm-up, XLA's compiled peak memory and FLOPs):

1. `peak`: the matmul peak probe (`benchmark.peak_probe`, `default_peak_size()`: 8192 on
   accelerators), against which every program's achieved FLOP/s is a `percent_of_peak`;
2. `workloads`: every workload of `experiments.benchmark_workloads.WORKLOADS` (or
   `--workloads`), the library's program and its hand-written reference
   (`benchmark.run_workload`): steps/s, compile time, peak memory, FLOP/s, % of peak;
3. `omniglot`: a few hundred meta-steps (`--omniglot_steps`, default 300, after one
   warm-up call) of MAML on Omniglot at the paper's size (`experiments/configs/omniglot.py`
   `algo=maml,size=paper`: 5-way 1-shot, 15 queries per class, Conv-4 with 64 filters and
   BatchNorm, meta-batch 32, one second-order inner step of 0.4, Adam 1e-3), built as
   `experiments.omniglot` builds it (`build_target`, `learners.build_learner`, the training
   loop's `programs.TrainChunk`: `steps_per_call` meta-steps per jitted call, episodes sampled
   on device by `OmniglotEpisodes.sample_batch`) from random uint8 images of the MAML
   protocol's 4,400 meta-training classes (no dataset needed); steps/s and the projected
   time of the paper's 60,000 meta-steps (training only: evaluation and checkpoints
   excluded). Its timed calls stop early after `OMNIGLOT_MAX_TIMED_S` or at the budget;
   then the same for the flagship Omniglot method at the paper's size (`FLAGSHIP_CONFIG`,
   ProtoNets on the gated Conv-4: one 60-way 1-shot episode with 5 queries per class per
   meta-step, 20,000 meta-steps), `omniglot_maml` with `argument=FLAGSHIP_CONFIG`;
4. `batch_curve`: the library programs of `benchmark_workloads.BATCH_CURVE` at
   accelerator-sized meta-batches (W1: 32, 128, 512, 2048; W2: 8, 32, 128), each measured
   by `benchmark.measure` (steps/s, tasks/s, memory, FLOP/s, % of peak).

The Omniglot run comes before the curve: it is the figure a paper-size training run needs,
and the curve's largest programs are the likeliest to run out of memory or time.

Every workload, curve point and part is measured on its own: an error (out of memory, a
compile failure) is recorded in the JSON as `{"error": "<type>: <message>"}` and the rest
still runs; an item not started because the budget was spent is `{"skipped": ...}`. The JSON
(`--out`, default `workdirs/accelerator_check/<backend>.json`) is written atomically after
every item, so a run stopped from outside leaves what it had measured. `--readme` replaces
the text between `<!-- results:accelerator:start -->` and `<!-- results:accelerator:end -->`
in that file at the end (the markers are checked before anything runs); `--from_json`
writes that section from a saved JSON instead of measuring (e.g. from a partial one, or
on another machine than the one that measured).

`--tiny` shrinks everything (the W1 workload, W1 alone at meta-batches 1 and 2, 2 windows
of 0.05 s, a 256 x 256 peak probe, 3 Omniglot meta-steps of the config's `smoke` variant:
8 filters, meta-batch 2, still BatchNorm and second order, on 20 classes) so that the
command runs on a CPU in well under a minute; its numbers test the command, they measure
nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import app, flags

from experiments import benchmark, learners, omniglot, outputs, programs, results_table
from experiments import benchmark_workloads as bw
from experiments.configs import omniglot as omniglot_config
from hypernet import parallel
from hypernet import runtime
from hypernet.tasks.omniglot import OmniglotEpisodes

README_START = '<!-- results:accelerator:start -->'
README_END = '<!-- results:accelerator:end -->'
DEFAULT_BUDGET_S = 360.0
OMNIGLOT_MAX_TIMED_S = 120.0  # 300 meta-steps at 2.5 meta-steps/s or more
ERROR_CHARS = 2000  # of an error's message kept in the JSON
OMNIGLOT_CONFIG = 'algo=maml,size=paper'
# The flagship Omniglot method (README): ProtoNets on the gated Conv-4, 20,000 60-way episodes.
FLAGSHIP_CONFIG = 'algo=protonet,gated,size=paper'


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What one run measures (`FULL` on an accelerator, `TINY` for `--tiny`).

  Attributes:
    windows: timed windows per program (the median is reported).
    window_s: approximate seconds per window.
    peak_size: side of the peak probe's matmul (None: `benchmark.default_peak_size()`).
    workloads: names of `bw.WORKLOADS` measured by default.
    curve: meta-batch sizes per workload of `bw.BATCH_CURVE`.
    omniglot_steps: timed Omniglot meta-steps (after one warm-up call).
    omniglot_variant: config variant added to `OMNIGLOT_CONFIG` ('' or ',smoke').
    omniglot_steps_per_call: meta-steps per jitted call (None: the config's, 50).
    omniglot_classes: classes of random images (None: the MAML protocol's 4,400).
  """
  windows: int
  window_s: float
  peak_size: int | None
  workloads: tuple[str, ...]
  curve: dict[str, tuple[int, ...]]
  omniglot_steps: int
  omniglot_variant: str = ''
  omniglot_steps_per_call: int | None = None
  omniglot_classes: int | None = None


FULL = Sizes(windows=3, window_s=1.0, peak_size=None, workloads=tuple(bw.WORKLOADS),
             curve={'W1': (32, 128, 512, 2048), 'W2': (8, 32, 128)}, omniglot_steps=300)
TINY = Sizes(windows=2, window_s=0.05, peak_size=256, workloads=('W1',), curve={'W1': (1, 2)},
             omniglot_steps=3, omniglot_variant=',smoke', omniglot_steps_per_call=3,
             omniglot_classes=20)


# ------------------------------------------------------------------ one item at a time
def _error_text(e: BaseException) -> str:
  text = f'{type(e).__name__}: {e}'.strip()
  return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + ' ...'


def _device_peak_bytes() -> int | None:
  """The default device's peak bytes in use so far (None where it keeps no statistics: CPU)."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  # not every backend implements it
    return None
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


class _Clock:
  """The run's time budget: items are started only before `deadline`."""

  def __init__(self, budget_s: float):
    self.budget_s = budget_s
    self.start = time.perf_counter()
    self.deadline = self.start + budget_s

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def late(self) -> bool:
    return time.perf_counter() > self.deadline


def attempt(fn: Callable[[], dict[str, Any]], clock: _Clock) -> dict[str, Any]:
  """`fn()` with its `wall_s`, `{'error': ...}` if it raised, `{'skipped': ...}` if late.

  Any `Exception` is caught (an accelerator's out-of-memory error is an `XlaRuntimeError`),
  so that the other items still run; its message is kept (`ERROR_CHARS` characters).
  """
  if clock.late():
    return {'skipped': f'not started: the time budget (--budget_s={clock.budget_s:g}) was '
                       f'spent after {clock.elapsed():.0f} s'}
  t0 = time.perf_counter()
  try:
    out = dict(fn())
  except Exception as e:  # pylint: disable=broad-except  # recorded; the others still run
    out = {'error': _error_text(e)}
    print(f'  failed: {out["error"].splitlines()[0][:300]}', flush=True)
    gc.collect()  # drop the failed program's buffers before the next one
  out['wall_s'] = time.perf_counter() - t0
  out['device_peak_bytes'] = _device_peak_bytes()
  return out


def _share(flops_per_s: float | None, peak: dict[str, Any] | None) -> float | None:
  if not flops_per_s or not peak or not peak.get('flops_per_s'):
    return None
  return 100.0 * flops_per_s / peak['flops_per_s']


# ------------------------------------------------------------------ the Omniglot run
def synthetic_episodes(num_classes: int, seed: int = 0) -> OmniglotEpisodes:
  """Random uint8 ink `[num_classes, 20, 28, 28]` as an episode family (no dataset needed)."""
  images = np.random.default_rng(seed).integers(0, 256, (num_classes, 20, 28, 28), np.uint8)
  return OmniglotEpisodes.from_classes(images)


def omniglot_maml(steps: int, variant: str = '', deadline: float | None = None,
                  steps_per_call: int | None = None,
                  num_classes: int | None = None,
                  max_timed_s: float | None = None,
                  argument: str = OMNIGLOT_CONFIG) -> dict[str, Any]:
  """Times paper-size Omniglot MAML (or the config `argument`) as `experiments.omniglot`
  trains it, on random images.

  The programs are compiled at XLA's default optimisation level even where the config
  asks for `fast_compile` (the `smoke` variant): speed is what is measured, and at level 0
  the training loop's `grad_norm` came out NaN within its first two meta-steps on random
  images on the CPU here (jax 0.10.2; the same meta-gradient compiled alone was finite).

  Args:
    steps: timed meta-steps, run in calls of `min(steps_per_call, steps)` after one
      warm-up call of that length (compilation and first run); rounded up to whole calls.
    variant: added to the config argument (',smoke': `--tiny`).
    deadline: a `time.perf_counter()` value after which no further call starts (at least
      one timed call always runs); None: none.
    steps_per_call: meta-steps per call (None: `config.steps_per_call`, as training runs).
    num_classes: classes of random images to sample episodes from (None: the MAML
      protocol's meta-training classes, 4,400 with rotations).
    max_timed_s: no further call starts after this many seconds of timed calls (at least
      one runs); None: no limit.
    argument: the config argument of `experiments/configs/omniglot.py` at the paper's size
      (`OMNIGLOT_CONFIG`: MAML; `FLAGSHIP_CONFIG`: the flagship).

  Returns:
    `{'config': {...}, 'num_target_params', 'num_classes', 'compile_s', 'first_call_s',
    'steps', 'steps_per_s', 'run_s', 'first_loss', 'final_loss', 'paper_num_steps',
    'projected_paper_s'}` (`projected_paper_s`: the paper's meta-steps at `steps_per_s`).
  """
  config = omniglot_config.get_config(argument + variant)
  paper_steps = omniglot_config.get_config(argument).num_steps
  omniglot.validate_config(config)
  target = omniglot.build_target(config)
  learner = omniglot.for_ways(learners.build_learner(config, target), config.train_ways)
  # The MAML protocol's meta-training classes: (1200 - 100) characters x 4 rotations.
  if num_classes is None:
    num_classes = (config.data.num_train - config.data.num_val) * (4 if config.data.rotations
                                                                   else 1)
  family = synthetic_episodes(num_classes)
  sizes = (config.meta_batch_size, config.train_ways, config.shots, config.queries)

  def sample_tasks(key: jax.Array):
    return family.sample_batch(key, *sizes)

  mesh = programs.task_mesh_for(config, sample_tasks)
  tx = programs.make_optimizer(config)
  fast = False  # see above
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  state = programs.init_state(learner, tx, init_key, fast)
  if mesh is not None:
    state = parallel.replicate(state, mesh)
  chunk = programs.TrainChunk(learner, tx, sample_tasks, fast, mesh,
                           config.get('compute_dtype', 'float32'))
  length = min(steps_per_call or config.steps_per_call, steps)
  t0 = time.perf_counter()
  state, metrics = chunk(state, train_key, length)
  metrics = jax.device_get(metrics)
  first_call_s = time.perf_counter() - t0 - chunk.compile_s
  first_loss = float(np.mean(metrics['loss']))
  done, run_s = 0, 0.0
  stop = deadline if deadline is not None else math.inf
  if max_timed_s is not None:
    stop = min(stop, time.perf_counter() + max_timed_s)
  while done < steps and (done == 0 or time.perf_counter() < stop):
    t0 = time.perf_counter()
    state, metrics = chunk(state, train_key, length)
    metrics = jax.device_get(metrics)  # one transfer per call, as the training loop does
    run_s += time.perf_counter() - t0
    done += length
  rate = done / run_s
  inner = config.get('inner')
  return {
      'config': {'argument': argument + variant, 'algo': config.algo,
                 'gate': bool(config.model.gate), 'ways': config.train_ways,
                 'shots': config.shots, 'queries': config.queries,
                 'meta_batch_size': config.meta_batch_size, 'filters': config.model.filters,
                 'batch_norm': bool(config.model.batch_norm),
                 # None for the learners without an inner loop (the flagship)
                 'inner_steps': inner.steps if inner else None,
                 'inner_lr': inner.lr if inner else None,
                 'first_order': bool(inner.first_order) if inner else None,
                 'steps_per_call': length, 'conv_strategy': config.model.conv_strategy,
                 'compute_dtype': config.get('compute_dtype', 'float32'),
                 'sharded_over': 1 if mesh is None else mesh.devices.size},
      'num_target_params': int(target.num_params), 'num_classes': num_classes,
      'compile_s': chunk.compile_s, 'first_call_s': first_call_s, 'steps': done,
      'steps_per_s': rate, 'run_s': run_s, 'first_loss': first_loss,
      'final_loss': float(np.mean(metrics['loss'])), 'paper_num_steps': paper_steps,
      'projected_paper_s': paper_steps / rate,
  }


# ------------------------------------------------------------------ the README section
def _fmt(x: float | None, digits: int = 3) -> str:
  return benchmark._fmt(x, digits)  # pylint: disable=protected-access  # the same numbers


def _mib(m: dict[str, Any]) -> float | None:
  mem = m.get('memory_bytes')
  return mem['peak'] / 2**20 if mem else None


def _gflop(x: float | None) -> float | None:
  return x / 1e9 if x else None


def _failure(r: dict[str, Any]) -> str | None:
  """'failed: <first line>' or 'skipped ...' for an item that has no measurement, else None."""
  if 'error' in r:
    line = r['error'].splitlines()[0] if r['error'] else 'error'
    return 'failed: ' + (line if len(line) <= 160 else line[:160] + ' ...').replace('|', '/')
  if 'skipped' in r:
    return 'skipped (time budget)'
  return None


def duration(seconds: float) -> str:
  """`'3 h 25 min'`, `'12 min'` or `'41 s'`."""
  if seconds >= 3600:
    h, m = divmod(round(seconds / 60), 60)
    return f'{h} h {m} min'
  return f'{round(seconds / 60)} min' if seconds >= 60 else f'{seconds:.0f} s'


def section(results: dict[str, Any]) -> str:
  """The README section (markdown) of a run's `results`, partial ones included."""
  tiny = ('; **`--tiny`**: shrunk sizes, a test of the command, not a measurement'
          if results.get('tiny') else '')
  state = '' if results.get('finished') else '; **unfinished** (the JSON of a stopped run)'
  lines = [f'Device: {results["device"]}; jax {results["jax_version"]}; '
           f'{results["windows"]} windows of ~{results["window_s"]} s per program; generated '
           f'{results["date"]} by `python -m experiments.accelerator_check` in '
           f'{results.get("wall_s", 0):.0f} s{tiny}{state}.', '']
  peak = results.get('peak')
  ok_peak = peak if peak and _failure(peak) is None else None
  if ok_peak:
    lines.append(f'Measured peak: {_fmt(ok_peak["flops_per_s"] / 1e9)} GFLOP/s ({ok_peak["dtype"]} '
                 f'matmul {ok_peak["size"]} x {ok_peak["size"]}, default precision).')
  else:
    lines.append(f'Peak probe: {_failure(peak) if peak else "not run"}.')
  lines += ['', '| workload | steps/s | reference steps/s | overhead (lib/ref time per step) '
            '| compile s | peak MiB (XLA) | GFLOP/step | GFLOP/s | % of peak |',
            '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for name, r in results.get('workloads', {}).items():
    failed = _failure(r)
    if failed:
      lines.append(f'| {name} | {failed} |' + ' — |' * 7)
      continue
    lib, ref = r['library'], r['reference']
    lines.append(
        f'| {name} | {_fmt(lib["steps_per_s"])} | {_fmt(ref["steps_per_s"]) if ref else "—"} '
        f'| {_fmt(r["overhead"])} | {_fmt(lib["compile_s"])} | {_fmt(_mib(lib))} '
        f'| {_fmt(_gflop(lib["flops_per_step"]))} | {_fmt(_gflop(lib["flops_per_s"]))} '
        f'| {_fmt(r.get("percent_of_peak"), 2)} |')
  o = results.get('omniglot')
  lines.append('')
  if o is None:
    lines.append('Omniglot MAML at the paper\'s size: not run.')
  elif _failure(o):
    lines.append(f'Omniglot MAML at the paper\'s size: {_failure(o)}.')
  else:
    c = o['config']
    lines.append(
        f'Omniglot MAML at the paper\'s size (`{c["argument"]}`: {c["ways"]}-way '
        f'{c["shots"]}-shot, '
        f'{c["queries"]} queries per class, Conv-4 with {c["filters"]} filters'
        f'{" and BatchNorm" if c["batch_norm"] else ""}, meta-batch {c["meta_batch_size"]}, '
        f'{c["inner_steps"]} {"first" if c["first_order"] else "second"}-order inner step(s) '
        f'of {c["inner_lr"]}; random images of {o["num_classes"]:,} classes sampled on device '
        f'by the training loop, {c["steps_per_call"]} meta-steps per call): '
        f'**{_fmt(o["steps_per_s"])} meta-steps/s** over {o["steps"]} timed meta-steps, after '
        f'{_fmt(o["compile_s"])} s of compilation; the paper\'s {o["paper_num_steps"]:,} '
        f'meta-steps would take **{duration(o["projected_paper_s"])}** of training '
        '(evaluation and checkpoints excluded).')
  f = results.get('omniglot_flagship')
  if f is not None and _failure(f):
    lines += ['', f'The flagship at the paper\'s size: {_failure(f)}.']
  elif f is not None:
    c = f['config']
    lines += ['', (
        f'The flagship Omniglot method, ProtoNets on the gated Conv-4, at the paper\'s size '
        f'(`{c["argument"]}`: one {c["ways"]}-way {c["shots"]}-shot episode with '
        f'{c["queries"]} queries per class per meta-step, Conv-4 with {c["filters"]} filters '
        f'and its gates; random images of {f["num_classes"]:,} classes, '
        f'{c["steps_per_call"]} meta-steps per call): **{_fmt(f["steps_per_s"])} '
        f'meta-steps/s** over {f["steps"]} timed meta-steps, after {_fmt(f["compile_s"])} s of '
        f'compilation; its {f["paper_num_steps"]:,} meta-steps would take '
        f'**{duration(f["projected_paper_s"])}** of training (evaluation and checkpoints '
        'excluded).')]
  curve = results.get('batch_curve') or {}
  if curve:
    lines += ['', 'Library programs by meta-batch size (tasks/s = meta-steps/s x meta-batch):', '',
              '| workload | meta-batch | meta-steps/s | tasks/s | compile s | peak MiB (XLA) '
              '| GFLOP/s | % of peak |',
              '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    for name, points in curve.items():
      for n, r in points.items():
        failed = _failure(r)
        if failed:
          lines.append(f'| {name} | {n} | {failed} |' + ' — |' * 5)
          continue
        lines.append(f'| {name} | {n} | {_fmt(r["steps_per_s"])} | {_fmt(r["tasks_per_s"])} '
                     f'| {_fmt(r["compile_s"])} | {_fmt(_mib(r))} '
                     f'| {_fmt(_gflop(r["flops_per_s"]))} | {_fmt(r.get("percent_of_peak"), 2)} |')
  return '\n'.join(lines) + '\n'


def check_readme(path: str) -> str:
  """The text of `path`, checked to hold the accelerator markers once each, in order."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError as e:
    raise OSError(f'readme: cannot read {path!r} ({e.strerror or e}).') from e
  results_table.replace_section(text, '', README_START, README_END)  # raises if misplaced
  return text


def write_readme(path: str, results: dict[str, Any]) -> None:
  """Replaces the accelerator section of `path` by `section(results)`, atomically."""
  text = results_table.replace_section(check_readme(path), section(results), README_START,
                                       README_END)
  outputs.write_text(path, text)


# ------------------------------------------------------------------ the run
def run(out: str, readme: str | None = None, tiny: bool = False,
        workloads: Sequence[str] | None = None, budget_s: float = DEFAULT_BUDGET_S,
        omniglot_steps: int | None = None, keep_freed_memory: bool | None = None) -> dict[str, Any]:
  """Measures the four parts (module docstring), writing the JSON `out` after every item.

  Args:
    out: the JSON path (its folder is made).
    readme: a markdown file whose accelerator section is replaced at the end, or None.
    tiny: `TINY` sizes instead of `FULL`.
    workloads: names of `bw.WORKLOADS` (None: the sizes' default: all, or W1 for `tiny`).
    budget_s: seconds (> 0) after which no new item starts.
    omniglot_steps: timed Omniglot meta-steps (None: 300, or 3 for `tiny`).
    keep_freed_memory: what `hypernet.runtime.keep_freed_memory()` returned (recorded).

  Returns:
    The results, as written to `out`.
  """
  sizes = TINY if tiny else FULL
  workloads = list(sizes.workloads if workloads is None else workloads)
  unknown = [w for w in workloads if w not in bw.WORKLOADS]
  if unknown or not workloads:
    raise ValueError(f'workloads: expected names in {tuple(bw.WORKLOADS)}, received '
                     f'{unknown or workloads}.')
  if (isinstance(budget_s, bool) or not isinstance(budget_s, (int, float))
      or not math.isfinite(budget_s) or budget_s <= 0):
    raise ValueError(f'budget_s: expected a positive number of seconds, received {budget_s!r}.')
  steps = sizes.omniglot_steps if omniglot_steps is None else omniglot_steps
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f'omniglot_steps: expected a positive integer, received {steps!r}.')
  if readme is not None:
    check_readme(readme)  # before the long run: a wrong file fails at once
  clock = _Clock(float(budget_s))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  results = {
      'tool': 'experiments.accelerator_check', 'tiny': bool(tiny), 'finished': False,
      'device': benchmark.device_name(), 'backend': jax.default_backend(),
      'device_count': jax.device_count(), 'jax_version': jax.__version__,
      'default_matmul_precision': jax.config.jax_default_matmul_precision,
      'keep_freed_memory': keep_freed_memory, 'windows': sizes.windows,
      'window_s': sizes.window_s, 'budget_s': float(budget_s),
      'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
      'load_average': list(os.getloadavg()), 'wall_s': 0.0,
      'peak': None, 'workloads': {}, 'omniglot': None, 'omniglot_flagship': None,
      'batch_curve': {}}

  def save() -> None:
    results['wall_s'] = clock.elapsed()
    results['device_peak_bytes'] = _device_peak_bytes()
    outputs.write_json(out, results)

  def log(line: str) -> None:
    print(f'[{clock.elapsed():6.1f} s] {line}', flush=True)

  # 1. The peak probe.
  size = benchmark.default_peak_size() if sizes.peak_size is None else sizes.peak_size
  log(f'peak probe: float32 matmul {size} x {size} ...')
  results['peak'] = peak = attempt(
      lambda: benchmark.peak_probe(size, sizes.windows, sizes.window_s), clock)
  if 'flops_per_s' in peak:
    log(f'  {peak["flops_per_s"] / 1e9:.4g} GFLOP/s')
  save()

  # 2. Every workload, library and reference.
  for name in workloads:
    log(f'{name}: {bw.WORKLOADS[name].description} ...')

    def measure_workload(name=name):
      r = benchmark.run_workload(name, sizes.windows, sizes.window_s)
      r['percent_of_peak'] = _share(r['library']['flops_per_s'], results['peak'])
      return r

    results['workloads'][name] = r = attempt(measure_workload, clock)
    if 'library' in r:
      log(f'  {r["library"]["steps_per_s"]:.4g} steps/s (compile '
          f'{r["library"]["compile_s"]:.1f} s), {_fmt(r["percent_of_peak"], 2)} % of peak')
    save()

  # 3. Paper-size Omniglot MAML, then the flagship (before the curve: module docstring).
  for key, what, argument in (('omniglot', 'MAML', OMNIGLOT_CONFIG),
                              ('omniglot_flagship', 'the flagship', FLAGSHIP_CONFIG)):
    log(f'omniglot: {what}, {argument + sizes.omniglot_variant}, {steps} timed meta-steps ...')
    results[key] = o = attempt(
        lambda argument=argument: omniglot_maml(
            steps, sizes.omniglot_variant, clock.deadline, sizes.omniglot_steps_per_call,
            sizes.omniglot_classes, OMNIGLOT_MAX_TIMED_S, argument=argument), clock)
    if 'steps_per_s' in o:
      log(f'  {o["steps_per_s"]:.4g} meta-steps/s (compile {o["compile_s"]:.1f} s); '
          f'{o["paper_num_steps"]} meta-steps: {duration(o["projected_paper_s"])}')
    save()

  # 4. The meta-batch curve, each point on its own.
  for name, batch_sizes in sizes.curve.items():
    results['batch_curve'][name] = points = {}
    for n in batch_sizes:
      log(f'{name} at meta-batch {n} ...')

      def measure_point(name=name, n=n):
        m = benchmark.measure(bw.BATCH_CURVE[name](n), sizes.windows, sizes.window_s)
        m['tasks_per_s'] = m['steps_per_s'] * n
        m['percent_of_peak'] = _share(m['flops_per_s'], results['peak'])
        return m

      points[str(n)] = p = attempt(measure_point, clock)
      if 'steps_per_s' in p:
        log(f'  {p["steps_per_s"]:.4g} steps/s, {p["tasks_per_s"]:.4g} tasks/s')
      save()

  results['finished'] = True
  save()
  text = section(results)
  print(text, flush=True)
  if readme is not None:
    write_readme(readme, results)
    log(f'updated {readme}')
  return results


def load_results(path: str) -> dict[str, Any]:
  """A JSON written by `run` (finished or not), checked for the keys `section` reads."""
  try:
    with open(path) as f:
      results = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'from_json: {path!r} is not a readable JSON file ({e}).') from e
  keys = ('device', 'jax_version', 'windows', 'window_s', 'date')
  missing = [k for k in keys if not isinstance(results, dict) or k not in results]
  if missing or results.get('tool') != 'experiments.accelerator_check':
    raise ValueError(f'from_json: {path!r}: expected a JSON of experiments.accelerator_check '
                     f'with the keys {keys}, missing {missing}.')
  return results


def _define_flags() -> None:
  flags.DEFINE_string('out', None, 'JSON path (default workdirs/accelerator_check/<backend>.json).')
  flags.DEFINE_string('readme', None, 'Markdown file whose accelerator section is replaced.')
  flags.DEFINE_bool('tiny', False, 'Shrink everything: a test of the command (seconds on a CPU).')
  flags.DEFINE_list('workloads', None, f'Workloads, of {list(bw.WORKLOADS)} (default: all; '
                    'W1 with --tiny).')
  flags.DEFINE_float('budget_s', DEFAULT_BUDGET_S, 'Seconds after which no new measurement '
                     'starts (the one in progress finishes).')
  flags.DEFINE_integer('omniglot_steps', None, 'Timed Omniglot MAML meta-steps (default 300; 3 '
                       'with --tiny).')
  flags.DEFINE_string('from_json', None, 'Measure nothing: print (and with --readme write) the '
                      'section of this saved JSON.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  f = flags.FLAGS
  if f.from_json:
    results = load_results(f.from_json)
    print(section(results), end='')
    if f.readme:
      write_readme(f.readme, results)
      print(f'Updated {f.readme}.')
    return
  kept = runtime.keep_freed_memory()  # before the first JAX computation (hypernet.runtime)
  out = f.out or os.path.join('workdirs', 'accelerator_check', f'{jax.default_backend()}.json')
  run(out, f.readme, f.tiny, f.workloads, f.budget_s, f.omniglot_steps, kept)


if __name__ == '__main__':
  _define_flags()
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)  # absl.app.run, with one-line errors
