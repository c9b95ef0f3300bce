"""Small layers the face backbones share.

Conventions of every facejax model: NHWC images, ``dtype`` is the compute
dtype (bfloat16 for mixed precision) and ``param_dtype`` the parameter dtype
(float32); batch-norm statistics are computed and stored in float32 whatever
``dtype`` is. Batch norm follows PyTorch's defaults as the reference models
were trained with them: momentum 0.1 (flax ``momentum=0.9``), epsilon 1e-5.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


def batch_norm(train, dtype, param_dtype, **kwargs):
  """A BatchNorm with the reference models' settings; updates stats in train."""
  return nn.BatchNorm(use_running_average=not train,
                      momentum=BATCH_NORM_MOMENTUM,
                      epsilon=BATCH_NORM_EPSILON, dtype=dtype,
                      param_dtype=param_dtype, **kwargs)


def conv(features, kernel, stride=1, groups=1, padding=None, dtype=jnp.float32,
         param_dtype=jnp.float32, use_bias=False, name=None):
  """A square convolution; 'same'-style symmetric padding k // 2 by default."""
  padding = kernel // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)),
                 feature_group_count=groups, use_bias=use_bias, dtype=dtype,
                 param_dtype=param_dtype,
                 kernel_init=nn.initializers.variance_scaling(
                     2.0, 'fan_out', 'normal'),
                 name=name)


class PReLU(nn.Module):
  """Parametric ReLU with one slope per channel (He et al. 2015), init 0.25."""
  negative_slope_init: float = 0.25
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    slope = self.param('negative_slope',
                       nn.initializers.constant(self.negative_slope_init),
                       (x.shape[-1],), self.param_dtype)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


class ConvNormAct(nn.Module):
  """conv -> [BN] -> [PReLU]: the block most face nets are built from.

  The conv has a bias only when no batch norm follows it. ``activation=False``
  gives the "linear" blocks of MobileFaceNet.
  """
  features: int
  kernel: int
  stride: int = 1
  groups: int = 1
  padding: Any = None
  norm: bool = True
  activation: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    x = conv(self.features, self.kernel, self.stride, self.groups,
             self.padding, dtype=self.dtype, param_dtype=self.param_dtype,
             use_bias=not self.norm, name='conv')(x)
    if self.norm:
      x = batch_norm(train, self.dtype, self.param_dtype, name='norm')(x)
    if self.activation:
      x = PReLU(param_dtype=self.param_dtype, name='prelu')(x)
    return x

