"""Locally connected ("local convolution", unshared-weight) 2-D layer.

A convolution whose filter is not shared across the image: every output
location (i, j) has its own (kh, kw, in_features, features) filter and its own
bias, as in the "local" layers of DeepFace (Taigman et al., CVPR 2014), DeepID
(Sun et al., CVPR 2014 / NIPS 2014) and the center-loss CNN (Wen et al., ECCV
2016). Those papers also share weights inside small regions of the output
(e.g. DeepID's 2x2 or the center-loss net's 4x4 regions): ``weight_sharing``
gives that region size; (1, 1), the default, is fully unshared.

    y[n, i, j, o] = b[i, j, o] + sum_{u, v, c} w[i, j, u, v, c, o]
                    * x_padded[n, i * sh + u, j * sw + v, c]

where the filter of a location in a shared region is the region's filter.
Parameters are ``kernel`` of shape
(regions_h, regions_w, kh, kw, in_features, features) and ``bias`` of shape
(regions_h, regions_w, features), regions = ceil(output size / region size);
without sharing that is (out_h, out_w, ...). The output size is computed in
Python from the input shape, so a module's parameters fit one input size only.

The computation is ``jax.lax.conv_general_dilated_local``: a patch extraction
(a convolution with one-hot filters) followed by a batched matmul per output
location. With float32 inputs on GPU, the backend's default precision may
round the patch extraction to TF32; pass ``precision=jax.lax.Precision.HIGHEST``
where that matters.
"""
import math
from typing import Any, Callable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

Padding = Union[str, int, Sequence[Union[int, Sequence[int]]]]


def _pair(value, name):
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2 or not all(isinstance(v, int) for v in value):
    raise ValueError(f'{name} must be an int or a pair of ints, got {value!r}')
  return value


def _explicit_padding(padding, in_spatial, kernel_size, strides):
  """'VALID' / 'SAME' / int / per-dimension ints or pairs -> ((lo, hi),) * 2."""
  if isinstance(padding, str):
    if padding.upper() not in ('VALID', 'SAME'):
      raise ValueError(f"padding must be 'VALID', 'SAME' or explicit, got "
                       f'{padding!r}')
    return tuple(jax.lax.padtype_to_pads(in_spatial, kernel_size, strides,
                                         padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding),) * 2
  padding = tuple(padding)
  if len(padding) != 2:
    raise ValueError(f'padding needs one entry per spatial dimension, got '
                     f'{padding!r}')
  return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def local_kernel_init(scale=1.0, distribution='truncated_normal'):
  """Fan-in variance scaling for a (rh, rw, kh, kw, in, out) kernel.

  The fan-in of one filter is kh * kw * in (not counting the locations);
  ``scale=2.0`` with ``'normal'`` is He initialisation, for (P)ReLU nets.
  """
  return nn.initializers.variance_scaling(
      scale, 'fan_in', distribution, in_axis=(2, 3, 4), out_axis=5,
      batch_axis=(0, 1))


class LocallyConnected2D(nn.Module):
  """Unshared-weight 2-D convolution on NHWC inputs.

  Attributes:
    features: output channels.
    kernel_size: receptive window, an int or a pair (kh, kw).
    strides: window strides, an int or a pair.
    padding: 'VALID' (default), 'SAME', an int (symmetric, both dimensions)
      or one int or (low, high) pair per spatial dimension.
    weight_sharing: size (an int or a pair) of the output regions whose
      locations share one filter and bias; (1, 1) is fully unshared.
    use_bias: add a bias per output location (region) and channel.
    dtype: compute dtype (the inputs and parameters are cast to it).
    param_dtype: parameter dtype.
    precision: ``jax.lax`` precision of the patch extraction and the matmul.
    kernel_init: initialiser called with the kernel's shape
      (regions_h, regions_w, kh, kw, in_features, features).
    bias_init: initialiser called with (regions_h, regions_w, features).
  """
  features: int
  kernel_size: Union[int, Sequence[int]]
  strides: Union[int, Sequence[int]] = (1, 1)
  padding: Padding = 'VALID'
  weight_sharing: Union[int, Sequence[int]] = (1, 1)
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable[..., Any] = local_kernel_init()
  bias_init: Callable[..., Any] = nn.initializers.zeros_init()

  def output_spatial_shape(self, in_spatial):
    """(out_h, out_w) for an input of spatial size ``in_spatial``."""
    kernel_size = _pair(self.kernel_size, 'kernel_size')
    strides = _pair(self.strides, 'strides')
    pads = _explicit_padding(self.padding, tuple(in_spatial), kernel_size,
                             strides)
    out = tuple((size + lo + hi - k) // s + 1 for size, (lo, hi), k, s in zip(
        in_spatial, pads, kernel_size, strides))
    if min(out) < 1:
      raise ValueError(f'input of spatial size {tuple(in_spatial)} is too '
                       f'small for a {kernel_size} window with padding {pads}')
    return out

  @nn.compact
  def __call__(self, inputs):
    if inputs.ndim != 4:
      raise ValueError(f'LocallyConnected2D takes NHWC inputs, got shape '
                       f'{inputs.shape}')
    kernel_size = _pair(self.kernel_size, 'kernel_size')
    strides = _pair(self.strides, 'strides')
    sharing = _pair(self.weight_sharing, 'weight_sharing')
    in_features = inputs.shape[-1]
    pads = _explicit_padding(self.padding, inputs.shape[1:3], kernel_size,
                             strides)
    out_h, out_w = self.output_spatial_shape(inputs.shape[1:3])
    regions = (-(-out_h // sharing[0]), -(-out_w // sharing[1]))

    kernel = self.param('kernel', self.kernel_init,
                        (*regions, *kernel_size, in_features, self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (*regions, self.features),
                       self.param_dtype) if self.use_bias else None)
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias,
                                                   dtype=self.dtype)

    def per_location(array):
      # Each region's parameters, repeated over its locations.
      array = jnp.repeat(array, sharing[0], axis=0)[:out_h]
      return jnp.repeat(array, sharing[1], axis=1)[:, :out_w]

    kernel = per_location(kernel)
    # conv_general_dilated_local's rhs for ('NHWC', 'HWIO', 'NHWC'): spatial
    # dims are the output locations and I fuses (in_features, kh, kw) in the
    # order "C" + "HW", channel-major.
    rhs = jnp.transpose(kernel, (0, 1, 4, 2, 3, 5)).reshape(
        out_h, out_w, in_features * math.prod(kernel_size), self.features)
    outputs = jax.lax.conv_general_dilated_local(
        inputs, rhs, window_strides=strides, padding=pads,
        filter_shape=kernel_size,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision=self.precision)
    if bias is not None:
      outputs = outputs + per_location(bias)
    return outputs

  def multiply_accumulates(self, inputs, outputs):
    """Batch * out_h * out_w * kh * kw * in_features * features."""
    kernel_size = _pair(self.kernel_size, 'kernel_size')
    return (math.prod(outputs.shape[:-1]) * math.prod(kernel_size)
            * inputs.shape[-1] * outputs.shape[-1])
