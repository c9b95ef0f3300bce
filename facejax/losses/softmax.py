"""Plain softmax cross-entropy with checked labels."""
import jax
import jax.numpy as jnp

from facejax.losses import labels as labels_lib
from facejax.losses import reductions

__all__ = ['per_example_cross_entropy', 'softmax_cross_entropy']


def per_example_cross_entropy(logits, labels):
  """-log softmax(logits)[label] per example, in float32 (or wider).

  Labels are gathered with ``take_along_axis``; callers validate them first.
  """
  log_probs = jax.nn.log_softmax(
      logits.astype(reductions.compute_dtype(logits)), axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def softmax_cross_entropy(logits, labels):
  """Mean softmax cross-entropy.

  L = -1/N sum_i log( exp(z_{i,y_i}) / sum_j exp(z_{i,j}) )

  Args:
    logits: (N, C) unnormalised scores z.
    labels: (N,) integer class indices y in [0, C).

  Returns:
    The scalar mean over the batch, float32 (or the logits' wider float type).

  Raises:
    ValueError: a concrete label is outside [0, C). Under ``jit`` such an
      example's loss is NaN instead (see ``facejax.losses.labels``).
  """
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(
        f'softmax_cross_entropy needs logits (N, C) and labels (N,), got '
        f'{logits.shape} and {labels.shape}')
  valid = labels_lib.labels_in_range(labels, logits.shape[-1])
  per_example = per_example_cross_entropy(logits, labels)
  return jnp.mean(labels_lib.nan_where_invalid(per_example, valid))
