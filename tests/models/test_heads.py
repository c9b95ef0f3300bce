"""The embedding head every backbone ends with, and the attribute head."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from facejax.models import heads


def test_embedding_head_parts_follow_the_flags():
  features = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 5))
  full = heads.EmbeddingHead(6, input_norm=True, dropout_rate=0.5,
                             output_norm=True, use_bias=True)
  variables = full.init(jax.random.PRNGKey(1), features)
  params = variables['params']
  assert set(params) == {'input_norm', 'dense', 'output_norm'}
  chex.assert_shape(params['dense']['kernel'], (3 * 3 * 5, 6))
  # The output norm has a shift but no learned scale (insightface fixes it).
  assert set(params['output_norm']) == {'bias'}
  bare = heads.EmbeddingHead(6, input_norm=False, output_norm=False)
  bare_params = bare.init(jax.random.PRNGKey(1), features)['params']
  assert set(bare_params) == {'dense'} and 'bias' not in bare_params['dense']
  out = full.apply(variables, features)
  chex.assert_shape(out, (4, 6))
  chex.assert_type(out, jnp.float32)


def test_embedding_head_dropout_only_in_train_mode():
  features = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 2, 8))
  head = heads.EmbeddingHead(6, input_norm=False, dropout_rate=0.5,
                             output_norm=False)
  variables = head.init(jax.random.PRNGKey(1), features)
  evaluated = head.apply(variables, features)
  chex.assert_trees_all_equal(evaluated, head.apply(variables, features))
  trained = head.apply(variables, features, train=True,
                       rngs={'dropout': jax.random.PRNGKey(2)})
  assert not np.allclose(trained, evaluated)
