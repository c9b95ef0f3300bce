"""The SphereFace residual CNNs (Liu et al., CVPR 2017, Table 2).

SphereFace-20 for 112x96 (or 112x112) faces: four stages, each a stride-2
conv3x3 followed by residual units [conv3x3 -> PReLU -> conv3x3 -> PReLU] +
identity, with (1, 2, 4, 1) units and 64, 128, 256, 512 channels, then a
fully connected 512-d feature layer. 4 + 2 * 8 = 20 conv layers. The
original has no batch norm (``batch_norm=True`` adds it after every conv, as
later re-implementations do). Depths 4, 20, 36 and 64 are the paper's.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import heads
from facejax.models import layers

STAGE_UNITS = {4: (0, 0, 0, 0), 20: (1, 2, 4, 1), 36: (2, 4, 8, 2),
               64: (3, 8, 16, 3)}


class SphereFaceNet(nn.Module):
  """SphereFace-N: (N, H, W, 3) images -> (N, embedding_dim) float32.

  Attributes:
    depth: 4, 20, 36 or 64 (sets the units per stage) unless ``stage_units``.
    stage_features: channels per stage.
    embedding_dim: size of the fully connected feature (512).
    batch_norm: add BN after every conv (not in the paper).
  """
  depth: int = 20
  stage_units: Sequence[int] = ()
  stage_features: Sequence[int] = (64, 128, 256, 512)
  embedding_dim: int = 512
  batch_norm: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _conv_act(self, x, features, stride, train, name):
    return layers.ConvNormAct(features, 3, stride, norm=self.batch_norm,
                              dtype=self.dtype, param_dtype=self.param_dtype,
                              name=name)(x, train)

  @nn.compact
  def __call__(self, images, train=False):
    if not self.stage_units and self.depth not in STAGE_UNITS:
      raise ValueError(f'depth must be one of {sorted(STAGE_UNITS)}, got '
                       f'{self.depth}')
    stage_units = self.stage_units or STAGE_UNITS[self.depth]
    x = images.astype(self.dtype)
    for stage, (units, features) in enumerate(
        zip(stage_units, self.stage_features), start=1):
      x = self._conv_act(x, features, 2, train, f'conv{stage}')
      for unit in range(units):
        y = self._conv_act(x, features, 1, train, f'conv{stage}_{unit}a')
        y = self._conv_act(y, features, 1, train, f'conv{stage}_{unit}b')
        x = x + y
    return heads.EmbeddingHead(
        self.embedding_dim, input_norm=False, output_norm=False,
        use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype,
        name='head')(x, train)
