"""SphereFace-N nets: depths of the paper, conv-layer count, input sizes."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from facejax import models


def conv_layer_count(model, shape):
  count = []

  def record(next_fun, args, kwargs, context):
    if (isinstance(context.module, nn.Conv)
        and context.method_name == '__call__'):
      count.append(1)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
  return len(count)


@pytest.mark.parametrize('depth', [4, 20, 36, 64])
def test_depth_counts_conv_layers(depth):
  # SphereFace-N has N conv layers (and one fully connected layer).
  model = models.get('sphereface20', depth=depth)
  assert conv_layer_count(model, (1, 112, 96, 3)) == depth


@pytest.mark.parametrize('shape', [(1, 112, 96, 3), (1, 112, 112, 3)])
def test_paper_and_square_inputs_give_512_d(shape):
  model = models.get('sphereface20')
  out = jax.eval_shape(
      lambda: model.apply(model.init(jax.random.PRNGKey(0), jnp.zeros(shape)),
                          jnp.zeros(shape)))
  assert out.shape == (1, 512)


def test_unknown_depth_is_an_error():
  with pytest.raises(ValueError, match='depth'):
    models.get('sphereface20', depth=21).init(jax.random.PRNGKey(0),
                                              jnp.zeros((1, 32, 32, 3)))
