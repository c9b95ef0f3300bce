"""Large Margin Local Embedding (Huang, Li, Loy, Tang, CVPR 2016).

"Learning Deep Representation for Imbalanced Classification". Each class is
split into clusters (k-means on its embeddings); for every anchor a quintuplet
is sampled and the triple-header hinge loss enforces, with squared Euclidean
distance D,

  D(a, p+) < D(a, p-) < D(a, p--) < D(a, n)

  p+  : the anchor's most distant neighbour within its cluster,
  p-  : its nearest neighbour of the same class but another cluster,
  p-- : its most distant neighbour of the same class,
  n   : its nearest neighbour of another class.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from facejax.losses import distances
from facejax.losses import reductions

__all__ = ['quintuplet_indices', 'Quintuplets', 'triple_header_hinge_loss']


class Quintuplets(NamedTuple):
  """Indices into the batch, each (B,), and which anchors have all four."""
  p_plus: jax.Array
  p_minus: jax.Array
  p_minus_minus: jax.Array
  negative: jax.Array
  valid: jax.Array


def triple_header_hinge_loss(anchor, p_plus, p_minus, p_minus_minus, negative,
                             margins=(0.2, 0.2, 0.2), valid=None):
  """LMLE's triple-header hinge loss (the paper's eq. 1 and 2).

    L = 1/|A| sum_{a in A} [ max(0, g1 + D(a, p+)  - D(a, p-))
                           + max(0, g2 + D(a, p-)  - D(a, p--))
                           + max(0, g3 + D(a, p--) - D(a, n)) ]

  with D the squared Euclidean distance. The paper leaves the gaps g1, g2, g3
  as hyper-parameters; the default 0.2 suits L2-normalised embeddings
  (where D lies in [0, 4]).

  Args:
    anchor, p_plus, p_minus, p_minus_minus, negative: (B, D) embeddings,
      row i of each forming quintuplet i.
    margins: (g1, g2, g3).
    valid: optional (B,) boolean mask of the quintuplets to average over
      (``Quintuplets.valid``); all of them when None. No valid one gives 0.

  Returns:
    Scalar float32 (or wider) loss.
  """
  members = (anchor, p_plus, p_minus, p_minus_minus, negative)
  if any(x.shape != anchor.shape for x in members) or anchor.ndim != 2:
    raise ValueError(
        'triple_header_hinge_loss needs five (B, D) arrays of one shape, got '
        f'{[x.shape for x in members]}')
  if len(margins) != 3:
    raise ValueError(f'margins must be (g1, g2, g3), got {margins}')
  dtype = reductions.compute_dtype(*members)
  anchor, *others = (x.astype(dtype) for x in members)
  d_plus, d_minus, d_minus_minus, d_negative = (
      distances.squared_distances(anchor, other) for other in others)
  g1, g2, g3 = margins
  per_anchor = (jax.nn.relu(g1 + d_plus - d_minus)
                + jax.nn.relu(g2 + d_minus - d_minus_minus)
                + jax.nn.relu(g3 + d_minus_minus - d_negative))
  if valid is None:
    return jnp.mean(per_anchor)
  return reductions.masked_mean(per_anchor, valid)


def quintuplet_indices(embeddings, labels, clusters):
  """Samples one quintuplet per anchor from a batch (fixed shapes, jit-able).

  Args:
    embeddings: (B, D) embeddings (treated as constants: no gradient).
    labels: (B,) integer class labels.
    clusters: (B,) integer cluster labels. Two examples share a cluster when
      they share both the class and the cluster label, so cluster ids may be
      numbered per class or globally.

  Returns:
    :class:`Quintuplets`. ``valid[i]`` is True when anchor i has all four
    members (its cluster has another member, its class another cluster, and
    the batch another class); indices of invalid anchors point at the anchor
    itself and must be masked (pass ``valid`` to the loss).
  """
  if (embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]
      or clusters.shape != labels.shape):
    raise ValueError(
        'quintuplet_indices needs embeddings (B, D), labels (B,), clusters '
        f'(B,), got {embeddings.shape}, {labels.shape}, {clusters.shape}')
  batch = embeddings.shape[0]
  fixed = jax.lax.stop_gradient(
      embeddings.astype(reductions.compute_dtype(embeddings)))
  distance = distances.pairwise_squared_distances(fixed)
  not_self = ~jnp.eye(batch, dtype=bool)
  same_class = labels[:, None] == labels[None, :]
  same_cluster = same_class & (clusters[:, None] == clusters[None, :])
  within_cluster = same_cluster & not_self
  other_cluster_same_class = same_class & ~same_cluster
  within_class = same_class & not_self
  other_class = ~same_class

  highest = jnp.finfo(distance.dtype).max

  def farthest(mask):
    return jnp.argmax(jnp.where(mask, distance, -1.0), axis=1)

  def nearest(mask):
    return jnp.argmin(jnp.where(mask, distance, highest), axis=1)

  masks = (within_cluster, other_cluster_same_class, within_class, other_class)
  valid = jnp.all(jnp.stack([jnp.any(mask, axis=1) for mask in masks]), axis=0)
  anchors = jnp.arange(batch)
  picks = (farthest(within_cluster), nearest(other_cluster_same_class),
           farthest(within_class), nearest(other_class))
  return Quintuplets(*(jnp.where(valid, pick, anchors) for pick in picks),
                     valid=valid)
