"""VGG-Face (Parkhi, Vedaldi, Zisserman, BMVC 2015, "Deep Face Recognition").

The VGG-16 configuration ("D" of Simonyan & Zisserman 2015) trained on 2,622
identities. 13 3x3 convolutions (stride 1, padding 1, ReLU) in five blocks,
each block followed by 2x2 max pooling with stride 2, then three fully
connected layers:

    block1  2 x conv3x3  64     224 -> pool -> 112
    block2  2 x conv3x3 128     112 -> pool ->  56
    block3  3 x conv3x3 256      56 -> pool ->  28
    block4  3 x conv3x3 512      28 -> pool ->  14
    block5  3 x conv3x3 512      14 -> pool ->   7
    fc6     7*7*512 -> 4096, ReLU, dropout 0.5
    fc7     4096 -> 4096, ReLU           (the face descriptor: the embedding)
    fc8     dropout 0.5, 4096 -> 2622    (identity logits, optional)

The embedding is fc7's output after its ReLU, the descriptor the paper uses
(before its L2 normalisation); dropout on fc7 acts only on the way to fc8.
The paper's input is 224x224 (145,002,878 parameters with fc8, 15.5 GMACs);
at the library's default 112x112 the last map is 3x3 and fc6 has
4608 inputs. Any side of at least 32 works (pooling floors odd sizes).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import layers


class VGGFace(nn.Module):
  """VGG-Face: (N, H, W, C) images -> (N, embedding_dim) float32 embeddings,
  or (embeddings, logits) when ``num_classes`` is set.

  Attributes:
    stage_features: channels of the convolutions of each block.
    stage_convs: convolutions per block.
    fc_features: width of fc6.
    embedding_dim: width of fc7, the embedding (4096).
    num_classes: adds the fc8 classifier (2622 identities in the paper).
    dropout_rate: dropout after fc6 and fc7 in train mode (needs a
      ``'dropout'`` rng).
  """
  stage_features: Sequence[int] = (64, 128, 256, 512, 512)
  stage_convs: Sequence[int] = (2, 2, 3, 3, 3)
  fc_features: int = 4096
  embedding_dim: int = 4096
  num_classes: Optional[int] = None
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    if len(self.stage_features) != len(self.stage_convs):
      raise ValueError('stage_features and stage_convs differ in length')
    dense = lambda features, name: nn.Dense(  # noqa: E731
        features, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    dropout = lambda x: nn.Dropout(  # noqa: E731
        self.dropout_rate, deterministic=not train)(x)
    x = images.astype(self.dtype)
    for block, (features, convs) in enumerate(
        zip(self.stage_features, self.stage_convs), start=1):
      for index in range(1, convs + 1):
        x = layers.conv(features, 3, dtype=self.dtype,
                        param_dtype=self.param_dtype, use_bias=True,
                        name=f'conv{block}_{index}')(x)
        x = nn.relu(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = dropout(nn.relu(dense(self.fc_features, 'fc6')(x)))
    embedding = nn.relu(dense(self.embedding_dim, 'fc7')(x))
    if self.num_classes is None:
      return embedding.astype(jnp.float32)
    logits = dense(self.num_classes, 'fc8')(dropout(embedding))
    return embedding.astype(jnp.float32), logits.astype(jnp.float32)
