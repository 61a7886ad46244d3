"""`inner_sgd(remat=...)`: every mode gives the plain loop's adapted parameters, losses and
meta-gradient; rematerialisation bounds the compiled peak memory (`experiments.benchmark`'s
memory curve: XLA's compiled sizes, which do not depend on the machine's load)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypernet as hn
from experiments import benchmark
from hypernet import meta
from hypernet.tasks import Sinusoid


@pytest.mark.parametrize('num_steps', [4, 7])  # 4: two blocks of 2; 7: two of 3 and 1 more
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
    grads, _ = jax.jit(learner.meta_grad)({'init': params}, tasks)
    out[remat] = (adapted, losses, grads)
  assert out[False][1].shape == (num_steps,)
  for remat in (True, 'nested'):
    for a, b in zip(jax.tree.leaves(out[remat]), jax.tree.leaves(out[False])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_unknown_remat_mode_names_itself():
  with pytest.raises(ValueError, match=r"remat: expected one of .*'sqrt'"):
    meta.inner_sgd(lambda p: jnp.sum(p ** 2), jnp.ones(2), 0.1, 3, remat='sqrt')


def test_remat_bounds_the_memory_of_the_second_order_inner_loop():
  """Compiled peak of MAML's meta-gradient on W1's shapes at 1, 4 and 16 inner steps."""
  curve = benchmark.memory_curve('w1', (1, 4, 16))
  plain, remat, nested = (curve['peak_bytes'][m] for m in ('plain', 'remat', 'nested'))
  assert plain[0] < plain[1] < plain[2]  # plain keeps every step's activations
  assert remat[2] < plain[2] and nested[2] < plain[2]
  assert remat[2] - remat[0] < 0.8 * (plain[2] - plain[0])  # a smaller slope
  # Bytes per extra inner step between 1 and 4, and between 4 and 16 steps.
  slope = lambda v: ((v[1] - v[0]) / 3, (v[2] - v[1]) / 12)  # noqa: E731
  # Nested checkpointing grows sub-linearly: the cost of a step falls as steps are added
  # (with sqrt(n) growth by half; per-step remat, linear, keeps its slope) ...
  assert slope(nested)[1] < 0.6 * slope(nested)[0], slope(nested)
  # ... and stays well under per-step remat's, which keeps one parameter set per step.
  assert slope(nested)[1] < 0.5 * slope(remat)[1], (slope(nested), slope(remat))
  assert nested[2] < remat[2]


def test_hyperhead_remat_gives_the_same_meta_gradient():
  """Every inner-loop learner honours the shared `remat` setting (`InnerLoopLearner`): here
  the one whose inner loop runs on a generated head; its steps are rematerialised and the
  meta-gradient is unchanged."""
  emb = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(4)])
  target = hn.Target.from_linen(emb, jnp.zeros((1, 3)), key=jax.random.key(0))
  hnet = hn.FullHypernet(meta.class_head_target(4), cond_dim=8, hidden=(8,))
  x = jax.random.normal(jax.random.key(1), (2, 9, 3))
  y = jnp.tile(jnp.arange(3), (2, 3))
  tasks = hn.tasks.Task(x_support=x[:, :6], y_support=y[:, :6], x_query=x[:, 6:],
                        y_query=y[:, 6:])
  out = {}
  for remat in (False, True, 'nested'):
    learner = meta.HyperHead(target=target, hypernet=hnet, ways=3, inner_steps=3, remat=remat)
    params = learner.init(jax.random.key(2))
    out[remat] = jax.jit(learner.meta_grad)(params, tasks)[0]
    program = str(jax.make_jaxpr(learner.meta_grad)(params, tasks))
    assert ('remat' in program) == bool(remat), remat  # the steps are rematerialised
  for remat in (True, 'nested'):
    for a, b in zip(jax.tree.leaves(out[remat]), jax.tree.leaves(out[False])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
