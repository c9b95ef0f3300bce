"""MobileFaceNet (Chen, Liu, Gao, Han, CCBR 2018; arXiv:1804.07573).

The network of the paper's Table 1 for 112x112 faces, PReLU throughout:

    conv3x3 64 /2                         112 -> 56
    depthwise conv3x3 64
    bottleneck t=2 c=64  n=5 /2           56 -> 28
    bottleneck t=4 c=128 n=1 /2           28 -> 14
    bottleneck t=2 c=128 n=6
    bottleneck t=4 c=128 n=1 /2           14 -> 7
    bottleneck t=2 c=128 n=2
    conv1x1 512
    linear global depthwise conv 7x7 (GDConv) + BN
    linear conv1x1 -> embedding + BN

A bottleneck (MobileNetV2's inverted residual) expands with a 1x1 conv by t,
filters with a 3x3 depthwise conv (the stride is here), and projects back
with a linear 1x1 conv; the shortcut is the identity where shapes allow.
With the paper's 128-d embedding it has 0.99M parameters and about 0.22
GMACs at 112x112 (insightface lists it as 0.45 GFLOPs, i.e. counting two
FLOPs per multiply-accumulate); the default embedding here is 512-d.
"""
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import heads
from facejax.models import layers

# (expansion t, output channels c, repeats n, stride s) per row of Table 1.
PAPER_BOTTLENECKS = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


class Bottleneck(nn.Module):
  """Inverted residual: 1x1 expand -> 3x3 depthwise (stride) -> linear 1x1."""
  features: int
  expansion: int
  stride: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    block = lambda *args, **kwargs: layers.ConvNormAct(  # noqa: E731
        *args, dtype=self.dtype, param_dtype=self.param_dtype, **kwargs)
    hidden = x.shape[-1] * self.expansion
    y = block(hidden, 1, name='expand')(x, train)
    y = block(hidden, 3, self.stride, groups=hidden, name='depthwise')(y, train)
    y = block(self.features, 1, activation=False, name='project')(y, train)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


class MobileFaceNet(nn.Module):
  """MobileFaceNet: (N, 112, 112, 3) images -> (N, embedding_dim) float32.

  Attributes:
    embedding_dim: 512 by default (the paper's is 128).
    bottlenecks: (t, c, n, s) rows, as ``PAPER_BOTTLENECKS``.
    stem_features: channels of the first conv and the depthwise conv after it.
    stem_groups: groups of that second conv; 0: ``stem_features`` (a
      depthwise conv, as in the paper). insightface's "mbf" uses 64 groups
      on 128 channels (``facejax.models.get('mobilefacenet_mbf')``).
    expanded_features: channels of the 1x1 conv before the GDConv.
    output_norm_scale: a learned scale in the embedding's batch norm (as
      insightface's MobileFaceNet has; the paper's net has none).
  """
  embedding_dim: int = 512
  bottlenecks: Sequence[Tuple[int, int, int, int]] = PAPER_BOTTLENECKS
  stem_features: int = 64
  stem_groups: int = 0
  expanded_features: int = 512
  output_norm_scale: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    block = lambda *args, **kwargs: layers.ConvNormAct(  # noqa: E731
        *args, dtype=self.dtype, param_dtype=self.param_dtype, **kwargs)
    x = images.astype(self.dtype)
    x = block(self.stem_features, 3, 2, name='stem')(x, train)
    x = block(self.stem_features, 3,
              groups=self.stem_groups or self.stem_features,
              name='stem_depthwise')(x, train)
    for row, (expansion, features, repeats, stride) in enumerate(
        self.bottlenecks):
      for index in range(repeats):
        x = Bottleneck(features, expansion, stride if index == 0 else 1,
                       self.dtype, self.param_dtype,
                       name=f'bottleneck{row}_{index}')(x, train)
    x = block(self.expanded_features, 1, name='expand')(x, train)
    # Global depthwise conv: one k x k filter per channel over the whole map.
    height, width = x.shape[1:3]
    if height != width:
      raise ValueError(f'GDConv needs a square feature map, got {x.shape}')
    x = block(self.expanded_features, height, groups=self.expanded_features,
              padding=0, activation=False, name='gdconv')(x, train)
    return heads.EmbeddingHead(
        self.embedding_dim, input_norm=False, output_norm=True,
        output_norm_scale=self.output_norm_scale, use_bias=False,
        dtype=self.dtype, param_dtype=self.param_dtype, name='head')(x, train)
