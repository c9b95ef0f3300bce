"""Losses for A binary face attributes on a shared backbone.

Conventions: ``embeddings`` (N, D) come from the backbone; ``targets`` are
bool (N, A), True where attribute a is present on image n.

**Multi-task network** (one logit per attribute, e.g. the baseline of He et
al., ACM MM 2017): with logits z = x W + b (W (D, A), b (A,)) and targets
y in {0, 1}, task a's loss is the mean sigmoid cross-entropy

  L_a = 1/N sum_n [ max(z_na, 0) - z_na y_na + log(1 + exp(-|z_na|)) ]

(the stable form of -y log s(z) - (1 - y) log(1 - s(z))); the network
minimises sum_a lambda_a L_a (:mod:`facejax.training.adaptive_weighting`
adapts the lambdas).

**LMLE on attributes** (Huang et al., CVPR 2016, applied per attribute):
each attribute a gets its own d-dimensional embedding, the L2-normalised
projection f_a(x) = P_a x / ||P_a x|| of the shared embedding (P (D, A, d)),
its two classes (absent, present) are split into clusters, and the
triple-header hinge (:func:`facejax.losses.lmle.triple_header_hinge_loss`)
is applied to one quintuplet per anchor drawn from the batch with a's
labels and clusters. The loss is the mean over attributes of each one's
mean over its valid quintuplets.

Everything is computed in float32 (or wider), whatever the inputs.
"""

import jax
import jax.numpy as jnp

from facejax.losses import distances
from facejax.losses import lmle
from facejax.losses import reductions

__all__ = ['attribute_embeddings', 'attribute_logits', 'lmle_attribute_losses',
           'per_task_sigmoid_cross_entropy']


def attribute_logits(embeddings, weights, bias):
  """z = x W + b: (N, A) float32 logits from (N, D) embeddings."""
  dtype = reductions.compute_dtype(embeddings, weights)
  return (embeddings.astype(dtype) @ weights.astype(dtype)
          + bias.astype(dtype))


def per_task_sigmoid_cross_entropy(logits, targets):
  """(A,) L_a: each attribute's mean sigmoid cross-entropy (module doc).

  Args:
    logits: (N, A) logits z.
    targets: (N, A) bool (or 0/1) targets y.
  """
  if logits.ndim != 2 or targets.shape != logits.shape:
    raise ValueError('per_task_sigmoid_cross_entropy needs logits and '
                     f'targets of one shape (N, A), got {logits.shape} and '
                     f'{targets.shape}')
  z = logits.astype(reductions.compute_dtype(logits))
  y = targets.astype(z.dtype)
  losses = jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
  return jnp.mean(losses, axis=0)


def attribute_embeddings(embeddings, projection):
  """f_a(x) for every attribute: (A, N, d), L2-normalised over d.

  Args:
    embeddings: (N, D) shared embeddings x.
    projection: (D, A, d) the attributes' projections P.
  """
  if (embeddings.ndim != 2 or projection.ndim != 3
      or projection.shape[0] != embeddings.shape[1]):
    raise ValueError('attribute_embeddings needs embeddings (N, D) and a '
                     f'projection (D, A, d), got {embeddings.shape} and '
                     f'{projection.shape}')
  dtype = reductions.compute_dtype(embeddings, projection)
  projected = jnp.einsum('nd,dae->ane', embeddings.astype(dtype),
                         projection.astype(dtype))
  return distances.l2_normalize(projected)


def lmle_attribute_losses(attribute_features, targets, clusters,
                          margins=(0.2, 0.2, 0.2)):
  """Each attribute's triple-header hinge loss on its own quintuplets.

  Args:
    attribute_features: (A, N, d) per-attribute embeddings
      (:func:`attribute_embeddings`).
    targets: (N, A) bool targets: attribute a's classes.
    clusters: (A, N) integer clusters of every example under attribute a
      (numbered per class or globally, as
      :func:`facejax.losses.lmle.quintuplet_indices` takes them).
    margins: the gaps (g1, g2, g3).

  Returns:
    (losses (A,), valid (A,)): each attribute's loss (0 when no anchor of
    the batch has a full quintuplet) and its fraction of valid anchors.
  """
  num_attributes, batch = attribute_features.shape[:2]
  if (targets.shape != (batch, num_attributes)
      or clusters.shape != (num_attributes, batch)):
    raise ValueError(
        'lmle_attribute_losses needs attribute_features (A, N, d), targets '
        f'(N, A) and clusters (A, N), got {attribute_features.shape}, '
        f'{targets.shape} and {clusters.shape}')

  def one_attribute(features, labels, attribute_clusters):
    quintuplets = lmle.quintuplet_indices(features, labels,
                                          attribute_clusters)
    loss = lmle.triple_header_hinge_loss(
        features, *(features[i] for i in quintuplets[:4]),
        margins=tuple(margins), valid=quintuplets.valid)
    return loss, jnp.mean(quintuplets.valid.astype(jnp.float32))

  return jax.vmap(one_attribute)(attribute_features,
                                 targets.T.astype(jnp.int32), clusters)
