r"""Config of the sinusoid meta-learning experiment (`python -m experiments.sinusoid`).

The argument after the colon is a comma-separated list of `algo=<name>` and variant names:

    experiments/configs/sinusoid.py                      # DEFAULT_ALGO, full run
    experiments/configs/sinusoid.py:algo=maml            # MAML, trained for 1..10 steps
    experiments/configs/sinusoid.py:algo=maml,paper      # MAML, the paper's setting
    experiments/configs/sinusoid.py:algo=amortised,smoke # a few seconds (tests, notebooks)
    experiments/configs/sinusoid.py:smoke                # DEFAULT_ALGO, smoke

Algorithms (`experiments.learners.ALGOS`): the gradient-based baselines `maml`, `fomaml`,
`metasgd`, `anil`, `reptile` and the hypernetwork learners `amortised`, `latent`,
`hypermaml`, `learned_update`. Each config holds only the sub-dicts its algorithm reads
(`inner`, `encoder`, `hypernet`, `latent`, `rule`), so a key that does not apply is an
error on the command line, like a misspelt one.

The MAML setting follows Finn et al. (2017), section 5.1: target MLP 1-40-40-1 (ReLU);
training tasks of K=10 support points (and 10 query points); inner SGD steps with
alpha=0.01; Adam with 1e-3 on meta-batches of 25 tasks; 70,000 meta-steps. The paper
trains one inner step (variant `paper`, evaluated after that step only: evaluated after 10,
the run of seed 0 diverged on one of 1,000 10-shot tasks); `maml` without it is trained
for every number of steps it is evaluated with (the multi-step loss over 1..10 steps, as
in MAML++, Antoniou et al. 2019), the strongest MAML this code has. Evaluation:
`eval.num_tasks` held-out tasks with K=5 and K=10 support points, the query MSE on
`eval.num_query` points after each number of inner steps in `eval.steps`.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

# The algorithm run by default: the hypernetwork method that trains in a few minutes on a
# 2-core CPU. Change this one name to switch the main job to another method.
DEFAULT_ALGO = 'amortised'

GRADIENT_ALGOS, HYPER_ALGOS, ALGOS = common.GRADIENT_ALGOS, common.HYPER_ALGOS, common.ALGOS
VARIANTS = ('smoke', 'paper')  # 'paper': MAML only

# Meta-steps per algorithm for the full run, chosen so that each trains in at most about
# 15 minutes on 2 CPU cores shared with other jobs (measured meta-steps/s under a load of 4-8:
# MAML ~1700, ANIL (10 inner steps) ~300, latent (10 inner steps) ~90, learned update (10
# inner steps) ~20; idle, the earlier measures were MAML ~1000, FOMAML ~1250, Meta-SGD ~780,
# Reptile (5 inner steps) ~290, amortised ~450, HyperMAML ~240); the MAML family runs the
# paper's 70,000.
NUM_STEPS = {'maml': 70_000, 'fomaml': 70_000, 'metasgd': 70_000, 'anil': 70_000,
             'reptile': 30_000, 'amortised': 70_000, 'latent': 30_000, 'hypermaml': 30_000,
             'learned_update': 20_000}


# Learners trained on the multi-step loss (`inner.multi_step_loss`: the mean query loss after
# 1, 2, ..., n inner steps) with n = the most steps they are evaluated with (`eval.steps`), so
# each is trained for every number of steps in the tables. Trained with one step only, they
# diverged when evaluated after 5 or 10.
MULTI_STEP_TRAINING = {'maml': 10, 'anil': 10, 'latent': 10, 'learned_update': 10}
# Learners evaluated only after the one step they are trained with. Meta-SGD's learned
# per-parameter step sizes are tuned for one step (after 5 or 10 some tasks overflow), and its
# meta-training on the multi-step loss diverged (NaN within ~250 meta-steps with 5 or 10
# inner steps, with outer learning rates 1e-3 and 3e-4 and the meta-gradient clipped at 1).
ONE_STEP_ONLY = ('metasgd',)
# Learners whose meta-gradient is clipped (global norm): ANIL's inner loop, 10 SGD steps of
# 0.01 on the last layer, diverges from the random init (features too large for that step)
# and the unclipped meta-training never recovered; latent's meta-training on 10 steps
# diverged (a NaN training loss) at meta-step ~9,000-10,000 with seed 0, with inner learning
# rates 1.0 and 0.5 (an outer step after a large meta-gradient is up to ~30x Adam's usual);
# MAML on the multi-step loss over 10 steps (second order through all of them) stopped with an
# error at meta-step ~28,500 of seed 0 in an earlier session (its log was lost with the
# workdir), clipped since as a precaution against the same spikes. The variant 'paper' is not
# clipped (Finn et al. did not).
GRAD_CLIP = {'anil': 1.0, 'latent': 1.0, 'maml': 1.0}
# Learners whose meta-training drops an update with a non-finite meta-gradient (at most 10 in
# a row; `optax.apply_if_finite`, counted as `skipped_updates`): MAML on the multi-step loss
# (seed 2: the clipped meta-gradient's norm was inf at meta-step 3,273; second order through 10
# inner steps) and the learned update (seed 1: a NaN training loss at meta-step 4,563). Both
# stopped there. Rerun with the option, both passed those steps without dropping an update:
# the option is the identity on finite updates, but it changes the compiled program, and
# floating-point differences grow over thousands of meta-steps into another trajectory.
SKIP_NONFINITE = {'maml': 10, 'learned_update': 10}
# Support points of the training tasks where not the paper's 10. ANIL trained on 10-shot
# tasks (10 steps, multi-step loss) diverged on 5-shot tasks after 10 steps (seed 0: held-out
# MSE 1.43 after 1 step, 16.2 after 10 on 999 tasks, one overflowed): SGD on the last layer
# is stable only where the support features' curvature is below 2 / alpha, and fewer points
# average less of it; trained on the fewest it is evaluated with, the larger support sets
# are the easier case.
TRAIN_SUPPORT = {'anil': 5}


def parse_arg(arg: str | None) -> ml_collections.ConfigDict:
  """`'algo=maml,smoke'` -> `{algo: 'maml', smoke: True, paper: False}`; None or '' -> the
  default algorithm, no variant (`common.parse_arg`'s grammar)."""
  return common.parse_arg(arg, variants=VARIANTS, algo=common.OneOf(DEFAULT_ALGO, ALGOS))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The sinusoid experiment's config; see the module docstring for `arg`."""
  a = parse_arg(arg)
  algo, variants = a.algo, tuple(v for v in VARIANTS if a[v])
  if 'paper' in variants and algo != 'maml':
    raise ValueError(f"config argument: the variant 'paper' is MAML's (algo=maml), received "
                     f'algo={algo!r} (in {arg!r}).')
  config = ml_collections.ConfigDict()
  config.algo = algo
  config.seed = 0
  config.overwrite = False  # True: discard a workdir's previous run (any config) and start over.

  # Tasks: A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5] (hypernet.tasks).
  config.task = ml_collections.ConfigDict()
  config.task.family = 'sinusoid'  # any of hypernet.tasks.FAMILIES
  config.task.num_points = 20  # points per training task ...
  # ... of which the first K are the support set (TRAIN_SUPPORT), the rest query.
  config.task.num_support = TRAIN_SUPPORT.get(algo, 10)

  # Target: MLP 1 -> hidden -> 1, ReLU.
  config.target = ml_collections.ConfigDict()
  config.target.hidden = (40, 40)

  # Outer loop (experiments.train).
  config.meta_batch_size = 25
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-3  # Adam
  config.optimizer.skip_nonfinite = SKIP_NONFINITE.get(algo, 0)  # see SKIP_NONFINITE
  config.optimizer.grad_clip_norm = GRAD_CLIP.get(algo, 0.0)  # > 0: clip the meta-gradient's
  # global norm first.
  config.num_steps = NUM_STEPS[algo]
  config.steps_per_call = 100  # meta-steps per jitted host call (lax.scan).
  config.log_every = 500
  config.checkpoint_every = 10_000
  config.keep_checkpoints = 3
  config.plots = True  # PNG plots in the workdir (learning curve, predictions, MSE vs steps).
  config.fast_compile = False  # XLA optimisation level 0: compiles ~2x faster, runs slower.
  # Split each meta-batch over the devices (hypernet.parallel): None shards when there is more
  # than one device; meta_batch_size must then be a multiple of the device count.
  config.shard_tasks = ml_collections.config_dict.placeholder(bool)  # None, True or False
  # 'bfloat16': meta-gradients in bfloat16, float32 master weights and Adam (evaluation float32).
  config.compute_dtype = 'float32'

  # Evaluation on held-out tasks (a key never used in training); the same tasks and query
  # points for every K (the K-shot support set is the first K of max(shots) points).
  config.eval = ml_collections.ConfigDict()
  config.eval.num_tasks = 1000
  config.eval.num_query = 100
  config.eval.shots = (5, 10)
  # Inner steps after which the query MSE is measured (the learned rule also after 20, twice
  # the steps it is trained for: it must stay stable past them).
  config.eval.steps = ((0, 1) if algo in ONE_STEP_ONLY else
                       (0, 1, 5, 10, 20) if algo == 'learned_update' else (0, 1, 5, 10))
  config.eval.batch_size = 250  # tasks per jitted evaluation call.
  config.eval.num_plot_tasks = 4
  # Out-of-distribution tasks (experiments.sinusoid.OOD_SHIFTS): amplitudes in [5, 10],
  # phases in [pi, 2 pi], x in [5, 10], each evaluated like the held-out tasks ('ood' group).
  config.eval.ood = ('amplitude', 'phase', 'x')
  config.eval.cost_repeats = 5  # timed adaptation calls (FLOPs and seconds per task; 0: off)
  # Held-out MSE during training, at every log step ('heldout_*' in metrics.jsonl): on the
  # first track_tasks held-out tasks, after each of track_steps adaptation steps (0: off).
  config.eval.track_tasks = 200
  config.eval.track_steps = (min(10, max(config.eval.steps)),)

  _add_algo_fields(config, algo)
  if 'paper' in variants:  # Finn et al.'s one inner step, evaluated after it only.
    config.inner.steps = 1
    config.inner.multi_step_loss = False
    config.optimizer.grad_clip_norm = 0.0
    config.optimizer.skip_nonfinite = 0
    config.eval.steps = (0, 1)
    config.eval.track_steps = (1,)

  if 'smoke' in variants:  # seconds, most of them compiling
    config.fast_compile = True
    config.num_steps = 40
    config.meta_batch_size = 4
    config.steps_per_call = 10
    config.log_every = 20
    config.checkpoint_every = 20
    config.eval.num_tasks = 20
    config.eval.num_query = 10
    config.eval.batch_size = 20
    config.eval.steps = tuple(s for s in config.eval.steps if s <= 1)
    config.eval.num_plot_tasks = 2
    config.eval.ood = ('x',)
    config.eval.cost_repeats = 2
    config.eval.track_tasks = 10
    config.eval.track_steps = (1,)
    config.target.hidden = (16, 16)
    for name in ('encoder', 'hypernet', 'rule'):
      if name in config:
        for key in ('hidden', 'rho_hidden'):
          if key in config[name]:
            config[name][key] = tuple(min(h, 16) for h in config[name][key])
    if 'encoder' in config:
      config.encoder.features = 16
  return config


def _add_algo_fields(config: ml_collections.ConfigDict, algo: str) -> None:
  """The sub-dicts the algorithm reads (see `experiments.learners.build_learner`)."""
  if algo in GRADIENT_ALGOS:
    config.inner = ml_collections.ConfigDict()
    # Inner SGD steps in training: MAML's paper setting is one (variant 'paper'); MAML and
    # ANIL are trained for every number of steps they are evaluated with (1..10,
    # multi_step_loss), since with one they diverge when evaluated after 5 or 10; Reptile's
    # inner loop runs 5.
    config.inner.steps = MULTI_STEP_TRAINING.get(algo, 5 if algo == 'reptile' else 1)
    config.inner.lr = 0.01  # alpha (Meta-SGD: the per-parameter rates' initial value).
    if algo != 'fomaml' and algo != 'reptile':  # both are first order by definition.
      config.inner.first_order = False
    if algo != 'reptile':  # the mean query loss after 1..steps steps (Antoniou et al. 2019)
      config.inner.multi_step_loss = algo in MULTI_STEP_TRAINING
    config.inner.remat = False

  if algo in ('amortised', 'hypermaml'):
    config.encoder = ml_collections.ConfigDict()  # hypernet.SetEncoder over the support set.
    config.encoder.features = 64  # size of the task code (the hypernetwork's cond_dim).
    config.encoder.hidden = (64, 64)
    config.encoder.rho_hidden = (64,)
    config.encoder.pooling = 'mean'  # 'mean' or 'attention'.

  if algo in HYPER_ALGOS and algo != 'learned_update':
    config.hypernet = ml_collections.ConfigDict()
    # 'full' (FullHypernet), 'chunked', 'per_tensor', or a ModulationHypernet kind: 'film',
    # 'additive', 'multiplicative', 'lowrank'.
    config.hypernet.kind = 'film' if algo == 'latent' else 'full'
    # `latent`: a decoder linear in z (CAVIA's FiLM), as a ReLU trunk is flat at z = 0.
    config.hypernet.hidden = () if algo == 'latent' else (64,)
    config.hypernet.head_init = 'hyperfan_in'  # generating kinds: full, chunked, per_tensor.
    config.hypernet.init_scale = 1e-2  # modulation kinds: std of the initial modulation.
    config.hypernet.chunk_size = 256  # 'chunked' only.

  if algo == 'amortised':  # no inner loop in training: one forward pass adapts.
    config.inner = ml_collections.ConfigDict()
    config.inner.lr = 0.01  # SGD fine-tuning of the generated parameters (eval.steps > 0).
  elif algo == 'latent':  # CAVIA-like: SGD on a task code z from zero.
    config.latent = ml_collections.ConfigDict()
    config.latent.dim = 16
    config.latent.learn_init = False
    config.inner = ml_collections.ConfigDict()
    config.inner.steps = MULTI_STEP_TRAINING[algo]  # trained for 1..steps steps
    # CAVIA's 1.0 is for one step; with 10 a training task overflowed at meta-step ~10,100;
    # with 0.5, seed 1's training loss was NaN at meta-step 218 (0.25: finite).
    config.inner.lr = 0.25
    config.inner.first_order = False
    config.inner.multi_step_loss = True
    config.inner.remat = False
  elif algo == 'hypermaml':  # hypernetwork update of base weights, then SGD steps.
    config.delta_scale = 0.1  # the update is delta_scale * the hypernetwork's output.
    config.inner = ml_collections.ConfigDict()
    config.inner.steps = 1  # one SGD step after the update (measured better than none)
    config.inner.lr = 0.01
    config.inner.first_order = False
    config.inner.remat = False
  elif algo == 'learned_update':  # a WeightConditionedHypernet as the update rule.
    config.rule = ml_collections.ConfigDict()
    config.rule.hidden = (8,)
    config.rule.leaf_emb_dim = 4
    config.rule.init_scale = 1e-3
    config.rule.grad_features = 'normalised'  # 'raw', 'normalised' or 'log_sign'
    config.rule.momentum_decays = (0.5, 0.9)  # gradient moving averages as features
    config.rule.time_scales = (1.0, 3.0)  # tanh(step / s) features
    # 'scaled': a learned per-leaf SGD step, scaled per value by exp(c tanh(output)), c =
    # max_log_scale; 'residual': that step plus the output; 'direct': the output alone.
    config.rule.update_kind = 'scaled'
    config.rule.init_lr = 0.01  # the SGD step's initial size (MAML's alpha)
    config.rule.max_log_scale = 2.0
    config.inner = ml_collections.ConfigDict()
    config.inner.steps = MULTI_STEP_TRAINING[algo]  # unrolled in training ...
    config.inner.multi_step_loss = True  # ... on the mean query loss after 1..steps steps
    # ... with the loss after step 1 weighted up (MetaLearner.first_step_weight): 0.5 * loss_1
    # + 0.5 * mean(loss_1..loss_10). On the plain mean (0) the rule was level with MAML in
    # the paper's one-step setting after 1 step (5-shot 0.605 +- 0.058 against 0.587 +- 0.019,
    # 3 seeds); with 0.5, 0.479 +- 0.039, and lower after 5, 10 and 20 steps too (README,
    # claims; `workdirs/sinusoid_uniform/` holds the runs on the plain mean).
    config.inner.first_step_weight = 0.5
    config.inner.first_order = False
    config.inner.remat = True
