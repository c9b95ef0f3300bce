"""The embedding head every backbone ends with."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import layers


class EmbeddingHead(nn.Module):
  """Feature map -> embedding.

    [BN] -> [dropout] -> flatten -> dense -> [BN]

  IResNet uses every part (its output block, with the last BN's scale fixed
  at 1 as insightface does); MobileFaceNet reaches it after its global
  depthwise conv; SphereFace-style nets use the bare dense layer.

  Attributes:
    embedding_dim: size of the embedding.
    input_norm: batch-norm the feature map first.
    dropout_rate: dropout before the dense layer (train mode only).
    output_norm: batch-norm the embedding.
    output_norm_scale: give that batch norm a learned scale (insightface's
      MobileFaceNet learns it; IResNet's is fixed at 1, i.e. absent).
    use_bias: bias in the dense layer (redundant before an output norm).
  """
  embedding_dim: int = 512
  input_norm: bool = True
  dropout_rate: float = 0.0
  output_norm: bool = True
  output_norm_scale: bool = False
  use_bias: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train=False):
    if self.input_norm:
      features = layers.batch_norm(train, self.dtype, self.param_dtype,
                                   name='input_norm')(features)
    if self.dropout_rate:
      features = nn.Dropout(self.dropout_rate, deterministic=not train)(
          features)
    features = features.reshape(features.shape[0], -1)
    embedding = nn.Dense(self.embedding_dim, use_bias=self.use_bias,
                         dtype=self.dtype, param_dtype=self.param_dtype,
                         name='dense')(features)
    if self.output_norm:
      embedding = layers.batch_norm(train, self.dtype, self.param_dtype,
                                    use_scale=self.output_norm_scale,
                                    name='output_norm')(embedding)
    return embedding.astype(jnp.float32)
