"""Distances and normalisation with finite gradients everywhere.

Every distance-based loss in facejax goes through these helpers, so that two
embeddings that coincide (distance 0) or a zero vector never produce a NaN
gradient. The trick is the "double where": the square root is only ever
evaluated (and differentiated) at arguments above ``eps``; below it the value
is 0 and the gradient is 0, which is a valid subgradient of the norm at 0.

Conventions: the last axis is the feature axis; batches lead.
"""
import math

import jax
import jax.numpy as jnp

__all__ = [
    'l2_normalize', 'pairwise_distances', 'pairwise_squared_distances',
    'safe_norm', 'safe_sqrt', 'squared_distances', 'SQUARED_DISTANCE_EPS',
]

# Squared distances below this are treated as exactly zero. It is far below any
# distance a face embedding meets and far above float32 round-off of 0.
SQUARED_DISTANCE_EPS = 1e-12

# Gram-expansion distances within _ROUNDOFF_FACTOR * sqrt(d) * eps *
# (||x||^2 + ||y||^2) of zero are round-off (measured: identical rows come out
# at up to about 0.4 * sqrt(d) * eps * (...) in float32 on CPU; 2 leaves room
# for other summation orders).
_ROUNDOFF_FACTOR = 2.0


def safe_sqrt(x, eps=SQUARED_DISTANCE_EPS):
  """sqrt(x) for x >= 0 with value 0 and gradient 0 where x <= eps."""
  positive = x > eps
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def safe_norm(x, axis=-1, keepdims=False, eps=SQUARED_DISTANCE_EPS):
  """Euclidean norm along ``axis`` whose gradient is 0 (not NaN) at x = 0."""
  return safe_sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims), eps)


def l2_normalize(x, axis=-1, eps=1e-12):
  """x / max(||x||, eps) along ``axis``; the zero vector maps to zero."""
  norm = safe_norm(x, axis=axis, keepdims=True)
  return x / jnp.maximum(norm, eps)


def squared_distances(x, y):
  """Row-wise ||x_i - y_i||^2 for two (n, d) arrays (computed by differences)."""
  return jnp.sum(jnp.square(x - y), axis=-1)


def pairwise_squared_distances(x, y=None):
  """D2[i, j] = ||x_i - y_j||^2 for x of shape (n, d) and y of shape (m, d).

  Computed by the Gram expansion ||x||^2 + ||y||^2 - 2 x.y at full matmul
  precision: O(n*m) memory instead of O(n*m*d) for differences. The
  expansion cannot resolve a squared distance smaller than its own round-off,
  about sqrt(d) * eps * (||x||^2 + ||y||^2), where two identical rows would
  come out at a few ulps instead of 0; entries within twice that bound are
  therefore returned as exactly 0 (with zero gradient), so duplicates are at
  distance 0. With ``y=None`` the distances are within ``x``.
  """
  self_distances = y is None
  y = x if self_distances else y
  if x.ndim != 2 or y.ndim != 2 or x.shape[-1] != y.shape[-1]:
    raise ValueError(
        f'pairwise distances need (n, d) and (m, d) arrays, got {x.shape} and '
        f'{y.shape}')
  gram = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
  x_sq = jnp.sum(jnp.square(x), axis=-1)
  y_sq = x_sq if self_distances else jnp.sum(jnp.square(y), axis=-1)
  norms = x_sq[:, None] + y_sq[None, :]
  distances = norms - 2.0 * gram
  roundoff = (_ROUNDOFF_FACTOR * math.sqrt(x.shape[-1])
              * jnp.finfo(distances.dtype).eps * norms)
  distances = jnp.where(distances > roundoff, distances, 0.0)
  if self_distances:
    distances = jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, distances)
  return distances


def pairwise_distances(x, y=None, squared=False):
  """Euclidean (or squared Euclidean) distance matrix; finite gradients at 0."""
  distances = pairwise_squared_distances(x, y)
  return distances if squared else safe_sqrt(distances)
