"""Tiny configurations of every backbone and the helpers their tests share.

Test time here is XLA compile time, so tiny models are initialised once,
under jit, from 'rbg' keys (compiling threefry kernels for every parameter
shape dominates on small CPUs), and cached.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from facejax import models

# case -> (registry name, tiny keyword arguments, input shape, embedding size)
TINY = {
    'iresnet18': ('iresnet18', dict(
        stage_features=(8, 8, 16, 16), stem_features=8, embedding_dim=16,
        stage_units=(1, 1, 1, 1)), (2, 32, 32, 3), 16),
    'iresnet50_dropout': ('iresnet50', dict(
        stage_features=(4, 4, 8, 8), stem_features=4, embedding_dim=8,
        dropout_rate=0.2), (2, 32, 32, 3), 8),
    'mobilefacenet': ('mobilefacenet', dict(
        embedding_dim=16, stem_features=8, expanded_features=16,
        bottlenecks=((2, 8, 2, 2), (2, 16, 1, 2))), (2, 32, 32, 3), 16),
    'sphereface20': ('sphereface20', dict(
        stage_features=(4, 8, 8, 16), embedding_dim=12), (2, 32, 32, 3), 12),
    'sphereface20_bn': ('sphereface20', dict(
        stage_features=(4, 8, 8, 16), embedding_dim=12, batch_norm=True),
                        (2, 32, 32, 3), 12),
    # Tiny depths too where the full depth is checked by eval_shape.
    'center_loss_cnn': ('center_loss_cnn', dict(
        conv_stage_features=(4, 8), convs_per_stage=1,
        local_features=(8, 8, 8), embedding_dim=16), (2, 32, 32, 3), 16),
    'deepid2': ('deepid2', dict(
        conv_features=(4, 6, 8), local_features=8, embedding_dim=12),
                (2, 55, 47, 3), 12),
    'vgg_face': ('vgg_face', dict(
        stage_features=(4, 4, 8, 8, 8), stage_convs=(1, 1, 2, 1, 1),
        fc_features=32, embedding_dim=16), (2, 32, 32, 3), 16),
}


def build(case, **overrides):
  """(model, input shape, embedding size) of a tiny case."""
  name, kwargs, shape, dim = TINY[case]
  return models.get(name, **{**kwargs, **overrides}), shape, dim


def images(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def key(seed):
  return jax.random.key(seed, impl='rbg')


@functools.lru_cache(maxsize=None)
def jitted(model):
  """(init, apply) of ``model`` under jit, compiled once per model."""
  return jax.jit(model.init), jax.jit(model.apply,
                                      static_argnames=('train', 'mutable'))


@functools.lru_cache(maxsize=None)
def init(model, shape, seed=0):
  """Variables of ``model`` for inputs of ``shape`` (cached: do not mutate)."""
  return jitted(model)[0](key(seed), jnp.zeros(shape))


def apply(model, variables, x, train=False, **kwargs):
  return jitted(model)[1](variables, x, train=train, **kwargs)


def abstract_variables(model, shape):
  """The variables' shapes and dtypes, by eval_shape (no compute)."""
  return jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))


def abstract_params(model, shape):
  return abstract_variables(model, shape)['params']


def record_shapes(model, shape, module_types):
  """Module name -> (input shape, output shape) without batch, by eval_shape."""
  shapes = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if (context.method_name == '__call__'
        and isinstance(context.module, module_types)):
      shapes[context.module.name] = (args[0].shape[1:], out.shape[1:])
    return out

  with nn.intercept_methods(record):
    abstract_params(model, shape)
  return shapes


def cosine(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1)
                              * np.linalg.norm(b, axis=-1))
