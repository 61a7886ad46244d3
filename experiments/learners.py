"""Config -> `MetaLearner`: the one place where `config.algo` is read.

`build_learner(config, target)` builds any of `ALGOS` for a `hypernet.Target`:

| `config.algo`    | learner                        | config sub-dicts read            |
| ---------------- | ------------------------------ | -------------------------------- |
| `maml`           | `MAML` (second order)          | `inner`                          |
| `fomaml`         | `MAML(first_order=True)`       | `inner`                          |
| `metasgd`        | `MetaSGD`                      | `inner`                          |
| `anil`           | `ANIL` (last layer adapted)    | `inner`                          |
| `reptile`        | `Reptile`                      | `inner`                          |
| `amortised`      | `Amortised`                    | `encoder`, `hypernet`, `inner`   |
| `latent`         | `LatentAdaptation`             | `latent`, `hypernet`, `inner`    |
| `hypermaml`      | `HyperMAML`                    | `encoder`, `hypernet`, `inner`, `delta_scale` |
| `learned_update` | `LearnedUpdate`                | `rule`, `inner`                  |

Sub-dicts: `inner` {steps, lr, first_order, remat} (keys a learner has no use for may be
absent; for `amortised`, `lr` is the step size of fine-tuning the generated parameters
when evaluated after more than 0 steps); `encoder` {features, hidden, rho_hidden, pooling} -> `hypernet.SetEncoder`;
`hypernet` {kind, hidden, head_init, init_scale, chunk_size} -> `FullHypernet` (`kind='full'`),
`ChunkedHypernet` ('chunked'), `PerTensorHypernet` ('per_tensor') or
`ModulationHypernet(kind=...)` ('film', 'additive', 'multiplicative', 'lowrank');
`latent` {dim, learn_init}; `rule` {hidden, leaf_emb_dim, init_scale} ->
`hypernet.WeightConditionedHypernet(use_grad=True)`.

Below this function nothing reads the config: the learners take plain values and modules.
"""

from __future__ import annotations

import flax.linen as nn
import ml_collections

import hypernet
from hypernet import meta
from hypernet.meta import hyper

GRADIENT_ALGOS = ('maml', 'fomaml', 'metasgd', 'anil', 'reptile')
HYPER_ALGOS = ('amortised', 'latent', 'hypermaml', 'learned_update')
ALGOS = GRADIENT_ALGOS + HYPER_ALGOS
GENERATING_KINDS = ('full', 'chunked', 'per_tensor')
MODULATION_KINDS = ('film', 'additive', 'multiplicative', 'lowrank')
HYPERNET_KINDS = GENERATING_KINDS + MODULATION_KINDS


def build_encoder(cfg: ml_collections.ConfigDict) -> hypernet.SetEncoder:
  """`hypernet.SetEncoder` from `{features, hidden, rho_hidden, pooling}`."""
  return hypernet.SetEncoder(features=cfg.features, hidden=tuple(cfg.hidden),
                             rho_hidden=tuple(cfg.rho_hidden), pooling=cfg.pooling)


def build_hypernet(cfg: ml_collections.ConfigDict, target: hypernet.Target,
                   cond_dim: int) -> nn.Module:
  """A hypernetwork `cond [cond_dim] -> target params` of family `cfg.kind`."""
  kind = cfg.kind
  if kind == 'full':
    return hypernet.FullHypernet(target=target, cond_dim=cond_dim, hidden=tuple(cfg.hidden),
                                 head_init=cfg.head_init)
  if kind == 'chunked':
    return hypernet.ChunkedHypernet(target=target, cond_dim=cond_dim, chunk_size=cfg.chunk_size,
                                    hidden=tuple(cfg.hidden), head_init=cfg.head_init)
  if kind == 'per_tensor':
    return hypernet.PerTensorHypernet(target=target, cond_dim=cond_dim, hidden=tuple(cfg.hidden),
                                      head_init=cfg.head_init)
  if kind in MODULATION_KINDS:
    return hypernet.ModulationHypernet(target=target, cond_dim=cond_dim, kind=kind,
                                       hidden=tuple(cfg.hidden), init_scale=cfg.init_scale)
  raise ValueError(f'config.hypernet.kind: expected one of {HYPERNET_KINDS}, received {kind!r}.')


def build_learner(config: ml_collections.ConfigDict, target: hypernet.Target) -> meta.MetaLearner:
  """The meta-learner named by `config.algo` (see the module docstring), for `target`.

  Args:
    config: the experiment config; reads `algo`, optionally `loss` ('mse' by default) and
      the sub-dicts of the table above.
    target: the target network the learner adapts or generates.

  Raises:
    ValueError: an unknown `config.algo` or `config.hypernet.kind`, or an invalid value
      (the learners' own checks, e.g. a negative `inner.steps`).
  """
  algo = config.algo
  if algo not in ALGOS:
    raise ValueError(f'config.algo: expected one of {ALGOS}, received {algo!r}.')
  loss = config.get('loss', 'mse')
  inner = config.get('inner', ml_collections.ConfigDict())
  steps = inner.get('steps', 0)
  first_order = inner.get('first_order', False)
  remat = inner.get('remat', False)

  if algo in GRADIENT_ALGOS:
    kwargs = dict(target=target, loss=loss, inner_steps=steps, inner_lr=inner.lr, remat=remat,
                  first_order=first_order or algo in ('fomaml', 'reptile'))
    cls = {'maml': meta.MAML, 'fomaml': meta.MAML, 'metasgd': meta.MetaSGD, 'anil': meta.ANIL,
           'reptile': meta.Reptile}[algo]
    return cls(**kwargs)

  if algo == 'amortised':
    encoder = build_encoder(config.encoder)
    return hyper.Amortised(target=target, loss=loss, encoder=encoder,
                           hypernet=build_hypernet(config.hypernet, target, encoder.features),
                           finetune_lr=inner.get('lr', 0.01))
  if algo == 'latent':
    return hyper.LatentAdaptation(
        target=target, loss=loss, inner_steps=steps, inner_lr=inner.lr,
        hypernet=build_hypernet(config.hypernet, target, config.latent.dim),
        latent_dim=config.latent.dim, learn_init=config.latent.learn_init,
        first_order=first_order, remat=remat)
  if algo == 'hypermaml':
    encoder = build_encoder(config.encoder)
    return hyper.HyperMAML(
        target=target, loss=loss, inner_steps=steps, inner_lr=inner.lr, encoder=encoder,
        hypernet=build_hypernet(config.hypernet, target, encoder.features),
        delta_scale=config.delta_scale, first_order=first_order, remat=remat)
  # learned_update
  rule = hypernet.WeightConditionedHypernet(
      target=target, hidden=tuple(config.rule.hidden), use_grad=True,
      leaf_emb_dim=config.rule.leaf_emb_dim, init_scale=config.rule.init_scale)
  return hyper.LearnedUpdate(target=target, loss=loss, inner_steps=steps, rule=rule, remat=remat)
