"""IResNet, the ArcFace backbone (Deng et al., CVPR 2019; insightface).

An "improved" pre-activation ResNet for 112x112 faces. Each residual unit is

    BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN   (+ shortcut)

with the stride in the unit's second convolution (as in insightface's
arcface_torch), stride 2 in the first unit of each of the four stages
(112 -> 56 -> 28 -> 14 -> 7) and a 1x1 conv + BN shortcut there. The stem is
conv3x3(64) -> BN -> PReLU at full resolution, and the output block is
BN -> dropout -> dense(512 * 7 * 7 -> embedding) -> BN (scale fixed at 1).
Depths: IResNet-18/34/50/100/200 have (2,2,2,2), (3,4,6,3), (3,4,14,3),
(3,13,30,3) and (6,26,60,6) units per stage.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import heads
from facejax.models import layers

STAGE_UNITS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


class IResNetUnit(nn.Module):
  """BN-conv-BN-PReLU-conv-BN residual unit."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    norm = lambda name, **kw: layers.batch_norm(  # noqa: E731
        train, self.dtype, self.param_dtype, name=name, **kw)
    conv = lambda kernel, stride, name: layers.conv(  # noqa: E731
        self.features, kernel, stride, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = norm('shortcut_norm')(conv(1, self.stride, 'shortcut_conv')(x))
    y = norm('norm1')(x)
    y = conv(3, 1, 'conv1')(y)
    y = norm('norm2')(y)
    y = layers.PReLU(param_dtype=self.param_dtype, name='prelu')(y)
    y = conv(3, self.stride, 'conv2')(y)
    y = norm('norm3')(y)
    return y + shortcut


class IResNetStage(nn.Module):
  """``units`` residual units; the first one has the stage's stride."""
  features: int
  units: int
  stride: int = 2
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    for index in range(self.units):
      x = IResNetUnit(self.features, self.stride if index == 0 else 1,
                      self.dtype, self.param_dtype, name=f'unit{index}')(
                          x, train)
    return x


class IResNet(nn.Module):
  """IResNet backbone: (N, H, W, 3) images -> (N, embedding_dim) float32.

  Attributes:
    stage_units: residual units per stage (see ``STAGE_UNITS``).
    stage_features: channels per stage.
    embedding_dim: embedding size (512 in ArcFace).
    dropout_rate: dropout in the output block (insightface uses 0).
    remat: rematerialise each stage's activations in the backward pass
      (``nn.remat``): less activation memory at large batch, ~1/3 more compute.
  """
  stage_units: Sequence[int] = STAGE_UNITS[50]
  stage_features: Sequence[int] = (64, 128, 256, 512)
  stem_features: int = 64
  embedding_dim: int = 512
  dropout_rate: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    x = images.astype(self.dtype)
    x = layers.ConvNormAct(self.stem_features, 3, dtype=self.dtype,
                           param_dtype=self.param_dtype, name='stem')(x, train)
    # Argument 0 of the wrapped call is the module itself, so `train` is 2.
    stage = (nn.remat(IResNetStage, static_argnums=(2,)) if self.remat
             else IResNetStage)
    for index, (units, features) in enumerate(
        zip(self.stage_units, self.stage_features)):
      x = stage(features, units, 2, self.dtype, self.param_dtype,
                name=f'stage{index + 1}')(x, train)
    return heads.EmbeddingHead(
        self.embedding_dim, input_norm=True, dropout_rate=self.dropout_rate,
        output_norm=True, use_bias=True, dtype=self.dtype,
        param_dtype=self.param_dtype, name='head')(x, train)
