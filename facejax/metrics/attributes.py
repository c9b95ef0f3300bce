"""Attribute classification metrics under class imbalance (numpy).

Conventions: ``predictions`` and ``targets`` are boolean (n, A) arrays, one
column per binary attribute, True for present. An attribute's positive rate
p is the fraction of its targets that are True and its imbalance level is
|p - 0.5|, as in the tables of LMLE (Huang, Li, Loy, Tang, "Learning Deep
Representation for Imbalanced Classification", CVPR 2016), which sorts
CelebA's 40 attributes from the most imbalanced (Bald, about 2% positive)
to the least and reports balanced accuracy.
"""
from typing import NamedTuple

import numpy as np


def _boolean_pair(predictions, targets, name):
  predictions, targets = np.asarray(predictions), np.asarray(targets)
  if predictions.dtype != bool or targets.dtype != bool:
    raise TypeError(f'{name} needs boolean predictions and targets, got '
                    f'{predictions.dtype} and {targets.dtype}')
  if predictions.ndim != 2 or predictions.shape != targets.shape:
    raise ValueError(f'{name} needs predictions and targets of one shape '
                     f'(n, num_attributes), got {predictions.shape} and '
                     f'{targets.shape}')
  if not len(targets):
    raise ValueError(f'{name} needs at least one example, got 0')
  return predictions, targets


def balanced_accuracy(predictions, targets):
  """Per-attribute balanced accuracy: the mean of the two class accuracies.

    BA = (TP / P + TN / N) / 2

  with P and N the numbers of positive and negative targets, TP the
  positives predicted positive and TN the negatives predicted negative.
  An attribute without positives (P = 0) scores TN / N alone and one without
  negatives (N = 0) TP / P alone: the accuracy on the class that exists,
  never NaN.

  Args:
    predictions, targets: bool (n, num_attributes), n >= 1.

  Returns:
    float64 (num_attributes,).
  """
  predictions, targets = _boolean_pair(predictions, targets,
                                       'balanced_accuracy')
  positives = targets.sum(axis=0)
  negatives = len(targets) - positives
  true_positives = (predictions & targets).sum(axis=0)
  true_negatives = (~predictions & ~targets).sum(axis=0)
  positive_recall = true_positives / np.maximum(positives, 1)
  negative_recall = true_negatives / np.maximum(negatives, 1)
  both = (positive_recall + negative_recall) / 2
  return np.where(positives == 0, negative_recall,
                  np.where(negatives == 0, positive_recall, both))


def accuracy(predictions, targets):
  """Per-attribute accuracy: mean(predictions == targets) over examples.

  Args:
    predictions, targets: bool (n, num_attributes), n >= 1.

  Returns:
    float64 (num_attributes,).
  """
  predictions, targets = _boolean_pair(predictions, targets, 'accuracy')
  return np.mean(predictions == targets, axis=0)


def lmle_knn_predict(query_embeddings, centroids, centroid_labels, k,
                     squared=False, chunk_size=1024):
  """LMLE's large-margin kNN rule (Huang et al., CVPR 2016, section 4).

  Each class's training embeddings are clustered; a query is classified
  against the cluster centroids m_i with labels y_i. With N(q) the k
  centroids nearest to the query q and D the Euclidean distance,

    y_q = argmax_{c in y(N(q))} ( min_{m_i in N(q), y_i != c} D(q, m_i)
                                 - max_{m_j in N(q), y_j == c} D(q, m_j) )

  over the classes c present among the neighbours: the class whose
  neighbour clusters lie inside a margin from the rest. When all k
  neighbours share one class the minimum is over no centroid (+infinity)
  and that class is predicted, as the paper does. Ties: the neighbours are
  the k smallest distances with equal distances ordered by centroid index,
  and equal margins go to the class with the nearer neighbour (so k = 1 is
  1-NN). Distances are computed as ||q||^2 - 2 q.m + ||m||^2 in float64, so
  "equal" is up to rounding.

  Args:
    query_embeddings: (n, D) queries.
    centroids: (C, D) cluster centroids.
    centroid_labels: (C,) integer class of each centroid.
    k: number of neighbours, 1 <= k <= C.
    squared: use the squared Euclidean distance for D (the distance of
      LMLE's loss) instead of the Euclidean one.
    chunk_size: queries handled at once; memory is O(chunk_size * C).

  Returns:
    (n,) predicted labels, of ``centroid_labels``' dtype.
  """
  queries = np.asarray(query_embeddings, np.float64)
  centroids = np.asarray(centroids, np.float64)
  labels = np.asarray(centroid_labels)
  if (queries.ndim != 2 or centroids.ndim != 2
      or queries.shape[1] != centroids.shape[1]
      or labels.shape != centroids.shape[:1]):
    raise ValueError(
        'lmle_knn_predict needs query_embeddings (n, D), centroids (C, D) '
        f'and centroid_labels (C,), got {queries.shape}, {centroids.shape} '
        f'and {labels.shape}')
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f'centroid_labels must be integers, got {labels.dtype}')
  if (isinstance(k, bool) or not isinstance(k, (int, np.integer))
      or not 1 <= k <= len(centroids)):
    raise ValueError(f'k must be an int in [1, {len(centroids)}] (the number '
                     f'of centroids), got {k!r}')
  if isinstance(chunk_size, bool) or not isinstance(
      chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f'chunk_size must be an int >= 1, got {chunk_size!r}')
  predictions = np.empty(len(queries), labels.dtype)
  centroid_norms = np.sum(np.square(centroids), axis=1)
  for start in range(0, len(queries), chunk_size):
    chunk = queries[start:start + chunk_size]
    distance = np.maximum(
        np.sum(np.square(chunk), axis=1)[:, None] - 2 * chunk @ centroids.T
        + centroid_norms[None, :], 0.0)
    if not squared:
      distance = np.sqrt(distance)
    neighbours = np.argsort(distance, axis=1, kind='stable')[:, :k]
    neighbour_distance = np.take_along_axis(distance, neighbours, axis=1)
    neighbour_labels = labels[neighbours]
    # Margin of the class of each neighbour position j: the distance to the
    # nearest neighbour of another class minus that to the farthest of its
    # own (positions (chunk, k, k): k is small).
    same = neighbour_labels[:, :, None] == neighbour_labels[:, None, :]
    rows = neighbour_distance[:, None, :]
    farthest_same = np.max(np.where(same, rows, -np.inf), axis=2)
    nearest_other = np.min(np.where(same, np.inf, rows), axis=2)
    margin = nearest_other - farthest_same
    # argmax takes the first maximum: the nearest position, and +inf
    # margins (one class only) win.
    best = np.argmax(margin, axis=1)
    predictions[start:start + chunk_size] = np.take_along_axis(
        neighbour_labels, best[:, None], axis=1)[:, 0]
  return predictions


class ImbalanceTable(NamedTuple):
  """Per-attribute values, most imbalanced attribute first.

  Attributes:
    names: attribute names in table order.
    positive_rates: float64 (A,) in table order.
    imbalance: |positive_rates - 0.5|, non-increasing.
    columns: dict column name -> float64 (A,) in table order.
    means: dict column name -> mean over all attributes.
  """
  names: list
  positive_rates: np.ndarray
  imbalance: np.ndarray
  columns: dict
  means: dict


def _imbalance_order(positive_rates):
  """Attribute indices by |rate - 0.5| descending, ties by index."""
  return np.argsort(-np.abs(positive_rates - 0.5), kind='stable')


def _rates(positive_rates, num_attributes):
  rates = np.asarray(positive_rates, np.float64)
  if rates.shape != (num_attributes,) or np.any(
      (rates < 0) | (rates > 1) | np.isnan(rates)):
    raise ValueError(f'positive_rates must be {num_attributes} values in '
                     f'[0, 1], got {positive_rates!r}')
  return rates


def imbalance_table(attribute_names, positive_rates, columns):
  """Orders per-attribute results by imbalance level, as LMLE's Table 1.

  Rows are sorted by |positive rate - 0.5| descending (ties keep the given
  order; rates 0.3 and 0.7 are not a tie in floating point); ``means`` are
  the plain means over all attributes (the paper's "Average" column).

  Args:
    attribute_names: A names.
    positive_rates: A positive rates in [0, 1] (e.g. the training set's).
    columns: dict column name (e.g. a method) -> A values (e.g. its
      :func:`balanced_accuracy`), in the order of ``attribute_names``.

  Returns:
    :class:`ImbalanceTable`.
  """
  names = list(attribute_names)
  rates = _rates(positive_rates, len(names))
  values = {}
  for column, column_values in columns.items():
    column_values = np.asarray(column_values, np.float64)
    if column_values.shape != (len(names),):
      raise ValueError(f'column {column!r} has shape {column_values.shape}, '
                       f'expected ({len(names)},): one value per attribute')
    values[column] = column_values
  order = _imbalance_order(rates)
  return ImbalanceTable(
      names=[names[k] for k in order], positive_rates=rates[order],
      imbalance=np.abs(rates[order] - 0.5),
      columns={column: v[order] for column, v in values.items()},
      means={column: float(np.mean(v)) for column, v in values.items()})


def format_table(table, style='markdown', digits=4):
  """Renders an :class:`ImbalanceTable`, one row per attribute plus "Mean".

  Args:
    table: :class:`ImbalanceTable`.
    style: 'markdown' (a GitHub pipe table) or 'plain' (aligned columns).
    digits: decimals of every number.

  Returns:
    The table as a string, without a trailing newline.
  """
  if style not in ('markdown', 'plain'):
    raise ValueError(f"style must be 'markdown' or 'plain', got {style!r}")
  header = ['Attribute', 'Positive rate', 'Imbalance', *table.columns]

  def number(value):
    return f'{value:.{digits}f}'

  rows = [[name, number(rate), number(level),
           *(number(v[k]) for v in table.columns.values())]
          for k, (name, rate, level) in enumerate(
              zip(table.names, table.positive_rates, table.imbalance))]
  rows.append(['Mean', '', '', *(number(v) for v in table.means.values())])
  if style == 'markdown':
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines)
  widths = [max(len(row[c]) for row in [header] + rows)
            for c in range(len(header))]
  return '\n'.join(
      '  '.join([row[0].ljust(widths[0])]
                + [cell.rjust(width) for cell, width in zip(row[1:],
                                                            widths[1:])])
      .rstrip() for row in [header] + rows)


def mean_over_most_imbalanced(values, positive_rates, count):
  """Mean of ``values`` over the ``count`` most imbalanced attributes.

  E.g. the mean balanced accuracy over the m attributes with the largest
  |positive rate - 0.5| (ties by attribute order, as :func:`imbalance_table`).

  Args:
    values: (A,) per-attribute values.
    positive_rates: (A,) positive rates in [0, 1].
    count: m, 1 <= m <= A.

  Returns:
    float.
  """
  values = np.asarray(values, np.float64)
  if values.ndim != 1:
    raise ValueError(f'values must be (num_attributes,), got {values.shape}')
  rates = _rates(positive_rates, len(values))
  if isinstance(count, bool) or not isinstance(
      count, (int, np.integer)) or not 1 <= count <= len(values):
    raise ValueError(f'count must be an int in [1, {len(values)}], got '
                     f'{count!r}')
  return float(np.mean(values[_imbalance_order(rates)[:count]]))
