"""The DeepID2 ConvNet (Sun, Chen, Wang, Tang, NIPS 2014, "Deep Learning Face
Representation by Joint Identification-Verification", Fig. 2).

One of the paper's (many) patch networks: four convolutional layers, the
first three followed by 2x2 max pooling, all with ReLU; the 160-d DeepID2
layer is fully connected to both the third pooling layer and the fourth
convolutional layer ("multi-scale" features), also with ReLU:

    input 55x47x3
    conv1   4x4, 20, ReLU                     52x44x20
    pool1   2x2 / 2                           26x22x20
    conv2   3x3, 40, ReLU                     24x20x40
    pool2   2x2 / 2                           12x10x40
    conv3   3x3, 60, ReLU                     10x8x60
    pool3   2x2 / 2                            5x4x60
    conv4   2x2, 80, locally connected, ReLU   4x3x80
    deepid2 dense(flatten(pool3) ++ flatten(conv4) = 1200 + 960 -> 160), ReLU

All convolutions are 'valid'. The paper shares the weights of its higher
convolutional layers only locally; here conv1-conv3 are ordinary (shared)
convolutions and conv4 is fully unshared (one filter per output location).
607,000 parameters at 55x47x3. Other input sizes work as long as conv4 still
has an output (at least 31x31; 112x112 gives 12x12x60 and 11x11x80);
pooling floors odd sizes.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import locally_connected


class DeepID2Net(nn.Module):
  """DeepID2 ConvNet: (N, H, W, C) images -> (N, embedding_dim) float32.

  Attributes:
    conv_features: channels of the three pooled convolutions.
    conv_kernels: their kernel sizes.
    local_features: channels of the locally connected fourth layer.
    local_kernel: its kernel size.
    embedding_dim: size of the DeepID2 layer (160).
    embedding_relu: apply the DeepID2 layer's ReLU (as in the paper); the
      embedding is then non-negative.
  """
  conv_features: Sequence[int] = (20, 40, 60)
  conv_kernels: Sequence[int] = (4, 3, 3)
  local_features: int = 80
  local_kernel: int = 2
  embedding_dim: int = 160
  embedding_relu: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    del train  # No batch norm, no dropout: train and eval are the same.
    if len(self.conv_features) != len(self.conv_kernels):
      raise ValueError('conv_features and conv_kernels differ in length')
    he_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
    x = images.astype(self.dtype)
    for index, (features, kernel) in enumerate(
        zip(self.conv_features, self.conv_kernels), start=1):
      x = nn.Conv(features, (kernel, kernel), padding='VALID',
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  kernel_init=he_normal, name=f'conv{index}')(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    pooled = x
    x = locally_connected.LocallyConnected2D(
        self.local_features, self.local_kernel, padding='VALID',
        dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=locally_connected.local_kernel_init(2.0, 'normal'),
        name=f'conv{len(self.conv_features) + 1}')(x)
    x = nn.relu(x)
    multi_scale = jnp.concatenate([pooled.reshape(pooled.shape[0], -1),
                                   x.reshape(x.shape[0], -1)], axis=-1)
    embedding = nn.Dense(self.embedding_dim, dtype=self.dtype,
                         param_dtype=self.param_dtype,
                         name='deepid2')(multi_scale)
    if self.embedding_relu:
      embedding = nn.relu(embedding)
    return embedding.astype(jnp.float32)
