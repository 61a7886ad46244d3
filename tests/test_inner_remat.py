"""`inner_sgd(remat=...)`: every mode gives the plain loop's adapted parameters, losses and
meta-gradient (its memory is measured in `tests/test_benchmark.py`)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypernet as hn
from hypernet import meta
from hypernet.tasks import Sinusoid


@pytest.mark.parametrize('num_steps', [1, 2, 5, 7])  # 7: blocks of 3 and a remainder of 1
def test_remat_modes_agree(num_steps):
  mlp = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(1)])
  target = hn.Target.from_linen(mlp, jnp.zeros((1, 1)), key=jax.random.key(0))
  tasks = Sinusoid().sample_batch(jax.random.key(1), 3, 12, 6)
  params = target.init(jax.random.key(2))
  out = {}
  for remat in (False, True, 'nested'):
    learner = meta.MAML(target=target, inner_lr=0.05, inner_steps=num_steps, remat=remat)
    task = jax.tree.map(lambda a: a[0], tasks)
    support_loss = lambda p: jnp.mean((target.apply(p, task.x_support) - task.y_support) ** 2)  # noqa: E731
    adapted, losses = meta.inner_sgd(support_loss, params, 0.05, num_steps, remat=remat)
    grads, _ = jax.jit(learner.meta_grad)(params, tasks)
    out[remat] = (adapted, losses, grads)
  assert out[False][1].shape == (num_steps,)
  for remat in (True, 'nested'):
    for a, b in zip(jax.tree.leaves(out[remat]), jax.tree.leaves(out[False])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_unknown_remat_mode_names_itself():
  with pytest.raises(ValueError, match=r"remat: expected one of .*'sqrt'"):
    meta.inner_sgd(lambda p: jnp.sum(p ** 2), jnp.ones(2), 0.1, 3, remat='sqrt')
