"""A run's folder (`workdir`): its files, the config-difference policy, orbax checkpoints.

* `config.json` is written before the first step; a workdir holding a run with a different
  config is refused unless `config.overwrite` (which starts afresh); `num_steps` may differ,
  so a finished run can be extended (`RESUMABLE_DIFFERENCES`; `ABSENT_MEANS` for keys added
  since). Everything that can refuse a run (the config, `config.json`, `metrics.jsonl`, the
  checkpoints) is checked (`check_workdir`, `restore_newest`) before anything in the workdir
  changes (`commit_workdir`), so a refused rerun leaves a finished run as it was.
* orbax checkpoints in `workdir/checkpoints`; an unreadable newest checkpoint (a damaged
  disk, a copy cut short) is reported in one warning naming its directory, moved to
  `workdir/unreadable_checkpoints/`, and the run resumes from the newest intact one; if none
  is readable the run is refused, naming the checkpoint directory.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging as pylogging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from experiments import events
from experiments.checks import flatten as _flatten
from experiments.outputs import read_records, write_text
from experiments.programs import make_optimizer
from hypernet import meta, parallel
from hypernet.target import PyTree

if TYPE_CHECKING:
  from experiments.train import Experiment

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
RESULTS_FILE = 'results.json'
CHECKPOINT_DIR = 'checkpoints'
UNREADABLE_DIR = 'unreadable_checkpoints'  # unreadable checkpoints are moved here, not deleted
# Keys that may differ between a workdir's run and a rerun that resumes it. `shard_tasks`
# changes where the tasks are computed, not what (results agree within float tolerance),
# so a run may resume on a machine with another number of devices. `eval.num_episodes` is read
# only by the final evaluation (Omniglot), so a finished run can be evaluated again on more
# episodes: its `config.json` and `results.json` are then rewritten with the new number.
RESUMABLE_DIFFERENCES = ('num_steps', 'overwrite', 'shard_tasks', 'eval.num_episodes')


# Keys added after runs were recorded: absent from an old `config.json` means this value,
# so those runs can still be resumed and extended.
ABSENT_MEANS = {'compute_dtype': 'float32', 'optimizer.decay_every': 0,
                'optimizer.skip_nonfinite': 0,
                'optimizer.decay_rate': 0.5,
                # experiments.continual (issue 15): van de Ven & Tolias's protocol.
                'protocol': 'default', 'data.pad': 0, 'target.init': 'lecun',
                'optimizer.reset_per_task': True, 'ewc.fisher_labels': 'sample',
                'hnet.reg_samples': 0, 'hnet.activation': 'relu', 'keep_checkpoints': 2,
                'hnet.head_init': 'hyperfan_in', 'hnet.init_with_prev_emb': False,
                'hnet.reg_chunks': 0,
                # issue 14: the first step's weight in the multi-step loss.
                'inner.first_step_weight': 0.0}
# Keys renamed after runs were recorded (old -> new; issue 12: one name for one thing in
# every experiment): an old `config.json` is read under the new names.
RENAMED_KEYS = {'data.data_dir': 'data.dir', 'train.learning_rate': 'optimizer.learning_rate',
                'train.lr_schedule': 'optimizer.schedule',
                'train.reset_optimizer': 'optimizer.reset_per_task'}


def renamed(flat: Mapping[str, Any]) -> dict[str, Any]:
  """A flattened config with the keys of `RENAMED_KEYS` under their new names."""
  return {RENAMED_KEYS.get(k, k): v for k, v in flat.items()}


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """Dotted keys whose values differ (present in one only, or unequal), resumable ones aside."""
  old, new = renamed(_flatten(old)), renamed(_flatten(new))
  get = lambda d, k: d.get(k, ABSENT_MEANS.get(k, '<absent>'))  # noqa: E731
  return sorted(k for k in set(old) | set(new)
                if k not in RESUMABLE_DIFFERENCES and get(old, k) != get(new, k))


def read_json(path: str) -> Any:
  """A JSON file of the workdir; a damaged one is a ValueError naming it."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e}); the file is empty, truncated or damaged. '
                     'Restore it, use another --workdir, or set --config.overwrite=True to '
                     'discard the run in it.') from None


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir holding another run; reads but never changes anything.

  Raises:
    ValueError: `workdir` holds a run whose config differs in more than `num_steps` (the
      message lists the keys), an unreadable `config.json` (named), or checkpoints without
      a `config.json`, and `config.overwrite` is False.
  """
  if config.overwrite:
    return
  config_path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(config_path):
    old, new = read_json(config_path), json.loads(config.to_json())
    diff = _config_differences(old, new)
    if diff:
      old_flat, new_flat = renamed(_flatten(old)), renamed(_flatten(new))
      details = '; '.join(f'{k}: {old_flat.get(k, "<absent>")!r} -> '
                          f'{new_flat.get(k, "<absent>")!r}' for k in diff[:10])
      if len(diff) > 10:
        details += f'; and {len(diff) - 10} more'
      raise ValueError(
          f'workdir {workdir!r} holds a run with a different config ({details}). Use another '
          f'--workdir, or set --config.overwrite=True to discard that run.')
  elif os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    raise ValueError(f'workdir {workdir!r} holds checkpoints but no {CONFIG_FILE}; use another '
                     f'--workdir, or set --config.overwrite=True to discard them.')


def commit_workdir(config: ml_collections.ConfigDict, workdir: str,
                   unreadable_steps: Sequence[int] = ()) -> None:
  """After every check passed: creates `workdir`, clears it with `config.overwrite`, moves
  unreadable checkpoints aside (to `unreadable_checkpoints/<step>`) and writes `config.json`.
  In a multi-process run process 0 does it once every process has read the workdir, and the
  others wait for it."""
  parallel.barrier('hypernet: workdir read')
  if parallel.is_primary():
    _commit_workdir(config, workdir, unreadable_steps)
  parallel.barrier('hypernet: workdir committed')


def _commit_workdir(config: ml_collections.ConfigDict, workdir: str,
                    unreadable_steps: Sequence[int]) -> None:
  os.makedirs(workdir, exist_ok=True)
  if config.overwrite:
    for name in (CONFIG_FILE, METRICS_FILE, RESULTS_FILE):
      if os.path.exists(os.path.join(workdir, name)):
        os.remove(os.path.join(workdir, name))
    shutil.rmtree(os.path.join(workdir, CHECKPOINT_DIR), ignore_errors=True)
    shutil.rmtree(os.path.join(workdir, events.EVENTS_DIR), ignore_errors=True)
  for step in unreadable_steps:
    aside = os.path.join(workdir, UNREADABLE_DIR, str(step))
    n = 1
    while os.path.exists(aside):
      n += 1
      aside = os.path.join(workdir, UNREADABLE_DIR, f'{step}.{n}')
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    os.replace(os.path.join(workdir, CHECKPOINT_DIR, str(step)), aside)
  write_text(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2) + '\n')


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`check_workdir`, then `commit_workdir` (a workdir without checkpoints to restore)."""
  check_workdir(config, workdir)
  commit_workdir(config, workdir)


def records_up_to(path: str, up_to_step: int) -> list[dict[str, Any]]:
  """`metrics.jsonl` records of steps <= `up_to_step` (those a checkpoint backs)."""
  return read_records(path, lambda r: r['step'] <= up_to_step)


def quiet_orbax_logs() -> None:
  """Drops orbax's INFO lines (a dozen per checkpoint) from absl's log; warnings stay."""
  class _Filter(pylogging.Filter):
    def filter(self, record):
      return record.levelno >= pylogging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname
  logging.get_absl_handler().addFilter(_Filter())


def _drop_closed_loop_noise(hook: Callable[[Any], None]) -> Callable[[Any], None]:
  def unraisable(u):
    if isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == 'Event loop is closed':
      return
    hook(u)
  unraisable.drops_closed_loop_noise = True
  return unraisable


class _AbandonedReads(pylogging.Filter):
  """Drops asyncio's 'Future/Task exception was never retrieved' (orbax's abandoned reads).

  asyncio logs it as that line, then `future: <...>` (and the exception's traceback), so the
  first line is matched.
  """

  def filter(self, record):
    return not str(record.msg).split('\n', 1)[0].endswith('exception was never retrieved')


def quiet_failed_restores() -> None:
  """Silences the flood of "Event loop is closed" tracebacks after a failed orbax restore.

  When one array of a checkpoint cannot be read, orbax closes its event loop while
  tensorstore still completes the other reads; each completion then fails to call back into
  the closed loop and Python prints it through `sys.unraisablehook` (dozens of tracebacks,
  the real error among them); then asyncio logs each abandoned read's error ("Future
  exception was never retrieved") and warns of their coroutines. Only those are dropped;
  other unraisable exceptions and log records pass. Idempotent.
  """
  if not getattr(sys.unraisablehook, 'drops_closed_loop_noise', False):
    sys.unraisablehook = _drop_closed_loop_noise(sys.unraisablehook)
    # ... and the reads it abandoned, collected later.
    warnings.filterwarnings('ignore', message=r"coroutine '.*' was never awaited",
                            category=RuntimeWarning)
    pylogging.getLogger('asyncio').addFilter(_AbandonedReads())


def _one_line(e: BaseException, limit: int = 300) -> str:
  text = str(e).split('\n')[0].split(' [tensorstore_spec')[0]
  return f'{type(e).__name__}: {text[:limit]}' + ('...' if len(text) > limit else '')


def open_checkpoints(ckpt_dir: str, keep: int | None = None) -> ocp.CheckpointManager:
  """An orbax `CheckpointManager` on `ckpt_dir` (created), saving synchronously."""
  return ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=False))


@dataclasses.dataclass(frozen=True)
class LegacyLayout:
  """How a learner's meta-parameters were laid out in checkpoints written before a change.

  `to_old` maps today's meta-parameter tree to the old one, `from_old` back; both are applied
  to every subtree of a state with the meta-parameters' structure (the meta-parameters and
  the optimiser's moments).
  """
  to_old: Callable[[PyTree], PyTree]
  from_old: Callable[[PyTree], PyTree]
  change: str

  def _map(self, fn: Callable[[PyTree], PyTree], state: PyTree, meta_params: PyTree) -> PyTree:
    treedef = jax.tree.structure(meta_params)
    return jax.tree.map(lambda t: fn(t) if jax.tree.structure(t) == treedef else t, state,
                        is_leaf=lambda t: jax.tree.structure(t) == treedef)

  def old_like(self, like: PyTree, meta_params: PyTree) -> PyTree:
    """`like` (a state holding `meta_params`) as the old checkpoints laid it out."""
    return self._map(self.to_old, like, meta_params)

  def upgrade(self, state: PyTree, old_meta_params: PyTree) -> PyTree:
    """A state restored in the old layout (holding `old_meta_params`), in today's."""
    return self._map(self.from_old, state, old_meta_params)


def _renamed_key(old: str, new: str) -> Callable[[PyTree], PyTree]:
  return lambda tree: {(new if k == old else k): v for k, v in tree.items()}


def legacy_layout(learner_type: type[meta.MetaLearner]) -> LegacyLayout | None:
  """Issue 12 gave every learned initialisation one key, `meta_params['init']`; before, MAML's
  (and FOMAML's, ANIL's, Reptile's) meta-parameters were the target's tree itself, Meta-SGD's
  initialisation was `'params'` and HyperMAML's `'base'`. Their older checkpoints still resume."""
  change, init = "the learned initialisation moved to meta_params['init'] (issue 12)", meta.INIT_KEY
  if issubclass(learner_type, meta.MetaSGD):
    return LegacyLayout(_renamed_key(init, 'params'), _renamed_key('params', init), change)
  if issubclass(learner_type, meta.MAML):
    return LegacyLayout(lambda t: t[init], lambda t: {init: t}, change)
  if issubclass(learner_type, meta.HyperMAML):
    return LegacyLayout(_renamed_key(init, 'base'), _renamed_key('base', init), change)
  return None


def restore_newest(ckpt_dir: str, like: PyTree, max_step: int | None = None,
                   max_step_name: str = 'max_step', legacy: LegacyLayout | None = None
                   ) -> tuple[int | None, PyTree, list[int]]:
  """The newest checkpoint in `ckpt_dir` that can be restored with the structure of `like`.

  Reads only. An unreadable checkpoint (damaged files, another model's) is skipped with a
  warning naming its directory and the error; the caller moves it aside (`commit_workdir`).

  Args:
    ckpt_dir: the checkpoint directory (absent: nothing to restore).
    like: the state whose structure, shapes and dtypes the checkpoint must have.
    max_step: a checkpoint beyond this step is refused (e.g. `config.num_steps`).
    max_step_name: how the refusal names `max_step`.
    legacy: with a `meta.TrainState` `like`, the learner's older checkpoint layout: a
      checkpoint that cannot be restored as `like` is tried in it and upgraded.

  Returns:
    `(step, state, unreadable)`: the restored step (None: no checkpoint, `state` is `like`)
    and the steps of the newer, unreadable checkpoints.

  Raises:
    ValueError: a checkpoint beyond `max_step`, or checkpoints none of which can be restored
      (the message names the directory and each error).
  """
  if not os.path.isdir(ckpt_dir):
    return None, like, []
  quiet_failed_restores()
  manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
      create=False, enable_async_checkpointing=False))
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if steps and max_step is not None and steps[0] > max_step:
      raise ValueError(f'{ckpt_dir} has a checkpoint at step {steps[0]}, beyond '
                       f'{max_step_name}={max_step}; raise it or use another workdir (nothing '
                       'was changed).')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    errors = {}
    for step in steps:
      try:
        state = _restore(manager, step, abstract, legacy)
      except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many types
        errors[step] = _one_line(e)
        continue
      if errors:
        logging.warning(
            'checkpoint %s cannot be restored (%s); resuming from the newest readable one, '
            'step %d. The unreadable one%s moved to %s when the run starts.',
            ', '.join(os.path.join(ckpt_dir, str(k)) for k in errors),
            '; '.join(f'step {k}: {v}' for k, v in errors.items()), step,
            's are' if len(errors) > 1 else ' is',
            os.path.join(os.path.dirname(ckpt_dir), UNREADABLE_DIR))
      return step, state, list(errors)
    if errors:
      raise ValueError(
          f'{ckpt_dir}: no checkpoint can be restored ('
          + '; '.join(f'step {k}: {v}' for k, v in errors.items())
          + '). They are damaged, or were written by another model or optimiser. Nothing was '
          'changed; move that directory away, or set --config.overwrite=True to start afresh.')
    return None, like, []
  finally:
    manager.close()


def _restore(manager: ocp.CheckpointManager, step: int, abstract: PyTree,
             legacy: LegacyLayout | None) -> PyTree:
  """Checkpoint `step` with the structure of `abstract`, else (`legacy`) in the older layout,
  upgraded; the first error is raised when neither reads."""
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception:  # pylint: disable=broad-except
    if legacy is None:
      raise
    error = sys.exc_info()
  old_meta = legacy.to_old(abstract.meta_params)
  try:
    state = manager.restore(step, args=ocp.args.StandardRestore(
        legacy.old_like(abstract, abstract.meta_params)))
  except Exception:  # pylint: disable=broad-except
    raise error[1].with_traceback(error[2]) from None
  logging.info('checkpoint %d read in its older layout (%s).', step, legacy.change)
  return legacy.upgrade(state, old_meta)


def restore_state(workdir: str, like: meta.TrainState,
                  legacy: LegacyLayout | None = None) -> meta.TrainState:
  """The newest checkpoint in `workdir`, restored with the structure of `like` (or in the
  learner's `legacy` layout, upgraded)."""
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)))
  try:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return _restore(manager, manager.latest_step(), abstract, legacy)
  finally:
    manager.close()


@dataclasses.dataclass(frozen=True)
class Restored:
  """A run read back from its workdir (`restore`)."""
  config: ml_collections.ConfigDict  # its config.json, with the overrides applied
  experiment: Experiment  # built from that config: the learner the run trained
  state: meta.TrainState  # the newest checkpoint's

  @property
  def meta_params(self) -> PyTree:
    return self.state.meta_params

  @property
  def learner(self) -> meta.MetaLearner:
    return self.experiment.learner


def restore(workdir: str, build_experiment: Callable[[ml_collections.ConfigDict], Experiment],
            overrides: Mapping[str, Any] | None = None) -> Restored:
  """A run's config, experiment and newest `TrainState`, to explore it in a notebook.

  Args:
    workdir: the run's folder (with `config.json` and `checkpoints/`).
    build_experiment: the experiment's builder, e.g. `experiments.sinusoid.build_experiment`.
    overrides: dotted config keys to change before building, e.g. `{'data.dir': ...}` where
      the run read its data from a path that differs here.

  Raises:
    ValueError: no `config.json` or no checkpoint in `workdir` (named), or an override of a
      key the config does not have.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f'workdir: expected a run folder with {CONFIG_FILE}, received {workdir!r} '
                     'without one.')
  config = ml_collections.ConfigDict(read_json(path))
  for key, value in (overrides or {}).items():
    parent, _, name = key.rpartition('.')
    node = config
    for part in filter(None, parent.split('.')):
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      raise ValueError(f'overrides: {key!r} is not a key of the config in {path}.')
    node[name] = value
  experiment = build_experiment(config)
  ckpt_dir = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
  if not os.path.isdir(ckpt_dir) or not any(name.isdigit() for name in os.listdir(ckpt_dir)):
    raise ValueError(f'workdir: expected checkpoints in {ckpt_dir}, found none.')
  init = functools.partial(meta.init_state, experiment.learner, make_optimizer(config))
  like = jax.eval_shape(init, jax.random.key(config.seed))  # shapes only, nothing computed
  return Restored(config, experiment,
                  restore_state(workdir, like, legacy_layout(type(experiment.learner))))
