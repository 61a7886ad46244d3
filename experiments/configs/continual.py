r"""Config of the continual-learning experiment (`python -m experiments.continual`).

The argument after the colon is a comma-separated list of `benchmark=<name>`,
`method=<name>` and variant names:

    experiments/configs/continual.py:benchmark=permuted_mnist,method=hnet
    experiments/configs/continual.py:benchmark=split_mnist,method=ewc
    experiments/configs/continual.py:benchmark=split_mnist1d,method=hnet,smoke   # seconds

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
(no protection), `ewc` (one Fisher per task), `online_ewc` (one decayed Fisher). Each config
holds only the sub-dicts its method reads (`hnet` or `ewc`), so a key that does not apply
is an error on the command line, like a misspelt one.
"""

from __future__ import annotations

import ml_collections

BENCHMARKS = ('permuted_mnist', 'split_mnist', 'permuted_mnist1d', 'split_mnist1d')
METHODS = ('hnet', 'hnet_chunked', 'finetune', 'ewc', 'online_ewc')
VARIANTS = ('smoke',)
DEFAULT_BENCHMARK, DEFAULT_METHOD = 'permuted_mnist', 'hnet'


def parse_arg(arg: str | None) -> tuple[str, str, tuple[str, ...]]:
  """`'benchmark=split_mnist,method=ewc,smoke'` -> `('split_mnist', 'ewc', ('smoke',))`."""
  benchmark, method, variants = DEFAULT_BENCHMARK, DEFAULT_METHOD, []
  for item in (arg or '').split(','):
    item = item.strip()
    if not item:
      continue
    if item.startswith('benchmark='):
      benchmark = item[len('benchmark='):]
      if benchmark not in BENCHMARKS:
        raise ValueError(f'config benchmark: expected one of {BENCHMARKS}, received '
                         f'{benchmark!r}.')
    elif item.startswith('method='):
      method = item[len('method='):]
      if method not in METHODS:
        raise ValueError(f'config method: expected one of {METHODS}, received {method!r}.')
    elif item in VARIANTS:
      variants.append(item)
    else:
      raise ValueError(f'config argument: expected `benchmark=<name>`, `method=<name>` or a '
                       f'variant in {VARIANTS}, comma-separated, received {item!r} (in {arg!r}).')
  return benchmark, method, tuple(variants)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The continual-learning experiment's config; see the module docstring for `arg`."""
  benchmark, method, variants = parse_arg(arg)
  mnist1d = benchmark.endswith('mnist1d')
  permuted = benchmark.startswith('permuted')
  config = ml_collections.ConfigDict()
  config.benchmark = benchmark
  config.method = method
  config.seed = 0  # root key: parameters, batches, Fisher samples; and the permutations.
  config.overwrite = False  # True: discard a workdir's previous run (any config).

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ''  # '' : $HYPERNET_DATA_DIR, else ~/.cache/hypernet/data.
  config.data.verify = True  # check the files' sha256 (False: generated test files).
  config.data.num_tasks = 10 if permuted else 5  # split: at most 5 (the digit pairs).
  config.data.max_train_per_task = 0  # > 0: a subset of each task's training set.
  config.data.max_test_per_task = 0  # > 0: a subset of each task's test set.

  # Target MLP D -> hidden -> C (ReLU). 784-100-100-10: 89,610 parameters.
  config.target = ml_collections.ConfigDict()
  config.target.hidden = (64, 64) if mnist1d else (100, 100)
  # Baselines only: one head per task (split) or one shared head (permuted).
  config.multi_head = not permuted

  config.train = ml_collections.ConfigDict()
  config.train.steps_per_task = 2000 if permuted else 1000
  if mnist1d:
    config.train.steps_per_task = 1000
  config.train.batch_size = 128
  config.train.learning_rate = 1e-3  # Adam, fresh state for each task.
  config.train.lr_schedule = 'cosine'  # 'constant' or 'cosine' (decay to 0 over each task).
  config.train.steps_per_call = 250  # steps per jitted host call (lax.scan).
  config.train.log_every = 500

  if method.startswith('hnet'):
    config.hnet = ml_collections.ConfigDict()
    config.hnet.kind = 'chunked' if method == 'hnet_chunked' else 'full'
    config.hnet.emb_dim = 32  # task embedding size (the hypernetwork's cond_dim).
    config.hnet.hidden = (32,) if method == 'hnet_chunked' else (25,)
    config.hnet.chunk_size = 1400  # chunked: values per chunk; ratio < 1 for the MNIST MLP.
    config.hnet.chunk_emb_dim = 32  # chunked: chunk embedding size.
    config.hnet.beta = 0.01  # output-regulariser strength.
    config.hnet.lookahead_lr = 0.0  # > 0: one-step SGD lookahead in the regulariser.
    if method != 'hnet_chunked':
      del config.hnet['chunk_size'], config.hnet['chunk_emb_dim']
  elif method in ('ewc', 'online_ewc'):
    config.ewc = ml_collections.ConfigDict()
    config.ewc.strength = 500.0  # lambda (one guess, not tuned; the Fisher is a mean over inputs;
    # 5,000 left later PermutedMNIST tasks unlearnable in a first run)
    config.ewc.fisher_samples = 1000  # training inputs per task for the Fisher (x100).
    if method == 'online_ewc':
      config.ewc.gamma = 1.0  # decay of the accumulated Fisher

  config.eval = ml_collections.ConfigDict()
  config.eval.infer_task = True  # also report accuracy with the task inferred by entropy.
  config.plots = True  # accuracy-matrix heatmap PNG.
  config.fast_compile = False  # XLA optimisation level 0: compiles faster, runs slower.

  if 'smoke' in variants:
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
