"""Wrong input fails at trace time with an error naming the argument and both values."""

import jax
import jax.numpy as jnp
import pytest

import hypernet as hn
from conftest import make_target


@pytest.fixture(scope='module')
def mlp():
  return make_target('mlp')


def test_wrong_cond_size_fails_at_trace_time(mlp):
  target, _ = mlp
  hnet = hn.FullHypernet(target, cond_dim=6, hidden=(8,))
  variables = hnet.init(jax.random.key(0), jnp.zeros(6))
  with pytest.raises(ValueError, match=r'cond: expected shape \(6,\), received \(5,\)'):
    jax.jit(hnet.apply)(variables, jnp.zeros(5))
  with pytest.raises(ValueError, match=r'received \(3, 6\).*jax.vmap'):
    jax.eval_shape(hnet.apply, variables, jnp.zeros((3, 6)))


@pytest.mark.parametrize('cls', [hn.ChunkedHypernet, hn.PerTensorHypernet, hn.ModulationHypernet])
def test_wrong_cond_size_every_family(mlp, cls):
  target, _ = mlp
  kw = {'chunk_size': 64} if cls is hn.ChunkedHypernet else {}
  hnet = cls(target, 6, hidden=(8,), **kw)
  with pytest.raises(ValueError, match=r'cond: expected shape \(6,\), received \(7,\)'):
    jax.eval_shape(hnet.init, jax.random.key(0), jnp.zeros(7))


def test_spec_mismatch_names_leaf_and_shapes(mlp):
  target, x = mlp
  params = target.init(jax.random.key(0))
  bad = jax.tree.map(lambda a: a, params)
  bad['Dense_1']['kernel'] = jnp.zeros((32, 31))
  with pytest.raises(ValueError, match=r"params: leaf 'Dense_1/kernel' expected shape \(32, 32\).*"
                                       r'received shape \(32, 31\)'):
    jax.jit(target.apply)(bad, x)
  missing = {k: v for k, v in params.items() if k != 'Dense_2'}
  with pytest.raises(ValueError, match=r'params: pytree structure.*missing.*Dense_2/bias'):
    target.apply(missing, x)
  wrong_dtype = jax.tree.map(lambda a: a.astype(jnp.float16), params)
  with pytest.raises(ValueError, match=r'dtype float32.*dtype float16'):
    target.apply(wrong_dtype, x)
  hnet = hn.WeightConditionedHypernet(target)
  with pytest.raises(ValueError, match=r"grads: leaf 'Dense_1/kernel'"):
    jax.eval_shape(hnet.init, jax.random.key(0), params, bad)


def test_unknown_leaf_in_generate(mlp):
  target, _ = mlp
  with pytest.raises(ValueError, match=r"generate: pattern 'Dense_9' matches no target leaf.*"
                                       r'Dense_0/bias'):
    hn.FullHypernet(target, 6, generate=('Dense_2', 'Dense_9'))
  with pytest.raises(ValueError, match='generate: selects no leaf'):
    hn.layout_for(target, lambda path, leaf: False)


@pytest.mark.parametrize('chunk_size', [0, -3, 2.5])
def test_chunk_size_must_be_positive(mlp, chunk_size):
  target, _ = mlp
  with pytest.raises(ValueError, match=rf'chunk_size: expected a positive integer, received '
                                       rf'{chunk_size}'):
    hn.ChunkedHypernet(target, 6, chunk_size=chunk_size)


def test_bad_options_name_themselves(mlp):
  target, _ = mlp
  with pytest.raises(ValueError, match=r"head_init: expected one of .*received 'glorot'"):
    hn.FullHypernet(target, 6, head_init='glorot')
  with pytest.raises(ValueError, match=r"kind: expected one of .*received 'film2'"):
    hn.ModulationHypernet(target, 6, kind='film2')
  with pytest.raises(ValueError, match=r'rank: expected a positive integer, received 0'):
    hn.ModulationHypernet(target, 6, kind='lowrank', rank=0)
  with pytest.raises(ValueError, match=r"batch_stats: expected one of .*received 'running'"):
    hn.Target.from_nnx(lambda rngs: None,
                       key=jax.random.key(0), batch_stats='running')
  with pytest.raises(TypeError, match='target: expected a hypernet.Target'):
    hn.layout_for('not a target')


def test_wrong_input_shape_names_x_with_both_shapes(mlp):
  """`Target.from_linen`: an input the parameters do not fit is named, at trace time."""
  target, x = mlp  # built from a sample of shape (8, 16)
  params = target.init(jax.random.key(0))
  assert target.apply(params, x[:3]).shape == (3, 4)  # another batch size is fine
  with pytest.raises(ValueError, match=r'x: expected shape \(N, 16\) .*\(8, 16\).*received '
                                       r'\(8, 15\)'):
    jax.eval_shape(target.apply, params, jnp.zeros((8, 15)))
  with pytest.raises(ValueError, match=r'x: expected shape \(N, 16\).*received \(16, 1\)'):
    jax.jit(target.apply)(params, jnp.zeros((16, 1)))
