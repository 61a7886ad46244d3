"""Task conditioning blocks: embedding table and permutation-invariant set encoders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypernet as hn


def test_task_embedding_table():
  emb = hn.TaskEmbedding(num_tasks=5, features=8)
  variables = emb.init(jax.random.key(0), jnp.array(0))
  codes = jax.vmap(emb.apply, in_axes=(None, 0))(variables, jnp.arange(5))  # [5, 8]
  assert codes.shape == (5, 8)
  np.testing.assert_array_equal(codes[3], variables['params']['embedding'][3])
  with pytest.raises(ValueError, match=r'task_id: expected an integer scalar.*shape \(2,\)'):
    emb.apply(variables, jnp.array([0, 1]))


def test_task_embedding_out_of_range_ids():
  """Concrete ids outside [0, num_tasks) are errors; traced ones follow `out_of_range`."""
  from jax.experimental import checkify
  emb = hn.TaskEmbedding(num_tasks=3, features=4)
  variables = emb.init(jax.random.key(0), 0)
  table = variables['params']['embedding']
  for bad in (5, -1, 3, np.int32(7), jnp.array(-2)):
    with pytest.raises(ValueError, match=rf'task_id: expected an integer in \[0, 3\).*received '
                                         rf'{int(bad)}'):
      emb.apply(variables, bad)
  np.testing.assert_array_equal(emb.apply(variables, 2), table[2])
  ids = jnp.array([0, 2, 5, -1])
  # Default 'nan': a wrong traced id gives a row of NaN (never another task's row).
  rows = jax.jit(jax.vmap(emb.apply, in_axes=(None, 0)))(variables, ids)
  np.testing.assert_array_equal(rows[:2], table[jnp.array([0, 2])])
  assert np.isnan(rows[2:]).all()
  clip = hn.TaskEmbedding(num_tasks=3, features=4, out_of_range='clip')
  rows = jax.jit(jax.vmap(clip.apply, in_axes=(None, 0)))(variables, ids)
  np.testing.assert_array_equal(rows, table[jnp.array([0, 2, 2, 0])])
  checked = hn.TaskEmbedding(num_tasks=3, features=4, out_of_range='checkify')
  fn = checkify.checkify(jax.jit(jax.vmap(checked.apply, in_axes=(None, 0))))
  err, _ = fn(variables, ids)
  with pytest.raises(checkify.JaxRuntimeError, match=r'task_id: expected an integer in \[0, 3\)'):
    err.throw()
  err, rows = fn(variables, ids[:2])
  err.throw()  # in range: no error
  with pytest.raises(ValueError, match=r"out_of_range: expected one of .*received 'wrap'"):
    hn.TaskEmbedding(num_tasks=3, features=4, out_of_range='wrap')


@pytest.mark.parametrize('pooling', ['mean', 'attention'])
def test_set_encoder_is_permutation_invariant_and_masks_padding(pooling):
  enc = hn.SetEncoder(features=6, hidden=(16,), pooling=pooling, num_heads=2, rho_hidden=(8,))
  x = jax.random.normal(jax.random.key(0), (10, 3))
  y = jax.random.normal(jax.random.key(1), (10, 2))
  variables = enc.init(jax.random.key(2), x, y)
  code = enc.apply(variables, x, y)
  assert code.shape == (6,)
  perm = jax.random.permutation(jax.random.key(3), 10)
  np.testing.assert_allclose(enc.apply(variables, x[perm], y[perm]), code, rtol=1e-5, atol=1e-6)
  # Padding with masked-out junk gives the encoding of the unpadded set.
  xp = jnp.concatenate([x, 100 * jnp.ones((4, 3))])
  yp = jnp.concatenate([y, -100 * jnp.ones((4, 2))])
  mask = jnp.arange(14) < 10
  np.testing.assert_allclose(enc.apply(variables, xp, yp, mask), code, rtol=1e-5, atol=1e-5)
  # A different set gives a different code.
  assert not np.allclose(enc.apply(variables, x, -y), code)
  # Batched over tasks with vmap.
  codes = jax.vmap(enc.apply, in_axes=(None, 0, 0))(variables, jnp.stack([x, x]), jnp.stack([y, -y]))
  np.testing.assert_allclose(codes[0], code, rtol=1e-5, atol=1e-6)


def test_class_pooling_keeps_each_labels_mean_in_its_block():
  """'class': one mean of phi per label, in label order; relabelling permutes the blocks."""
  enc = hn.SetEncoder(features=5, hidden=(8,), pooling='class', rho_hidden=(), normalize=False)
  x = jax.random.normal(jax.random.key(0), (6, 3))
  labels = jnp.array([0, 2, 1, 2, 0, 1])
  y = jax.nn.one_hot(labels, 3)
  variables = enc.init(jax.random.key(1), x, y)
  code = enc.apply(variables, x, y)
  assert code.shape == (5,)
  # Without rho or LayerNorm the code is `out` applied to the pooled [C * H]: rebuilt by hand.
  phi = hn.hypernets.base.MLP((8,))
  phi_out = phi.apply({'params': variables['params']['phi']}, jnp.concatenate([x, y], -1))
  means = jnp.stack([phi_out[labels == c].mean(0) for c in range(3)])  # [C, H]
  out = variables['params']['out']
  np.testing.assert_allclose(code, means.reshape(-1) @ out['kernel'] + out['bias'],
                             rtol=1e-5, atol=1e-5)
  # Permuting the points changes nothing; a class absent from the set gives a zero block.
  perm = jax.random.permutation(jax.random.key(2), 6)
  np.testing.assert_allclose(enc.apply(variables, x[perm], y[perm]), code, rtol=1e-5, atol=1e-6)
  keep = labels != 1
  absent = enc.apply(variables, x, y, keep)
  expected = means.at[1].set(0.0).reshape(-1) @ out['kernel'] + out['bias']
  np.testing.assert_allclose(absent, expected, rtol=1e-5, atol=1e-5)
  # Relabelling the classes (c -> relabel[c]) moves each class's block to its new label.
  relabel = jnp.array([2, 0, 1])
  moved = enc.apply(variables, x, jax.nn.one_hot(relabel[labels], 3))
  phi_moved = phi.apply({'params': variables['params']['phi']},
                        jnp.concatenate([x, jax.nn.one_hot(relabel[labels], 3)], -1))
  blocks = jnp.stack([phi_moved[relabel[labels] == c].mean(0) for c in range(3)])
  np.testing.assert_allclose(moved, blocks.reshape(-1) @ out['kernel'] + out['bias'],
                             rtol=1e-5, atol=1e-5)
  # Labels that are not one-hot (a single column) are refused, naming the argument.
  with pytest.raises(ValueError, match=r"y: pooling='class' expects one-hot labels \[K, C\]"):
    enc.apply(variables, x, jnp.zeros((6, 1)))


def test_set_encoder_shape_errors():
  enc = hn.SetEncoder(features=4)
  with pytest.raises(ValueError, match=r'x, y: expected \[K, dx\] and \[K, dy\] with the same K, '
                                       r'received \(5, 1\) and \(4, 1\)'):
    enc.init(jax.random.key(0), jnp.zeros((5, 1)), jnp.zeros((4, 1)))
  with pytest.raises(ValueError, match=r"pooling: expected one of \('mean', 'attention', "
                                       r"'class'\), received 'max'"):
    hn.SetEncoder(features=4, pooling='max')


def test_set_encoder_feeds_a_hypernetwork():
  """Support set -> code -> generated target parameters, for a batch of tasks."""
  import flax.linen as nn
  target = hn.Target.from_linen(nn.Dense(1), jnp.zeros((1, 1)), key=jax.random.key(0))
  enc = hn.SetEncoder(features=8, hidden=(16,))
  hnet = hn.FullHypernet(target, cond_dim=8, hidden=(16,))
  xs = jax.random.normal(jax.random.key(0), (4, 5, 1))  # [T, K, 1]
  ys = 2.0 * xs
  enc_vars = enc.init(jax.random.key(1), xs[0], ys[0])
  hnet_vars = hnet.init(jax.random.key(2), jnp.zeros(8))

  def predict(x, y):  # one task
    params = hnet.apply(hnet_vars, enc.apply(enc_vars, x, y))
    return target.apply(params, x)

  assert jax.vmap(predict)(xs, ys).shape == (4, 5, 1)
