"""k-means within each class: LMLE's clusters (Huang et al., CVPR 2016).

LMLE splits every class into clusters by k-means on the embeddings of its
examples, and alternates: train on quintuplets drawn from the current
clusters for a while, then re-cluster with the model being trained
(the paper's section 3.2). The kNN classifier of section 4 searches the
clusters' centroids.

Conventions:

* class c owns the global cluster ids ``c * k .. c * k + k - 1`` (k =
  ``clusters_per_class``), so a cluster id alone tells its class, and
  :func:`facejax.losses.lmle.quintuplet_indices` may take them directly;
* a class with fewer than k examples gets one cluster per example, the
  remaining ids stay empty (``counts`` 0, centroid NaN);
* initialisation is k-means++ (Arthur and Vassilvitskii, 2007) drawn from
  ``numpy.random.default_rng(seed)``; Lloyd iterations stop after
  ``iterations`` rounds or when no assignment changes. An empty cluster keeps
  its previous centroid. The result is a pure function of the features,
  labels, k, iterations and seed.

Everything is vectorised over classes (numpy), with memory bounded by
``chunk_size`` examples at a time.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Clusters:
  """The clusters of one clustering.

  Attributes:
    assignments: (N,) int32 global cluster id of every example.
    centroids: (C * k, D) float32 centroids (NaN for empty clusters).
    centroid_labels: (C * k,) int32 class of each cluster.
    counts: (C * k,) int64 examples per cluster.
    clusters_per_class: k.
  """
  assignments: np.ndarray
  centroids: np.ndarray
  centroid_labels: np.ndarray
  counts: np.ndarray
  clusters_per_class: int

  def non_empty(self):
    """(centroids, centroid_labels) of the clusters that have examples."""
    keep = self.counts > 0
    return self.centroids[keep], self.centroid_labels[keep]


def _squared_distances_to_own_centroids(features, labels, centroids, k,
                                        chunk_size):
  """(N, k): squared distance of each example to its class's k centroids."""
  out = np.empty((len(features), k), np.float32)
  per_class = centroids.reshape(-1, k, centroids.shape[1])
  for start in range(0, len(features), chunk_size):
    rows = slice(start, start + chunk_size)
    diff = features[rows, None, :] - per_class[labels[rows]]
    out[rows] = np.einsum('nkd,nkd->nk', diff, diff)
  return out


def _kmeans_plus_plus(features, labels, k, num_classes, rng):
  """k-means++ centroids per class: (C * k, D), NaN where a class runs out."""
  dim = features.shape[1]
  centroids = np.full((num_classes * k, dim), np.nan, np.float32)
  order = np.argsort(labels, kind='stable')
  classes, first, counts = np.unique(labels[order], return_index=True,
                                     return_counts=True)
  # The first centre: a uniformly random member of each class.
  picks = order[first + (rng.random(len(classes)) * counts).astype(np.int64)]
  centroids[classes * k] = features[picks]
  chosen = np.zeros(len(features), bool)
  chosen[picks] = True
  nearest = np.full(len(features), np.inf, np.float32)
  for j in range(1, k):
    newest = centroids[labels * k + j - 1]  # NaN where a class ran out
    nearest = np.fmin(nearest, np.einsum('nd,nd->n', features - newest,
                                         features - newest))
    # Each class draws one example with probability proportional to its
    # squared distance to the nearest centre so far: an exponential race,
    # the smallest E / d wins. Chosen examples never win again.
    with np.errstate(divide='ignore'):
      race = np.where(chosen, np.inf, rng.exponential(size=len(features))
                      / np.maximum(nearest, 1e-30))
    winners = np.lexsort((race, labels))[first]  # by class, then race
    drawn = (counts > j) & np.isfinite(race[winners])
    centroids[classes[drawn] * k + j] = features[winners[drawn]]
    chosen[winners[drawn]] = True
  return centroids


def within_class_kmeans(features, labels, clusters_per_class, *,
                        num_classes=None, iterations=20, seed=0,
                        chunk_size=4096):
  """k-means with ``clusters_per_class`` clusters inside every class.

  Minimises, separately for every class c, sum_{i: y_i = c} ||x_i -
  mu_{a_i}||^2 over the assignments a_i among c's clusters and the
  centroids mu (Lloyd's algorithm from a k-means++ start).

  Args:
    features: (N, D) float embeddings x_i.
    labels: (N,) integer classes y_i in [0, num_classes).
    clusters_per_class: k >= 1.
    num_classes: C (default ``max(labels) + 1``).
    iterations: at most this many Lloyd rounds.
    seed: the k-means++ draw.
    chunk_size: examples per distance block.

  Returns:
    :class:`Clusters`.
  """
  features = np.asarray(features, np.float32)
  labels = np.asarray(labels)
  if features.ndim != 2 or labels.shape != features.shape[:1]:
    raise ValueError('within_class_kmeans needs features (N, D) and labels '
                     f'(N,), got {features.shape} and {labels.shape}')
  if clusters_per_class < 1:
    raise ValueError(f'clusters_per_class must be >= 1, got '
                     f'{clusters_per_class}')
  if not np.all(np.isfinite(features)):
    raise ValueError('within_class_kmeans: features contain NaN or inf')
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels must lie in [0, {num_classes}), got '
                     f'[{labels.min()}, {labels.max()}]')
  labels = labels.astype(np.int64)
  k = clusters_per_class
  rng = np.random.default_rng(seed)
  centroids = _kmeans_plus_plus(features, labels, k, num_classes, rng)
  assignments = None
  for _ in range(max(iterations, 1)):
    distance = _squared_distances_to_own_centroids(
        features, labels, centroids, k, chunk_size)
    local = np.argmin(np.where(np.isnan(distance), np.inf, distance), axis=1)
    new_assignments = labels * k + local
    if assignments is not None and np.array_equal(new_assignments,
                                                  assignments):
      break
    assignments = new_assignments
    counts = np.bincount(assignments, minlength=num_classes * k)
    sums = np.zeros(centroids.shape, np.float64)
    np.add.at(sums, assignments, features)
    filled = counts > 0
    centroids[filled] = (sums[filled] / counts[filled, None]).astype(
        np.float32)
  counts = np.bincount(assignments, minlength=num_classes * k)
  centroids[counts == 0] = np.nan
  return Clusters(
      assignments=assignments.astype(np.int32), centroids=centroids,
      centroid_labels=np.repeat(np.arange(num_classes, dtype=np.int32), k),
      counts=counts, clusters_per_class=k)
