r"""Config of the Omniglot few-shot experiment (`python -m experiments.omniglot`).

The argument after the colon is a comma-separated list of `key=value` items and variants:

    experiments/configs/omniglot.py                                   # hyperhead, 5-way 1-shot, cpu
    experiments/configs/omniglot.py:ways=5,shots=1,algo=maml          # MAML, cpu size
    experiments/configs/omniglot.py:ways=20,shots=1,algo=protonet,size=paper
    experiments/configs/omniglot.py:algo=protonet,gated,size=paper    # the flagship, paper size
    experiments/configs/omniglot.py:algo=hyperhead,smoke              # seconds (tests)

Keys: `algo` (any of `ALGOS`), `ways`, `shots`, `size` ('cpu': finishes in at most 45
minutes on 2 CPU cores; 'paper': the published training length and batch sizes). Variants:
`gated` (the gated Conv-4, `model.gate=True`: with `algo=protonet`, the project's flagship
Omniglot method, ProtoNets on a Conv-4 whose every block is gated by a small hypernetwork
reading the block's input); `smoke` (tiny network and few steps, for tests; results mean
nothing).

Protocol (`hypernet.data.omniglot`, `hypernet.tasks.omniglot`): the MAML/ProtoNets split, 1200
characters for meta-training (1100 train + 100 validation, for model selection) and 423 for
test, drawn across both official splits with seed 0; every rotation by 0/90/180/270 degrees is
a class; 28x28 inputs. `data.protocol='official'` uses background/evaluation instead.

Sizes. 'paper' follows the publications: MAML (Finn et al. 2017, section 5.2 and appendix A.1):
meta-batch 32 (16 for 20-way), 60,000 meta-steps, inner lr 0.4 (0.1 for 20-way), 1 inner step
in training (5 for 20-way), 3 at test (5 for 20-way), Adam 1e-3, Conv-4 with BatchNorm.
ProtoNets (Snell et al. 2017): one episode per step with 60 classes (1-shot) or 60 classes
(5-shot), 5 queries per class, Adam 1e-3, halving every 2000 episodes; the paper's exact
stopping point (early stopping on validation) is approximated here by 20,000 episodes. 'cpu'
shrinks the number of steps and the meta-batch so that a run, evaluation included, finishes
in at most 45 minutes on a 2-core CPU (the measured times are in each run's results.json):
for the metric learners (`protonet`, `hyperhead`, `support_metric`) 10,000 20-way 1-shot
episodes with ProtoNets' learning-rate halving every 2000.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

DEFAULT_ALGO = 'hyperhead'
GRADIENT_ALGOS = common.GRADIENT_ALGOS
# embedding + metric head: any ways/shots at evaluation
METRIC_ALGOS = common.METRIC_ALGOS
# Learners whose adapted parameters include the convolutions (a per-task Conv-4).
CONV_ADAPTING = ('maml', 'fomaml', 'metasgd', 'hypermaml', 'learned_update')
ALGOS = common.CLASSIFICATION_ALGOS
SIZES = ('cpu', 'paper')
VARIANTS = ('gated', 'smoke')


def parse_arg(arg: str | None) -> ml_collections.ConfigDict:
  """`'ways=5,shots=1,algo=maml,smoke'` -> `{algo: 'maml', ways: 5, shots: 1, size: 'cpu',
  smoke: True}` (`common.parse_arg`'s grammar)."""
  return common.parse_arg(arg, variants=VARIANTS, algo=common.OneOf(DEFAULT_ALGO, ALGOS),
                          ways=common.AtLeast(5, 2), shots=common.AtLeast(1, 1),
                          size=common.OneOf('cpu', SIZES))


def _steps(algo: str, ways: int, shots: int, size: str) -> tuple[int, int, int]:
  """(meta-steps, meta-batch, train queries per class) for an algorithm and size."""
  if size == 'paper':
    if algo in METRIC_ALGOS:
      return 20_000, 1, 5
    return 60_000, (16 if ways >= 20 else 32), 15
  # cpu, from meta-steps/s measured on 2 CPU cores: the metric learners on 20-way 1-shot
  # episodes 11-13 steps/s idle (protonet, support_metric), so 10,000 episodes take about 15
  # minutes and the run, evaluation included, about 25; MAML 5-way 1-shot, meta-batch 4,
  # ~1.3 under a load of 6-7.
  if algo in METRIC_ALGOS:
    return 10_000, 1, 5
  if algo in ('maml', 'metasgd', 'latent', 'hypermaml', 'learned_update'):
    # second order through per-task convolutions
    return (300 if ways >= 20 else 800 if shots > 1 else 1_000), 4, 5
  return (600 if ways >= 20 else 1_500), 4, 5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The Omniglot experiment's config; see the module docstring for `arg`."""
  a = parse_arg(arg)
  algo, ways, shots, size = a.algo, a.ways, a.shots, a.size
  num_steps, meta_batch, queries = _steps(algo, ways, shots, size)
  config = ml_collections.ConfigDict()
  config.algo = algo
  config.size = size
  config.seed = 0
  config.overwrite = False

  config.ways = ways
  config.shots = shots
  config.queries = queries  # query examples per class in training episodes
  # Training episodes may use more classes than evaluation, for the learners whose parameters
  # do not depend on N: ProtoNets trained 60-way; 20-way here on the CPU.
  config.train_ways = ({'paper': 60, 'cpu': 20}[size] if algo in METRIC_ALGOS else ways)
  config.meta_batch_size = meta_batch
  config.loss = 'xent'
  config.input_shape = (28, 28, 1)

  config.data = ml_collections.ConfigDict()
  config.data.dir = ''  # '' : $HYPERNET_DATA_DIR, else ~/.cache/hypernet/data
  config.data.cache_dir = ''  # '' : $HYPERNET_CACHE_DIR, else ~/.cache/hypernet/cache
  config.data.source = 'auto'  # 'npz', 'zip' or 'auto'
  config.data.download = False  # fetch the official zips if absent (needs a network)
  config.data.protocol = 'maml'  # or 'official'
  config.data.rotations = True
  config.data.split_seed = 0
  config.data.num_train = 1200  # 'maml': meta-training characters (validation included) ...
  config.data.num_val = 100  # ... of which validation; the rest of the 1623 are test
  config.data.num_val_alphabets = 5  # 'official': background alphabets held out for validation

  # Conv-4, 64 filters; BatchNorm per task (hypernet.models) in the paper's MAML setting.
  config.model = ml_collections.ConfigDict()
  config.model.filters = 64
  config.model.batch_norm = size == 'paper' and algo not in METRIC_ALGOS
  # Input-conditioned gating of every block (hypernet.models.Conv4: the seed sketch's
  # hypernetwork-times-target in each block); off: the plain Conv-4 of the literature.
  config.model.gate = a.gated
  # hypernet.nn.Conv's lowering in training; 'auto' is 'im2col' on CPU, which measured 10x
  # faster than 'xla' there even for the shared embedding of protonet / hyperhead (20-way
  # episodes: 2.96 against 0.16 meta-steps/s), and 'xla' on GPU / TPU.
  config.model.conv_strategy = 'auto'

  inner_lr = 0.1 if ways >= 20 else 0.4
  if algo in GRADIENT_ALGOS + ('latent', 'hypermaml', 'learned_update'):
    config.inner = ml_collections.ConfigDict()
    config.inner.steps = 5 if ways >= 20 else 1
    config.inner.lr = inner_lr if algo != 'latent' else 1.0
    config.inner.first_order = algo in ('fomaml', 'reptile')
    config.inner.remat = False
    if algo == 'reptile':
      config.inner.steps = 5
      config.inner.lr = 0.1
    if algo == 'learned_update':
      del config.inner.lr, config.inner.first_order
  if algo == 'support_metric':
    # The flagship (hypernet.meta.SupportMetric): the distance head generated from the support
    # set, by attention over the prototypes ('attention') and a per-class diagonal metric
    # ('metric'); 'none' is ProtoNets. The ablations in the README change these keys.
    config.head = ml_collections.ConfigDict()
    config.head.refine = 'attention+metric'  # 'none', 'attention', 'metric', 'attention+metric'
    config.head.heads = 4  # attention heads
    config.head.learn_scale = False  # a learned scale of the distances (TADAM)
    config.head.init_scale = 1.0
    # Optional FiLM of the embedding per task (an ablation): hypernet.kind='film' FiLMs every
    # conv from a set encoding of the [N, 2D] class contexts. With it, the embedding's weights
    # differ per task: evaluate with --config.eval.conv_strategy=auto.
    config.hypernet = ml_collections.ConfigDict()
    config.hypernet.kind = 'none'  # or 'film'
    config.hypernet.hidden = (128,)
    config.hypernet.head_init = 'hyperfan_in'  # unused by 'film'
    config.hypernet.init_scale = 0.01
    config.hypernet.chunk_size = 1024  # unused by 'film'
    config.hypernet.generate = ('Conv_*',)
    config.encoder = ml_collections.ConfigDict()
    config.encoder.features = 64
    config.encoder.hidden = (256,)
    config.encoder.rho_hidden = (128,)
    config.encoder.pooling = 'mean'
  if algo in ('amortised', 'hypermaml'):
    config.encoder = ml_collections.ConfigDict()
    config.encoder.features = 64
    config.encoder.hidden = (256, 128)
    config.encoder.rho_hidden = (128,)
    # amortised: one mean per class ('class'); with one mean over the whole support set its
    # loss stayed at log(5) (chance) for all 1,500 steps of the 5-way run: the code no longer
    # said which image had which label. With 'class', a 300-step probe (5-way 1-shot) reached
    # a loss of 1.411.
    config.encoder.pooling = 'class' if algo == 'amortised' else 'mean'
  if algo in ('amortised', 'latent', 'hypermaml', 'hyperhead'):
    config.hypernet = ml_collections.ConfigDict()
    config.hypernet.kind = 'full' if algo != 'latent' else 'film'
    config.hypernet.hidden = (256,) if algo != 'latent' else ()
    config.hypernet.head_init = 'hyperfan_in'
    config.hypernet.init_scale = 0.1 if algo != 'latent' else 1.0
    config.hypernet.chunk_size = 1024
    # Generated leaves: the linear head (convolutions shared by all tasks, so they run on
    # the folded batch); hyperhead generates class rows of its own head target; latent FiLMs
    # every layer from its task code, as CAVIA. With FiLM of the head alone, latent's loss
    # stayed at log(5) for all 1,000 steps of the 5-way 1-shot run; 300-step probes of FiLM of
    # every layer (validation accuracy after 1 step, 100 episodes): init_scale 0.1, 20%
    # (chance); with inner lr 10, 27%; init_scale 1.0, 39%.
    config.hypernet.generate = {'hyperhead': (), 'latent': ()}.get(algo, ('Dense_0/*',))
  if algo == 'amortised':
    config.inner = ml_collections.ConfigDict()
    config.inner.lr = 0.1  # fine-tuning step size at evaluation with more than 0 steps
  if algo == 'hyperhead':
    config.head = ml_collections.ConfigDict()
    config.head.base = 'prototype'
    config.inner = ml_collections.ConfigDict()
    config.inner.steps = 0
    config.inner.lr = 0.1
    config.inner.first_order = False
  if algo == 'latent':
    config.latent = ml_collections.ConfigDict()
    config.latent.dim = 32
    config.latent.learn_init = False
  if algo == 'hypermaml':
    config.delta_scale = 0.1
  if algo == 'learned_update':
    # The sinusoid's update rule (experiments/configs/sinusoid.py): normalised gradient,
    # momentum and step features, scaling a learned per-tensor SGD step that starts at MAML's
    # inner rate.
    config.rule = ml_collections.ConfigDict()
    config.rule.hidden = (8,)
    config.rule.leaf_emb_dim = 4
    config.rule.init_scale = 1e-3
    config.rule.grad_features = 'normalised'
    config.rule.momentum_decays = (0.5, 0.9)
    config.rule.time_scales = (1.0, 3.0)
    config.rule.update_kind = 'scaled'
    config.rule.init_lr = inner_lr
    config.rule.max_log_scale = 2.0
    config.inner.multi_step_loss = config.inner.steps > 1

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-3
  config.optimizer.grad_clip_norm = 0.0
  # Staircase decay: x decay_rate every decay_every steps (0: constant learning rate);
  # ProtoNets' schedule (halve every 2000 episodes) for the metric learners.
  config.optimizer.decay_every = 2_000 if algo in METRIC_ALGOS else 0
  config.optimizer.decay_rate = 0.5

  config.num_steps = num_steps
  config.steps_per_call = 50
  config.log_every = 200
  config.checkpoint_every = 1000
  config.keep_checkpoints = 2
  config.plots = True
  config.fast_compile = False

  # Evaluation: `num_episodes` test episodes per setting (ways, shots, queries per class),
  # after each number of steps; `val_episodes` validation episodes (model selection).
  config.eval = ml_collections.ConfigDict()
  if algo in METRIC_ALGOS:
    config.eval.settings = ((5, 1, 15), (5, 5, 15), (20, 1, 5))
  else:
    config.eval.settings = ((ways, shots, 15 if ways < 20 else 5),)
  config.eval.steps = ((0,) if algo in ('protonet', 'hyperhead', 'support_metric', 'amortised')
                       else ((5,) if ways >= 20 else (1, 3)))
  if algo == 'reptile':
    config.eval.steps = (5, 10)
  # The metric learners evaluate forward passes only, so 5,000 episodes cost a few minutes: with
  # 1,000, the variance of a run's accuracy from the episodes drawn (its per-episode CI) was
  # about as large as the variance across seeds of ProtoNets and of the gated Conv-4 (5 seeds
  # each), so the intervals across seeds measured the test episodes more than the training.
  config.eval.num_episodes = 5000 if algo in METRIC_ALGOS else 1000
  config.eval.val_episodes = 100
  # Forward passes only, weights shared by the episodes for protonet / hyperhead: XLA's
  # convolution measured faster there on CPU (93 against 160-220 s for 300 episodes).
  config.eval.conv_strategy = 'xla' if algo in METRIC_ALGOS else 'auto'
  config.eval.batch_size = 20 if algo in METRIC_ALGOS else 4

  if a.smoke:
    config.model.filters = 8
    config.num_steps = 4
    config.steps_per_call = 2
    config.log_every = 2
    config.checkpoint_every = 2
    config.meta_batch_size = 2 if algo not in METRIC_ALGOS else 1
    config.train_ways = ways
    config.queries = 2
    config.eval.settings = config.eval.settings[:1]
    config.eval.num_episodes = 4
    config.eval.val_episodes = 2
    config.eval.settings = tuple((w, k, 2) for w, k, _ in config.eval.settings)
    config.eval.batch_size = 2
    config.plots = False
    # XLA's CPU backend at optimisation level 0 (`fast_compile`) gave a NaN meta-gradient at
    # meta-step 2 of the 5-way smoke run (real Omniglot, 2 tasks per batch) for every learner
    # that adapts the convolutions per task (MAML, FOMAML, Meta-SGD, HyperMAML, learned
    # update), with BatchNorm or without, either convolution lowering; each task's gradient
    # alone, and the batch's at the default level, were finite. Those compile at the default.
    config.fast_compile = algo not in CONV_ADAPTING
    for sub in ('encoder',):
      if sub in config:
        config[sub].hidden = (16,)
        config[sub].rho_hidden = (16,)
        config[sub].features = 8
    if 'hypernet' in config and config.hypernet.hidden:
      config.hypernet.hidden = (16,)
  return config
