"""Angular-margin softmax losses: ArcFace, CosFace, combined margin, and the
ArcFace paper's Intra-Loss and Inter-Loss.

References:
  * Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep
    Face Recognition", CVPR 2019 (eq. 3 and 4, L5 and L6).
  * Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", CVPR 2018.
  * Liu et al., SphereFace (multiplicative margin m1): see ``sphereface.py``
    for the A-Softmax form that keeps the feature norm.

Conventions:
  * ``embeddings`` is (N, D); ``weights`` is the class-weight matrix W of
    shape (D, C), one column per identity (the layout that shards over the
    class axis). Both are L2-normalised here (rows of the embeddings, columns
    of W), so the losses are invariant to their scale, and
    cos(theta_{i,j}) = x_i^T W_j / (||x_i|| ||W_j||).
  * The cosines may be computed from bfloat16 inputs, but they are
    accumulated and every margin, logit and softmax is computed in float32
    (or the inputs' wider float type, e.g. float64 under x64).
  * The loss is the mean cross-entropy over the batch. Out-of-range labels
    raise when concrete and give NaN under ``jit`` (``facejax.losses.labels``).
"""
import math

import jax.numpy as jnp

from facejax.losses import distances
from facejax.losses import labels as labels_lib
from facejax.losses import reductions
from facejax.losses import softmax

__all__ = [
    'angle_from_cosine', 'arcface_loss', 'cosface_loss', 'cosine_matrix',
    'inter_loss', 'intra_loss', 'margin_softmax_loss', 'margin_target_cosine',
    'target_rule_softmax',
]


def angle_from_cosine(cosine):
  """theta = arccos(cosine) with a finite gradient everywhere.

  d arccos(c)/dc = -1/sqrt(1 - c^2) is infinite at c = +-1. Writing
  theta = atan2(sqrt(1 - c^2), c) with a safe square root gives the same value
  and the exact gradient for |c| < 1, and a zero gradient at |c| = 1.
  """
  cosine = jnp.clip(cosine, -1.0, 1.0)
  sine = distances.safe_sqrt(1.0 - jnp.square(cosine))
  return jnp.arctan2(sine, cosine)


def margin_target_cosine(cosine, m1=1.0, m2=0.5, m3=0.0):
  """The combined margin applied to the target-class cosine.

    psi(theta) = cos(m1 * theta + m2) - m3          for m1 * theta + m2 <= pi

  m2 alone (m1 = 1, m3 = 0) is ArcFace, m3 alone is CosFace, m1 alone is the
  multiplicative (SphereFace-style) angle, and insightface's combined margin
  uses all three. Beyond theta* = (pi - m2) / m1 the cosine would turn back
  up and reward a *larger* angle, so psi continues monotonically decreasing:
    * m1 = 1 (ArcFace and insightface's combined margin): insightface's rule
      psi = cos(theta) - m2 * sin(pi - m2) - m3, so results match arcface_torch.
      It starts at or below psi(theta*) = -1 - m3 (a downward step) as long as
      cos(m2) + m2 sin(m2) >= 1, i.e. for every m2 up to about 2.33;
    * otherwise (m1 != 1, or a larger m2): psi = cos(theta) - cos(theta*) - 1
      - m3, continuous at theta*.

  Args:
    cosine: target cosines cos(theta_{i, y_i}), any shape.
    m1, m2, m3: static Python floats.

  Returns:
    psi, same shape, float32 (or the cosine's wider float type).
  """
  cosine = cosine.astype(reductions.compute_dtype(cosine))
  if m1 == 1.0 and m2 == 0.0:
    return cosine - m3
  theta = angle_from_cosine(cosine)
  with_margin = jnp.cos(m1 * theta + m2) - m3
  threshold = (math.pi - m2) / m1
  if threshold >= math.pi:
    return with_margin
  if m1 == 1.0 and math.cos(m2) + m2 * math.sin(m2) >= 1.0:
    fallback = cosine - m2 * math.sin(math.pi - m2) - m3
  else:
    fallback = cosine - math.cos(threshold) - 1.0 - m3
  return jnp.where(theta <= threshold, with_margin, fallback)


def cosine_matrix(embeddings, weights):
  """cos(theta) between each embedding (N, D) and each class column of W (D, C).

  Normalisation is done in float32 (or wider); the matmul takes the input
  dtype (so bfloat16 inputs use the fast path) and accumulates in float32.
  """
  if (embeddings.ndim != 2 or weights.ndim != 2
      or embeddings.shape[1] != weights.shape[0]):
    raise ValueError(
        f'need embeddings (N, D) and weights (D, C), got {embeddings.shape} '
        f'and {weights.shape}')
  dtype = reductions.compute_dtype(embeddings, weights)
  unit_embeddings = distances.l2_normalize(embeddings.astype(dtype))
  unit_weights = distances.l2_normalize(weights.astype(dtype), axis=0)
  return jnp.matmul(unit_embeddings.astype(embeddings.dtype),
                    unit_weights.astype(weights.dtype),
                    preferred_element_type=dtype)


def _checked_labels(labels, cosines):
  """(labels with invalid ones replaced by 0, validity mask) for (N, C) cosines."""
  if labels.shape != cosines.shape[:1]:
    raise ValueError(
        f'labels must be (N,) = {cosines.shape[:1]}, got {labels.shape}')
  valid = labels_lib.labels_in_range(labels, cosines.shape[1])
  return jnp.where(valid, labels, 0), valid


def _target_column(matrix, labels):
  """matrix[i, labels[i]] for each row i."""
  return jnp.take_along_axis(matrix, labels[:, None], axis=1)[:, 0]


def _replace_target(matrix, labels, target_values):
  """matrix with matrix[i, labels[i]] replaced by target_values[i]."""
  is_target = labels[:, None] == jnp.arange(matrix.shape[1])[None, :]
  return jnp.where(is_target, target_values[:, None], matrix)


def target_rule_softmax(embeddings, weights, labels, target_rule, row_scale):
  """Mean cross-entropy of scaled cosines whose target cosine is replaced.

    z_{i,j}   = r_i cos(theta_{i,j})             for j != y_i
    z_{i,y_i} = r_i rule(cos(theta_{i,y_i}))
    L         = -1/N sum_i log softmax(z_i)[y_i]

  The single-device form shared by the angular-margin losses: each differs
  only in its target rule and its row scale r (:func:`margin_softmax_loss`:
  psi and a constant s; :func:`facejax.losses.sphereface.sphereface_loss`:
  the A-Softmax blend and the feature norm ||x_i||), as each class-parallel
  loss differs only in those (:mod:`facejax.losses.class_parallel`).

  Args:
    embeddings: (N, D) features x (normalised for the cosines).
    weights: (D, C) class weights W (columns normalised).
    labels: (N,) integer identities in [0, C).
    target_rule: maps the (N,) target cosines to the (N,) values that
      replace them.
    row_scale: ``row_scale(embeddings, dtype)``, the scale r: a scalar or an
      (N, 1) array (``dtype`` is the cosines').

  Returns:
    Scalar float32 (or wider) mean cross-entropy; NaN under ``jit`` when a
    label is out of range (``facejax.losses.labels``).
  """
  cosines = cosine_matrix(embeddings, weights)
  labels, valid = _checked_labels(labels, cosines)
  target = target_rule(_target_column(cosines, labels))
  logits = row_scale(embeddings, cosines.dtype) * _replace_target(
      cosines, labels, target)
  per_example = softmax.per_example_cross_entropy(logits, labels)
  return jnp.mean(labels_lib.nan_where_invalid(per_example, valid))


def margin_softmax_loss(embeddings, weights, labels, scale=64.0, m1=1.0,
                        m2=0.5, m3=0.0):
  """Combined-margin softmax (ArcFace eq. 4 with insightface's m1, m2, m3).

    L = -1/N sum_i log( e^{s psi(theta_{y_i})}
                        / (e^{s psi(theta_{y_i})} + sum_{j != y_i} e^{s cos theta_j}) )

  with psi from :func:`margin_target_cosine`. Defaults are ArcFace
  (s = 64, m2 = 0.5).

  Args:
    embeddings: (N, D) features (normalised here).
    weights: (D, C) class weights W (columns normalised here).
    labels: (N,) integer identities in [0, C).
    scale: s, the radius of the hypersphere.
    m1, m2, m3: multiplicative angular, additive angular, additive cosine
      margins (static Python floats).

  Returns:
    Scalar float32 (or wider) mean cross-entropy.
  """
  return target_rule_softmax(
      embeddings, weights, labels,
      lambda target: margin_target_cosine(target, m1, m2, m3),
      lambda *_: scale)


def arcface_loss(embeddings, weights, labels, scale=64.0, margin=0.5):
  """ArcFace: s * cos(theta_y + m) for the target (m2 = margin)."""
  return margin_softmax_loss(embeddings, weights, labels, scale, m2=margin)


def cosface_loss(embeddings, weights, labels, scale=64.0, margin=0.35):
  """CosFace / LMCL: s * (cos(theta_y) - m) for the target (m3 = margin)."""
  return margin_softmax_loss(embeddings, weights, labels, scale, m2=0.0,
                             m3=margin)


def _normalised_softmax(embeddings, weights, labels, scale):
  """Shared part of L5 and L6: cosines, labels, validity and per-example L2."""
  cosines = cosine_matrix(embeddings, weights)
  labels, valid = _checked_labels(labels, cosines)
  per_example = softmax.per_example_cross_entropy(scale * cosines, labels)
  return cosines, labels, valid, per_example


def intra_loss(embeddings, weights, labels, scale=64.0):
  """ArcFace paper's Intra-Loss (L5): normalised softmax plus the target angle.

    L5 = L2 + 1/(pi N) sum_i theta_{y_i}

  where L2 is the normalised softmax (margin_softmax_loss with no margin).
  Pulls each feature toward its class centre on the hypersphere.
  """
  cosines, labels, valid, per_example = _normalised_softmax(
      embeddings, weights, labels, scale)
  target_angle = angle_from_cosine(_target_column(cosines, labels))
  per_example = per_example + target_angle / math.pi
  return jnp.mean(labels_lib.nan_where_invalid(per_example, valid))


def inter_loss(embeddings, weights, labels, scale=64.0):
  """ArcFace paper's Inter-Loss (L6): normalised softmax minus centre angles.

    L6 = L2 - 1/(pi N (C - 1)) sum_i sum_{j != y_i} arccos(W_{y_i}^T W_j)

  with unit-norm class centres W_j: pushes the target centre away from every
  other centre (the minus sign: minimising L6 *increases* those angles).
  """
  cosines, labels, valid, per_example = _normalised_softmax(
      embeddings, weights, labels, scale)
  num_classes = cosines.shape[1]
  if num_classes < 2:
    raise ValueError('inter_loss needs at least two classes')
  unit_weights = distances.l2_normalize(weights.astype(cosines.dtype), axis=0)
  target_centres = unit_weights.T[labels]                       # (N, D)
  centre_angles = angle_from_cosine(target_centres @ unit_weights)  # (N, C)
  # The target's angle to itself is 0 (up to round-off): exclude it exactly.
  centre_angles = _replace_target(centre_angles, labels,
                                   jnp.zeros(labels.shape, cosines.dtype))
  mean_other_angle = jnp.sum(centre_angles, axis=1) / (num_classes - 1)
  per_example = per_example - mean_other_angle / math.pi
  return jnp.mean(labels_lib.nan_where_invalid(per_example, valid))
