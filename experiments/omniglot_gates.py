r"""What the flagship's gates do at test time: an ablation on trained runs.

    python -m experiments.omniglot_gates --runs='workdirs/omniglot/protonet_gate_s*'
    python -m experiments.omniglot_gates --runs=... --episodes=200 --ways=5 --shots=1

ProtoNets on the gated Conv-4 (`algo=protonet,gated`, `hypernet.models.Conv4(gate=True)`)
multiplies each block's convolution output by gates generated per image. A gate that were the
same for every image would be a fixed per-channel rescaling, which the convolution's own kernel
and bias can absorb: a plain Conv-4 can express it. So what the gating hypernetwork adds lies in
how its gates vary from image to image. On test episodes of a trained run (the same episodes for
every run: the key is `--seed`'s), each episode is classified three ways, with the run's
parameters unchanged:

- `generated`: the gates as generated, per image (the trained model);
- `mean`: each gate replaced by its mean over the episode's images (support and queries), a
  per-episode constant;
- `open`: every gate at 1 (the Conv-4 without its gates).

The replacement goes through Flax's `nn.intercept_methods`, which swaps the output of the gate
networks' last layer (`Gate_<i>_out`, the pre-sigmoid value; the gate is `2 sigmoid` of it).
It is an ablation of a trained model, not a retraining: a plain Conv-4 trained without gates
is the README table's ProtoNets row.

Prints, per run: accuracy (%) ± 95% CI over episodes for each mode, and the paired difference
`generated - mean` over the same episodes.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import hypernet as hn
from hypernet import meta
from hypernet.models import Conv4
from hypernet.tasks.omniglot import OmniglotEpisodes

MODES = ('generated', 'mean', 'open')
EPISODE_BATCH = 10  # episodes vmapped together by `ablation`


def gated_protonet(filters: int, ways: int, input_shape: Sequence[int] = (28, 28, 1)
                   ) -> tuple[Conv4, meta.ProtoNet]:
  """The gated Conv-4 embedding (XLA's convolution, as at evaluation) and ProtoNets on it."""
  net = Conv4(filters=filters, ways=0, gate=True, conv_strategy='xla')
  target = hn.Target.from_linen(net, jnp.zeros((1, *input_shape)), key=jax.random.key(0))
  return net, meta.ProtoNet(target=target, ways=ways)


def gates(net: Conv4, params: Any, x: jax.Array) -> list[jax.Array]:
  """Each block's gates `[N, C]` for images `x [N, H, W, C_in]` (sown by `Conv4`)."""
  _, state = net.apply({'params': params}, x, mutable=['intermediates'])
  return [state['intermediates'][f'gate_{i}'][0] for i in range(4)]


def _replacing_gates(mode: str, logits: Sequence[jax.Array] | None):
  """An `nn.intercept_methods` interceptor: the gate networks' output per `mode`."""
  def intercept(next_fun, args, kwargs, context):
    name = context.module.name or ''
    if context.method_name != '__call__' or not (name.startswith('Gate_')
                                                 and name.endswith('_out')):
      return next_fun(*args, **kwargs)
    g = next_fun(*args, **kwargs)  # [N, C], pre-sigmoid
    if mode == 'open':
      return jnp.zeros_like(g)  # 2 sigmoid(0) = 1
    if mode == 'mean':
      return jnp.broadcast_to(logits[int(name.split('_')[1])], g.shape)
    return g
  return intercept


def episode_accuracies(net: Conv4, learner: meta.ProtoNet, params: Any, task: Any
                       ) -> jax.Array:
  """Query accuracy `[len(MODES)]` of one episode (`task`: support and queries)."""
  x = jnp.concatenate([task.x_support, task.x_query])
  # The pre-sigmoid value whose gate is the mean gate over the episode's images.
  logits = [jnp.log(m / (2.0 - m)) for m in (g.mean(0) for g in gates(net, params, x))]
  out = []
  for mode in MODES:
    with nn.intercept_methods(_replacing_gates(mode, logits)):
      protos = learner.adapt(params, task.x_support, task.y_support, 0)
      pred = jnp.argmax(learner.predict(params, protos, task.x_query), -1)
    out.append(jnp.mean(pred == task.y_query))
  return jnp.stack(out)


def ablation(params: Any, family: OmniglotEpisodes, *, filters: int, ways: int, shots: int,
             queries: int, episodes: int, key: jax.Array) -> dict[str, Any]:
  """Accuracies (%) of every mode over `episodes` episodes drawn from `family` with `key`.

  Returns:
    `{'modes': {mode: (mean, ci95)}, 'generated_minus_mean': (mean, ci95), 'episodes': n}`:
    means and 95% normal intervals over episodes; the difference is paired (same episodes).
  """
  if episodes < 2:
    raise ValueError(f'episodes: expected at least 2, received {episodes!r}.')
  net, learner = gated_protonet(filters, ways, family.images.shape[2:] + (1,))
  one = lambda k: episode_accuracies(net, learner, params, family.sample(k, ways, shots, queries))
  # Compiled once, EPISODE_BATCH episodes at a time (bounded memory).
  many = jax.jit(lambda keys: jax.lax.map(one, keys, batch_size=EPISODE_BATCH))
  acc = 100.0 * np.asarray(many(jax.random.split(key, episodes)))  # [episodes, len(MODES)]
  ci = lambda a: float(1.96 * a.std(ddof=1) / np.sqrt(len(a)))
  diff = acc[:, 0] - acc[:, 1]
  return {'modes': {m: (float(a.mean()), ci(a)) for m, a in zip(MODES, acc.T)},
          'generated_minus_mean': (float(diff.mean()), ci(diff)), 'episodes': episodes}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  from experiments import omniglot, rundir  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  workdirs = sorted(w for p in f.runs.split(',') for w in glob.glob(p.strip()))
  if not workdirs:
    raise ValueError(f'runs: no workdir matches {f.runs!r}.')
  print(f'{f.ways}-way {f.shots}-shot test episodes ({f.episodes}, key {f.seed}), accuracy % '
        '± 95% CI over episodes\n')
  print('| run | ' + ' | '.join(f'gates {m}' for m in MODES) + ' | generated - mean (paired) |')
  print('| --- |' + ' ---: |' * (len(MODES) + 1))
  for workdir in workdirs:
    overrides = {'data.dir': f.data_dir} if f.data_dir else {}
    run = rundir.restore(workdir, omniglot.build_experiment, overrides)
    if not (run.config.algo == 'protonet' and run.config.model.get('gate')):
      raise ValueError(f'runs: {workdir} is not ProtoNets on the gated Conv-4 (algo '
                       f'{run.config.algo!r}, model.gate {run.config.model.get("gate")!r}).')
    family = omniglot.episodes_from_config(run.config)['test']
    r = ablation(run.meta_params, family, filters=run.config.model.filters, ways=f.ways,
                 shots=f.shots, queries=f.queries, episodes=f.episodes,
                 key=jax.random.key(f.seed))
    cells = [f'{m:.2f} ± {c:.2f}' for m, c in r['modes'].values()]
    d, c = r['generated_minus_mean']
    print(f'| {workdir} | ' + ' | '.join(cells) + f' | {d:+.2f} ± {c:.2f} |', flush=True)


if __name__ == '__main__':
  flags.DEFINE_string('runs', 'workdirs/omniglot/protonet_gate_s*',
                      'Glob(s), comma-separated, of workdirs of `algo=protonet,gated` runs.')
  flags.DEFINE_string('data_dir', '', "Omniglot's folder, if not the runs' `data.dir`.")
  flags.DEFINE_integer('episodes', 200, 'Test episodes per run.')
  flags.DEFINE_integer('ways', 20, 'Classes per episode.')
  flags.DEFINE_integer('shots', 1, 'Support examples per class.')
  flags.DEFINE_integer('queries', 5, 'Query examples per class.')
  flags.DEFINE_integer('seed', 2, 'Key of the episodes (the same for every run).')
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)  # absl.app.run, with one-line errors
