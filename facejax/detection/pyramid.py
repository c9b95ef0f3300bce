"""MTCNN's image pyramid: which scales, and area resampling at fixed shapes.

**Scales** (Zhang et al., 2016, section II.A; their ``detect_face.m``).
P-Net finds faces of about 12 pixels; to find faces of at least
``min_face_size`` pixels the image is first scaled by ``m = 12 /
min_face_size``, then by further factors ``f`` (``scale_factor``, 0.709,
about 1/sqrt(2): each level halves the area) while its shorter side is at
least 12 pixels:

    s_k = m f^k,   k = 0, 1, ...   while   min(H, W) s_k >= 12.

The ``mtcnn`` package instead takes ``round(log(min(H, W) / 12) /
log(1 / f) - 1)`` levels, which ignores ``m``. At the default
``min_face_size=20`` the two agree but for 30 of the shorter sides from 40
to 1999 pixels (112, 158, 223, 314, 442-444, 624-626, ...), where the
package has one level fewer: the smallest, which finds the faces that fill
most of the photo. From ``min_face_size`` of about 30 its last levels fall
below 12 pixels, its P-Net fails and it returns no faces at all (on
``grace_hopper.jpg``, 600 x 512, at ``min_face_size=40``). We use the
paper's rule.

**Level sizes** truncate, ``(int(H s), int(W s))``, as the package's
``tf.image.resize`` of a float size does (Zhang's code rounds up).

**Resampling** is TensorFlow's ``ResizeMethod.AREA`` (the package's), which
averages the input pixels an output pixel covers, weighted by the covered
fraction: along an axis of ``n`` inputs and ``o`` outputs, output ``y``
covers ``[y r, (y + 1) r)`` with ``r = n / o``, and input ``i`` gets weight
``(min(i + 1, (y + 1) r) - max(i, y r)) / r``. Area resampling is
separable, so a level is two one-axis passes, each a few gathers of whole
rows and a weighted sum rather than a dense (o x n) matrix product: the
rows from exact integer running sums of the uint8 image (four gathers per
output row whatever the ratio, :func:`area_spans`), then the columns, on
the transpose, by ``ceil(r) + 1`` taps each (:func:`area_weights`). The
weights are computed on the host in float32, step by step as TensorFlow's
kernel does (``resize_area_op.cc``), so levels agree with the package's to
4e-7.

**Fixed shapes.** An image padded to a bucket of ``(Hb, Wb)`` pixels gets
the levels of the bucket, ``(int(Hb s), int(Wb s))``, for every scale the
bucket has; its own level ``(int(H s), int(W s))`` fills the top-left part
(the resampling rows and columns beyond it have weight 0) and levels it does
not have are flagged invalid. Every image of a bucket therefore runs the
same jitted computation.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

CELL_SIZE = 12  # P-Net's window, in pixels of a pyramid level.
CELL_STRIDE = 2  # Its step, from the one stride-2 pooling.


def scales(height, width, min_face_size, scale_factor):
  """The pyramid's scales ``m f^k`` for an image of ``height x width``."""
  first = CELL_SIZE / min_face_size
  shorter = min(height, width)
  count = 0
  while shorter * first * scale_factor**count >= CELL_SIZE:
    count += 1
  return [float(value) for value in first * scale_factor**np.arange(count)]


def level_size(height, width, scale):
  """(rows, columns) of the level at ``scale``: truncated, as the package."""
  return int(height * scale), int(width * scale)


def pnet_cells(size):
  """P-Net's output cells along an axis of ``size`` pixels (0 below 12)."""
  if size < CELL_SIZE:
    return 0
  return -(-(size - 2) // 2) - 4


def taps(scale):
  """Inputs per output of an area resampling by ``scale`` (an upper bound).

  A level is used only when it has >= 12 pixels, so its ratio ``n / int(n
  s)`` is at most ``(12 / 11) / s``.
  """
  return math.ceil(CELL_SIZE / ((CELL_SIZE - 1) * scale)) + 1


def _float32_spans(inputs, outputs):
  """Each output's ``[start, end)`` in input pixels, in float32 as
  TensorFlow computes them (``y * r`` with ``r = float(n) / o``)."""
  ratio = np.float32(inputs) / np.float32(outputs)
  y = np.arange(outputs, dtype=np.float32)
  return ratio, y * ratio, (y + np.float32(1)) * ratio


def area_spans(inputs, outputs, padded_outputs):
  """The row pass of TensorFlow's area resampling, as integral-image spans.

  Output ``y`` covers ``[a, b)`` (:func:`_float32_spans`): with ``i = floor
  a``, ``j = floor b`` and the running sum ``S[k] = x[0] + ... + x[k - 1]``,
  its covered-fraction sum is ``S[j] - S[i] - (a - i) x[i] + (b - j)
  x[j]`` (the package's weights, ``1 - (a - i)`` for the first pixel, 1
  inside, ``b - j`` for the last; ``r`` for an output strictly inside one
  pixel),
  divided by ``r``. ``j`` can be ``n`` (the
  last output ends at the end, or a float32 hair past it): ``S[n]`` is the
  whole sum and ``x[j]`` reads the last pixel, as TensorFlow's ``Bound``.

  Returns:
    ``(index, weight)``: int32 ``(padded_outputs, 3)`` [i, j, min(j, n -
    1)] and float32 ``(padded_outputs, 4)`` [a - i, b - j, 1 / r, (b - a) /
    r] (the last is the weights' sum, 1 up to the float32 rounding of ``a``
    and ``b``); zeros for rows beyond ``outputs``.
  """
  ratio, start, end = _float32_spans(inputs, outputs)
  first = np.floor(start).astype(np.int64)
  last = np.floor(end).astype(np.int64)
  index = np.zeros((padded_outputs, 3), np.int32)
  weight = np.zeros((padded_outputs, 4), np.float32)
  index[:outputs, 0] = first
  index[:outputs, 1] = np.minimum(last, inputs)
  index[:outputs, 2] = np.minimum(last, inputs - 1)
  # Inside one pixel, past its start (upscaling), TensorFlow weighs it by
  # r rather than b - a.
  inside = (first == last) & (start > first)
  head = np.where(inside, np.float32(0), start - first)
  tail = np.where(inside, ratio, end - last)
  weight[:outputs, 0] = head
  weight[:outputs, 1] = tail
  weight[:outputs, 2] = 1 / np.float64(ratio)
  weight[:outputs, 3] = ((last - first) + tail.astype(np.float64)
                         - head) / np.float64(ratio)
  return index, weight


def area_weights(inputs, outputs, padded_outputs, padded_taps):
  """The column pass of TensorFlow's area resampling, as taps.

  Args:
    inputs: input pixels along the axis (the image's true size).
    outputs: output pixels (the level's true size), 1 <= outputs.
    padded_outputs: rows of the result (the bucket's level size); those
      beyond ``outputs`` get weight 0.
    padded_taps: columns of the result, >= what any output needs.

  Returns:
    ``(index, weight)``: int32 and float32 arrays of shape
    ``(padded_outputs, padded_taps)``; output ``y`` is
    ``sum_t weight[y, t] x[index[y, t]]``.
  """
  ratio, start, end = _float32_spans(inputs, outputs)
  start, end = start[:, None], end[:, None]
  first = np.floor(start).astype(np.int64)
  needed = int(np.max(np.ceil(end).astype(np.int64) - first))
  if needed > padded_taps:
    raise ValueError(f'area resampling {inputs} -> {outputs} needs {needed} '
                     f'taps, more than {padded_taps}')
  pixel = first + np.arange(padded_taps)[None, :]
  low = pixel.astype(np.float32)
  high = low + np.float32(1)
  covered = np.where(
      low < start,
      np.where(high > end, ratio, high - start),
      np.where(high > end, end - low, np.float32(1)))
  used = pixel < np.ceil(end)
  index = np.zeros((padded_outputs, padded_taps), np.int32)
  weight = np.zeros((padded_outputs, padded_taps), np.float32)
  index[:outputs] = np.where(used, np.clip(pixel, 0, inputs - 1), 0)
  weight[:outputs] = np.where(used, covered / ratio, 0).astype(np.float32)
  return index, weight


def integral_rows(images):
  """(N, H, W, C) uint8 -> (N, H + 1, W C) int32 ``S[k]``: rows < k summed.

  Exact (at most 255 H per entry), computed once for all levels.
  """
  count, height, width, channels = images.shape
  rows = images.reshape(count, height, width * channels).astype(jnp.int32)
  # associative_scan: XLA's CPU cumsum is a reduce-window, 3x slower here.
  sums = jax.lax.associative_scan(jnp.add, rows, axis=1)
  return jnp.pad(sums, ((0, 0), (1, 0), (0, 0)))


def _global_rows(index, rows_per_image):
  """Per-image row indices -> indices into the (N * rows, ...) stack."""
  count = index.shape[0]
  offset = jnp.arange(count, dtype=index.dtype) * rows_per_image
  return index + offset.reshape((count,) + (1,) * (index.ndim - 1))


def _row_pass(images, integral, index, weight, pixel_scale, pixel_offset):
  """Rows of every image's level from the integral image (see
  :func:`area_spans`): four whole-row gathers per output row."""
  count, height, width, channels = images.shape
  length = width * channels
  pixels = images.reshape(count * height, length)
  sums = integral.reshape(-1, length)
  first, last, last_pixel = (index[..., k] for k in range(3))
  head, tail, inverse_ratio, total = (weight[..., k, None] for k in range(4))
  span = (sums[_global_rows(last, height + 1)]
          - sums[_global_rows(first, height + 1)]).astype(jnp.float32)
  average = (span - head * pixels[_global_rows(first, height)]
             + tail * pixels[_global_rows(last_pixel, height)])
  average = average * inverse_ratio
  return pixel_scale * average + pixel_offset * total  # (N, h, W C)


# Up to this many taps a pass gathers tap by tap; beyond, all at once.
_TAPS_ONE_BY_ONE = 8


def _column_pass(rows, index, weight):
  """``out[n, y] = sum_t weight[n, y, t] rows[n, index[n, y, t]]``.

  On (N, R, L) ``rows`` (the row pass's output, transposed), as gathers of
  whole rows of the (N R, L) matrix: tap by tap for a few taps (a gather,
  multiply and add fused), all taps in one gather and a weighted sum for
  many (the small levels).
  """
  count, size, length = rows.shape
  outputs, taps = index.shape[1:]
  flat = rows.reshape(count * size, length)
  global_index = _global_rows(index, size)
  if taps > _TAPS_ONE_BY_ONE:
    picked = flat[global_index.reshape(-1)].reshape(-1, taps, length)
    total = jnp.einsum('otl,ot->ol', picked, weight.reshape(-1, taps))
  else:
    total = 0.0
    for tap in range(taps):
      total = total + (flat[global_index[:, :, tap].reshape(-1)]
                       * weight[:, :, tap].reshape(-1, 1))
  return total.reshape(count, outputs, length)


def resample(images, integral, row_index, row_weight, column_index,
             column_weight, pixel_scale=1.0, pixel_offset=0.0):
  """Area-resamples a batch of images, each with its own weights.

  Rows from the integral image, then (transposed) columns by taps: every
  pass is whole-row gathers, which XLA's CPU gather copies about as fast as
  memory (it gathers single pixels, or rows it must first compute, tens of
  times slower). Run it as a computation of its own (its own ``jit``):
  fused into a consumer such as P-Net's first layer, XLA computes its
  gathers element by element, several times slower (and
  ``optimization_barrier`` does not stop that on the CPU).

  Args:
    images: (N, H, W, C) uint8 images.
    integral: their :func:`integral_rows`.
    row_index, row_weight: (N, h, 3) and (N, h, 4) from :func:`area_spans`.
    column_index, column_weight: (N, w, taps) from :func:`area_weights`.
    pixel_scale, pixel_offset: the average is of ``pixel_scale x +
    pixel_offset`` (MTCNN's normalisation), as the package normalises
    before it resamples.

  Returns:
    (N, h, w, C) float32; 0 beyond each image's level.
  """
  count, _, width, channels = images.shape
  rows = row_index.shape[1]
  x = _row_pass(images, integral, row_index, row_weight, pixel_scale,
                pixel_offset)
  x = x.reshape(count, rows, width, channels).transpose(0, 2, 1, 3)
  x = _column_pass(x.reshape(count, width, rows * channels), column_index,
                   column_weight)
  return x.reshape(count, -1, rows, channels).transpose(0, 2, 1, 3)
