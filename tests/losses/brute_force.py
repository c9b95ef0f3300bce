"""Plain float64 building blocks for the brute-force references of the tests.

Written with Python loops and ``math`` only, independently of facejax, so a
reference never shares a bug with the implementation it checks.
"""
import math

import jax
import numpy as np

# The default tolerances of a float32 result against a float64 reference.
RTOL = 1e-5
ATOL = 1e-6


def gaussian(seed, shape, scale=1.0):
  """Standard normal float32 samples (times ``scale``) from a seed."""
  rng = np.random.default_rng(seed)
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, err_msg=''):
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


def cosines(embeddings, weights):
  """cos(theta_ij) between row i of the embeddings and column j of W."""
  x = np.asarray(embeddings, np.float64)
  w = np.asarray(weights, np.float64)
  num_examples, dim = x.shape
  num_classes = w.shape[1]
  result = np.zeros((num_examples, num_classes))
  for i in range(num_examples):
    x_norm = math.sqrt(sum(x[i, k] ** 2 for k in range(dim)))
    for j in range(num_classes):
      w_norm = math.sqrt(sum(w[k, j] ** 2 for k in range(dim)))
      dot = sum(x[i, k] * w[k, j] for k in range(dim))
      result[i, j] = dot / (x_norm * w_norm)
  return result


def cross_entropy(logits, labels):
  """Mean over rows of logsumexp(row) - row[label]."""
  total = 0.0
  for i, row in enumerate(logits):
    row = [float(z) for z in row]
    top = max(row)
    log_sum = top + math.log(sum(math.exp(z - top) for z in row))
    total += log_sum - row[int(labels[i])]
  return total / len(logits)


def center_update(features, labels, centers, alpha=0.5):
  """Wen et al.'s centre update, one class at a time.

  c_j - alpha sum_{i: y_i = j} (c_j - x_i) / (1 + n_j) for every class j that
  has examples in the batch; the other centres, and examples whose label is
  no class, are left as they are.
  """
  features = np.asarray(features, np.float64)
  new_centers = np.array(centers, np.float64)
  for j in range(new_centers.shape[0]):
    members = [i for i in range(len(labels)) if int(labels[i]) == j]
    if not members:
      continue
    delta = np.zeros(new_centers.shape[1])
    for i in members:
      delta += new_centers[j] - features[i]
    delta /= 1 + len(members)
    new_centers[j] = new_centers[j] - alpha * delta
  return new_centers


def central_differences(fn, *points, step=1e-6):
  """The gradient of fn(*points) by central differences, in float64.

  Args:
    fn: a scalar function of the arrays ``points``.
    *points: the arrays to differentiate with respect to, all of them.
    step: the step of each coordinate, up and down.

  Returns:
    One float64 array per point, of its shape: d fn / d point, one coordinate
    at a time.
  """
  points = [np.asarray(point, np.float64) for point in points]
  gradients = []
  for which, point in enumerate(points):
    gradient = np.zeros_like(point)
    for index in np.ndindex(point.shape):
      up, down = list(points), list(points)
      up[which], down[which] = point.copy(), point.copy()
      up[which][index] += step
      down[which][index] -= step
      gradient[index] = (fn(*up) - fn(*down)) / (2 * step)
    gradients.append(gradient)
  return gradients
