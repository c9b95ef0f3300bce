"""Plain float64 building blocks for the brute-force references of the tests.

Written with Python loops and ``math`` only, independently of facejax, so a
reference never shares a bug with the implementation it checks.
"""
import math

import jax
import numpy as np


def gaussian(seed, shape, scale=1.0):
  """Standard normal float32 samples (times ``scale``) from a seed."""
  rng = np.random.default_rng(seed)
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def assert_close(actual, expected, rtol=1e-5, atol=1e-6, err_msg=''):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected,
                             rtol=rtol, atol=atol, err_msg=err_msg)


def assert_finite(tree):
  for leaf in jax.tree_util.tree_leaves(tree):
    assert np.all(np.isfinite(np.asarray(leaf))), leaf


def squared_distance(u, v):
  """||u - v||^2, one coordinate at a time."""
  total = 0.0
  for k in range(len(u)):
    total += (float(u[k]) - float(v[k])) ** 2
  return total


def distance(u, v):
  return math.sqrt(squared_distance(u, v))


def acos(cosine):
  """arccos with the argument clipped to [-1, 1]."""
  return math.acos(min(1.0, max(-1.0, float(cosine))))


def cross_entropy(logits, labels):
  """Mean over rows of logsumexp(row) - row[label]."""
  total = 0.0
  for i, row in enumerate(logits):
    row = [float(z) for z in row]
    top = max(row)
    log_sum = top + math.log(sum(math.exp(z - top) for z in row))
    total += log_sum - row[int(labels[i])]
  return total / len(logits)
