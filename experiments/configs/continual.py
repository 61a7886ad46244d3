r"""Config of the continual-learning experiment (`python -m experiments.continual`).

The argument after the colon is a comma-separated list of `benchmark=<name>`,
`method=<name>`, `protocol=<name>`, `scenario=<name>` and variant names:

    experiments/configs/continual.py:benchmark=permuted_mnist,method=hnet
    experiments/configs/continual.py:benchmark=split_mnist,method=ewc
    experiments/configs/continual.py:benchmark=split_mnist1d,method=hnet,smoke   # seconds
    experiments/configs/continual.py:method=si,protocol=vandeven,scenario=domain  # PermutedMNIST

Benchmarks (task-incremental: the task identity is given at test time):

* `permuted_mnist`: PermutedMNIST-10, 10 tasks, each MNIST under its own fixed pixel
  permutation (the first is the identity), 10 classes. The baselines share one 10-way head
  (the permutation changes the input, not the meaning of the labels).
* `split_mnist`: SplitMNIST, 5 tasks of two digits (0/1, 2/3, 4/5, 6/7, 8/9), 2 classes
  each; the baselines have one 2-way head per task (multi-head, the usual task-incremental
  SplitMNIST setting; `multi_head=False` shares one 2-way head).
* `permuted_mnist1d`, `split_mnist1d`: the same on MNIST-1D (40 features; 4,000 training and
  1,000 test examples): fast runs for tests and notebooks.

The hypernetwork generates all target weights for each task, so it needs no heads: its
target has `C` outputs (10 or 2).

Methods: `hnet` (full hypernetwork), `hnet_chunked` (chunked hypernetwork), `finetune`
(no protection), `ewc` (one Fisher per task), `online_ewc` (one decayed Fisher), `si`
(Synaptic Intelligence). Each config holds only the sub-dicts its method reads (`hnet`, `ewc`
or `si`), so a key that does not apply is an error on the command line, like a misspelt one.

Protocols: `default` (the settings below) and `vandeven`: van de Ven & Tolias (2019, "Three
scenarios for continual learning", arXiv:1904.07734; code GMvandeVen/continual-learning),
for `permuted_mnist` and `split_mnist` only (see `_vandeven` for every setting and where it
was read). Scenarios (the baselines' heads; the hypernetwork always gets the task identity):
`task` (task-incremental: one head per task) or `domain` (domain-incremental: one shared
head, the task identity unused). Without `scenario=`, the default protocol keeps its heads
(one shared head on the permuted benchmarks, one per task on the split ones) and `vandeven`
is `task`.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

BENCHMARKS = ('permuted_mnist', 'split_mnist', 'permuted_mnist1d', 'split_mnist1d')
METHODS = ('hnet', 'hnet_chunked', 'finetune', 'ewc', 'online_ewc', 'si')
PROTOCOLS = ('default', 'vandeven')
SCENARIOS = ('task', 'domain')
VARIANTS = ('smoke',)
DEFAULT_BENCHMARK, DEFAULT_METHOD = 'permuted_mnist', 'hnet'


def parse_arg(arg: str | None) -> ml_collections.ConfigDict:
  """`'benchmark=split_mnist,method=ewc,smoke'` -> `{benchmark: 'split_mnist', method: 'ewc',
  protocol: 'default', scenario: None, smoke: True}` (`common.parse_arg`'s grammar)."""
  return common.parse_arg(
      arg, variants=VARIANTS, benchmark=common.OneOf(DEFAULT_BENCHMARK, BENCHMARKS),
      method=common.OneOf(DEFAULT_METHOD, METHODS), protocol=common.OneOf('default', PROTOCOLS),
      scenario=common.OneOf(None, SCENARIOS))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The continual-learning experiment's config; see the module docstring for `arg`."""
  a = parse_arg(arg)
  benchmark, method, protocol, scenario = a.benchmark, a.method, a.protocol, a.scenario
  mnist1d = benchmark.endswith('mnist1d')
  permuted = benchmark.startswith('permuted')
  if protocol == 'vandeven' and benchmark not in VANDEVEN_BENCHMARKS:
    raise ValueError(f'config benchmark: expected one of {VANDEVEN_BENCHMARKS} with '
                     f'protocol=vandeven, received {benchmark!r}.')
  if scenario == 'domain' and method.startswith('hnet'):
    raise ValueError(f'config scenario: expected task for method={method} (the hypernetwork '
                     f'is given the task identity), received {scenario!r}.')
  config = ml_collections.ConfigDict()
  config.benchmark = benchmark
  config.method = method
  config.protocol = protocol  # 'default' or 'vandeven' (`_vandeven`).
  config.seed = 0  # root key: parameters, batches, Fisher samples; and the permutations.
  config.overwrite = False  # True: discard a workdir's previous run (any config).

  config.data = ml_collections.ConfigDict()
  config.data.dir = ''  # '' : $HYPERNET_DATA_DIR, else ~/.cache/hypernet/data.
  config.data.verify = True  # check the files' sha256 (False: generated test files).
  config.data.num_tasks = 10 if permuted else 5  # split: at most 5 (the digit pairs).
  config.data.max_train_per_task = 0  # > 0: a subset of each task's training set.
  config.data.max_test_per_task = 0  # > 0: a subset of each task's test set.
  config.data.pad = 0  # MNIST: zero pixels added on each side of the 28 x 28 images.

  # Target MLP D -> hidden -> C (ReLU). 784-100-100-10: 89,610 parameters.
  config.target = ml_collections.ConfigDict()
  config.target.hidden = (64, 64) if mnist1d else (100, 100)
  # 'lecun': Flax's Dense (LeCun-normal weights, zero biases); 'torch': PyTorch's Linear
  # (weights and biases uniform in +-1/sqrt(fan_in)).
  config.target.init = 'lecun'
  # Baselines only: one head per task (split) or one shared head (permuted); `scenario=`
  # sets it (task: True, domain: False).
  config.multi_head = not permuted if scenario is None else scenario == 'task'

  config.train = ml_collections.ConfigDict()
  config.train.steps_per_task = 2000 if permuted else 1000
  if mnist1d:
    config.train.steps_per_task = 1000
  config.train.batch_size = 128
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-3  # Adam (b1 0.9, b2 0.999, eps 1e-8: optax's defaults).
  config.optimizer.schedule = 'cosine'  # 'constant' or 'cosine' (decay to 0 over each task).
  config.optimizer.reset_per_task = True  # True: fresh Adam state for each task; False: one
  # state carried through all tasks (and checkpointed with them).
  config.train.steps_per_call = 250  # steps per jitted host call (lax.scan).
  config.train.log_every = 500

  if method.startswith('hnet'):
    config.hnet = ml_collections.ConfigDict()
    config.hnet.kind = 'chunked' if method == 'hnet_chunked' else 'full'
    config.hnet.emb_dim = 32  # task embedding size (the hypernetwork's cond_dim).
    config.hnet.hidden = (32,) if method == 'hnet_chunked' else (25,)
    config.hnet.activation = 'relu'  # the trunk's: 'relu' or 'elu'.
    # The output layer's init (`hypernet.init.HEAD_INITS`): 'hyperfan_in' gives the target's
    # init variance; 'naive' is a plain LeCun-normal head; 'xavier' is von Oswald et al.'s MNIST
    # init (Glorot-uniform weights, zero biases, in every layer; 'torch': PyTorch's default).
    config.hnet.head_init = 'hyperfan_in'
    config.hnet.chunk_size = 1400  # chunked: values per chunk; ratio < 1 for the MNIST MLP.
    config.hnet.chunk_emb_dim = 32  # chunked: chunk embedding size.
    # chunked: True gives every task its own chunk embeddings (part of its embedding, frozen
    # with it), hypnettorch's `cond_chunk_embs`; False: one set shared by all tasks.
    config.hnet.cond_chunk_embs = False
    # True: each task after the first starts from the previous task's trained embedding
    # (hypnettorch's `init_with_prev_emb`), so from its generated weights; False: from its
    # own random one.
    config.hnet.init_with_prev_emb = False
    config.hnet.beta = 0.01  # output-regulariser strength.
    config.hnet.lookahead_lr = 0.0  # > 0: one-step SGD lookahead in the regulariser.
    # 0: the regulariser over every earlier task at each step (the paper's); k > 0: over k
    # earlier tasks drawn at random per step (unbiased; k + 1 generations per step, not T).
    config.hnet.reg_samples = 0
    # Chunked, with reg_samples > 0: 0: each drawn task's distance over all its chunks; m > 0:
    # over m of them drawn at random (unbiased; the regulariser costs m / num_chunks as much).
    config.hnet.reg_chunks = 0
    if method != 'hnet_chunked':
      del config.hnet['chunk_size'], config.hnet['chunk_emb_dim'], config.hnet['cond_chunk_embs']
      del config.hnet['reg_chunks']
  elif method in ('ewc', 'online_ewc'):
    config.ewc = ml_collections.ConfigDict()
    config.ewc.strength = 500.0  # lambda (one guess, not tuned; the Fisher is a mean over inputs;
    # 5,000 left later PermutedMNIST tasks unlearnable in a first run)
    config.ewc.fisher_samples = 1000  # training inputs per task for the Fisher (x100).
    config.ewc.fisher_labels = 'sample'  # 'sample' (true Fisher) or 'argmax' (predicted label).
    if method == 'online_ewc':
      config.ewc.gamma = 1.0  # decay of the accumulated Fisher
  elif method == 'si':
    config.si = ml_collections.ConfigDict()
    # c: van de Ven & Tolias's value for this benchmark's scenario (5 permuted, 50 split
    # task-incremental; see `_vandeven`), not tuned for this protocol.
    config.si.c = 5.0 if permuted else 50.0
    config.si.xi = 0.1  # damping of Omega = omega / (Delta^2 + xi) (Zenke et al.; van de Ven).
    config.si.path_grad = 'total'  # gradient of the loss with the SI penalty (van de Ven's
    # code); 'task': without it (Zenke et al.'s code). See hypernet.continual.si.

  config.eval = ml_collections.ConfigDict()
  config.eval.infer_task = True  # also report accuracy with the task inferred by entropy.
  config.plots = True  # accuracy-matrix heatmap PNG.
  config.fast_compile = False  # XLA optimisation level 0: compiles faster, runs slower.
  config.keep_checkpoints = 2  # the newest checkpoints kept (one after each finished task).

  if protocol == 'vandeven':
    _vandeven(config, scenario or 'task')

  if a.smoke:
    config.fast_compile = True
    config.data.num_tasks = 3
    config.data.max_train_per_task = 200
    config.data.max_test_per_task = 100
    config.target.hidden = (16,)
    config.train.steps_per_task = 20
    config.train.batch_size = 16
    config.train.steps_per_call = 10
    config.train.log_every = 10
    if 'hnet' in config:
      config.hnet.emb_dim = 8
      config.hnet.hidden = (8,)
      if 'chunk_size' in config.hnet:
        config.hnet.chunk_size = 64
        config.hnet.chunk_emb_dim = 4
    if 'ewc' in config:
      config.ewc.fisher_samples = 100
  return config


# ------------------------------------------------------------------ van de Ven & Tolias (2019)
VANDEVEN_BENCHMARKS = ('permuted_mnist', 'split_mnist')
# Read in GMvandeVen/continual-learning at commit a02db26 (2021-07-15, the last version of the
# code of arXiv:1904.07734 before the 2022 rewrite; the same values since f0b1461, 2019-12-19,
# "Added default (hyper)parameter-values based on chosen experiment and scenario"):
# * param_values.py lines 4-7: tasks 5 (splitMNIST) / 10 (permMNIST); iters 2000 / 5000;
#   lr 0.001 / 0.0001; fc_units 400 / 1000.
# * main.py line 46: --fc-layers 3 (= 2 hidden layers of fc_units, ReLU, + the output layer:
#   encoder.py lines 41-47); line 58: --batch 128; line 59: --optimizer 'adam' (not
#   'adam_reset': train.py lines 85-86 reset the state only for 'adam_reset', so one Adam state
#   runs through all tasks); lines 230-231: optim.Adam(betas=(0.9, 0.999)), PyTorch's
#   eps 1e-8; constant learning rate (no scheduler anywhere).
# * excitability_modules.py lines 67-74: weights and biases uniform in +-1/sqrt(fan_in).
# * data.py lines 150-152, 161, 177-191: permMNIST pads the images to 32 x 32 (Pad(2)) and
#   permutes all 1,024 pixels (every task, the first too: for an MLP immaterial); splitMNIST
#   uses the 28 x 28 images, pairs of digits after a random relabelling per seed (here fixed:
#   0/1, 2/3, ...). Task-IL: one head per task (`active_classes`, train.py lines 75-79);
#   Domain-IL: one shared head (config['classes'] = classes_per_task, data.py line 240).
# * param_values.py lines 9-31, regularisation strengths per scenario (class-IL not here):
#       permMNIST  task:   EWC lambda 500,   online EWC lambda 500,   gamma 0.8, SI c 5
#       permMNIST  domain: EWC lambda 500,   online EWC lambda 1000,  gamma 0.9, SI c 5
#       splitMNIST task:   EWC lambda 1e7,   online EWC lambda 1e8,   gamma 0.8, SI c 50
#       splitMNIST domain: EWC lambda 1e6,   online EWC lambda 1e8,   gamma 0.7, SI c 500
#   (the same calls the author posted in GMvandeVen/continual-learning issue #10, 2019-09-21).
# * continual_learner.py lines 71-145 (EWC): Fisher on the task's whole training set
#   (--fisher-n None), batches of 1, the model's most probable label (`output.max(1)[1]`),
#   on the task's head in Task-IL; penalty lambda/2 sum F (theta - theta*)^2 (lines 148-165),
#   online: F <- F_t + gamma F and the penalty uses gamma * F, i.e. this code's online
#   strength is lambda * gamma.
# * continual_learner.py lines 22-24, 173-215 and train.py lines 39-44, 65-73, 242-249,
#   300-301 (SI): epsilon (= xi) 0.1, W += -p.grad * (p - p_old) after each step with p.grad
#   of the total loss (SI penalty included, encoder.py lines 226-239), Omega += W / (Delta^2 +
#   epsilon) after each task, penalty c * sum Omega (theta - theta*)^2; theta* starts at the
#   initialisation. main.py lines 83-90: --lambda, --fisher-n, --online, --gamma, --c,
#   --epsilon (default 0.1).
VANDEVEN = {
    'permuted_mnist': {'num_tasks': 10, 'hidden': (1000, 1000), 'learning_rate': 1e-4,
                       'steps_per_task': 5000, 'batch_size': 128, 'pad': 2,
                       'fisher_samples': 60000},
    'split_mnist': {'num_tasks': 5, 'hidden': (400, 400), 'learning_rate': 1e-3,
                    'steps_per_task': 2000, 'batch_size': 128, 'pad': 0,
                    'fisher_samples': 12000},  # 11,263-12,665 training images per digit pair
}
VANDEVEN_STRENGTHS = {  # (benchmark, scenario) -> {method: their value}
    ('permuted_mnist', 'task'): {'ewc': 500.0, 'online_ewc': 500.0, 'gamma': 0.8, 'si': 5.0},
    ('permuted_mnist', 'domain'): {'ewc': 500.0, 'online_ewc': 1000.0, 'gamma': 0.9, 'si': 5.0},
    ('split_mnist', 'task'): {'ewc': 1e7, 'online_ewc': 1e8, 'gamma': 0.8, 'si': 50.0},
    ('split_mnist', 'domain'): {'ewc': 1e6, 'online_ewc': 1e8, 'gamma': 0.7, 'si': 500.0},
}
# Their final average test accuracies (%, mean over 20 seeds), read in copies of the paper's
# tables, not in the paper itself (no copy of arXiv:1904.07734 could be opened here): split
# MNIST from its Table 4 and permuted MNIST from the next, as quoted; the permuted MNIST means
# are also those of Table 4 of the authors' arXiv:1809.10635 (read in a copy: None 81.79 /
# 78.51, EWC 94.74 / 94.31, online EWC 95.96 / 94.42, SI 94.75 / 95.33, Task-IL / Domain-IL).
# The chunked hypernetwork on van de Ven & Tolias's PermutedMNIST target (2 x 1000 units, 32 x 32
# inputs: 2,036,010 weights): von Oswald et al.'s (ICLR 2020) PermutedMNIST-10 classifier
# hypernetwork, read in chrhenning/hypercl `mnist/train_args_default.py` (`class_temb_size` 24,
# `class_emb_size` 8, `class_hnet_arch` '25,25', `class_hyper_chunks` 78000, `class_beta` 0.1):
# 27 chunks, 2,031,941 trainable values, compression ratio 0.998. Departures: a ReLU trunk
# (theirs: ELU); Adam's learning rate 1e-3 (theirs: 1e-4, which learns the first task to 92%
# train accuracy in 2,000 steps here against 97.8% at 1e-3); the regulariser over one earlier
# task drawn per step (`reg_samples`, an unbiased estimate of theirs over every earlier task,
# which makes a step at least 4 times cheaper here), without their lookahead.
VONOSWALD_PERMUTED_HNET = {'emb_dim': 24, 'chunk_emb_dim': 8, 'hidden': (25, 25),
                           'chunk_size': 78000, 'beta': 0.1, 'activation': 'relu',
                           'reg_samples': 1}
VONOSWALD_PERMUTED_LEARNING_RATE = 1e-3

VANDEVEN_PUBLISHED = {  # (benchmark, scenario) -> {method: %}
    ('split_mnist', 'task'): {'finetune': 87.19, 'ewc': 98.64, 'online_ewc': 99.12, 'si': 99.09},
    ('split_mnist', 'domain'): {'finetune': 59.21, 'ewc': 63.95, 'online_ewc': 64.32,
                                'si': 65.36},
    ('permuted_mnist', 'task'): {'finetune': 81.79, 'ewc': 94.74, 'online_ewc': 95.96,
                                 'si': 94.75},
    ('permuted_mnist', 'domain'): {'finetune': 78.51, 'ewc': 94.31, 'online_ewc': 94.42,
                                   'si': 95.33},
}
VANDEVEN_PUBLISHED_SOURCE = ('van de Ven & Tolias (2019), Three scenarios for continual '
                             'learning, arXiv:1904.07734, Tables 4-5, mean over 20 seeds ("None" '
                             'is fine-tuning), as quoted in copies of the tables (not read in '
                             'the paper itself); the permuted MNIST figures equal Table 4 of '
                             'the same authors\' arXiv:1809.10635')


def _vandeven(config: ml_collections.ConfigDict, scenario: str) -> None:
  """Sets van de Ven & Tolias's protocol for `config.benchmark` and `scenario` (in place)."""
  v = VANDEVEN[config.benchmark]
  config.data.num_tasks = v['num_tasks']
  config.data.pad = v['pad']
  config.target.hidden = v['hidden']
  config.target.init = 'torch'
  config.multi_head = scenario == 'task'
  config.train.steps_per_task = v['steps_per_task']
  config.train.batch_size = v['batch_size']
  config.optimizer.learning_rate = v['learning_rate']
  config.optimizer.schedule = 'constant'
  config.optimizer.reset_per_task = False
  strengths = VANDEVEN_STRENGTHS[config.benchmark, scenario]
  if 'ewc' in config:
    # Their whole task: every training example once, in random order (split: 11,263-12,665
    # per pair, so a few hundred drawn twice on the smaller pairs). Exact and cheap: one
    # forward-backward pass per 1,000 inputs (`hypernet.continual.dense_fisher_diagonal`).
    config.ewc.fisher_samples = v['fisher_samples']
    config.ewc.fisher_labels = 'argmax'
    if config.method == 'online_ewc':
      config.ewc.gamma = strengths['gamma']
      # Their penalty multiplies the accumulated Fisher by gamma once more.
      config.ewc.strength = strengths['online_ewc'] * strengths['gamma']
    else:
      config.ewc.strength = strengths['ewc']
  if config.method == 'hnet_chunked' and config.benchmark == 'permuted_mnist':
    config.hnet.update(VONOSWALD_PERMUTED_HNET)
    config.optimizer.learning_rate = VONOSWALD_PERMUTED_LEARNING_RATE
  if 'si' in config:
    config.si.c = strengths['si']
    config.si.xi = 0.1
    config.si.path_grad = 'total'
