r"""Few-shot Omniglot classification: hypernetworks against MAML and ProtoNets.

    python -m experiments.omniglot                                      # hyperhead, 5-way 1-shot
    python -m experiments.omniglot --config=experiments/configs/omniglot.py:ways=5,shots=1,algo=maml
    python -m experiments.omniglot --config=experiments/configs/omniglot.py:algo=protonet \
        --config.data.dir=../shared/data --workdir=workdirs/omniglot/protonet_5w1s

Data: `hypernet.data.load_omniglot` (the official zips or the compact npz from
`config.data.dir`, checksummed, resized once to 28x28 and cached), split by the MAML/ProtoNets
protocol (`config.data.protocol`); episodes are sampled on device inside the jitted training
loop (`hypernet.tasks.OmniglotEpisodes`). Target: Conv-4 (`hypernet.models.Conv4`), 64
filters. Every learner of `experiments.learners` that classifies runs here; `protonet` and
`hyperhead` use Conv-4 without its head as a shared embedding.

Training episodes: `train_ways`-way `shots`-shot with `queries` queries per class, from the
meta-training classes. Evaluation (`config.eval`): for every `(ways, shots)` in
`eval.settings` = (ways, shots, queries per class) and every number of inner steps in
`eval.steps`, the query accuracy of `eval.num_episodes` test episodes and `eval.val_episodes`
validation episodes. Learners with a fixed N-way head evaluate only their training setting; `protonet`
and `hyperhead` are trained once and evaluated at every setting.

Outputs in `--workdir` (default `./workdirs/omniglot/<algo>_<ways>w<shots>s[_paper]`):
`config.json`, `checkpoints/`, `metrics.jsonl`, `learning_curve.png`, `episode.png` (a
test episode: support set, queries and predictions), and last `results.json` with
`metrics.test_acc_<N>w<K>s_step<k>` and `metrics.val_acc_...`, each `{"mean", "ci95", "n"}`
over episodes (accuracy in %). `python -m experiments.omniglot_table` collects them into the
README table.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure

import hypernet
from hypernet import data as hdata
from hypernet import meta
from hypernet import nn as hnn
from hypernet.models import Conv4
from hypernet.target import PyTree
from hypernet.tasks import Task
from hypernet.tasks.omniglot import OmniglotEpisodes, episodes_for_protocol

from experiments import checks, learners, outputs, programs, train
from experiments.configs import omniglot as omniglot_config


# ------------------------------------------------------------------ config checks
def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the key for invalid values, before anything is built."""
  checks.check_loop_config(config)
  checks.check_choice(config, 'algo', omniglot_config.ALGOS)
  for name, low in (('ways', 2), ('train_ways', 2), ('shots', 1), ('queries', 1),
                    ('meta_batch_size', 1)):
    checks.check_int(config, name, low)
  if config.algo not in omniglot_config.METRIC_ALGOS and config.train_ways != config.ways:
    raise ValueError(f'config.train_ways: {config.algo} has a {config.ways}-way head, expected '
                     f'{config.ways} (= config.ways), received {config.train_ways}.')
  checks.check_int(config, 'model.filters')
  checks.check_choice(config, 'data.protocol', ('maml', 'official'))
  settings = config.eval.settings
  if (not isinstance(settings, (tuple, list)) or not settings
      or not all(isinstance(s, (tuple, list)) and len(s) == 3 for s in settings)):
    raise ValueError(f'config.eval.settings: expected a non-empty tuple of (ways, shots, '
                     f'queries) triples, received {settings!r}.')
  for ways, shots, queries in settings:
    for name, value, low in (('ways', ways, 2), ('shots', shots, 1), ('queries', queries, 1)):
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        checks.fail(f'eval.settings ({name})', f'an integer >= {low}', value)
    if config.algo not in omniglot_config.METRIC_ALGOS and ways != config.ways:
      raise ValueError(f'config.eval.settings: {config.algo} has a {config.ways}-way head, '
                       f'expected {config.ways}-way settings only, received ({ways}, {shots}).')
  checks.check_int_tuple(config, 'eval.steps', 0)
  checks.check_choice(config, 'eval.conv_strategy', hnn.CONV_STRATEGIES)
  for name in ('num_episodes', 'val_episodes', 'batch_size'):
    checks.check_int(config, f'eval.{name}')


# ------------------------------------------------------------------ data and model
@functools.lru_cache(maxsize=4)
def load_episodes(data_dir: str, cache_dir: str, source: str, download: bool, protocol: str,
                  rotations: bool, split_seed: int,
                  split_kwargs: tuple[tuple[str, int], ...]) -> dict[str, OmniglotEpisodes]:
  """'train' / 'val' / 'test' episode families (cached per process: ~70 MB on device)."""
  data = hdata.load_omniglot(data_dir or None, cache_dir=cache_dir or None, source=source,
                             download=download)
  return episodes_for_protocol(data, protocol, seed=split_seed, rotations=rotations,
                               **dict(split_kwargs))


def episodes_from_config(config: ml_collections.ConfigDict) -> dict[str, OmniglotEpisodes]:
  d = config.data
  split_kwargs = ((('num_train', d.num_train), ('num_val', d.num_val)) if d.protocol == 'maml'
                  else (('num_val_alphabets', d.num_val_alphabets),))
  return load_episodes(d.dir, d.cache_dir, d.source, bool(d.download), d.protocol,
                       bool(d.rotations), d.split_seed, split_kwargs)


def build_target(config: ml_collections.ConfigDict) -> hypernet.Target:
  """Conv-4 with a `ways` head, or without (`protonet`, `hyperhead`: the embedding)."""
  metric = config.algo in omniglot_config.METRIC_ALGOS
  module = Conv4(filters=config.model.filters, ways=0 if metric else config.ways,
                 batch_norm=config.model.batch_norm, conv_strategy=config.model.conv_strategy,
                 gate=bool(config.model.get('gate', False)))
  kwargs = {'apply_kwargs': {'train': True}} if config.model.batch_norm else {}
  name = (f'Conv4-{config.model.filters}' + ('-gated' if module.gate else '')
          + ('' if metric else f'-{config.ways}way'))
  return hypernet.Target.from_linen(module, jnp.zeros((1, *config.input_shape)),
                                    key=jax.random.key(0), batch_stats='task', name=name,
                                    **kwargs)


def for_ways(learner: meta.MetaLearner, ways: int) -> meta.MetaLearner:
  """The learner for `ways`-way tasks (metric learners' parameters do not depend on N)."""
  if getattr(learner, 'ways', ways) == ways:
    return learner
  return dataclasses.replace(learner, ways=ways)


# ------------------------------------------------------------------ evaluation
@dataclasses.dataclass(frozen=True)
class Episode:
  """`make_task` of `hypernet.meta.evaluate`: ONE episode drawn from a PRNG key out of the
  split's classes (`data`, an `OmniglotEpisodes`)."""
  ways: int
  shots: int
  queries: int

  def __call__(self, key: jax.Array, episodes: OmniglotEpisodes) -> Task:
    return episodes.sample(key, self.ways, self.shots, self.queries)


def evaluate(learner: meta.MetaLearner, config: ml_collections.ConfigDict, meta_params: PyTree,
             key: jax.Array) -> dict[str, dict[str, np.ndarray]]:
  """`{'metrics': {'test_acc_<N>w<K>s_step<k>': [n], 'val_acc_...': [m]}}` (accuracy in %):
  episodes drawn inside `hypernet.meta.evaluate`'s program from one key each."""
  families = episodes_from_config(config)
  steps, fast = tuple(config.eval.steps), bool(config.get('fast_compile', False))
  out = {}
  for split, n in (('test', config.eval.num_episodes), ('val', config.eval.val_episodes)):
    for i, (ways, shots, queries) in enumerate(config.eval.settings):
      keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, split == 'val'), i), n)
      with hnn.conv_strategy(config.eval.conv_strategy):
        acc = meta.evaluate(for_ways(learner, ways), meta_params, keys, steps,
                            config.eval.batch_size, make_task=Episode(ways, shots, queries),
                            data=families[split],
                            compiler_options=programs.FAST_COMPILE if fast else None)
      num_queries = ways * queries  # accuracy = correct / num_queries: the % from the count
      for k in steps:
        correct = np.rint(np.asarray(acc[k]['accuracy'], np.float64) * num_queries)
        out[f'{split}_acc_{ways}w{shots}s_step{k}'] = 100.0 * correct / num_queries
  return {'metrics': out}


# ------------------------------------------------------------------ plots
def plot(learner: meta.MetaLearner, config: ml_collections.ConfigDict, workdir: str,
         meta_params: PyTree, key: jax.Array, results: dict[str, Any]) -> None:
  """`episode.png`: one test episode (first eval setting), support row and predicted queries."""
  del results
  ways, shots, _ = config.eval.settings[0]
  ways, queries = min(ways, 10), 4
  family = episodes_from_config(config)['test']
  task = family.sample(jax.random.fold_in(key, 7), ways, shots, queries)
  lrn = for_ways(learner, ways)
  k = max(config.eval.steps)
  adapted = lrn.adapt(meta_params, task.x_support, task.y_support, k)
  pred = np.asarray(jnp.argmax(lrn.predict(meta_params, adapted, task.x_query), -1))
  xs, xq, yq = map(np.asarray, (task.x_support, task.x_query, task.y_query))
  fig = Figure(figsize=(1.1 * ways, 1.1 * (shots + queries) + 0.6), layout='constrained')
  axes = fig.subplots(shots + queries, ways, squeeze=False)
  for c in range(ways):
    for s in range(shots):
      axes[s, c].imshow(1 - xs[c * shots + s, ..., 0], cmap='gray', vmin=0, vmax=1)
      axes[s, c].set_title(f'class {c}', fontsize='small')
    for q in range(queries):
      i = c * queries + q
      ax = axes[shots + q, c]
      ax.imshow(1 - xq[i, ..., 0], cmap='gray', vmin=0, vmax=1)
      ax.set_title(f'-> {pred[i]}', fontsize='small',
                   color='tab:green' if pred[i] == yq[i] else 'tab:red')
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(f'{config.algo}: a {ways}-way {shots}-shot test episode (top: support; below: '
               f'queries, predicted class after {k} steps)', fontsize='small')
  outputs.save_figure(fig, os.path.join(workdir, 'episode.png'))


# ------------------------------------------------------------------ the run
@dataclasses.dataclass(frozen=True, eq=False)
class EpisodeBatchSampler:
  """`sample_tasks(key)`: one meta-batch of episodes `[batch, ...]` from `episodes` (the
  training split). Equal for the same episodes object (`load_episodes` caches one per data
  config) and sizes, so the compiled training loop is shared by equal experiments."""
  episodes: OmniglotEpisodes
  sizes: tuple[int, int, int, int]  # (meta-batch, ways, shots, queries)

  def __call__(self, key: jax.Array) -> Task:
    return self.episodes.sample_batch(key, *self.sizes)

  def __eq__(self, other: object) -> bool:
    return (isinstance(other, EpisodeBatchSampler) and self.episodes is other.episodes
            and self.sizes == other.sizes)

  def __hash__(self) -> int:
    return hash((id(self.episodes), self.sizes))


def build_experiment(config: ml_collections.ConfigDict) -> train.Experiment:
  """Validates `config`; the data, the target, the learner, the sampler, evaluation, plots.

  Not cached: the learner, its target and the sampler are values, so equal experiments share
  their compiled programs through caches keyed by value (see `experiments.sinusoid`).
  """
  validate_config(config)
  config = ml_collections.ConfigDict(config.to_dict())  # a copy: input_shape as a tuple
  config.input_shape = tuple(config.input_shape)
  families = episodes_from_config(config)
  # Clear errors now rather than inside the traced loop: N-way larger than a split's classes,
  # K + Q larger than the 20 drawings of a class.
  for name, family in families.items():
    settings = ([(config.train_ways, config.shots, config.queries)] if name == 'train'
                else config.eval.settings)
    for ways, shots, queries in settings:
      try:
        family.check_episode(ways, shots, queries)
      except ValueError as e:
        raise ValueError(f'config: {ways}-way {shots}-shot episodes with {queries} queries from '
                         f'the {name!r} split: {e}') from None
  target = build_target(config)
  learner = learners.build_learner(config, target)
  sizes = (config.meta_batch_size, config.train_ways, config.shots, config.queries)
  return train.Experiment(
      learner=for_ways(learner, config.train_ways),
      sample_tasks=EpisodeBatchSampler(families['train'], sizes),
      evaluate=functools.partial(evaluate, learner, config),
      plot=functools.partial(plot, learner, config),
      info={'num_target_params': target.num_params, 'ways': config.ways, 'shots': config.shots,
            'train_ways': config.train_ways, 'size': config.size,
            'num_classes': {k: int(f.num_classes) for k, f in families.items()}})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates `config` in `workdir` (resuming a run there); returns the results."""
  return train.train_and_evaluate(config, workdir, build_experiment(config))


def default_workdir(config: ml_collections.ConfigDict) -> str:
  suffix = '' if config.size == 'cpu' else f'_{config.size}'
  return os.path.join('workdirs', 'omniglot',
                      f'{config.algo}_{config.ways}w{config.shots}s{suffix}')


def summary(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Trains and evaluates (`train_and_evaluate`); the lines the program prints."""
  results = train_and_evaluate(config, workdir)
  lines = [f'  {name}: {v["mean"]:.2f} ± {v["ci95"]:.2f} % (n={v["n"]})'
           for name, v in results['metrics'].items()]
  return (f'{config.algo}: {results["num_steps"]} meta-steps at '
          f'{results["steps_per_s"] or float("nan"):.2f} steps/s; query accuracy:\n'
          + '\n'.join(lines))


if __name__ == '__main__':
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.launch(
      config_file=os.path.join(os.path.dirname(__file__), 'configs', 'omniglot.py'),
      config_help='Config file, optionally with `:ways=5,shots=1,algo=<name>,size=cpu|paper`.',
      default_workdir=default_workdir, run_experiment=summary)
