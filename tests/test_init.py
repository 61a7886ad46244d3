"""Hyperfan initialisation: generated kernels start with the target's own init variance."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypernet as hn

# Relative tolerance on the variance of generated kernels, averaged over
# SEEDS hypernetwork initialisations x CONDS conditioning vectors (seeded).
TOLERANCE = 0.2
SEEDS = 12
CONDS = 8
COND_DIM = 32


class Wide(nn.Module):
  """MLP 64-200-50-10: fan-ins differ by 20x, so a wrong init shows."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(200)(x))
    x = nn.relu(nn.Dense(50)(x))
    return nn.Dense(10)(x)


@pytest.fixture(scope='module')
def target():
  return hn.Target.from_linen(Wide(), jnp.zeros((1, 64)), key=jax.random.key(0))


def generated_variances(hnet, target):
  """Per kernel leaf: mean over seeds and conditions of the generated values' variance."""
  init = jax.jit(hnet.init)
  gen = jax.jit(jax.vmap(hnet.apply, in_axes=(None, 0)))
  layout = hn.layout_for(target)
  out = {l.path: [] for l in layout.generated if l.is_kernel}
  for seed in range(SEEDS):
    variables = init(jax.random.key(seed), jnp.zeros(COND_DIM))
    conds = jax.random.normal(jax.random.key(100 + seed), (CONDS, COND_DIM))  # E[c^2] = 1
    leaves = dict(zip([l.path for l in layout.leaves], jax.tree.leaves(gen(variables, conds))))
    for path in out:
      out[path].append(float(jnp.mean(jnp.var(leaves[path].reshape(CONDS, -1), axis=1))))
  return {p: float(np.mean(v)) for p, v in out.items()}


FAMILIES = {
    'full': lambda t, **kw: hn.FullHypernet(t, COND_DIM, hidden=(64, 64), **kw),
    'per_tensor': lambda t, **kw: hn.PerTensorHypernet(t, COND_DIM, hidden=(64,), head_hidden=(32,),
                                                       tensor_emb_dim=8, **kw),
    'chunked': lambda t, **kw: hn.ChunkedHypernet(t, COND_DIM, chunk_size=1000, hidden=(64, 64),
                                                  **kw),
}


@pytest.mark.parametrize('family', FAMILIES)
def test_hyperfan_in_matches_target_fan_in_variance(family, target):
  got = generated_variances(FAMILIES[family](target, head_init='hyperfan_in'), target)
  # The target's own initialiser, measured on its own draws.
  draws = jax.vmap(target.init)(jax.random.split(jax.random.key(9), 8))
  own = {l.path: float(jnp.var(leaf)) for l, leaf in
         zip(hn.layout_for(target).leaves, jax.tree.leaves(draws)) if l.is_kernel}
  for l in hn.layout_for(target).generated:
    if l.is_kernel:
      assert got[l.path] == pytest.approx(1.0 / l.fan_in, rel=TOLERANCE), l.path
      assert got[l.path] == pytest.approx(own[l.path], rel=TOLERANCE), l.path


@pytest.mark.parametrize('family', FAMILIES)
def test_hyperfan_out_matches_fan_out_variance(family, target):
  got = generated_variances(FAMILIES[family](target, head_init='hyperfan_out'), target)
  for l in hn.layout_for(target).generated:
    if l.is_kernel:
      assert got[l.path] == pytest.approx(1.0 / l.fan_out, rel=TOLERANCE), l.path


def test_he_gain_doubles_variance(target):
  got = generated_variances(FAMILIES['full'](target, head_init='hyperfan_in', gain=2.0), target)
  l = hn.layout_for(target).by_path['Dense_0/kernel']
  assert got[l.path] == pytest.approx(2.0 / l.fan_in, rel=TOLERANCE)


def test_naive_init_is_far_from_target_variance(target):
  """The reason hyperfan exists: Flax's default head init gives variance ~E[e^2], not 1/fan_in."""
  got = generated_variances(FAMILIES['full'](target, head_init='naive'), target)
  l = hn.layout_for(target).by_path['Dense_1/kernel']  # fan_in 200
  assert got[l.path] > 10 / l.fan_in


def test_leaf_variances_rule(target):
  layout = hn.layout_for(target)
  v = hn.init.leaf_variances(layout, 'hyperfan_in')
  k = layout.by_path['Dense_1/kernel']
  b = layout.by_path['Dense_1/bias']
  assert (k.fan_in, k.fan_out) == (200, 50)
  np.testing.assert_allclose(v[k.offset:k.offset + k.size], 1 / 200)
  np.testing.assert_allclose(v[b.offset:b.offset + b.size], 1 / 200)  # the kernel beside it
  conv = hn.ParamLayout({'w': jax.ShapeDtypeStruct((3, 3, 4, 8), jnp.float32)})
  assert (conv.leaves[0].fan_in, conv.leaves[0].fan_out) == (36, 72)
