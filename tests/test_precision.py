"""bfloat16 compute with float32 master weights (`make_meta_step(compute_dtype=...)`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypernet as hn
from experiments import rundir, sinusoid
from experiments.configs import sinusoid as sinusoid_config
from hypernet import meta
from hypernet.meta.base import cast_floating
from hypernet.tasks import Sinusoid


def _maml():
  target = sinusoid.build_target(sinusoid_config.get_config('algo=maml'), jax.random.key(0))
  return meta.MAML(target=target, inner_lr=0.01, inner_steps=1)


def _run(learner, compute_dtype, steps=5):
  tx = optax.adam(1e-3)
  state = meta.init_state(learner, tx, jax.random.key(1))
  step = meta.make_meta_step(learner, tx, compute_dtype=compute_dtype)
  tasks = Sinusoid().sample_batch(jax.random.key(2), 25, 20, 10)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, tasks)
    losses.append(float(metrics['loss']))
  return state, metrics, losses, step, tasks


def test_bf16_keeps_float32_master_weights_and_is_close_to_float32():
  learner = _maml()
  s32, _, l32, _, _ = _run(learner, None)
  s16, m16, l16, step, tasks = _run(learner, 'bfloat16')
  for leaf in jax.tree.leaves((s16.meta_params, s16.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  assert m16['loss'].dtype == jnp.float32 and m16['grad_norm'].dtype == jnp.float32
  np.testing.assert_allclose(l16, l32, rtol=3e-2)  # bf16 has 8 bits of mantissa
  # The five updates point the same way as float32's (Adam's steps are sign-like).
  init = learner.init(jax.random.key(1))
  d16 = np.concatenate([np.ravel(a - b) for a, b in zip(jax.tree.leaves(s16.meta_params),
                                                         jax.tree.leaves(init))])
  d32 = np.concatenate([np.ravel(a - b) for a, b in zip(jax.tree.leaves(s32.meta_params),
                                                         jax.tree.leaves(init))])
  cosine = d16 @ d32 / (np.linalg.norm(d16) * np.linalg.norm(d32))
  assert cosine > 0.9, cosine
  assert l16 != l32  # it did compute in bf16 ...
  hlo = step.lower(s16, tasks).as_text()
  assert 'bf16' in hlo and 'dot_general' in hlo  # ... its matmuls take bf16 operands


def test_compute_dtype_checks_and_the_spec_check_stays_strict():
  learner = _maml()
  with pytest.raises(ValueError, match=r"compute_dtype: expected .*'float16'"):
    meta.make_meta_step(learner, optax.adam(1e-3), compute_dtype='float16')
  params = learner.init(jax.random.key(0))[meta.INIT_KEY]  # the target's parameters
  low = cast_floating(params, jnp.bfloat16)
  x = jnp.zeros((3, 1), jnp.bfloat16)
  with pytest.raises(ValueError, match='dtype float32.*dtype bfloat16'):
    learner.target.apply(low, x)
  with hn.target.compute_dtype(jnp.bfloat16):
    assert learner.target.apply(low, x).dtype == jnp.bfloat16
  ints = cast_floating({'a': jnp.ones(2), 'n': jnp.arange(2)}, jnp.bfloat16)
  assert ints['a'].dtype == jnp.bfloat16 and ints['n'].dtype == jnp.int32


def test_sinusoid_config_key_trains_in_bf16(tmp_path):
  config = sinusoid_config.get_config('algo=maml,smoke')
  config.plots = False
  config.compute_dtype = 'bfloat16'
  results = sinusoid.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(results['train_loss']['last'])
  config.compute_dtype = 'half'
  with pytest.raises(ValueError, match='config.compute_dtype'):
    sinusoid.train_and_evaluate(config, str(tmp_path / 'bad'))


def test_runs_recorded_before_the_new_keys_can_be_resumed(tmp_path):
  """A `config.json` without `compute_dtype` / `shard_tasks` is the default float32 run."""
  import json
  config = sinusoid_config.get_config('algo=maml,smoke')
  old = json.loads(config.to_json())
  del old['compute_dtype'], old['shard_tasks']
  (tmp_path / 'config.json').write_text(json.dumps(old))
  rundir.prepare_workdir(config, str(tmp_path))  # accepted
  config.compute_dtype = 'bfloat16'
  with pytest.raises(ValueError, match=r"compute_dtype: 'float32' -> 'bfloat16'"):
    rundir.prepare_workdir(config, str(tmp_path))
