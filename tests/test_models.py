"""hypernet.models.Conv4: the input-conditioned gate starts as the plain network."""

import jax
import numpy as np

from hypernet.models import Conv4


def test_gated_conv4_starts_as_the_plain_network_and_gates_per_example():
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
  plain, gated = Conv4(filters=8, ways=0), Conv4(filters=8, ways=0, gate=True)
  pv = plain.init(jax.random.key(1), x)
  gv = gated.init(jax.random.key(1), x)
  for i in range(4):  # the same convolutions
    gv['params'][f'Conv_{i}'] = pv['params'][f'Conv_{i}']
  np.testing.assert_allclose(gated.apply(gv, x), plain.apply(pv, x), rtol=1e-5, atol=1e-6)
  # With live gates, each example's output depends on that example only.
  leaves, treedef = jax.tree.flatten(gv)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  live = jax.tree.unflatten(treedef, [a + 0.3 * jax.random.normal(k, a.shape)
                                      for a, k in zip(leaves, keys)])
  full = gated.apply(live, x)
  assert not np.allclose(full, gated.apply(gv, x), atol=1e-4)
  np.testing.assert_allclose(gated.apply(live, x[:1]), full[:1], rtol=1e-4, atol=1e-5)
  assert {'Gate_0_hidden', 'Gate_3_out', 'Conv_3'} <= set(gv['params'])
