"""MTCNN's three networks: P-Net, R-Net and O-Net (Zhang et al., 2016).

K. Zhang, Z. Zhang, Z. Li and Y. Qiao, "Joint Face Detection and Alignment
using Multi-task Cascaded Convolutional Networks", IEEE Signal Processing
Letters 23(10), 2016, fig. 2. Each network answers three questions about a
window: is it a face (a two-way softmax; we return the face probability),
how should the window move to frame the face (four box offsets, in units of
the window's width and height), and, for O-Net, where are the five
landmarks (ten numbers ``x1..x5, y1..y5``, fractions of the window).

* **P-Net** is fully convolutional: on an image of any size >= 12 x 12 it
  scores every 12 x 12 window at stride 2 (one output cell per window).
* **R-Net** scores 24 x 24 crops, **O-Net** 48 x 48 crops.

Inputs are NHWC, RGB, normalised as ``(x - 127.5) / 128``. Two conventions
of the released Caffe model must be reproduced exactly, or the converted
weights give wrong answers:

* **Ceil-mode max pooling.** Caffe sizes a pooling output
  ``ceil((n - window) / stride) + 1``: the last window may hang over the
  end of the input and sees only what is inside. :func:`max_pool_ceil` pads
  the end with -inf (each window's maximum is taken over real values only).
  For the sizes these nets see it equals Keras' ``'same'`` pooling, which
  the ``mtcnn`` package uses.
* **The W-major flatten.** The Caffe model was trained on transposed images
  (width first); the released weights were re-laid for ordinary images,
  except that R-Net's and O-Net's dense layers still read the feature map
  column by column: ``x.transpose(0, 2, 1, 3).reshape(N, -1)``. An ordinary
  H-major flatten changes R-Net's face probability by up to 0.33.

The first convolution and its pooling run on 2x2 blocks of pixels
(:class:`ConvPool`), the same numbers about 1.5 to 2 times faster. P-Net
takes the true sizes of inputs padded to a bucket size: the first
convolution's output beyond an image's end is left out of the pooling as
ceil mode's padding is, so every cell inside the image is computed as if it
were not padded (see :class:`PNet`).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from facejax.models.layers import PReLU

# The nets' input: RGB normalised as x -> (x - 127.5) / 128.
PIXEL_SCALE = 0.0078125
PIXEL_OFFSET = -127.5 * PIXEL_SCALE


def _ceil_padding(size, window, stride):
  """End padding that makes VALID pooling size its output as Caffe's ceil."""
  outputs = -(-(size - window) // stride) + 1
  return (outputs - 1) * stride + window - size


def max_pool_ceil(x, window, stride):
  """Max pooling of NHWC ``x`` in Caffe's ceil mode (-inf end padding).

  Output size per spatial axis ``ceil((n - window) / stride) + 1``; a window
  that hangs over the end takes the maximum of the values inside.
  """
  padding = tuple((0, _ceil_padding(size, window, stride))
                  for size in x.shape[1:3])
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=padding)


# Space-to-depth taps: output phase p of block row R reads, for input phase
# d, kernel row 2R + d - p; rows -1 and 3 fall outside the 3x3 kernel and
# read the zero row 3 of the kernel padded to 4 x 4.
_BLOCK_TAPS = np.array([[[(2 * block + phase_in - phase_out) % 4
                          for phase_out in (0, 1)] for phase_in in (0, 1)]
                        for block in (0, 1)])


def _block_kernel(kernel):
  """(3, 3, C, O) -> the equivalent (2, 2, 4C, 4O) kernel on 2x2 blocks.

  Input channels ``(dy, dx, c)``, output channels ``(py, px, o)``: output
  block ``(r, s)`` phase ``(py, px)`` is the 3x3 output at ``(2r + py,
  2s + px)``.
  """
  channels, features = kernel.shape[2:]
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  taps = _BLOCK_TAPS
  blocks = padded[taps[:, :, :, None, None, None],
                  taps[None, None, None, :, :, :]]  # R dy py S dx px c o
  blocks = blocks.transpose(0, 3, 1, 4, 6, 2, 5, 7)  # R S dy dx c py px o
  return blocks.reshape(2, 2, 4 * channels, 4 * features)


def _max_with_next_block(phase0, phase1, axis):
  """max(phase 0, phase 1, next block's phase 0) along block ``axis``."""
  following = jax.lax.slice_in_dim(phase0, 1, phase0.shape[axis], axis=axis)
  padding = [(0, 0)] * phase0.ndim
  padding[axis] = (0, 1)
  following = jnp.pad(following, padding, constant_values=-jnp.inf)
  return jnp.maximum(jnp.maximum(phase0, phase1), following)


class ConvPool(nn.Module):
  """conv 3x3 (VALID) -> PReLU -> max pool stride 2 (ceil), on 2x2 blocks.

  The first layers of all three nets, computed exactly but faster: the
  input is rearranged into 2x2 blocks (space to depth, 4C channels), the
  3x3 convolution becomes a 2x2 convolution to the four output phases
  (:func:`_block_kernel`; 7 of its 16 taps per phase are zero), and the
  pooling a maximum over phases of the same or the next block: for window 2,
  ``max(y[2r], y[2r + 1])``; for window 3, ``max(y[2r], y[2r + 1],
  y[2r + 2])`` per axis. A first layer with 3 input channels is the
  slowest part of a small convolution net on a CPU (a 27-long contraction);
  on blocks it is 48 long: measured on the 2-core CPU, all of P-Net's
  levels of a 600 x 512 photo took 22 ms instead of 33, R-Net on 192 crops
  12 ms instead of 23.

  Positions of the convolution's output at or beyond ``limits`` (per image,
  (N, 2) rows and columns; default its full size ``H - 2``, ``W - 2``) take
  no part in the pooling, as ceil mode's end padding; pooled values with no
  position left are 0.
  """
  features: int
  window: int

  @nn.compact
  def __call__(self, x, limits=None):
    """(N, H, W, C), or (N, H / 2, W / 2, 2, 2, C) already in blocks."""
    if x.ndim == 6:
      count, rows, columns, _, _, channels = x.shape
      height, width = 2 * rows, 2 * columns
    else:
      count, height, width, channels = x.shape
      x = jnp.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
      rows, columns = x.shape[1] // 2, x.shape[2] // 2
      x = x.reshape(count, rows, 2, columns, 2, channels)
      x = x.transpose(0, 1, 3, 2, 4, 5)
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (3, 3, channels, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x = x.reshape(count, rows, columns, 4 * channels)
    y = jax.lax.conv_general_dilated(
        x, _block_kernel(kernel), (1, 1), 'VALID',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = y.reshape(count, rows - 1, columns - 1, 2, 2, self.features) + bias
    y = PReLU(name='prelu')(y)
    if limits is not None or height % 2 or width % 2:
      # Phases past the end (a padded image's, or the odd last row of the
      # 2x2 blocks) take no part; with an even size and no limits, none is.
      if limits is None:
        limits = jnp.array([[height - 2, width - 2]] * count)
      position = 2 * jnp.arange(rows - 1)[:, None] + jnp.arange(2)
      row_ok = position[None] < limits[:, 0, None, None]  # (N, rows-1, 2)
      position = 2 * jnp.arange(columns - 1)[:, None] + jnp.arange(2)
      column_ok = position[None] < limits[:, 1, None, None]
      inside = (row_ok[:, :, None, :, None, None]
                & column_ok[:, None, :, None, :, None])
      y = jnp.where(inside, y, -jnp.inf)
    if self.window == 2:
      pooled = y.max(axis=(3, 4))
    else:  # window 3: phases 0 and 1 of a block, and phase 0 of the next
      pooled = _max_with_next_block(y[:, :, :, :, 0], y[:, :, :, :, 1], 2)
      pooled = _max_with_next_block(pooled[:, :, :, 0], pooled[:, :, :, 1],
                                    1)
      # Ceil mode has ceil((n - 3) / 2) + 1 = floor(n / 2) windows: none
      # starts at the last row of an odd n.
      pooled = pooled[:, :(height - 2) // 2, :(width - 2) // 2]
    if limits is None:
      return pooled
    return jnp.where(jnp.isfinite(pooled), pooled, 0.0)


def _width_major_flatten(x):
  """(N, H, W, C) -> (N, W * H * C), column by column (the Caffe layout)."""
  return x.transpose(0, 2, 1, 3).reshape(x.shape[0], -1)


def _face_probability(logits):
  """Softmax over (background, face), the face column: a sigmoid of the
  logits' difference, ``e^f / (e^b + e^f) = 1 / (1 + e^(b - f))``."""
  return jax.nn.sigmoid(logits[..., 1] - logits[..., 0])


class _Conv1x1(nn.Module):
  """The parameters of a 1x1 convolution (as ``nn.Conv``'s), unapplied."""
  features: int

  @nn.compact
  def __call__(self, channels):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (1, 1, channels, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return kernel[0, 0], bias


def _conv_prelu(x, features, kernel, layer):
  """VALID conv ``conv{layer}`` -> PReLU ``prelu{layer}`` (in a compact
  ``__call__``)."""
  return PReLU(name=f'prelu{layer}')(nn.Conv(
      features, (kernel, kernel), padding='VALID', name=f'conv{layer}')(x))


def _dense_head(x, features, layer):
  """R-Net's and O-Net's end, inside their ``__call__``: W-major flatten
  -> dense ``dense{layer}`` -> PReLU ``prelu{layer}`` -> the face
  probability and the box offsets. Returns (features, face, offsets)."""
  x = PReLU(name=f'prelu{layer}')(nn.Dense(features, name=f'dense{layer}')(
      _width_major_flatten(x)))
  face = _face_probability(nn.Dense(2, name='classifier')(x))
  return x, face, nn.Dense(4, name='box_regressor')(x)


class PNet(nn.Module):
  """Proposal network: 12 x 12 windows at stride 2, fully convolutional.

  conv 3x3 (10) -> PReLU -> max pool 2/2 (ceil) -> conv 3x3 (16) -> PReLU
  -> conv 3x3 (32) -> PReLU -> 1x1 convs to the face logits (2) and the box
  offsets (4). An H x W input gives ``ceil((H - 2) / 2) - 4`` rows of cells
  (and the same for columns); cell ``(i, j)`` sees the input window of rows
  ``2i .. 2i + 11`` and columns ``2j .. 2j + 11``.
  """

  @nn.compact
  def __call__(self, x, sizes=None):
    """Scores every window of ``x``.

    Args:
      x: (N, H, W, 3) normalised images, H and W >= 12.
      sizes: optional (N, 2) true (rows, columns) of images padded at the
        bottom and right. The first convolution's output beyond each
        image's ``size - 2`` is left out of the pooling like ceil mode's
        end padding, so every cell inside the true image is computed as if
        the image were not padded; cells beyond it are garbage for the
        caller to mask.

    Returns:
      ``(face_probability (N, h, w), box_offsets (N, h, w, 4))``, the
      offsets ``(dx1, dy1, dx2, dy2)`` in units of the 12-pixel window.
    """
    limits = None if sizes is None else sizes - 2
    x = ConvPool(10, window=2, name='conv1')(x, limits)
    x = _conv_prelu(x, 16, 3, 2)
    x = _conv_prelu(x, 32, 3, 3)
    # The two 1x1 heads as one product: one pass over the largest map.
    classifier = _Conv1x1(2, name='classifier')(x.shape[-1])
    regressor = _Conv1x1(4, name='box_regressor')(x.shape[-1])
    y = x @ jnp.concatenate([classifier[0], regressor[0]], axis=-1)
    y = y + jnp.concatenate([classifier[1], regressor[1]])
    return _face_probability(y[..., :2]), y[..., 2:]


class RNet(nn.Module):
  """Refinement network on 24 x 24 crops.

  conv 3x3 (28) -> PReLU -> pool 3/2 (ceil) -> conv 3x3 (48) -> PReLU ->
  pool 3/2 -> conv 2x2 (64) -> PReLU -> W-major flatten -> dense 128 ->
  PReLU -> dense to the face logits (2) and the box offsets (4).
  """

  @nn.compact
  def __call__(self, x):
    """(N, 24, 24, 3) crops (or (N, 12, 12, 2, 2, 3) in 2x2 blocks) ->
    ``(face_probability (N,), box_offsets (N, 4))``."""
    x = ConvPool(28, window=3, name='conv1')(x)
    x = _conv_prelu(x, 48, 3, 2)
    x = max_pool_ceil(x, 3, 2)
    x = _conv_prelu(x, 64, 2, 3)
    _, face, offsets = _dense_head(x, 128, 4)
    return face, offsets


class ONet(nn.Module):
  """Output network on 48 x 48 crops: score, box and five landmarks.

  conv 3x3 (32) -> PReLU -> pool 3/2 (ceil) -> conv 3x3 (64) -> PReLU ->
  pool 3/2 -> conv 3x3 (64) -> PReLU -> pool 2/2 (ceil) -> conv 2x2 (128)
  -> PReLU -> W-major flatten -> dense 256 -> PReLU -> dense to the face
  logits (2), the box offsets (4) and the landmarks (10).
  """

  @nn.compact
  def __call__(self, x):
    """(N, 48, 48, 3) crops (or (N, 24, 24, 2, 2, 3) in 2x2 blocks) ->
    ``(face_probability (N,), box_offsets (N, 4), landmarks (N, 10))``, the
    landmarks ``x1..x5, y1..y5`` as fractions of the crop's width and
    height."""
    x = ConvPool(32, window=3, name='conv1')(x)
    x = _conv_prelu(x, 64, 3, 2)
    x = max_pool_ceil(x, 3, 2)
    x = _conv_prelu(x, 64, 3, 3)
    x = max_pool_ceil(x, 2, 2)
    x = _conv_prelu(x, 128, 2, 4)
    x, face, offsets = _dense_head(x, 256, 5)
    landmarks = nn.Dense(10, name='landmark_regressor')(x)
    return face, offsets, landmarks
