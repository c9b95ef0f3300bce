"""count_macs and count_parameters against independent counts."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models import counting


class Tiny(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(6, (3, 3), strides=(2, 2), padding='VALID', use_bias=False)(x)
    x = nn.Conv(6, (3, 3), feature_group_count=3, padding='VALID',
                use_bias=False)(x)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(5, use_bias=False)(x)


def test_macs_by_hand():
  # conv1: 7x7 outputs x 3x3 x 3 in x 6 out; grouped conv2: 5x5 outputs x
  # 3x3 x (6/3) in x 6 out; dense: 150 x 5.
  expected = 7 * 7 * 9 * 3 * 6 + 5 * 5 * 9 * 2 * 6 + 5 * 5 * 6 * 5
  assert counting.count_macs(Tiny(), (2, 16, 16, 3)) == expected


def test_macs_agree_with_xla_cost_analysis():
  model = Tiny()
  x = jnp.zeros((1, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  cost = jax.jit(model.apply).lower(variables, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  # XLA counts two FLOPs per multiply-accumulate (and skips the taps that
  # fall on padding, so the model here uses VALID padding).
  assert abs(cost['flops'] / 2 / counting.count_macs(model, x.shape) - 1) < 0.02


def test_parameter_count():
  variables = Tiny().init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  expected = 3 * 3 * 3 * 6 + 3 * 3 * 2 * 6 + 150 * 5
  assert counting.count_parameters(variables['params']) == expected
  assert counting.count_parameters(variables) == expected
