"""ProtoNets and MAML on synthetic N-way K-shot classification tasks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypernet as hn
from hypernet import meta
from hypernet.tasks import Blobs


def embedding():
  net = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(16)])
  return hn.Target.from_linen(net, jnp.zeros((1, 8)), key=jax.random.key(0))


def test_blobs_episodes():
  t = Blobs(dim=8).sample_batch(jax.random.key(0), 3, ways=5, shots=2, queries=4)
  assert t.x_support.shape == (3, 10, 8) and t.y_support.shape == (3, 10)
  assert t.x_query.shape == (3, 20, 8)
  np.testing.assert_array_equal(np.bincount(np.asarray(t.y_query[0]), minlength=5), [4] * 5)
  with pytest.raises(ValueError, match=r'ways: expected an integer >= 2, received 1'):
    Blobs().sample(jax.random.key(0), 1, 1, 1)


def test_prototypes_are_class_means_and_nearest_prototype_wins():
  learner = meta.ProtoNet(target=hn.Target.from_fn(lambda p, x: x, {}), ways=3)
  x = jnp.array([[0., 0.], [0., 2.], [10., 0.], [10., 2.], [0., 10.], [2., 10.]])
  y = jnp.array([0, 0, 1, 1, 2, 2])
  protos = learner.adapt({}, x, y, 0)
  np.testing.assert_allclose(protos, [[0, 1], [10, 1], [1, 10]])
  logits = learner.predict({}, protos, jnp.array([[9., 1.], [0., 0.5]]))
  np.testing.assert_array_equal(jnp.argmax(logits, -1), [1, 0])


@pytest.mark.parametrize('name', ['protonet', 'maml'])
def test_classification_learners_learn(name):
  target = embedding()
  if name == 'protonet':
    learner = meta.ProtoNet(target=target, ways=5)
  else:
    head = hn.Target.from_linen(nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(5)]),
                                jnp.zeros((1, 8)), key=jax.random.key(0))
    learner = meta.MAML(target=head, loss='xent', inner_lr=0.5, inner_steps=1)
  family = Blobs(dim=8, noise=0.8)
  tx = optax.adam(3e-3)
  state = meta.init_state(learner, tx, jax.random.key(1))
  step = meta.make_meta_step(learner, tx)
  held = family.sample_batch(jax.random.key(99), 200, ways=5, shots=1, queries=5)
  k = learner.inner_steps  # ProtoNet: 0 (no inner loop); MAML: 1
  before = meta.evaluate(learner, state.meta_params, held, [k])[k]['accuracy'].mean()
  for i in range(150):
    state, _ = step(state, family.sample_batch(jax.random.key(i), 16, ways=5, shots=1, queries=5))
  after = meta.evaluate(learner, state.meta_params, held, [k])[k]['accuracy'].mean()
  assert float(after) > float(before) + 0.05 and float(after) > 0.5, (before, after)
