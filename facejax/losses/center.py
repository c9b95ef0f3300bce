"""Center loss (Wen, Zhang, Li, Qiao, ECCV 2016).

"A Discriminative Feature Learning Approach for Deep Face Recognition".
"""
import jax
import jax.numpy as jnp

from facejax.losses import labels as labels_lib
from facejax.losses import reductions

__all__ = ['center_loss']


def center_loss(features, labels, centers, alpha=0.5):
  """Center loss and the paper's centre update.

  With x_i the deep feature of example i, y_i its class and c_j the centre of
  class j (the paper's eq. 2 and 4, averaged instead of summed over the batch):

    L_C = 1/N sum_i 1/2 ||x_i - c_{y_i}||^2
    delta_c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j),  n_j = #{i: y_i = j}
    c_j <- c_j - alpha * delta_c_j

  Centres are state, not parameters: no gradient flows into ``centers``
  through the loss, and the update uses the features as constants. Classes
  absent from the batch keep their centres bit for bit. In the paper the
  total loss is L_S + lambda * L_C; weighting is left to the caller.

  Args:
    features: (N, D) float features x.
    labels: (N,) integer classes y in [0, K).
    centers: (K, D) class centres c.
    alpha: centre learning rate in [0, 1].

  Returns:
    ``(loss, new_centers)``: the scalar mean loss (float32 or wider) and the
    updated (K, D) centres in the dtype of ``centers``.

  Raises:
    ValueError: shapes disagree, or a concrete label is outside [0, K); under
      ``jit`` such an example's loss is NaN and it moves no centre.
  """
  if (features.ndim != 2 or centers.ndim != 2
      or features.shape[1] != centers.shape[1]
      or labels.shape != features.shape[:1]):
    raise ValueError(
        f'center_loss needs features (N, D), labels (N,), centers (K, D); got '
        f'{features.shape}, {labels.shape}, {centers.shape}')
  num_classes = centers.shape[0]
  valid = labels_lib.labels_in_range(labels, num_classes)
  dtype = reductions.compute_dtype(features, centers)
  features = features.astype(dtype)
  fixed_centers = jax.lax.stop_gradient(centers).astype(dtype)

  own_centers = fixed_centers[labels]
  per_example = 0.5 * jnp.sum(jnp.square(features - own_centers), axis=-1)
  loss = jnp.mean(labels_lib.nan_where_invalid(per_example, valid))

  fixed_features = jax.lax.stop_gradient(features)
  # Invalid labels are sent to segment id num_classes, which segment_sum drops.
  segment_ids = jnp.where(valid, labels, num_classes)
  counts = jax.ops.segment_sum(
      jnp.ones_like(per_example), segment_ids, num_segments=num_classes)
  feature_sums = jax.ops.segment_sum(
      fixed_features, segment_ids, num_segments=num_classes)
  delta = ((counts[:, None] * fixed_centers - feature_sums)
           / (1.0 + counts[:, None]))
  moved = (fixed_centers - alpha * delta).astype(centers.dtype)
  new_centers = jnp.where(counts[:, None] > 0, moved,
                          jax.lax.stop_gradient(centers))
  return loss, new_centers
