"""`experiments.omniglot_gates`: the test-time ablation of the flagship's gates, on random
images (its command reads trained runs; here the modes' semantics are checked)."""

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest

from experiments import omniglot_gates as og
from hypernet import meta
import hypernet as hn
from hypernet.models import Conv4
from hypernet.tasks.omniglot import OmniglotEpisodes

FILTERS, WAYS = 4, 5


@pytest.fixture(scope='module')
def setup():
  images = np.random.default_rng(0).integers(0, 256, (12, 20, 28, 28), np.uint8)
  family = OmniglotEpisodes.from_classes(images)
  net, learner = og.gated_protonet(FILTERS, WAYS)
  params = learner.init(jax.random.key(0))
  # Every leaf moved, so that the zero-initialised gate outputs differ per image.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(treedef, [a + 0.3 * jax.random.normal(k, a.shape)
                                        for a, k in zip(leaves, keys)])
  return family, net, learner, params


def test_modes_generated_open_and_mean(setup):
  family, net, learner, params = setup
  task = family.sample(jax.random.key(3), WAYS, 1, 3)
  acc = jax.jit(lambda: og.episode_accuracies(net, learner, params, task))()
  # 'generated' is the trained model as it is.
  pred = jnp.argmax(learner.predict(params, learner.adapt(params, task.x_support,
                                                          task.y_support, 0), task.x_query), -1)
  assert float(acc[0]) == pytest.approx(float(jnp.mean(pred == task.y_query)))
  # 'open' is the plain Conv-4 with the same convolutions.
  plain = meta.ProtoNet(target=hn.Target.from_linen(
      Conv4(filters=FILTERS, ways=0, conv_strategy='xla'), jnp.zeros((1, 28, 28, 1)),
      key=jax.random.key(0)), ways=WAYS)
  base = {k: v for k, v in params.items() if not k.startswith('Gate_')}
  pred = jnp.argmax(plain.predict(base, plain.adapt(base, task.x_support, task.y_support, 0),
                                  task.x_query), -1)
  assert float(acc[2]) == pytest.approx(float(jnp.mean(pred == task.y_query)))
  # 'mean': every image of the episode gets the episode's mean gates.
  x = jnp.concatenate([task.x_support, task.x_query])
  generated = og.gates(net, params, x)
  assert not np.allclose(generated[1][0], generated[1][1])  # they do differ per image
  logits = [jnp.log(m / (2.0 - m)) for m in (g.mean(0) for g in generated)]
  with nn.intercept_methods(og._replacing_gates('mean', logits)):
    replaced = og.gates(net, params, x)
  for g, r in zip(generated, replaced):
    np.testing.assert_allclose(r, jnp.broadcast_to(g.mean(0), g.shape), rtol=1e-5, atol=1e-6)


def test_ablation_summary_and_errors(setup):
  family, _, _, params = setup
  r = og.ablation(params, family, filters=FILTERS, ways=WAYS, shots=1, queries=2, episodes=3,
                  key=jax.random.key(0))
  assert set(r['modes']) == set(og.MODES) and r['episodes'] == 3
  assert all(0.0 <= m <= 100.0 and c >= 0.0 for m, c in r['modes'].values())
  g, m = r['modes']['generated'][0], r['modes']['mean'][0]
  assert r['generated_minus_mean'][0] == pytest.approx(g - m)
  with pytest.raises(ValueError, match='episodes: expected at least 2, received 1'):
    og.ablation(params, family, filters=FILTERS, ways=WAYS, shots=1, queries=2, episodes=1,
                key=jax.random.key(0))
