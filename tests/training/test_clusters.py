"""k-means within each class (LMLE's clusters), against plain loops."""
import numpy as np
import pytest

from facejax.training import clusters


def blobs(seed=0, classes=5, per_class=3, size=10, dim=4):
  """Each class made of ``per_class`` tight, far-apart blobs."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, per_class, dim)) * 10
  features = centres[:, :, None, :] + 0.01 * rng.normal(
      size=(classes, per_class, size, dim))
  labels = np.repeat(np.arange(classes), per_class * size)
  blob = np.tile(np.repeat(np.arange(per_class), size), classes)
  return features.reshape(-1, dim), labels, blob


def test_recovers_planted_blobs():
  features, labels, blob = blobs()
  result = clusters.within_class_kmeans(features, labels, 3, seed=1)
  np.testing.assert_array_equal(result.assignments // 3, labels)
  for label in range(5):
    mine = labels == label
    pairs = set(zip(blob[mine], result.assignments[mine]))
    assert len(pairs) == 3  # a one-to-one map of blobs onto clusters
  assert (result.counts == 10).all()


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_result_is_a_lloyd_fixed_point(seed):
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(90, 3)).astype(np.float32)
  labels = rng.integers(0, 4, size=90)
  k = 3
  result = clusters.within_class_kmeans(features, labels, k, iterations=100,
                                        seed=seed, chunk_size=7)
  for i in range(90):  # nearest centroid of its own class
    own = range(labels[i] * k, labels[i] * k + k)
    distances = {c: np.sum((features[i] - result.centroids[c]) ** 2)
                 for c in own if result.counts[c]}
    assert result.assignments[i] in distances
    assert distances[result.assignments[i]] <= min(distances.values()) + 1e-5
  for c in range(4 * k):  # every centroid the mean of its members
    members = features[result.assignments == c]
    assert len(members) == result.counts[c]
    assert result.centroid_labels[c] == c // k
    if len(members):
      np.testing.assert_allclose(result.centroids[c], members.mean(0),
                                 rtol=1e-5, atol=1e-6)
    else:
      assert np.isnan(result.centroids[c]).all()


def test_small_classes_and_determinism():
  features, labels, _ = blobs(classes=2, per_class=1, size=2)
  result = clusters.within_class_kmeans(features, labels, 4, num_classes=3)
  # Two examples per class: one cluster each; class 2 has none.
  assert result.counts.tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
  centroids, centroid_labels = result.non_empty()
  assert centroids.shape == (4, 4) and centroid_labels.tolist() == [0, 0, 1, 1]
  features, labels, _ = blobs(seed=3, per_class=2)
  runs = [clusters.within_class_kmeans(features + 0.5 * np.random.default_rng(
      0).normal(size=features.shape), labels, 3, seed=(7, 100))
          for _ in range(2)]
  np.testing.assert_array_equal(runs[0].assignments, runs[1].assignments)


@pytest.mark.parametrize('change,message', [
    (dict(labels=np.array([0, 5])), r'labels must lie in \[0, 2\)'),
    (dict(features=np.array([[0.0], [np.nan]])), 'NaN'),
    (dict(features=np.zeros((3, 1))), 'features'),
    (dict(k=0), 'clusters_per_class'),
])
def test_bad_input(change, message):
  args = dict(features=np.zeros((2, 1)), labels=np.array([0, 1]), k=2)
  args.update(change)
  with pytest.raises(ValueError, match=message):
    clusters.within_class_kmeans(args['features'], args['labels'], args['k'],
                                 num_classes=2)
