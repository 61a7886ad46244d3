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
| `protonet`       | `ProtoNet` (classification)    | `ways`                           |
| `hyperhead`      | `HyperHead` (classification)   | `ways`, `head`, `hypernet`, `inner` |
| `support_metric` | `SupportMetric` (classification) | `ways`, `head`, (`hypernet`, `encoder`) |

For `protonet`, `hyperhead` and `support_metric` the `target` is the shared embedding network (`x -> [n, D]`);
for the others it is the whole network. Learners with a set encoder (`amortised`,
`hypermaml`) read `config.input_shape`, the shape of ONE input example (default `(1,)`).

Sub-dicts: `inner` {steps, lr, first_order, remat, multi_step_loss, first_step_weight} (keys a learner has no use for may be
absent; for `amortised`, `lr` is the step size of fine-tuning the generated parameters
when evaluated after more than 0 steps); `encoder` {features, hidden, rho_hidden, pooling} -> `hypernet.SetEncoder`;
`hypernet` {kind, hidden, head_init, init_scale, chunk_size, optional generate (glob
patterns of the leaves to generate, e.g. `('Dense_0/*',)`: the head only)} -> `FullHypernet` (`kind='full'`),
`ChunkedHypernet` ('chunked'), `PerTensorHypernet` ('per_tensor') or
`ModulationHypernet(kind=...)` ('film', 'additive', 'multiplicative', 'lowrank');
`latent` {dim, learn_init}; `head` {base} (`HyperHead`'s 'prototype' or 'none'; its
hypernetwork is built from `hypernet` for `hypernet.meta.class_head_target(D)` with
`cond_dim = 2 D`); `rule` {hidden, leaf_emb_dim, init_scale, and optionally grad_features,
momentum_decays, time_scales, update_kind, init_lr, max_log_scale (absent: the original rule's
'raw', (), (), 'direct')} -> `hypernet.WeightConditionedHypernet(use_grad=True)`.

Below this function nothing reads the config: the learners take plain values and modules.
"""

from __future__ import annotations

import flax.linen as nn
import ml_collections

import hypernet
import jax
import numpy as np

from hypernet import meta
from hypernet.meta import hyper

from experiments.configs.common import (ALGOS, CLASSIFICATION_ALGOS, GRADIENT_ALGOS,  # noqa: F401
                                        HYPER_ALGOS, METRIC_ALGOS)
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
  generate = cfg.get('generate', None) or None  # None or (): every leaf; else glob patterns
  if kind == 'full':
    return hypernet.FullHypernet(target=target, cond_dim=cond_dim, hidden=tuple(cfg.hidden),
                                 head_init=cfg.head_init, generate=generate)
  if kind == 'chunked':
    return hypernet.ChunkedHypernet(target=target, cond_dim=cond_dim, chunk_size=cfg.chunk_size,
                                    hidden=tuple(cfg.hidden), head_init=cfg.head_init,
                                    generate=generate)
  if kind == 'per_tensor':
    return hypernet.PerTensorHypernet(target=target, cond_dim=cond_dim, hidden=tuple(cfg.hidden),
                                      head_init=cfg.head_init, generate=generate)
  if kind in MODULATION_KINDS:
    return hypernet.ModulationHypernet(target=target, cond_dim=cond_dim, kind=kind,
                                       hidden=tuple(cfg.hidden), init_scale=cfg.init_scale,
                                       generate=generate)
  raise ValueError(f'config.hypernet.kind: expected one of {HYPERNET_KINDS}, received {kind!r}.')


def embedding_dim(embedding: hypernet.Target, input_shape: tuple[int, ...]) -> int:
  """D of an embedding network `[n, *input_shape] -> [n, D]` (shapes only, nothing runs)."""
  x = jax.ShapeDtypeStruct((1, *input_shape), np.float32)
  out = jax.eval_shape(embedding.apply, embedding.param_spec, x)
  if len(out.shape) != 2:
    raise ValueError(f'target: expected an embedding network with outputs [n, D], received '
                     f'outputs of shape {out.shape} for inputs {x.shape}.')
  return int(out.shape[1])


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
  if algo not in CLASSIFICATION_ALGOS:
    raise ValueError(f'config.algo: expected one of {CLASSIFICATION_ALGOS}, received {algo!r}.')
  loss = config.get('loss', 'mse')
  inner = config.get('inner', ml_collections.ConfigDict())
  steps = inner.get('steps', 0)
  first_order = inner.get('first_order', False)
  remat = inner.get('remat', False)
  multi_step = inner.get('multi_step_loss', False)
  # Passed only where set, so a learner without the multi-step loss never sees the key.
  step_kw = ({'first_step_weight': inner.first_step_weight}
             if 'first_step_weight' in inner else {})
  input_shape = tuple(config.get('input_shape', (1,)))

  if algo in METRIC_ALGOS:
    if loss != 'xent':
      raise ValueError(f"config.loss: {algo} classifies, expected 'xent', received {loss!r}.")
    if algo == 'protonet':
      return meta.ProtoNet(target=target, ways=config.ways)
    if algo == 'support_metric':
      refine = config.head.get('refine', 'none')
      if refine not in ('none', 'attention', 'metric', 'attention+metric'):
        raise ValueError(f"config.head.refine: expected 'none', 'attention', 'metric' or "
                         f"'attention+metric', received {refine!r}.")
      film = config.hypernet.kind != 'none'  # 'none': no modulation (an ablation)
      encoder = build_encoder(config.encoder) if film else None
      return meta.SupportMetric(
          target=target,
          hypernet=build_hypernet(config.hypernet, target, encoder.features) if film else None,
          encoder=encoder, ways=config.ways, input_shape=input_shape,
          learn_metric_scale=config.head.learn_scale,
          init_metric_scale=config.head.init_scale,
          refiner=(meta.PrototypeAttention(num_heads=config.head.get('heads', 4))
                   if 'attention' in refine else None),
          class_metric=meta.ClassMetric() if 'metric' in refine else None)
    dim = embedding_dim(target, input_shape)
    hnet = build_hypernet(config.hypernet, meta.class_head_target(dim), 2 * dim)
    return meta.HyperHead(target=target, hypernet=hnet, ways=config.ways,
                          base=config.head.base, inner_steps=steps,
                          inner_lr=inner.get('lr', 0.1), first_order=first_order, remat=remat)

  if algo in GRADIENT_ALGOS:
    kwargs = dict(target=target, loss=loss, inner_steps=steps, inner_lr=inner.lr, remat=remat,
                  first_order=first_order or algo in ('fomaml', 'reptile'),
                  multi_step_loss=multi_step, **step_kw)
    cls = {'maml': meta.MAML, 'fomaml': meta.MAML, 'metasgd': meta.MetaSGD, 'anil': meta.ANIL,
           'reptile': meta.Reptile}[algo]
    return cls(**kwargs)

  if algo == 'amortised':
    encoder = build_encoder(config.encoder)
    return hyper.Amortised(target=target, loss=loss, encoder=encoder,
                           hypernet=build_hypernet(config.hypernet, target, encoder.features),
                           inner_lr=inner.get('lr', 0.01), first_order=first_order, remat=remat,
                           input_shape=input_shape)
  if algo == 'latent':
    return hyper.LatentAdaptation(
        target=target, loss=loss, inner_steps=steps, inner_lr=inner.lr,
        hypernet=build_hypernet(config.hypernet, target, config.latent.dim),
        latent_dim=config.latent.dim, learn_init=config.latent.learn_init,
        first_order=first_order, remat=remat, multi_step_loss=multi_step, **step_kw)
  if algo == 'hypermaml':
    encoder = build_encoder(config.encoder)
    return hyper.HyperMAML(
        target=target, loss=loss, inner_steps=steps, inner_lr=inner.lr, encoder=encoder,
        hypernet=build_hypernet(config.hypernet, target, encoder.features),
        delta_scale=config.delta_scale, first_order=first_order, remat=remat,
        input_shape=input_shape)
  # learned_update
  r = config.rule
  rule = hypernet.WeightConditionedHypernet(
      target=target, hidden=tuple(r.hidden), use_grad=True, leaf_emb_dim=r.leaf_emb_dim,
      init_scale=r.init_scale, grad_features=r.get('grad_features', 'raw'),
      momentum_decays=tuple(r.get('momentum_decays', ())),
      time_scales=tuple(r.get('time_scales', ())), update_kind=r.get('update_kind', 'direct'),
      init_lr=r.get('init_lr', 0.01), max_log_scale=r.get('max_log_scale', 2.0))
  return hyper.LearnedUpdate(target=target, loss=loss, inner_steps=steps, rule=rule, remat=remat,
                             first_order=first_order, multi_step_loss=multi_step, **step_kw)
