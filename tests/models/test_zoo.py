"""What every backbone of the zoo must do, checked on tiny configurations.

Each model is built by name through ``facejax.models.get`` with tiny widths
(``zoo.TINY``); full sizes are checked by ``jax.eval_shape`` in the
model's own test file.
"""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax import models
from tests.models import zoo

CASES = sorted(zoo.TINY)


@pytest.mark.parametrize('case', CASES)
def test_embedding_shape_dtype_and_finiteness(case):
  model, shape, dim = zoo.build(case)
  embedding = zoo.apply(model, zoo.init(model, shape), zoo.images(shape))
  chex.assert_shape(embedding, (shape[0], dim))
  chex.assert_type(embedding, jnp.float32)
  chex.assert_tree_all_finite(embedding)
  assert np.all(np.any(np.asarray(embedding) != 0, axis=-1))


@pytest.mark.parametrize('case', CASES)
def test_batch_stats_change_only_in_train_mode(case):
  model, shape, _ = zoo.build(case)
  variables = zoo.init(model, shape)
  x = zoo.images(shape)
  evaluated = zoo.apply(model, variables, x)
  trained, state = zoo.apply(model, variables, x, train=True,
                             mutable=('batch_stats',),
                             rngs={'dropout': zoo.key(1)})
  # Eval mode reads the running statistics and changes nothing.
  _, eval_state = zoo.apply(model, variables, x, mutable=('batch_stats',))
  chex.assert_trees_all_equal(eval_state, {
      k: v for k, v in variables.items() if k == 'batch_stats'})
  if 'batch_stats' in variables:
    changed = jax.tree_util.tree_map(
        lambda old, new: not np.array_equal(old, new),
        variables['batch_stats'], state['batch_stats'])
    assert all(jax.tree_util.tree_leaves(changed))
  else:
    assert not state
    has_dropout = case in ('vgg_face', 'iresnet50_dropout')
    assert np.allclose(trained, evaluated) != has_dropout


@pytest.mark.parametrize('case', CASES)
def test_initialisation_and_forward_are_deterministic(case):
  model, shape, _ = zoo.build(case)
  first = zoo.init(model, shape)
  second = zoo.jitted(model)[0](zoo.key(0), jnp.zeros(shape))
  chex.assert_trees_all_equal(first, second)
  other = zoo.init(model, shape, seed=7)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(first['params']),
      jax.tree_util.tree_leaves(other['params'])))
  x = zoo.images(shape)
  chex.assert_trees_all_equal(zoo.apply(model, first, x),
                              zoo.apply(model, second, x))


@pytest.mark.parametrize('case', CASES)
def test_bfloat16_compute_matches_float32(case):
  model, shape, _ = zoo.build(case)
  model_bf16, _, _ = zoo.build(case, dtype=jnp.bfloat16)
  variables = zoo.init(model, shape)
  # float32 parameters and statistics serve both: only compute changes.
  bf16_shapes = zoo.abstract_variables(model_bf16, shape)
  chex.assert_trees_all_equal_structs(variables, bf16_shapes)
  for leaf in jax.tree_util.tree_leaves(bf16_shapes):
    assert leaf.dtype == jnp.float32
  x = zoo.images(shape)
  reference = zoo.apply(model, variables, x)
  mixed = zoo.apply(model_bf16, variables, x)
  chex.assert_type(mixed, jnp.float32)
  similarity = zoo.cosine(reference, mixed)
  assert np.all(similarity > 0.98), similarity


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(KeyError, match='iresnet50'):
    models.get('iresnet51')


def test_every_registered_name_builds_a_module():
  for name in models.names():
    assert isinstance(models.get(name), nn.Module), name


def test_keyword_arguments_override_defaults():
  model = models.get('iresnet50', embedding_dim=128)
  assert model.embedding_dim == 128
  assert tuple(model.stage_units) == (3, 4, 14, 3)
