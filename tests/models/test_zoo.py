"""What every backbone of the zoo must do, checked on tiny configurations.

Each model is built by name through ``facejax.models.get`` with tiny widths
(the full models are checked by ``jax.eval_shape`` in their own test files).
"""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax import models

# name -> (tiny keyword arguments, input shape (batch first), embedding size)
TINY = {
    'iresnet18': (dict(stage_features=(8, 8, 16, 16), stem_features=8,
                       embedding_dim=16, stage_units=(1, 1, 1, 1)),
                  (2, 32, 32, 3), 16),
    'iresnet50': (dict(stage_features=(4, 4, 8, 8), stem_features=4,
                       embedding_dim=8, dropout_rate=0.2),
                  (2, 32, 32, 3), 8),
    'mobilefacenet': (dict(embedding_dim=16, stem_features=8,
                           expanded_features=16,
                           bottlenecks=((2, 8, 2, 2), (2, 16, 1, 2))),
                      (2, 32, 32, 3), 16),
    'sphereface20': (dict(stage_features=(4, 8, 8, 16), embedding_dim=12),
                     (2, 32, 32, 3), 12),
    'sphereface20_bn': (dict(stage_features=(4, 8, 8, 16), embedding_dim=12,
                             batch_norm=True),
                        (2, 32, 32, 3), 12),
}


def build(name, **overrides):
  kwargs, shape, dim = TINY[name]
  registry_name = name.removesuffix('_bn')
  return models.get(registry_name, **kwargs, **overrides), shape, dim


def images(shape, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def init(model, shape):
  return model.init(jax.random.PRNGKey(0), jnp.zeros(shape))


@pytest.mark.parametrize('name', sorted(TINY))
def test_embedding_shape_dtype_and_finiteness(name):
  model, shape, dim = build(name)
  variables = init(model, shape)
  embedding = model.apply(variables, images(shape))
  chex.assert_shape(embedding, (shape[0], dim))
  chex.assert_type(embedding, jnp.float32)
  chex.assert_tree_all_finite(embedding)


@pytest.mark.parametrize('name', sorted(TINY))
def test_batch_stats_change_only_in_train_mode(name):
  model, shape, _ = build(name)
  variables = init(model, shape)
  x = images(shape)
  rngs = {'dropout': jax.random.PRNGKey(1)}
  if 'batch_stats' not in variables:
    # No normalisation: train and eval differ only by dropout, if any.
    model.apply(variables, x, train=True, rngs=rngs)
    return
  _, updated = model.apply(variables, x, train=True, mutable=['batch_stats'],
                           rngs=rngs)
  changed = jax.tree_util.tree_map(
      lambda old, new: not np.array_equal(old, new),
      variables['batch_stats'], updated['batch_stats'])
  assert all(jax.tree_util.tree_leaves(changed))
  # Eval mode reads the running statistics and mutates nothing.
  _, eval_state = model.apply(variables, x, train=False,
                              mutable=['batch_stats'])
  chex.assert_trees_all_equal(eval_state['batch_stats'],
                              variables['batch_stats'])


@pytest.mark.parametrize('name', sorted(TINY))
def test_initialisation_and_forward_are_deterministic(name):
  model, shape, _ = build(name)
  first, second = init(model, shape), init(model, shape)
  chex.assert_trees_all_equal(first, second)
  other = model.init(jax.random.PRNGKey(7), jnp.zeros(shape))
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(first['params']),
      jax.tree_util.tree_leaves(other['params'])))
  x = images(shape)
  chex.assert_trees_all_equal(model.apply(first, x), model.apply(second, x))


@pytest.mark.parametrize('name', sorted(TINY))
def test_bfloat16_compute_matches_float32(name):
  model, shape, _ = build(name)
  model_bf16, _, _ = build(name, dtype=jnp.bfloat16)
  variables = init(model, shape)
  # float32 parameters serve both: the parameter dtype is unchanged.
  chex.assert_trees_all_equal_structs(variables, init(model_bf16, shape))
  for leaf in jax.tree_util.tree_leaves(init(model_bf16, shape)):
    chex.assert_type(leaf, jnp.float32)
  x = images(shape)
  reference = np.asarray(model.apply(variables, x))
  mixed = model_bf16.apply(variables, x)
  chex.assert_type(mixed, jnp.float32)
  cosine = np.sum(reference * mixed, -1) / (
      np.linalg.norm(reference, axis=-1) * np.linalg.norm(mixed, axis=-1))
  assert np.all(cosine > 0.98), cosine


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
