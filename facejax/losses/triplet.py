"""The triplet family on a batch (Hermans, Beyer, Leibe 2017).

"In Defense of the Triplet Loss for Person Re-Identification", arXiv:1703.07737.

Conventions shared by every function here:
  * ``embeddings`` is (B, D), ``labels`` is (B,) integer identities; the
    batch is usually P identities x K images (see facejax.data).
  * D(a, b) is the Euclidean distance (squared when ``squared=True``) between
    the embeddings *as given*: nothing is normalised behind your back.
  * A positive of anchor a is another example (b != a) with the same label; a
    negative is an example with a different label.
  * Anchors without a positive or without a negative contribute nothing, and
    a batch with no valid anchor gives 0, never NaN. Gradients are finite even
    when embeddings coincide.
"""
import jax
import jax.numpy as jnp

from facejax.losses import distances
from facejax.losses import reductions

__all__ = ['batch_all_triplet_loss', 'batch_hard_triplet_loss',
           'lifted_structure_loss']


def _check(embeddings, labels, name):
  if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
    raise ValueError(
        f'{name} needs embeddings (B, D) and labels (B,), got '
        f'{embeddings.shape} and {labels.shape}')


def _pair_masks(labels):
  """(positive, negative) boolean (B, B) masks as defined in the module doc."""
  same = labels[:, None] == labels[None, :]
  not_self = ~jnp.eye(labels.shape[0], dtype=bool)
  return same & not_self, ~same


def _distance_matrix(embeddings, squared):
  embeddings = embeddings.astype(reductions.compute_dtype(embeddings))
  return distances.pairwise_distances(embeddings, squared=squared)


def batch_hard_triplet_loss(embeddings, labels, margin=0.2, soft=False,
                            squared=False):
  """Batch-hard triplet loss (Hermans et al., eq. 5 and the soft margin).

    L_BH = 1/|A| sum_{a in A} h( m + max_{p in P(a)} D(a, p)
                                   - min_{n in N(a)} D(a, n) )

  with h(x) = max(0, x) (hinge) or, when ``soft``, the soft margin
  h(x) = log(1 + exp(x)) evaluated at m = 0 (``margin`` is then ignored).
  A is the set of anchors with at least one positive and one negative.

  Returns:
    Scalar float32 (or wider) loss.
  """
  _check(embeddings, labels, 'batch_hard_triplet_loss')
  distance = _distance_matrix(embeddings, squared)
  positive, negative = _pair_masks(labels)
  hardest_positive_distance = reductions.masked_max(distance, positive)
  hardest_negative_distance = reductions.masked_min(distance, negative)
  gap = hardest_positive_distance - hardest_negative_distance
  per_anchor = jax.nn.softplus(gap) if soft else jax.nn.relu(margin + gap)
  valid_anchor = jnp.any(positive, axis=1) & jnp.any(negative, axis=1)
  return reductions.masked_mean(per_anchor, valid_anchor)


def batch_all_triplet_loss(embeddings, labels, margin=0.2, squared=False,
                           nonzero_only=True):
  """Batch-all triplet loss (Hermans et al., eq. 6; "BA" and "BA!=0").

    l(a, p, n) = max(0, m + D(a, p) - D(a, n))

  over every valid triplet (p a positive and n a negative of a). The mean is
  taken over the triplets with l > 0 when ``nonzero_only`` (the paper's
  BA!=0, which keeps the loss from being diluted by easy triplets), else over
  all valid triplets. Memory is O(B^3): fine for P x K batches of a few
  hundred.

  Returns:
    Scalar float32 (or wider) loss.
  """
  _check(embeddings, labels, 'batch_all_triplet_loss')
  distance = _distance_matrix(embeddings, squared)
  positive, negative = _pair_masks(labels)
  # Index order [anchor, positive, negative].
  per_triplet = jax.nn.relu(
      margin + distance[:, :, None] - distance[:, None, :])
  valid_triplet = positive[:, :, None] & negative[:, None, :]
  if nonzero_only:
    valid_triplet = valid_triplet & (per_triplet > 0)
  return reductions.masked_mean(per_triplet, valid_triplet)


def lifted_structure_loss(embeddings, labels, margin=1.0):
  """Generalised lifted embedding loss (Hermans et al., eq. 4).

    L_LG = 1/|A| sum_{a in A} max(0, log sum_{p in P(a)} exp(D(a, p))
                                     + log sum_{n in N(a)} exp(m - D(a, n)))

  with D the (non-squared) Euclidean distance; a smooth version of batch-hard
  in which every positive and negative of an anchor contributes.

  Returns:
    Scalar float32 (or wider) loss.
  """
  _check(embeddings, labels, 'lifted_structure_loss')
  distance = _distance_matrix(embeddings, squared=False)
  positive, negative = _pair_masks(labels)
  positive_term = reductions.masked_logsumexp(distance, positive)
  negative_term = reductions.masked_logsumexp(margin - distance, negative)
  per_anchor = jax.nn.relu(positive_term + negative_term)
  valid_anchor = jnp.any(positive, axis=1) & jnp.any(negative, axis=1)
  return reductions.masked_mean(per_anchor, valid_anchor)
