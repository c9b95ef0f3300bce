"""Contrastive verification loss (Sun, Chen, Wang, Tang, NIPS 2014: DeepID2)."""
import jax.numpy as jnp

from facejax.losses import distances
from facejax.losses import reductions

__all__ = ['contrastive_loss']


def contrastive_loss(f1, f2, same, margin=1.0):
  """DeepID2's verification signal, averaged over pairs.

    Verif(f_i, f_j, y_ij) = 1/2 ||f_i - f_j||^2                 if y_ij = 1
                            1/2 max(0, m - ||f_i - f_j||)^2     if y_ij = 0

  Args:
    f1, f2: (N, D) features of the two members of each pair.
    same: (N,) boolean (or 0/1) y_ij, True where the pair shares an identity.
    margin: m > 0, in the units of the (un-normalised) features.

  Returns:
    Scalar mean over the N pairs, float32 (or wider). The gradient is finite
    when f1 == f2 (the distance's subgradient at 0 is taken as 0).
  """
  if f1.shape != f2.shape or f1.ndim != 2 or jnp.shape(same) != f1.shape[:1]:
    raise ValueError(
        f'contrastive_loss needs f1, f2 (N, D) and same (N,); got {f1.shape}, '
        f'{f2.shape}, {jnp.shape(same)}')
  dtype = reductions.compute_dtype(f1, f2)
  squared = distances.squared_distances(f1.astype(dtype), f2.astype(dtype))
  distance = distances.safe_sqrt(squared)
  pull = 0.5 * squared
  push = 0.5 * jnp.square(jnp.maximum(margin - distance, 0.0))
  return jnp.mean(jnp.where(jnp.asarray(same, bool), pull, push))
