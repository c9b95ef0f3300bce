"""Non-maximum suppression over fixed-size, masked sets of boxes, in JAX.

Boxes are ``(x1, y1, x2, y2)`` rows, already sorted by descending score,
with a ``valid`` mask for the padding of a fixed-size set; invalid boxes
neither survive nor suppress. Overlap is measured as MTCNN does, with either
of two denominators (the ``mtcnn`` package's ``iou``; Zhang et al.'s
``nms.m``):

    union:  o(a, b) = |a n b| / (|a| + |b| - |a n b|)   (IoU)
    min:    o(a, b) = |a n b| / min(|a|, |b|)

with areas ``(x2 - x1) (y2 - y1)`` (the package's; Zhang's Matlab code adds
one pixel to each side). A box is suppressed when its overlap with a kept,
higher-scoring box exceeds ``threshold``.

**Greedy, computed in parallel.** Greedy NMS keeps box ``j`` iff no kept box
``i < j`` has ``o(i, j) > t``: ``keep_j = not any_{i<j} keep_i and o_ij > t``.
Each ``keep_j`` depends only on earlier ones, so the equations have one
solution, and iterating ``keep <- not any_i (keep_i and o_ij > t, i < j)``
from ``keep = valid`` fixes one more leading position per round: it reaches
the greedy answer in at most K rounds (usually a handful, one K x K masked
reduction each), which is all ``lax.while_loop`` runs, and needs no
sequential loop over boxes.

**Fast NMS.** ``greedy=False`` stops after the first round: box ``j`` is
suppressed by *any* higher-scoring box that overlaps it, kept or not
(Bolya et al.'s "Fast NMS", YOLACT, ICCV 2019). That is what the ``mtcnn``
package does (its ``nms`` sums the upper triangle of the thresholded IoU
matrix); it suppresses at least as many boxes as greedy NMS, e.g. the
second of two faces whose boxes are bridged by a suppressed one.
"""
import jax
import jax.numpy as jnp

METHODS = ('union', 'min')


def _area(boxes):
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_overlap(boxes, method='union'):
  """(..., K, 4) boxes -> (..., K, K) overlaps ``o(i, j)`` (see above).

  A zero denominator (degenerate boxes) gives overlap 0.
  """
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}')
  a, b = boxes[..., :, None, :], boxes[..., None, :, :]
  width = jnp.maximum(0.0, jnp.minimum(a[..., 2], b[..., 2])
                      - jnp.maximum(a[..., 0], b[..., 0]))
  height = jnp.maximum(0.0, jnp.minimum(a[..., 3], b[..., 3])
                       - jnp.maximum(a[..., 1], b[..., 1]))
  intersection = width * height
  area = _area(boxes)
  area_a, area_b = area[..., :, None], area[..., None, :]
  if method == 'union':
    denominator = area_a + area_b - intersection
  else:
    denominator = jnp.minimum(area_a, area_b)
  safe = jnp.where(denominator > 0, denominator, 1.0)
  return jnp.where(denominator > 0, intersection / safe, 0.0)


def suppress(boxes, valid, threshold, method='union', greedy=True):
  """Which boxes survive non-maximum suppression.

  Args:
    boxes: (..., K, 4) boxes sorted by descending score.
    valid: (..., K) bool, False for padding.
    threshold: a box goes when its overlap with a surviving, higher-scoring
      box is above this.
    method: 'union' (IoU) or 'min' (intersection over the smaller area).
    greedy: True for greedy NMS; False for Fast NMS, as the ``mtcnn``
      package (see the module docstring).

  Returns:
    (..., K) bool: ``keep``, a subset of ``valid``.
  """
  size = boxes.shape[-2]
  earlier = jnp.triu(jnp.ones((size, size), bool), k=1)  # [i, j]: i < j
  suppresses = (pairwise_overlap(boxes, method) > threshold) & earlier
  suppresses = suppresses & valid[..., :, None]

  def one_round(keep):
    return valid & ~jnp.any(suppresses & keep[..., :, None], axis=-2)

  first = one_round(valid)
  if not greedy:
    return first

  def changed(state):
    previous, keep, rounds = state
    return jnp.any(previous != keep) & (rounds < size)

  def step(state):
    _, keep, rounds = state
    return keep, one_round(keep), rounds + 1

  _, keep, _ = jax.lax.while_loop(changed, step, (valid, first, 1))
  return keep
