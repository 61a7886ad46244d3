"""Config of the temporary demo (`python -m experiments.demo`).

Variants, chosen after a colon:

* `experiments/configs/demo.py`: the default run (about a minute on 2 CPU cores);
* `experiments/configs/demo.py:smoke`: a tiny run (a few seconds) for tests.

Override single keys on the command line, e.g. `--config.hypernet=film` or
`--config.num_steps=500`; a misspelt key is an error.
"""

from __future__ import annotations

import math

import ml_collections

VARIANTS = ('smoke',)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The demo's config; `arg` names a variant (None or '' for the default run)."""
  if arg not in (None, '') and arg not in VARIANTS:
    raise ValueError(f'config variant: expected one of {VARIANTS} (or none), received {arg!r}.')

  config = ml_collections.ConfigDict()
  config.seed = 0

  # Sinusoid regression tasks: y = amplitude * sin(x - phase), x ~ U[x_range].
  config.task = ml_collections.ConfigDict()
  config.task.amplitude_range = (0.1, 5.0)
  config.task.phase_range = (0.0, math.pi)
  config.task.x_range = (-5.0, 5.0)
  config.task.num_support = 10  # K shots seen by the set encoder.
  config.task.num_query = 10  # points the generated target is scored on (training).

  # Target: Linen MLP 1 -> target_hidden -> 1, ReLU.
  config.target_hidden = (40, 40)

  # Amortised hypernetwork: SetEncoder(support set) -> code -> hypernetwork -> target params.
  config.encoder = ml_collections.ConfigDict()
  config.encoder.features = 64  # size of the task code (the hypernetwork's cond_dim).
  config.encoder.hidden = (64, 64)
  config.encoder.rho_hidden = (64,)
  config.encoder.pooling = 'mean'  # 'mean' or 'attention'.
  config.hypernet = 'full'  # 'full' (FullHypernet) or 'film' (ModulationHypernet kind='film').
  config.hnet_hidden = (64,)
  config.film_init_scale = 1e-2  # std of the initial FiLM modulation ('film' only).

  # Outer loop.
  config.meta_batch_size = 16
  config.learning_rate = 1e-3
  config.num_steps = 20_000  # about a minute in all on 2 CPU cores.
  config.log_every = 1000

  # Evaluation on held-out tasks (a key not used in training).
  config.eval = ml_collections.ConfigDict()
  config.eval.num_tasks = 1000
  config.eval.num_query = 100
  config.eval.num_plot_tasks = 4

  if arg == 'smoke':
    config.meta_batch_size = 8
    config.num_steps = 200
    config.log_every = 50
    config.eval.num_tasks = 64
    config.eval.num_query = 20
    config.eval.num_plot_tasks = 2
  return config
