"""Fixed-size bilinear crops of candidate boxes, for R-Net and O-Net.

R-Net and O-Net look at each candidate box resampled to 24 x 24 and
48 x 48 pixels. We sample as the ``mtcnn`` package does, with
``tf.image.crop_and_resize`` (bilinear) on boxes it normalises by the image
size ``(H, W)``: crop row ``i`` of ``c`` samples image row

    y_i = (y1 / H) (H - 1) + i (y2 - y1) / H (H - 1) / (c - 1)
        = (H - 1) / H (y1 + i (y2 - y1) / (c - 1)),

and the same for columns with ``W``. So the crop spans the box corner to
corner, shrunk towards the origin by ``(H - 1) / H`` (crop_and_resize maps
normalised 0..1 to pixel centres 0..H-1, and the package divides by H): at
most one pixel at the far edge of the image, kept so that our crops equal
the reference's. A sample row or column outside ``[0, H - 1]`` reads 0 (the
normalised value of grey 127.5), as crop_and_resize's extrapolation value;
inside, the two nearest rows (and columns) are blended linearly. (Zhang et
al.'s code instead pads with black and area-resamples an integer-rounded
box.)

Images may be padded to a bucket size: the true ``(H, W)`` of each image
sets the sampling and the extrapolation bounds, so padding is never read.
Pixels are gathered as uint8 and normalised after blending (XLA's CPU
gather from a normalised copy computed on the fly is much slower).
"""
import jax
import jax.numpy as jnp

from facejax.detection.nets import PIXEL_OFFSET
from facejax.detection.nets import PIXEL_SCALE


def _sample_positions(start, end, size, crop_size):
  """(K,) box sides -> (K, c) positions, their validity, floor and ceil."""
  step = jnp.arange(crop_size, dtype=jnp.float32) / (crop_size - 1)
  last = (size - 1).astype(jnp.float32)
  shrink = last / size.astype(jnp.float32)
  position = shrink * (start[:, None] + step * (end - start)[:, None])
  inside = (position >= 0) & (position <= last)
  low = jnp.clip(jnp.floor(position), 0, last)
  high = jnp.clip(jnp.ceil(position), 0, last)
  return position - low, inside, low.astype(jnp.int32), high.astype(
      jnp.int32)


def _crop_one_image(image, size, boxes, crop_size, blocks):
  """(H, W, C) uint8 image, its true (2,) size, (K, 4) boxes -> crops."""
  y_frac, y_in, top, bottom = _sample_positions(boxes[:, 1], boxes[:, 3],
                                                size[0], crop_size)
  x_frac, x_in, left, right = _sample_positions(boxes[:, 0], boxes[:, 2],
                                                size[1], crop_size)
  phases = 2 if blocks else 1

  def grid(values, axis):
    """(K, c) -> (K, R, S, p, q) broadcastable, rows or columns."""
    values = values.reshape(values.shape[0], -1, phases)
    if axis == 0:
      return values[:, :, None, :, None]
    return values[:, None, :, None, :]

  def pixels(rows, columns):
    return image[grid(rows, 0), grid(columns, 1)].astype(jnp.float32)

  x_frac = grid(x_frac, 1)[..., None]
  upper = pixels(top, left) + (pixels(top, right) - pixels(top, left)) * x_frac
  lower = (pixels(bottom, left)
           + (pixels(bottom, right) - pixels(bottom, left)) * x_frac)
  crops = upper + (lower - upper) * grid(y_frac, 0)[..., None]
  inside = (grid(y_in, 0) & grid(x_in, 1))[..., None]
  crops = jnp.where(inside, crops * PIXEL_SCALE + PIXEL_OFFSET, 0.0)
  if not blocks:
    crops = crops.reshape(crops.shape[0], crop_size, crop_size, -1)
  return crops


def crop_and_resize(images, sizes, boxes, crop_size, blocks=False):
  """Bilinear ``crop_size`` x ``crop_size`` crops of boxes, per image.

  Args:
    images: (N, H, W, C) uint8 images; crops are normalised (``(x -
      127.5) / 128``, MTCNN's input), and 0 outside the image.
    sizes: (N, 2) int, each image's true (height, width) in its padding.
    boxes: (N, K, 4) float ``(x1, y1, x2, y2)`` in pixels.
    crop_size: the side of the crops, even when ``blocks``.
    blocks: return the crops in 2x2 blocks, ``(..., c / 2, c / 2, 2, 2,
      C)`` (the layout of :class:`facejax.detection.nets.ConvPool`; sampled
      straight into it, which saves a transpose).

  Returns:
    (N, K, crop_size, crop_size, C) float32 crops, or blocks.
  """
  return jax.vmap(_crop_one_image, in_axes=(0, 0, 0, None, None))(
      images, sizes, boxes, crop_size, blocks)
