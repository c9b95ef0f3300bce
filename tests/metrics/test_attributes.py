"""Tests of facejax.metrics.attributes against plain-loop references.

The references below count, sort and compare one element at a time with
Python lists and ``math``; lmle_knn_predict's is a direct transcription of
LMLE's rule (Huang et al., CVPR 2016, section 4). Random embeddings are
Gaussian, so no two distances tie except where a test builds the tie.
"""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from facejax.metrics import attributes


# ----------------------------------------------------------------------------
# Brute-force references.
# ----------------------------------------------------------------------------


def ref_balanced_accuracy(predictions, targets):
  result = []
  for a in range(len(targets[0])):
    tp = tn = positives = negatives = 0
    for i in range(len(targets)):
      if targets[i][a]:
        positives += 1
        tp += bool(predictions[i][a])
      else:
        negatives += 1
        tn += not predictions[i][a]
    if positives == 0:
      result.append(tn / negatives)
    elif negatives == 0:
      result.append(tp / positives)
    else:
      result.append((tp / positives + tn / negatives) / 2)
  return result


def ref_accuracy(predictions, targets):
  return [sum(bool(predictions[i][a]) == bool(targets[i][a])
              for i in range(len(targets))) / len(targets)
          for a in range(len(targets[0]))]


def ref_lmle_knn(queries, centroids, labels, k, squared=False):
  """The rule, one query at a time."""
  predictions = []
  for query in queries:
    distance = []
    for centroid in centroids:
      total = sum((float(q) - float(c)) ** 2 for q, c in zip(query, centroid))
      distance.append(total if squared else math.sqrt(total))
    neighbours = sorted(range(len(centroids)),
                        key=lambda i: (distance[i], i))[:k]
    classes = []
    for i in neighbours:
      if labels[i] not in classes:
        classes.append(labels[i])
    best_class, best_margin = None, -math.inf
    for c in classes:  # nearest first: equal margins keep the nearer class
      own = [distance[i] for i in neighbours if labels[i] == c]
      others = [distance[i] for i in neighbours if labels[i] != c]
      margin = (min(others) if others else math.inf) - max(own)
      if margin > best_margin:
        best_class, best_margin = c, margin
    predictions.append(best_class)
  return predictions


def random_booleans(seed, shape, rate):
  return np.random.default_rng(seed).random(shape) < rate


# ----------------------------------------------------------------------------
# balanced_accuracy and accuracy.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_balanced_accuracy_matches_loops(seed):
  targets = random_booleans(seed, (50, 6), [0.02, 0.1, 0.3, 0.5, 0.7, 0.95])
  predictions = random_booleans(seed + 100, (50, 6), 0.4)
  got = attributes.balanced_accuracy(predictions, targets)
  assert got.shape == (6,) and got.dtype == np.float64
  np.testing.assert_allclose(got, ref_balanced_accuracy(predictions, targets),
                             rtol=1e-12)


def test_balanced_accuracy_of_a_one_class_attribute_is_its_accuracy():
  # Attribute 0 never present, attribute 1 always present.
  targets = np.array([[False, True]] * 4)
  predictions = np.array([[False, True], [True, True], [False, False],
                          [False, True]])
  np.testing.assert_allclose(
      attributes.balanced_accuracy(predictions, targets), [0.75, 0.75])
  np.testing.assert_allclose(ref_balanced_accuracy(predictions, targets),
                             [0.75, 0.75])


def test_balanced_accuracy_is_a_half_for_a_constant_prediction():
  targets = random_booleans(3, (40, 5), 0.1)
  targets[0] = True
  targets[1] = False
  for constant in (True, False):
    predictions = np.full(targets.shape, constant)
    np.testing.assert_allclose(
        attributes.balanced_accuracy(predictions, targets), 0.5)


def test_accuracy_matches_loops():
  targets = random_booleans(4, (30, 7), 0.3)
  predictions = random_booleans(5, (30, 7), 0.5)
  np.testing.assert_allclose(attributes.accuracy(predictions, targets),
                             ref_accuracy(predictions, targets), rtol=1e-12)
  # JAX arrays are accepted.
  np.testing.assert_allclose(
      attributes.accuracy(jnp.asarray(predictions), jnp.asarray(targets)),
      ref_accuracy(predictions, targets), rtol=1e-12)


@pytest.mark.parametrize('metric', [attributes.balanced_accuracy,
                                    attributes.accuracy])
def test_bad_inputs_are_named(metric):
  good = np.zeros((3, 2), bool)
  with pytest.raises(TypeError, match='boolean .* got int64 and bool'):
    metric(np.zeros((3, 2), np.int64), good)
  with pytest.raises(ValueError, match=r'one shape .* \(3, 2\) and \(3, 3\)'):
    metric(good, np.zeros((3, 3), bool))
  with pytest.raises(ValueError, match=r'\(3,\) and \(3,\)'):
    metric(good[:, 0], good[:, 0])
  with pytest.raises(ValueError, match='at least one example'):
    metric(good[:0], good[:0])


# ----------------------------------------------------------------------------
# lmle_knn_predict.
# ----------------------------------------------------------------------------


def random_problem(seed, num_queries=40, num_centroids=12, dim=3,
                   num_classes=3):
  rng = np.random.default_rng(seed)
  queries = rng.standard_normal((num_queries, dim))
  centroids = rng.standard_normal((num_centroids, dim))
  labels = rng.integers(0, num_classes, num_centroids)
  return queries, centroids, labels


@pytest.mark.parametrize('k', [1, 2, 3, 5, 12])
@pytest.mark.parametrize('squared', [False, True])
def test_lmle_knn_matches_the_rule(k, squared):
  queries, centroids, labels = random_problem(k)
  got = attributes.lmle_knn_predict(queries, centroids, labels, k,
                                    squared=squared)
  assert got.shape == (len(queries),) and got.dtype == labels.dtype
  assert got.tolist() == ref_lmle_knn(queries, centroids, labels.tolist(), k,
                                      squared)


def test_lmle_knn_does_not_depend_on_the_chunk_size():
  queries, centroids, labels = random_problem(7, num_queries=23)
  expected = ref_lmle_knn(queries, centroids, labels.tolist(), 4)
  for chunk_size in (1, 5, 23, 1000):
    assert attributes.lmle_knn_predict(
        queries, centroids, labels, 4, chunk_size=chunk_size).tolist() == (
            expected)


def test_lmle_knn_with_k_1_is_nearest_centroid():
  queries, centroids, labels = random_problem(8)
  nearest = [labels[min(range(len(centroids)), key=lambda i: sum(
      (q - c) ** 2 for q, c in zip(query, centroids[i])))]
             for query in queries]
  got = attributes.lmle_knn_predict(queries, centroids, labels, 1)
  assert got.tolist() == [int(label) for label in nearest]


def test_lmle_knn_single_class_neighbourhood_predicts_that_class():
  centroids = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
  labels = np.array([2, 2, 2, 5])
  queries = np.array([[0.2, 0.3], [9.0, 9.5]])
  # The first query's 3 neighbours are all of class 2; the second's are one
  # of class 5 at 1.1 and two of class 2 beyond 12: class 5's margin wins.
  got = attributes.lmle_knn_predict(queries, centroids, labels, 3)
  assert got.tolist() == [2, 5]
  assert got.tolist() == ref_lmle_knn(queries, centroids, labels.tolist(), 3)
  # k = C: every centroid is a neighbour.
  assert attributes.lmle_knn_predict(queries, centroids, labels,
                                     4).tolist() == [2, 5]
  one_class = np.array([4, 4, 4, 4])
  assert attributes.lmle_knn_predict(queries, centroids, one_class,
                                     4).tolist() == [4, 4]


def test_lmle_knn_margin_differs_from_majority_and_nearest():
  # Neighbours on a line at distances 1 (class 0), 2 and 2.5 (class 1): the
  # majority says 1, the margins say 0 (2 - 1 = 1 against 1 - 2.5 = -1.5).
  centroids = np.array([[1.0], [2.0], [2.5], [40.0]])
  query = np.zeros((1, 1))
  assert attributes.lmle_knn_predict(query, centroids, np.array([0, 1, 1, 0]),
                                     3).tolist() == [0]
  # Distances 1 (class 0), 1.5 (class 1), 5 (class 0): the nearest is 0, the
  # margins say 1 (1 - 1.5 = -0.5 against 1.5 - 5 = -3.5).
  centroids = np.array([[1.0], [-1.5], [5.0], [40.0]])
  labels = np.array([0, 1, 0, 1])
  assert attributes.lmle_knn_predict(query, centroids, labels,
                                     3).tolist() == [1]
  assert ref_lmle_knn(query, centroids, labels.tolist(), 3) == [1]


def test_lmle_knn_ties():
  query = np.zeros((1, 2))
  centroids = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0]])
  # Equal distances: the lower centroid index is the nearer neighbour.
  for labels in ([7, 3, 3], [3, 7, 7]):
    labels = np.array(labels)
    assert attributes.lmle_knn_predict(query, centroids, labels,
                                       1).tolist() == [labels[0]]
    # k = 2: both margins are 1 - 1 = 0; the nearer neighbour's class wins.
    assert attributes.lmle_knn_predict(query, centroids, labels,
                                       2).tolist() == [labels[0]]
    assert ref_lmle_knn(query, centroids, labels.tolist(), 2) == [labels[0]]


def test_lmle_knn_accepts_jax_arrays():
  queries, centroids, labels = random_problem(9)
  got = attributes.lmle_knn_predict(jnp.asarray(queries, jnp.float32),
                                    jnp.asarray(centroids, jnp.float32),
                                    jnp.asarray(labels, jnp.int32), 3)
  assert got.dtype == np.int32
  assert got.tolist() == ref_lmle_knn(queries.astype(np.float32),
                                      centroids.astype(np.float32),
                                      labels.tolist(), 3)


@pytest.mark.parametrize('change, error, message', [
    (dict(k=0), ValueError, r'k must be an int in \[1, 12\]'),
    (dict(k=13), ValueError, r'k must be an int in \[1, 12\] .*, got 13'),
    (dict(k=2.0), ValueError, 'k must be an int'),
    (dict(centroid_labels=np.zeros(12)), TypeError,
     'centroid_labels must be integers, got float64'),
    (dict(centroid_labels=np.zeros(11, int)), ValueError,
     r'centroid_labels \(C,\), got \(40, 3\), \(12, 3\) and \(11,\)'),
    (dict(centroids=np.zeros((12, 4))), ValueError, r'\(12, 4\)'),
    (dict(query_embeddings=np.zeros(3)), ValueError, r'got \(3,\)'),
    (dict(chunk_size=0), ValueError, 'chunk_size must be an int >= 1'),
])
def test_lmle_knn_checks_its_inputs(change, error, message):
  queries, centroids, labels = random_problem(0)
  arguments = dict(query_embeddings=queries, centroids=centroids,
                   centroid_labels=labels, k=3)
  arguments.update(change)
  with pytest.raises(error, match=message):
    attributes.lmle_knn_predict(**arguments)


# ----------------------------------------------------------------------------
# Imbalance tables.
# ----------------------------------------------------------------------------

NAMES = ['Smiling', 'Bald', 'Young', 'Eyeglasses', 'Male', 'Mustache']
RATES = [0.48, 0.02, 0.77, 0.06, 0.42, 0.04]
BALANCED = [0.92, 0.80, 0.86, 0.98, 0.97, 0.75]
PLAIN = [0.93, 0.98, 0.88, 0.99, 0.98, 0.96]


def test_imbalance_table_orders_by_imbalance_level():
  table = attributes.imbalance_table(NAMES, RATES, {'balanced': BALANCED,
                                                    'accuracy': PLAIN})
  # Loop reference: repeatedly take the most imbalanced remaining attribute.
  remaining, order = list(range(len(NAMES))), []
  while remaining:
    best = remaining[0]
    for a in remaining:
      if abs(RATES[a] - 0.5) > abs(RATES[best] - 0.5):
        best = a
    order.append(best)
    remaining.remove(best)
  assert table.names == [NAMES[a] for a in order]
  assert table.names == ['Bald', 'Mustache', 'Eyeglasses', 'Young', 'Male',
                         'Smiling']
  np.testing.assert_allclose(table.positive_rates, [RATES[a] for a in order])
  np.testing.assert_allclose(table.imbalance,
                             [abs(RATES[a] - 0.5) for a in order])
  np.testing.assert_allclose(table.columns['balanced'],
                             [BALANCED[a] for a in order])
  np.testing.assert_allclose(table.columns['accuracy'],
                             [PLAIN[a] for a in order])
  assert table.means['balanced'] == pytest.approx(sum(BALANCED) / 6)
  assert table.means['accuracy'] == pytest.approx(sum(PLAIN) / 6)
  assert list(table.columns) == ['balanced', 'accuracy']


def test_imbalance_table_keeps_the_given_order_on_ties():
  table = attributes.imbalance_table(['a', 'b', 'c'], [0.75, 0.1, 0.25],
                                     {'x': [1, 2, 3]})
  assert table.names == ['b', 'a', 'c']


def test_imbalance_table_checks_its_inputs():
  with pytest.raises(ValueError, match=r"column 'x' has shape \(2,\)"):
    attributes.imbalance_table(['a', 'b', 'c'], [0.1, 0.2, 0.3],
                               {'x': [1, 2]})
  with pytest.raises(ValueError, match='positive_rates must be 3 values'):
    attributes.imbalance_table(['a', 'b', 'c'], [0.1, 0.2], {})
  with pytest.raises(ValueError, match=r'in \[0, 1\]'):
    attributes.imbalance_table(['a', 'b'], [0.1, 1.2], {})


def test_format_table_markdown():
  table = attributes.imbalance_table(NAMES, RATES, {'balanced': BALANCED})
  lines = attributes.format_table(table, digits=2).split('\n')
  assert lines[0] == '| Attribute | Positive rate | Imbalance | balanced |'
  assert lines[1] == '|---|---:|---:|---:|'
  assert lines[2] == '| Bald | 0.02 | 0.48 | 0.80 |'
  assert lines[-1] == f'| Mean |  |  | {sum(BALANCED) / 6:.2f} |'
  assert len(lines) == 2 + len(NAMES) + 1


def test_format_table_plain():
  table = attributes.imbalance_table(NAMES, RATES, {'balanced': BALANCED})
  lines = attributes.format_table(table, style='plain', digits=3).split('\n')
  assert lines[0].split() == ['Attribute', 'Positive', 'rate', 'Imbalance',
                              'balanced']
  assert lines[1].split() == ['Bald', '0.020', '0.480', '0.800']
  assert lines[-1].split() == ['Mean', f'{sum(BALANCED) / 6:.3f}']
  # Right-aligned numbers end in one column.
  assert len({len(line) for line in lines[:-1]}) == 1
  with pytest.raises(ValueError, match="style must be 'markdown' or 'plain'"):
    attributes.format_table(table, style='latex')


@pytest.mark.parametrize('count', [1, 2, 3, 6])
def test_mean_over_most_imbalanced(count):
  by_imbalance = sorted(range(len(NAMES)),
                        key=lambda a: (-abs(RATES[a] - 0.5), a))
  expected = sum(BALANCED[a] for a in by_imbalance[:count]) / count
  assert attributes.mean_over_most_imbalanced(
      BALANCED, RATES, count) == pytest.approx(expected)


def test_mean_over_most_imbalanced_checks_count():
  with pytest.raises(ValueError, match=r'count must be an int in \[1, 6\]'):
    attributes.mean_over_most_imbalanced(BALANCED, RATES, 0)
  with pytest.raises(ValueError, match='positive_rates must be 6 values'):
    attributes.mean_over_most_imbalanced(BALANCED, RATES[:5], 2)
