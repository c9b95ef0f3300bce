"""MTCNN's box arithmetic: P-Net cells to boxes, regression, squaring.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the input image, float32, in
the conventions of the ``mtcnn`` package (which follow Zhang et al.'s
1-based Matlab code, hence the ``+ 1`` and ``- 1`` below).

* **P-Net cells.** Cell ``(i, j)`` of the level at scale ``s`` is the
  window with corners ``(2j + 1, 2i + 1)`` and ``(2j + 12, 2i + 12)`` in
  level pixels (side ``w = 11``); its offsets move each corner by ``d w``
  and the box is scaled back by ``1 / s``:
  ``x1 = (2j + 1 + dx1 w) / s``, ``x2 = (2j + 12 + dx2 w) / s``, and the
  same in y with ``i``.
* **Regression** (R-Net, O-Net): ``x1 += dx1 w``, ``y1 += dy1 h``,
  ``x2 += dx2 w``, ``y2 += dy2 h`` with ``w = x2 - x1 + 1`` and
  ``h = y2 - y1 + 1``.
* **Squaring** before the next network: the box grows in its shorter
  direction to ``max(w, h)`` (here ``w = x2 - x1``), centre kept.
* **Landmarks** (O-Net): ``x = w l_x + x1 - 1`` and ``y = h l_y + y1 - 1``
  on the box O-Net was given (before its own regression), ``w``, ``h`` as
  in the regression.
"""
import jax.numpy as jnp

from facejax.detection import pyramid


def cell_boxes(offsets, scale):
  """(..., rows, columns, 4) P-Net offsets at ``scale`` -> image boxes."""
  rows, columns = offsets.shape[-3:-1]
  stride = pyramid.CELL_STRIDE
  side = pyramid.CELL_SIZE - 1
  y = jnp.arange(rows, dtype=jnp.float32)[:, None] * stride + 1
  x = jnp.arange(columns, dtype=jnp.float32)[None, :] * stride + 1
  corners = jnp.stack(
      jnp.broadcast_arrays(x, y, x + side, y + side), axis=-1)
  return (corners + offsets * side) / scale


def _sides(boxes):
  """Width and height as the regression counts them, ``x2 - x1 + 1``."""
  return (boxes[..., 2] - boxes[..., 0] + 1, boxes[..., 3] - boxes[..., 1] + 1)


def regress(boxes, offsets):
  """Moves each corner by its offset times the box's width or height."""
  width, height = _sides(boxes)
  return boxes + offsets * jnp.stack([width, height, width, height], axis=-1)


def square(boxes):
  """Grows each box to a square of its longer side, about its centre."""
  width = boxes[..., 2] - boxes[..., 0]
  height = boxes[..., 3] - boxes[..., 1]
  side = jnp.maximum(width, height)
  x1 = boxes[..., 0] + (width - side) * 0.5
  y1 = boxes[..., 1] + (height - side) * 0.5
  return jnp.stack([x1, y1, x1 + side, y1 + side], axis=-1)


def landmark_points(boxes, landmarks):
  """O-Net's (..., 10) ``x1..x5, y1..y5`` on its boxes -> (..., 5, 2) (x, y)."""
  width, height = _sides(boxes)
  x = width[..., None] * landmarks[..., :5] + boxes[..., 0:1] - 1
  y = height[..., None] * landmarks[..., 5:] + boxes[..., 1:2] - 1
  return jnp.stack([x, y], axis=-1)


def clip_to_image(boxes, sizes):
  """Boxes clipped to ``[0, W - 1] x [0, H - 1]`` (``sizes``: (..., 2) H, W).

  As the package's ``fit_to_image``; the landmarks are left as they are.
  """
  last_x = (sizes[..., 1] - 1).astype(boxes.dtype)[..., None]
  last_y = (sizes[..., 0] - 1).astype(boxes.dtype)[..., None]
  return jnp.stack([jnp.clip(boxes[..., 0], 0, last_x),
                    jnp.clip(boxes[..., 1], 0, last_y),
                    jnp.clip(boxes[..., 2], 0, last_x),
                    jnp.clip(boxes[..., 3], 0, last_y)], axis=-1)
