"""A-Softmax (Liu, Wen, Yu, Li, Raj, Song, CVPR 2017: SphereFace)."""
import math

import jax
import jax.numpy as jnp

from facejax.losses import distances
from facejax.losses import margin as margin_lib
from facejax.losses import reductions

__all__ = ['sphereface_lambda', 'sphereface_loss', 'sphereface_psi']


def _chebyshev_cosine_multiple(cosine, m):
  """cos(m * theta) as the Chebyshev polynomial T_m(cos theta).

  A polynomial in cos(theta): exact and smooth at cos(theta) = +-1, where
  going through arccos would have an infinite derivative.
  """
  previous, current = jnp.ones_like(cosine), cosine
  if m == 0:
    return previous
  for _ in range(m - 1):
    previous, current = current, 2.0 * cosine * current - previous
  return current


def sphereface_psi(cosine, m=4):
  """psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m].

  Monotonically decreasing on [0, pi], k = 0..m-1. The piece index k does not
  depend on the parameters, so it carries no gradient.
  """
  cosine = jnp.clip(cosine.astype(reductions.compute_dtype(cosine)), -1.0,
                    1.0)
  theta = jax.lax.stop_gradient(margin_lib.angle_from_cosine(cosine))
  k = jnp.clip(jnp.floor(m * theta / math.pi), 0, m - 1)
  sign = 1.0 - 2.0 * jnp.mod(k, 2.0)
  return sign * _chebyshev_cosine_multiple(cosine, m) - 2.0 * k


def sphereface_lambda(step, base=1000.0, gamma=0.12, power=1.0,
                      lambda_min=5.0):
  """The SphereFace annealing schedule for ``lam``.

    lambda(step) = max(lambda_min, base * (1 + gamma * step)^(-power))

  The defaults are those of the released SphereFace-20 training (which ends
  at lambda_min = 5). Pure: pass the step, get lambda.
  """
  return jnp.maximum(lambda_min, base * (1.0 + gamma * step) ** (-power))


def sphereface_loss(embeddings, weights, labels, m=4, lam=5.0):
  """A-Softmax loss with the annealing blend.

    f_{y_i} = ||x_i|| (lam cos(theta_{y_i}) + psi(theta_{y_i})) / (1 + lam)
    f_j     = ||x_i|| cos(theta_j),   j != y_i
    L = mean_i -log softmax(f_i)[y_i]

  Class weights W (D, C) are normalised (columns), the feature norm ||x_i|| is
  kept, there is no bias. lam = 0 is the pure A-Softmax of the paper;
  training anneals lam from large to small (:func:`sphereface_lambda`).

  Args:
    embeddings: (N, D) features x.
    weights: (D, C) class weights W.
    labels: (N,) integer identities in [0, C).
    m: integer angular margin (the paper uses 4).
    lam: the blending weight lambda >= 0.

  Returns:
    Scalar float32 (or wider) mean cross-entropy.
  """
  if int(m) != m or m < 1:
    raise ValueError(f'sphereface_loss needs an integer margin m >= 1, got {m}')

  def blend(target_cosine):
    return (lam * target_cosine + sphereface_psi(target_cosine, int(m))) / (
        1.0 + lam)

  def feature_norm(embeddings, dtype):
    return distances.safe_norm(embeddings.astype(dtype))[:, None]
  return margin_lib.target_rule_softmax(embeddings, weights, labels, blend,
                                        feature_norm)
