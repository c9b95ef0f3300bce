"""The center-loss CNN (Wen et al., ECCV 2016, "A Discriminative Feature
Learning Approach for Deep Face Recognition", Fig. 4; "model C" is this net
trained with softmax + center loss).

What the paper states (Fig. 4 caption): every convolution and local
convolution is 3x3 with stride 1 and followed by PReLU; convolutions have 128
feature maps and the three local convolution layers 256; the local layers'
weights are shared in regions of 4x4, 2x2 and 1x1 output locations
respectively; max pooling is 2x2 with stride 2; the outputs of the 4th pooling
layer and of the 3rd local convolution layer are concatenated and fed to the
first fully connected layer, whose 512-d output is the face feature. Inputs
are 112x96 RGB faces, normalised as (pixel - 127.5) / 128.

The exact layer list is a reconstruction (the figure's drawing, not its
caption, fixes the number of convolutions, which we could not check; this is
not the residual model of the authors' later caffe-face release). With 'same'
padding, the four pools and the three local layers placed as below give 7x6
distinct filters in every local layer at 112x96, which matches the caption's
4x4 / 2x2 / 1x1 sharing regions exactly:

    input 112x96x3
    conv1_1, conv1_2  3x3, 128, PReLU        112x96x128
    pool1             2x2 / 2                 56x48x128
    conv2_1, conv2_2  3x3, 128, PReLU         56x48x128
    pool2             2x2 / 2                 28x24x128
    local1            3x3, 256, 4x4 shared, PReLU   28x24x256 (7x6 filters)
    pool3             2x2 / 2                 14x12x256
    local2            3x3, 256, 2x2 shared, PReLU   14x12x256 (7x6 filters)
    pool4             2x2 / 2                  7x6x256
    local3            3x3, 256, unshared, PReLU      7x6x256 (7x6 filters)
    fc5               concat(pool4, local3) = 7*6*512 -> 512 (the embedding)

At the paper's 112x96 input this has 73.4M parameters (62.0M of them in the
local layers) and 2.75 GMACs. Any input whose sides survive four halvings
(at least 16) works; at the library's default 112x112 the last maps are 7x7
(85.6M parameters, 3.21 GMACs). There is
no batch norm (the net predates its use in face models) and no dropout.
Pooling floors odd sizes (Caffe's pooling would round up).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import layers
from facejax.models import locally_connected


class CenterLossCNN(nn.Module):
  """Center-loss CNN: (N, H, W, C) images -> (N, embedding_dim) float32.

  Attributes:
    conv_stage_features: channels of each convolution stage; every stage is
      ``convs_per_stage`` 3x3 convolutions + PReLU, then a 2x2 max pool.
    convs_per_stage: convolutions in each stage.
    local_features: channels of each 3x3 local convolution layer (+ PReLU);
      a max pool follows every one but the last.
    local_sharing: side of the weight-sharing regions of each local layer.
    embedding_dim: size of the fully connected feature layer (512).
  """
  conv_stage_features: Sequence[int] = (128, 128)
  convs_per_stage: int = 2
  local_features: Sequence[int] = (256, 256, 256)
  local_sharing: Sequence[int] = (4, 2, 1)
  embedding_dim: int = 512
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    del train  # No batch norm, no dropout: train and eval are the same.
    if len(self.local_features) != len(self.local_sharing):
      raise ValueError('local_features and local_sharing differ in length')
    pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
    prelu = lambda name: layers.PReLU(  # noqa: E731
        param_dtype=self.param_dtype, name=name)
    x = images.astype(self.dtype)
    for stage, features in enumerate(self.conv_stage_features, start=1):
      for index in range(1, self.convs_per_stage + 1):
        x = layers.conv(features, 3, dtype=self.dtype,
                        param_dtype=self.param_dtype, use_bias=True,
                        name=f'conv{stage}_{index}')(x)
        x = prelu(f'prelu{stage}_{index}')(x)
      x = pool(x)
    pooled = x
    for index, (features, sharing) in enumerate(
        zip(self.local_features, self.local_sharing), start=1):
      if index > 1:
        x = pooled = pool(x)
      x = locally_connected.LocallyConnected2D(
          features, 3, padding='SAME', weight_sharing=sharing,
          dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=locally_connected.local_kernel_init(2.0, 'normal'),
          name=f'local{index}')(x)
      x = prelu(f'local_prelu{index}')(x)
    # Multi-scale feature: the last pooling layer next to the last local one.
    multi_scale = jnp.concatenate([pooled, x], axis=-1)
    multi_scale = multi_scale.reshape(multi_scale.shape[0], -1)
    embedding = nn.Dense(self.embedding_dim, dtype=self.dtype,
                         param_dtype=self.param_dtype, name='fc5')(multi_scale)
    return embedding.astype(jnp.float32)
