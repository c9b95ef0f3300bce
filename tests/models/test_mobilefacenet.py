"""MobileFaceNet at full size (by eval_shape): the paper's size and cost."""
import jax
import jax.numpy as jnp
import pytest

from facejax import models
from facejax.models import counting


def test_paper_configuration_parameters_and_macs():
  # Chen et al. 2018, Table 1 with its 128-d embedding: 0.99M parameters and
  # 221M multiply-adds at 112x112. Our count includes the batch-norm scales
  # and shifts and the per-channel PReLU slopes, which puts it 1.3% above.
  model = models.get('mobilefacenet', embedding_dim=128)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 112, 112, 3))))
  parameters = counting.count_parameters(variables['params'])
  assert abs(parameters / 0.99e6 - 1) < 0.015, parameters
  assert abs(counting.count_macs(model) / 221e6 - 1) < 0.01


def test_feature_map_must_be_square_for_the_global_depthwise_conv():
  model = models.get('mobilefacenet')
  with pytest.raises(ValueError, match='square'):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                      jnp.zeros((1, 112, 96, 3))))
