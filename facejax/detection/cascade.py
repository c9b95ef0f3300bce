"""MTCNN's three stages as jit-able functions of fixed-shape, masked batches.

Zhang et al. (2016), section II.A, with the thresholds and overlaps of
their released code (and of the ``mtcnn`` package):

0. :func:`pyramid_levels`: the area-resampled pyramid, a computation of
   its own (see :func:`pyramid.resample`).
1. :func:`propose`: P-Net on every pyramid level; cells scoring above
   ``thresholds[0]`` become boxes (:func:`boxes.cell_boxes`); NMS at IoU 0.5
   within each level, then at 0.7 across levels; the survivors are squared.
2. :func:`refine`: R-Net on 24 x 24 crops of them; boxes above
   ``thresholds[1]`` are regressed, NMS at IoU 0.7, squared.
3. :func:`output`: O-Net on 48 x 48 crops; boxes above ``thresholds[2]``
   get their landmarks (on the box O-Net saw) and are regressed, then NMS
   at 0.7 of the *smaller* area ('min'), and clipped to the image.

Every array has a fixed shape: a batch of ``N`` images padded to one
bucket size (their true sizes passed alongside), and sets of candidate
boxes of a fixed ``capacity`` with a ``valid`` mask, sorted by descending
score with the valid ones first (:func:`_by_score`), so the first
``valid.sum()`` rows of each image are its answer. P-Net keeps the
``capacity`` best cells of a level (and of all levels after the per-level
NMS); when an image has more, ``propose`` says so in ``overflow`` and the
caller runs it again with a larger capacity, so nothing is cut. The caller
also trims the sets between stages to a few fixed sizes just above the
largest count (``mtcnn._box_bucket``), so R-Net and O-Net run on about as
many crops as there are candidates.
"""
import dataclasses

import jax
import jax.numpy as jnp

from facejax.detection import boxes as box_ops
from facejax.detection import crops
from facejax.detection import nets
from facejax.detection import nms
from facejax.detection import pyramid

# Overlap thresholds of the released code: P-Net within a level, P-Net
# across levels, R-Net, O-Net (the last with the 'min' overlap).
NMS_THRESHOLDS = (0.5, 0.7, 0.7, 0.7)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the stages need besides arrays (hashable: a static jit argument).

  Attributes:
    thresholds: face-probability thresholds of P-Net, R-Net and O-Net.
    greedy_nms: greedy NMS (Zhang et al.'s) instead of the ``mtcnn``
      package's Fast NMS (see :mod:`facejax.detection.nms`).
  """
  thresholds: tuple = (0.6, 0.7, 0.7)
  greedy_nms: bool = False


def _gather(array, order):
  """Rows of (N, K, ...) ``array`` in (N, k) ``order``."""
  index = order.reshape(order.shape + (1,) * (array.ndim - 2))
  return jnp.take_along_axis(array, index, axis=1)


def _by_score(scores, valid, size, *arrays):
  """The ``size`` best valid rows of each image, best first.

  Returns ``(scores, valid, *arrays)`` reordered (and cut to ``size``).
  """
  _, order = jax.lax.top_k(jnp.where(valid, scores, -1.0), size)
  return [_gather(a, order) for a in (scores, valid) + arrays]


def _cells_valid(level_sizes, rows, columns):
  """(N, rows, columns) mask of P-Net cells inside each image's level."""
  size = level_sizes.astype(jnp.int32)
  cells = jnp.where(size >= pyramid.CELL_SIZE, (size - 1) // 2 - 4, 0)
  return ((jnp.arange(rows)[None, :, None] < cells[:, 0, None, None])
          & (jnp.arange(columns)[None, None, :] < cells[:, 1, None, None]))


def pyramid_levels(images, resampling):
  """Stage 0: the normalised pyramid levels of a batch.

  A computation of its own (see :func:`pyramid.resample`).

  Args:
    images: (N, Hb, Wb, 3) uint8, each padded at the bottom and right.
    resampling: per level, ``(row_index, row_weight, column_index,
      column_weight)`` for each image: (N, rows, 3) and (N, rows, 4) from
      :func:`pyramid.area_spans`, (N, columns, taps) from
      :func:`pyramid.area_weights`; zero weights for images that have no
      such level.

  Returns:
    Per level, (N, rows, columns, 3) float32.
  """
  integral = pyramid.integral_rows(images)
  return tuple(pyramid.resample(images, integral, *weights, nets.PIXEL_SCALE,
                                nets.PIXEL_OFFSET)
               for weights in resampling)


def propose(pnet_variables, levels, level_sizes, scales, capacity,
            settings):
  """Stage 1: P-Net over the pyramid, NMS, squaring.

  Args:
    pnet_variables: P-Net's Flax variables.
    levels: from :func:`pyramid_levels`.
    level_sizes: per level, each image's (N, 2) true level size (0 where
      the image has no such level).
    scales: the bucket's pyramid scales (static), one per level.
    capacity: candidate boxes kept per level and in all (static).
    settings: :class:`Settings` (static).

  Returns:
    ``(boxes (N, capacity, 4), scores (N, capacity), valid (N, capacity),
    overflow (N,))``: squared candidate boxes, best first; ``overflow``
    where a level had more than ``capacity`` candidates or more than
    ``capacity`` survived the per-level NMS (rerun with a larger capacity).
  """
  found_boxes, found_scores, found_valid = [], [], []
  overflow = jnp.zeros(levels[0].shape[0], bool)
  pnet = nets.PNet()
  for scale, level, sizes in zip(scales, levels, level_sizes):
    face, offsets = pnet.apply(pnet_variables, level, sizes)
    candidate = _cells_valid(sizes, *face.shape[1:]) & (
        face > settings.thresholds[0])
    cell_boxes = box_ops.cell_boxes(offsets, scale)
    count = face.shape[1] * face.shape[2]
    size = min(capacity, count)
    overflow |= jnp.sum(candidate, axis=(1, 2)) > size
    scores, valid, level_boxes = _by_score(
        face.reshape(-1, count), candidate.reshape(-1, count), size,
        cell_boxes.reshape(-1, count, 4))
    keep = nms.suppress(level_boxes, valid, NMS_THRESHOLDS[0], 'union',
                        settings.greedy_nms)
    found_boxes.append(level_boxes)
    found_scores.append(scores)
    found_valid.append(keep)
  all_valid = jnp.concatenate(found_valid, axis=1)
  size = min(capacity, all_valid.shape[1])
  overflow |= jnp.sum(all_valid, axis=1) > size
  scores, valid, found = _by_score(
      jnp.concatenate(found_scores, axis=1), all_valid, size,
      jnp.concatenate(found_boxes, axis=1))
  keep = nms.suppress(found, valid, NMS_THRESHOLDS[1], 'union',
                      settings.greedy_nms)
  scores, keep, found = _by_score(scores, keep, size, found)
  return box_ops.square(found), scores, keep, overflow


def refine(rnet_variables, images, sizes, candidates, valid, settings):
  """Stage 2: R-Net on 24 x 24 crops, regression, NMS, squaring.

  Args:
    rnet_variables: R-Net's Flax variables.
    images: (N, Hb, Wb, 3) uint8, padded.
    sizes: (N, 2) true (height, width) of each image.
    candidates: (N, K, 4) boxes from :func:`propose`.
    valid: (N, K) their mask.
    settings: :class:`Settings` (static).

  Returns:
    ``(boxes (N, K, 4), scores (N, K), valid (N, K))``, best first.
  """
  patches = crops.crop_and_resize(images, sizes, candidates, 24, blocks=True)
  n, k = valid.shape
  face, offsets = nets.RNet().apply(
      rnet_variables, patches.reshape((n * k,) + patches.shape[2:]))
  face, offsets = face.reshape(n, k), offsets.reshape(n, k, 4)
  valid = valid & (face > settings.thresholds[1])
  scores, valid, moved = _by_score(face, valid, k,
                                   box_ops.regress(candidates, offsets))
  keep = nms.suppress(moved, valid, NMS_THRESHOLDS[2], 'union',
                      settings.greedy_nms)
  scores, keep, moved = _by_score(scores, keep, k, moved)
  return box_ops.square(moved), scores, keep


def output(onet_variables, images, sizes, candidates, valid, settings):
  """Stage 3: O-Net on 48 x 48 crops: final scores, boxes and landmarks.

  Args: as :func:`refine`, with O-Net's variables.

  Returns:
    ``(boxes (N, K, 4), scores (N, K), landmarks (N, K, 5, 2), valid (N,
    K))``, best first; boxes clipped to the image, landmarks (x, y) in
    O-Net's order (left eye, right eye, nose, left and right mouth corner,
    as seen in the image).
  """
  patches = crops.crop_and_resize(images, sizes, candidates, 48, blocks=True)
  n, k = valid.shape
  face, offsets, landmarks = nets.ONet().apply(
      onet_variables, patches.reshape((n * k,) + patches.shape[2:]))
  face = face.reshape(n, k)
  points = box_ops.landmark_points(candidates, landmarks.reshape(n, k, 10))
  moved = box_ops.regress(candidates, offsets.reshape(n, k, 4))
  valid = valid & (face > settings.thresholds[2])
  scores, valid, moved, points = _by_score(face, valid, k, moved, points)
  keep = nms.suppress(moved, valid, NMS_THRESHOLDS[3], 'min',
                      settings.greedy_nms)
  scores, keep, moved, points = _by_score(scores, keep, k, moved, points)
  return box_ops.clip_to_image(moved, sizes), scores, points, keep
