"""Every hypernetwork family against every test target (MLP, Conv-4, NNX, BatchNorm).

For each pair: generated trees equal the target spec (tree, shapes, dtypes) for
one task and vmapped over tasks; vmap over tasks equals a Python loop;
gradients of a loss through `vmap(target.apply)` reach every hypernetwork
parameter.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypernet as hn
from conftest import TARGETS, make_target

NUM_TASKS = 3
COND_DIM = 6
FAMILIES = ('full', 'chunked', 'per_tensor', 'per_tensor_emb', 'additive', 'multiplicative',
            'film', 'lowrank', 'dynamic', 'weight_conditioned')


@dataclasses.dataclass
class Case:
  """A family bound to a target: how to init it, generate for one task and run one task."""
  module: Any
  init: Callable[[jax.Array, Any], Any]      # (key, args of one task) -> variables
  generate: Callable[[Any, Any], Any]        # (variables, args of one task) -> target params
  run: Callable[[Any, Any], jax.Array]       # (variables, args of one task) -> outputs
  task_args: Any                             # args of NUM_TASKS tasks, leading axis = task
  gen_batch_dims: int = 0                    # leading axes of generated leaves for one task


def make_case(family: str, target_name: str) -> Case:
  if family == 'dynamic' and target_name == 'conv4_bn':
    # One example at a time: batch statistics are meaningless, use stored ones.
    target, x = make_target(target_name, batch_stats='frozen')
  else:
    target, x = make_target(target_name)
  conds = jax.random.normal(jax.random.key(7), (NUM_TASKS, COND_DIM))

  def conditioned(module):
    return Case(module, jax.jit(module.init), module.apply,
                lambda v, c: target.apply(module.apply(v, c), x), conds)

  if family == 'full':
    return conditioned(hn.FullHypernet(target, COND_DIM, hidden=(16,)))
  if family == 'chunked':
    return conditioned(hn.ChunkedHypernet(target, COND_DIM, chunk_size=97, hidden=(16,)))
  if family == 'per_tensor':
    return conditioned(hn.PerTensorHypernet(target, COND_DIM, hidden=(16,), head_hidden=(8,)))
  if family == 'per_tensor_emb':
    return conditioned(hn.PerTensorHypernet(target, COND_DIM, hidden=(16,), tensor_emb_dim=3))
  if family in ('additive', 'multiplicative', 'film', 'lowrank'):
    return conditioned(hn.ModulationHypernet(target, COND_DIM, kind=family, hidden=(16,), rank=2,
                                             init_scale=0.1))
  if family == 'dynamic':
    d = int(np.prod(x.shape[1:]))
    hnet = hn.ModulationHypernet(target, d, kind='film', hidden=(8,), init_scale=0.1)
    module = hn.InputConditioned(hnet, target)
    xs = x[None] + 0.1 * jax.random.normal(jax.random.key(3), (NUM_TASKS, *x.shape))
    return Case(module, jax.jit(module.init),
                lambda v, xt: module.apply(v, xt, method=module.generate),
                lambda v, xt: module.apply(v, xt), xs, gen_batch_dims=1)
  if family == 'weight_conditioned':
    module = hn.WeightConditionedHypernet(target, hidden=(8,), init_scale=0.1)
    params = jax.vmap(target.init)(jax.random.split(jax.random.key(5), NUM_TASKS))

    def support_grads(p):
      return jax.grad(lambda q: jnp.mean(target.apply(q, x) ** 2))(p)

    args = (params, jax.vmap(support_grads)(params))
    return Case(module, jax.jit(lambda k, a: module.init(k, *a)), lambda v, a: module.apply(v, *a),
                lambda v, a: target.apply(module.apply(v, *a), x), args)
  raise ValueError(family)


def first_task(tree):
  return jax.tree.map(lambda a: a[0], tree)


@pytest.mark.parametrize('target_name', TARGETS)
@pytest.mark.parametrize('family', FAMILIES)
def test_family_contract(family, target_name):
  case = make_case(family, target_name)
  target = case.module.target
  variables = case.init(jax.random.key(0), first_task(case.task_args))

  # One task: exactly the target's tree, shapes and dtypes.
  gen = jax.jit(case.generate)
  one = gen(variables, first_task(case.task_args))
  hn.check_tree_matches_spec(one, target.param_spec, 'generated', batch_dims=case.gen_batch_dims)
  chex.assert_trees_all_equal_structs(one, target.param_spec)

  # vmapped over tasks: a leading task axis on every leaf.
  batched = jax.jit(jax.vmap(case.generate, in_axes=(None, 0)))(variables, case.task_args)
  hn.check_tree_matches_spec(batched, target.param_spec, 'generated',
                             batch_dims=case.gen_batch_dims + 1)

  # vmap over tasks equals a Python loop over tasks.
  for t in range(NUM_TASKS):
    loop = gen(variables, jax.tree.map(lambda a, t=t: a[t], case.task_args))
    chex.assert_trees_all_close(jax.tree.map(lambda a, t=t: a[t], batched), loop,
                                rtol=1e-5, atol=1e-6)
  # ... and tasks really get different parameters.
  diff = sum(float(jnp.abs(a[0] - a[1]).sum()) for a in jax.tree.leaves(batched))
  assert diff > 0, 'all tasks were given the same parameters'

  # Gradients through vmap(target.apply) reach every hypernetwork parameter.
  def loss(params):
    out = jax.vmap(case.run, in_axes=({'params': None, **{k: None for k in variables if
                                                          k != 'params'}}, 0))(
        {**variables, 'params': params}, case.task_args)
    return jnp.mean((out - 1.0) ** 2)

  grads = jax.jit(jax.grad(loss))(variables['params'])
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert bool(jnp.all(jnp.isfinite(g))), jax.tree_util.keystr(path)
    assert float(jnp.abs(g).max()) > 0, f'no gradient reaches {jax.tree_util.keystr(path)}'


def test_jitted_batched_generate_and_apply_traces_once():
  target, x = make_target('mlp')
  hnet = hn.FullHypernet(target, COND_DIM, hidden=(16,))
  variables = hnet.init(jax.random.key(0), jnp.zeros(COND_DIM))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(variables, conds, x):
    params = jax.vmap(hnet.apply, in_axes=(None, 0))(variables, conds)  # [T, ...] leaves
    return jax.vmap(target.apply, in_axes=(0, None))(params, x)  # [T, N, out]

  outs = [step(variables, jax.random.normal(jax.random.key(i), (NUM_TASKS, COND_DIM)), x + i)
          for i in range(3)]
  assert outs[0].shape == (NUM_TASKS, 8, 4)
  assert not np.allclose(outs[0], outs[1])


def test_generate_only_selected_leaves():
  target, x = make_target('mlp')
  hnet = hn.FullHypernet(target, COND_DIM, hidden=(16,), generate=('Dense_2',))
  variables = hnet.init(jax.random.key(0), jnp.zeros(COND_DIM))
  layout = hn.layout_for(target, ('Dense_2',))
  assert [l.path for l in layout.generated] == ['Dense_2/bias', 'Dense_2/kernel']
  assert variables['params']['head']['kernel'].shape == (16, 4 + 32 * 4)
  conds = jax.random.normal(jax.random.key(1), (NUM_TASKS, COND_DIM))
  params = jax.vmap(hnet.apply, in_axes=(None, 0))(variables, conds)
  # Shared leaves are the same for every task; generated ones differ.
  np.testing.assert_array_equal(params['Dense_0']['kernel'][0], params['Dense_0']['kernel'][1])
  assert not np.allclose(params['Dense_2']['kernel'][0], params['Dense_2']['kernel'][1])
  # A predicate selects too.
  pred = hn.layout_for(target, lambda path, leaf: path.endswith('kernel'))
  assert all(l.path.endswith('kernel') for l in pred.generated) and len(pred.generated) == 3


def test_compression_ratio_below_one_for_mlp_784_100_100_10():
  import flax.linen as nn

  class Big(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Dense(100)(x))
      x = nn.relu(nn.Dense(100)(x))
      return nn.Dense(10)(x)

  target = hn.Target.from_linen(Big(), jnp.zeros((1, 784)), key=jax.random.key(0))
  assert target.num_params == 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
  hnet = hn.ChunkedHypernet(target, cond_dim=8, chunk_size=2000, chunk_emb_dim=8, hidden=(32,))
  variables = hnet.init(jax.random.key(0), jnp.zeros(8))
  ratio = hn.compression_ratio(variables, target)
  assert ratio < 1, ratio
  full = hn.FullHypernet(target, cond_dim=8, hidden=(32,))
  assert hn.compression_ratio(full.init(jax.random.key(0), jnp.zeros(8)), target) > 1


@pytest.mark.parametrize('head_init', ['hyperfan_in', 'target', 'xavier'])
@pytest.mark.parametrize('cond_chunk_embs', [False, True])
def test_chunk_ids_generate_those_chunks_of_the_whole_generation(head_init, cond_chunk_embs):
  """`chunk_ids`: the chosen chunks' values, `[k, chunk_size]`, equal the same stretches of
  the whole generation (`layout.flatten` order), zeros past its last value, for each
  output mode (scale and vector offset, whole offset, none) and with the condition's own
  chunk embeddings; a repeated index repeats the chunk; anything but a 1-d int array is
  refused."""
  target, _ = make_target('mlp')
  hnet = hn.ChunkedHypernet(target, COND_DIM, chunk_size=97, chunk_emb_dim=3, hidden=(16,),
                            head_init=head_init, cond_chunk_embs=cond_chunk_embs)
  n, p = hnet.num_chunks, hn.layout_for(target).num_generated
  assert n * 97 > p  # the last chunk is padded
  cond = jax.random.normal(jax.random.key(1), (hnet.cond_size,))
  variables = hnet.init(jax.random.key(0), cond)
  if head_init == 'target':  # its head starts at zero: move it so the head's output counts
    variables = jax.tree.map(lambda v: v + 0.01, variables)
  whole = np.asarray(hn.layout_for(target).flatten(hnet.apply(variables, cond)))
  padded = np.concatenate([whole, np.zeros(n * 97 - p, np.float32)]).reshape(n, 97)
  ids = jnp.array([n - 1, 0, 2, 0])
  some = jax.jit(lambda v, c, i: hnet.apply(v, c, chunk_ids=i))(variables, cond, ids)
  assert some.shape == (4, 97)
  np.testing.assert_allclose(some, padded[np.asarray(ids)], rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(some[0, p - (n - 1) * 97:]))
  with pytest.raises(ValueError, match=r'chunk_ids: expected a 1-d integer array of chunk '
                     rf'indices in \[0, {n}\), received shape \(2, 2\) dtype int32'):
    hnet.apply(variables, cond, chunk_ids=jnp.zeros((2, 2), jnp.int32))


def test_conditional_chunk_embeddings_are_the_shared_ones_passed_in_cond():
  """`cond_chunk_embs=True` holds no chunk embeddings and reads them from `cond`: with the
  shared module's own passed in, it generates the same weights; changing one chunk's embedding
  changes that chunk's values only."""
  target, _ = make_target('mlp')
  shared = hn.ChunkedHypernet(target, COND_DIM, chunk_size=97, chunk_emb_dim=3, hidden=(16,))
  cond_mod = dataclasses.replace(shared, cond_chunk_embs=True)
  n = shared.num_chunks
  assert (shared.cond_size, cond_mod.cond_size) == (COND_DIM, COND_DIM + n * 3)
  task = jax.random.normal(jax.random.key(1), (COND_DIM,))
  variables = shared.init(jax.random.key(0), task)
  chunk_embs = variables['params'].pop('chunk_embeddings')  # [n, 3]
  own = cond_mod.init(jax.random.key(0), jnp.zeros(cond_mod.cond_size))
  assert 'chunk_embeddings' not in own['params']
  assert jax.tree.structure(own) == jax.tree.structure(variables)
  cond = jnp.concatenate([task, chunk_embs.reshape(-1)])
  flatten = hn.layout_for(target).flatten
  ref = flatten(shared.apply({'params': {**variables['params'], 'chunk_embeddings': chunk_embs}},
                             task))
  got = flatten(cond_mod.apply(variables, cond))
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
  j = 1  # a new embedding for chunk 1: only values [97, 194) change
  moved = flatten(cond_mod.apply(variables, cond.at[COND_DIM + 3 * j].add(1.0)))
  changed = np.flatnonzero(np.asarray(moved != got))
  assert changed.size and changed.min() >= 97 * j and changed.max() < 97 * (j + 1)
  with pytest.raises(ValueError, match=rf'cond: expected shape \({COND_DIM + n * 3},\), '
                     rf'received \({COND_DIM},\)'):
    cond_mod.apply(variables, task)
  with pytest.raises(ValueError, match=r"cond_chunk_embs: expected a bool, received 'yes'"):
    dataclasses.replace(shared, cond_chunk_embs='yes')


@pytest.mark.parametrize('head_init', ['target'])
@pytest.mark.parametrize('cls', [hn.FullHypernet, hn.ChunkedHypernet, hn.PerTensorHypernet])
def test_target_init_mode_starts_at_a_draw_of_the_target_init(cls, head_init):
  target, x = make_target('mlp')
  kw = {'chunk_size': 100} if cls is hn.ChunkedHypernet else {}
  hnet = cls(target, COND_DIM, hidden=(16,), head_init=head_init, **kw)
  variables = hnet.init(jax.random.key(0), jnp.zeros(COND_DIM))
  conds = jax.random.normal(jax.random.key(1), (NUM_TASKS, COND_DIM))
  params = jax.vmap(hnet.apply, in_axes=(None, 0))(variables, conds)
  # The same parameters for every task, whatever the condition ...
  for leaf in jax.tree.leaves(params):
    np.testing.assert_array_equal(leaf[0], leaf[1])
  # ... and they are a draw of the target's own init: zero biases, LeCun kernels.
  one = first_task(params)
  assert float(jnp.abs(one['Dense_0']['bias']).max()) == 0
  ref = target.init(jax.random.key(0))
  for layer in ('Dense_0', 'Dense_1'):
    assert not np.allclose(one[layer]['kernel'], ref[layer]['kernel'])  # a fresh draw
    np.testing.assert_allclose(one[layer]['kernel'].std(), ref[layer]['kernel'].std(), rtol=0.2)


def test_count_params_works_on_shapes_without_allocating():
  target, _ = make_target('mlp')
  hnet = hn.FullHypernet(target, COND_DIM, hidden=(16,))
  shapes = jax.eval_shape(hnet.init, jax.random.key(0), jnp.zeros(COND_DIM))
  real = hnet.init(jax.random.key(0), jnp.zeros(COND_DIM))
  assert hn.count_params(shapes) == hn.count_params(real) == 16 * COND_DIM + 16 + 17 * 1732


@pytest.mark.parametrize('cls', [hn.FullHypernet, hn.ChunkedHypernet])
def test_trunk_activation_is_used_and_checked(cls):
  target, _ = make_target('mlp')
  kw = {'chunk_size': 100} if cls is hn.ChunkedHypernet else {}
  cond = jax.random.normal(jax.random.key(1), (COND_DIM,))
  outs = {}
  for name, fn in hn.TRUNK_ACTIVATIONS.items():
    hnet = cls(target, COND_DIM, hidden=(16,), activation=name, **kw)
    variables = hnet.init(jax.random.key(0), cond)  # the same weights for every activation
    outs[name], state = hnet.apply(variables, cond, capture_intermediates=True,
                                   mutable=['intermediates'])
    # The hypernetwork's own trunk features: negative values only under ELU.
    (h,) = state['intermediates']['trunk']['__call__']
    assert bool((h < 0).any()) == (name == 'elu'), name
    inputs = jnp.concatenate([jnp.broadcast_to(cond, (h.shape[0], COND_DIM)),
                              variables['params']['chunk_embeddings']], -1) if kw else cond
    np.testing.assert_allclose(h, hn.MLP((16,), fn).apply(
        {'params': variables['params']['trunk']}, inputs), rtol=1e-6)
  assert not np.allclose(outs['relu']['Dense_0']['kernel'], outs['elu']['Dense_0']['kernel'])
  with pytest.raises(ValueError, match=r"activation: expected one of \('relu', 'elu'\), "
                     r"received 'tanh'"):
    cls(target, COND_DIM, hidden=(16,), activation='tanh', **kw)


@pytest.mark.parametrize('mode', ['torch', 'xavier'])
@pytest.mark.parametrize('cls', [hn.FullHypernet, hn.ChunkedHypernet, hn.PerTensorHypernet])
def test_whole_network_inits_set_every_layer(cls, mode):
  """`head_init='torch'` (PyTorch's `nn.Linear` default): every Dense of the trunk and the
  head has weights and biases uniform in +-1/sqrt(fan_in). `head_init='xavier'` (von Oswald et
  al.'s MNIST init): weights uniform in +-sqrt(6 / (fan_in + fan_out)), biases zero. Either
  way the generated values are the head's outputs themselves (no scale to the target's init,
  no offset)."""
  target, _ = make_target('mlp')
  kw = {'chunk_size': 100} if cls is hn.ChunkedHypernet else {}
  cond = jax.random.normal(jax.random.key(1), (COND_DIM,))
  hnet = cls(target, COND_DIM, hidden=(16, 12), head_init=mode, **kw)
  params = hnet.init(jax.random.key(0), cond)['params']
  assert 'offset' not in params
  denses = [(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if path[-1].key in ('kernel', 'bias')]
  assert len(denses) >= 6  # two trunk layers and a head, kernels and biases
  for path, leaf in denses:
    parent = params
    for p in path[:-1]:
      parent = parent[p.key]
    fan_in, fan_out = parent['kernel'].shape
    if mode == 'xavier' and path[-1].key == 'bias':
      assert not np.any(leaf), path
      continue
    bound = 1 / np.sqrt(fan_in) if mode == 'torch' else np.sqrt(6 / (fan_in + fan_out))
    assert float(jnp.abs(leaf).max()) <= bound, path
    assert float(jnp.abs(leaf).max()) > 0.8 * bound, path  # uniform over the range, not 0
  if cls is hn.ChunkedHypernet:  # the generated values are the head's outputs
    state = hnet.apply({'params': params}, cond, capture_intermediates=True,
                       mutable=['intermediates'])[1]
    (u,) = state['intermediates']['head']['__call__']
    out = hnet.apply({'params': params}, cond)
    np.testing.assert_allclose(jnp.concatenate([l.reshape(-1) for l in jax.tree.leaves(
        out)]), u.reshape(-1)[:target.num_params], rtol=1e-6)


def test_trunk_layer_init_names_the_argument():
  with pytest.raises(ValueError, match=r"layer_init: expected one of \('he', 'torch', 'xavier'\), "
                     r"received 'lecun'"):
    hn.MLP((3,), layer_init='lecun')
