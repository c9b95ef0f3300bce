"""IResNet: published sizes at full scale (by eval_shape), remat, structure."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from facejax import models
from facejax.models import counting
from facejax.models import iresnet
from tests.models import zoo

FULL_INPUT = (1, 112, 112, 3)


def abstract_parameter_count(model, shape=FULL_INPUT):
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
  return counting.count_parameters(variables['params'])


# Published: insightface's IResNet-50 and -100 with a 512-d embedding.
@pytest.mark.parametrize('name, parameters, gmacs', [
    ('iresnet50', 43.6e6, 6.3),
    ('iresnet100', 65.2e6, 12.1),
])
def test_full_size_matches_published_parameters_and_macs(name, parameters,
                                                         gmacs):
  model = models.get(name)
  assert abs(abstract_parameter_count(model) / parameters - 1) < 0.01
  assert abs(counting.count_macs(model) / 1e9 / gmacs - 1) < 0.01


def test_depths_grow_in_size():
  counts = [abstract_parameter_count(models.get(f'iresnet{depth}'))
            for depth in (18, 34, 50, 100, 200)]
  assert counts == sorted(counts)


def test_stages_halve_the_resolution_to_seven_by_seven():
  shapes = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, iresnet.IResNetStage):
      shapes.append(out.shape[1:])
    return out

  model = models.get('iresnet18')
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                      jnp.zeros(FULL_INPUT)))
  assert shapes == [(56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]


def test_remat_changes_memory_not_results():
  kwargs = dict(stage_units=(2, 1), stage_features=(4, 8), stem_features=4,
                embedding_dim=8)
  plain = iresnet.IResNet(**kwargs)
  remat = iresnet.IResNet(**kwargs, remat=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 3))
  variables = zoo.init(plain, x.shape)
  chex.assert_trees_all_equal_structs(variables,
                                      zoo.abstract_variables(remat, x.shape))

  def loss(model, params):
    out, _ = model.apply({**variables, 'params': params}, x, train=True,
                         mutable=['batch_stats'])
    return jnp.sum(jnp.square(out))

  value, grads = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(
      variables['params'])
  remat_value, remat_grads = jax.jit(jax.value_and_grad(
      lambda p: loss(remat, p)))(variables['params'])
  chex.assert_trees_all_close(value, remat_value, rtol=1e-5)
  # atol: the head bias feeds a batch norm, so its gradient is 0 up to noise.
  chex.assert_trees_all_close(grads, remat_grads, rtol=1e-4, atol=1e-5)
