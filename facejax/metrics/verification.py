"""Face verification metrics on pair scores: k-fold accuracy, VAL@FAR, ROC.

Conventions shared by every function here:
  * ``scores`` is (N,) finite floats, one per pair; ``issame`` is (N,)
    booleans (or 0/1), True when the two faces are of one identity.
  * ``higher_is_same=True``: scores are similarities (cosine) and a pair is
    predicted "same" when ``score > threshold`` (strictly, as facenet's and
    insightface's ``dist < threshold``). ``higher_is_same=False``: scores
    are distances (Euclidean) and a pair is predicted "same" when
    ``distance < threshold``. Internally distances are negated into
    similarities, so a distance d and the similarity -d give identical
    decisions and accuracies, and thresholds of opposite sign.
  * A threshold is chosen on training pairs among every achievable
    classification of them: "same iff similarity >= u" for each distinct
    training similarity u, plus "none same". The chosen classification is
    turned into a threshold halfway across the gap it splits: the midpoint
    of u and the next lower distinct training similarity, -inf when u is the
    lowest (everything same) and +inf for "none same". Should the midpoint
    round onto u (adjacent floats), the lower similarity itself is used, so
    the threshold always reproduces the chosen classification of the
    training pairs. Selection is exact and O(n log n) (a sort and
    cumulative sums).
  * Accuracy tie-break: among equally accurate classifications the one that
    calls the most training pairs "same" (the lowest similarity threshold,
    the largest distance threshold) wins: the choice facejax's ten-fold
    accuracy (:func:`ten_fold_accuracy`) has always made, so earlier
    figures stand.
  * VAL@FAR (FaceNet, Schroff et al. 2015):
      VAL(t) = |TA(t)| / |P_same|,   FAR(t) = |FA(t)| / |P_diff|
    with TA the same pairs and FA the different pairs predicted "same". For
    each test fold the threshold is the most lenient one (the lowest
    similarity, the largest distance) whose FAR on the other folds is
    <= ``far_target``: exact on the step function, no interpolation, so the
    training FAR never exceeds the target. VAL and FAR are then measured on
    the test fold.
  * Folds: ``folds`` gives each pair's fold id (any integers, e.g. YTF's
    split numbers); without it the N pairs form ``n_folds`` consecutive
    blocks as in LFW's pairs.txt (pair i in fold i * n_folds // N). Each
    fold is tested once, with the threshold chosen on all the others;
    per-fold results are listed in increasing fold id.
"""
import numpy as np


def _check_pairs(scores, issame, name):
  """(float64 scores, bool issame), both (N,), or a ValueError."""
  scores = np.asarray(scores)
  issame = np.asarray(issame)
  if scores.shape != issame.shape or scores.ndim != 1:
    raise ValueError(f'{name} needs scores and issame of one shape (N,), got '
                     f'{scores.shape} and {issame.shape}')
  if not len(scores):
    raise ValueError(f'{name} needs at least one pair, got 0')
  if scores.dtype == bool or not np.issubdtype(scores.dtype, np.number):
    raise ValueError(f'{name} needs numeric scores, got {scores.dtype}')
  scores = scores.astype(np.float64)
  if not np.all(np.isfinite(scores)):
    bad = np.flatnonzero(~np.isfinite(scores))
    raise ValueError(f'{name} needs finite scores, got {scores[bad[0]]} at '
                     f'pair {bad[0]} ({len(bad)} non-finite)')
  if issame.dtype != bool:
    if not np.issubdtype(issame.dtype, np.number) or not np.all(
        (issame == 0) | (issame == 1)):
      raise ValueError(f'{name} needs boolean (or 0/1) issame, got dtype '
                       f'{issame.dtype} with values '
                       f'{np.unique(issame)[:5].tolist()}')
    issame = issame == 1
  return scores, issame


def _sorted_similarities(scores, issame, higher_is_same):
  """(similarities in increasing order, their issame): distances negated."""
  similarity = scores if higher_is_same else -scores
  order = np.argsort(similarity)
  return similarity[order], issame[order]


def _to_score_units(similarity_threshold, higher_is_same):
  return float(similarity_threshold if higher_is_same
               else -similarity_threshold)


def _candidate_counts(similarity, issame):
  """Every achievable classification of the pairs, from the lowest threshold.

  Args:
    similarity: (n,) similarities in increasing order; issame: theirs.

  Returns:
    (distinct, true_accepts, false_accepts): the distinct similarities
    u_0 < ... < u_{m-1}, and for j = 0..m the numbers of same and of
    different pairs with similarity >= u_j (j = m: "none same", 0 and 0).
  """
  first_of_value = np.concatenate([[True], similarity[1:] != similarity[:-1]])
  starts = np.append(np.flatnonzero(first_of_value), len(similarity))
  same_below = np.concatenate([[0], np.cumsum(issame)])[starts]
  different_below = np.concatenate([[0], np.cumsum(~issame)])[starts]
  true_accepts = np.sum(issame) - same_below
  false_accepts = np.sum(~issame) - different_below
  return similarity[first_of_value], true_accepts, false_accepts


def _gap_thresholds(distinct):
  """(m + 1,) similarity thresholds t_j of the candidates (module doc).

  ``similarity > t_j`` holds exactly for similarities >= u_j:
  u_{j-1} <= t_j < u_j, with t_0 = -inf and t_m = +inf.
  """
  lower, upper = distinct[:-1], distinct[1:]
  # Halves first: no overflow near the float64 range; rounding (adjacent or
  # subnormal scores) can leave the gap, then the lower score is used.
  middle = 0.5 * lower + 0.5 * upper
  middle = np.where((lower <= middle) & (middle < upper), middle, lower)
  return np.concatenate([[-np.inf], middle, [np.inf]])


def _accuracy_threshold(similarity, issame):
  """The similarity threshold of best accuracy; sorted similarities."""
  distinct, true_accepts, false_accepts = _candidate_counts(similarity,
                                                            issame)
  correct = true_accepts + (np.sum(~issame) - false_accepts)
  best = int(np.argmax(correct))  # the first maximum: the lowest threshold
  return _gap_thresholds(distinct)[best]


def _far_threshold(similarity, issame, far_target):
  """The lowest similarity threshold of FAR <= far_target; sorted
  similarities, at least one different pair."""
  distinct, _, false_accepts = _candidate_counts(similarity, issame)
  # FAR never increases with the threshold and is 0 for "none same".
  far = false_accepts / np.sum(~issame)
  return _gap_thresholds(distinct)[int(np.argmax(far <= far_target))]


def _roc(similarity, issame):
  """(fpr, tpr, similarity thresholds) from the strictest; sorted input."""
  distinct, true_accepts, false_accepts = _candidate_counts(similarity,
                                                            issame)
  return (false_accepts[::-1] / np.sum(~issame),
          true_accepts[::-1] / np.sum(issame),
          _gap_thresholds(distinct)[::-1])


def _area_under_roc(similarity, issame):
  """Mann-Whitney AUC from integer counts; sorted similarities."""
  _, true_accepts, false_accepts = _candidate_counts(similarity, issame)
  # Per distinct value (j < m): its same and different pairs, and the same
  # pairs strictly above it. int64 holds 2 |P_same| |P_diff| up to N ~ 4e9.
  same_at = true_accepts[:-1] - true_accepts[1:]
  different_at = false_accepts[:-1] - false_accepts[1:]
  same_above = true_accepts[1:]
  twice_wins = int(np.sum(different_at * (2 * same_above + same_at),
                          dtype=np.int64))
  return twice_wins / (2 * int(np.sum(issame)) * int(np.sum(~issame)))


def _equal_error_rate(fpr, tpr):
  frr = 1 - tpr
  gap = fpr - frr
  k = int(np.argmax(gap >= 0))  # k >= 1: gap is -1 at the first point
  fraction = -gap[k - 1] / (gap[k] - gap[k - 1])
  far = fpr[k - 1] + fraction * (fpr[k] - fpr[k - 1])
  false_rejection = frr[k - 1] + fraction * (frr[k] - frr[k - 1])
  return float(0.5 * far + 0.5 * false_rejection)


def predict_same(scores, threshold, higher_is_same=True):
  """Boolean predictions: ``scores > threshold`` (similarities) or
  ``scores < threshold`` (distances, ``higher_is_same=False``)."""
  scores = np.asarray(scores, np.float64)
  return scores > threshold if higher_is_same else scores < threshold


def best_accuracy_threshold(scores, issame, higher_is_same=True):
  """The threshold of highest accuracy on these pairs, exactly.

    accuracy(t) = (|TA(t)| + |TR(t)|) / N

  over every achievable classification, with the tie-break and the gap
  midpoint of the module doc. O(N log N).

  Returns:
    The threshold in the units of ``scores`` (float; may be -inf or +inf).
  """
  scores, issame = _check_pairs(scores, issame, 'best_accuracy_threshold')
  threshold = _accuracy_threshold(
      *_sorted_similarities(scores, issame, higher_is_same))
  return _to_score_units(threshold, higher_is_same)


def threshold_at_far(scores, issame, far_target, higher_is_same=True):
  """The most lenient threshold whose FAR on these pairs is <= far_target.

    FAR(t) = |FA(t)| / |P_diff|

  Among every achievable classification, the one with the lowest similarity
  threshold (largest distance threshold) and FAR(t) <= ``far_target``; the
  threshold is placed at the gap midpoint of the module doc.

  Returns:
    The threshold in the units of ``scores`` (float; may be -inf or +inf).

  Raises:
    ValueError: no different pair (FAR undefined), or far_target outside
      [0, 1].
  """
  scores, issame = _check_pairs(scores, issame, 'threshold_at_far')
  _check_far_target(far_target, 'threshold_at_far')
  if np.all(issame):
    raise ValueError('threshold_at_far needs at least one different pair: '
                     'FAR is undefined without them')
  threshold = _far_threshold(
      *_sorted_similarities(scores, issame, higher_is_same), far_target)
  return _to_score_units(threshold, higher_is_same)


def _check_far_target(far_target, name):
  if not 0 <= far_target <= 1:
    raise ValueError(f'{name} needs 0 <= far_target <= 1, got {far_target}')


def _check_both_classes(issame, name):
  if np.all(issame) or not np.any(issame):
    raise ValueError(f'{name} needs both same and different pairs, got '
                     f'{int(np.sum(issame))} same of {len(issame)}')


def roc_curve(scores, issame, higher_is_same=True):
  """The ROC over all distinct scores: (fpr, tpr, thresholds).

    tpr[k] = |TA(thresholds[k])| / |P_same|
    fpr[k] = |FA(thresholds[k])| / |P_diff|

  with ``predict_same(scores, thresholds[k], higher_is_same)`` the pairs
  accepted at point k. Point 0 accepts nothing (threshold +inf for
  similarities, -inf for distances: fpr = tpr = 0); point k accepts the
  pairs of the k best distinct scores, its threshold the gap midpoint below
  the k-th (module doc); the last accepts every pair (fpr = tpr = 1). Ties
  give one point, so the straight segments between points are the ROC of a
  randomised tie-break.

  Returns:
    float64 arrays (fpr, tpr, thresholds), each (number of distinct scores +
    1,).

  Raises:
    ValueError: no same or no different pair (a rate is undefined).
  """
  scores, issame = _check_pairs(scores, issame, 'roc_curve')
  _check_both_classes(issame, 'roc_curve')
  fpr, tpr, thresholds = _roc(
      *_sorted_similarities(scores, issame, higher_is_same))
  return fpr, tpr, (thresholds if higher_is_same else -thresholds)


def area_under_roc(scores, issame, higher_is_same=True):
  """The area under the ROC, with ties counted exactly.

    AUC = P(s_same > s_diff) + 0.5 P(s_same = s_diff)

  over all (same pair, different pair) couples (the Mann-Whitney U
  statistic over |P_same| |P_diff|; s a similarity, or a negated distance):
  the trapezoidal area of :func:`roc_curve`. Computed from integer counts
  in O(N log N), with a single rounding at the final division.

  Raises:
    ValueError: no same or no different pair.
  """
  scores, issame = _check_pairs(scores, issame, 'area_under_roc')
  _check_both_classes(issame, 'area_under_roc')
  return _area_under_roc(
      *_sorted_similarities(scores, issame, higher_is_same))


def equal_error_rate(scores, issame, higher_is_same=True):
  """The rate at which FAR = FRR (= 1 - TAR) on the ROC of all pairs.

  Linearly interpolated on the segment of :func:`roc_curve` where
  FAR - FRR changes sign: with g = FAR - FRR, non-decreasing from -1 to 1
  along the curve, and k the first point with g[k] >= 0,

    a = -g[k-1] / (g[k] - g[k-1]),   EER = FAR[k-1] + a (FAR[k] - FAR[k-1])

  (FRR at that point is equal, up to rounding; their mean is returned).
  Perfectly separated scores give 0.

  Raises:
    ValueError: no same or no different pair.
  """
  fpr, tpr, _ = roc_curve(scores, issame, higher_is_same)
  return _equal_error_rate(fpr, tpr)


def _fold_of_pairs(folds, n_folds, num_pairs):
  """(N,) fold ids, or a ValueError."""
  if folds is None:
    if int(n_folds) != n_folds or n_folds < 2 or num_pairs < n_folds:
      raise ValueError(f'evaluate needs 2 <= n_folds <= N pairs so every '
                       f'fold has pairs, got n_folds={n_folds} for '
                       f'{num_pairs} pairs')
    return np.arange(num_pairs) * int(n_folds) // num_pairs
  folds = np.asarray(folds)
  if folds.shape != (num_pairs,):
    raise ValueError(f'evaluate needs one fold id per pair, shape '
                     f'({num_pairs},), got folds of shape {folds.shape}')
  if folds.dtype == bool or not np.issubdtype(folds.dtype, np.integer):
    raise ValueError(f'evaluate needs integer fold ids, got {folds.dtype}')
  if len(np.unique(folds)) < 2:
    raise ValueError(f'evaluate needs at least 2 folds, got fold ids '
                     f'{np.unique(folds).tolist()}')
  return folds


def evaluate(scores, issame, folds=None, n_folds=10, higher_is_same=True,
             far_target=1e-3):
  """k-fold verification accuracy and VAL@FAR, and ROC, AUC, EER on all pairs.

  For each fold, the accuracy threshold (:func:`best_accuracy_threshold`)
  and the VAL threshold (:func:`threshold_at_far`) are chosen on the other
  folds and applied to it, as in the LFW protocol and FaceNet's VAL@FAR.
  Conventions (inequalities, tie-break, folds) are in the module doc.

  Args:
    scores: (N,) pair scores: similarities, or distances with
      ``higher_is_same=False``.
    issame: (N,) booleans (or 0/1).
    folds: optional (N,) integer fold ids; default ``n_folds`` consecutive
      blocks.
    n_folds: number of blocks when ``folds`` is None (at least 2, at most N).
    higher_is_same: False when scores are distances.
    far_target: the FAR of VAL@FAR, in [0, 1].

  Returns:
    A dict:
      accuracy_mean, accuracy_std: over the folds (std is np.std, the
        population deviation, as LFW results are reported).
      fold_accuracies, thresholds: per fold (in score units), in increasing
        fold id; fold_ids: those ids.
      val_at_far, val_at_far_std, far: mean and std of the test folds' VAL,
        mean of their achieved FAR; fold_vals, fold_fars, val_thresholds per
        fold; far_target. A fold without same pairs has VAL NaN, one without
        different pairs FAR NaN, and a fold whose other folds have no
        different pair both NaN; the means are then NaN too.
      auc, eer: :func:`area_under_roc` and :func:`equal_error_rate` of all
        pairs.
      roc: dict(fpr, tpr, thresholds) of :func:`roc_curve` on all pairs.

  Raises:
    ValueError: shapes differ, issame not boolean or 0/1, non-finite scores,
      fewer than 2 folds or an empty one, no same or no different pair, or
      far_target outside [0, 1].
  """
  scores, issame = _check_pairs(scores, issame, 'evaluate')
  _check_both_classes(issame, 'evaluate')
  _check_far_target(far_target, 'evaluate')
  fold_of_pair = _fold_of_pairs(folds, n_folds, len(scores))
  fold_ids = np.unique(fold_of_pair)
  # One sort: any subset of the sorted pairs is sorted.
  similarity = scores if higher_is_same else -scores
  order = np.argsort(similarity)
  similarity, issame = similarity[order], issame[order]
  fold_of_pair = fold_of_pair[order]
  accuracies, thresholds = [], []
  vals, fars, val_thresholds = [], [], []
  for fold_id in fold_ids:
    test = fold_of_pair == fold_id
    train = ~test
    threshold = _accuracy_threshold(similarity[train], issame[train])
    predicted = similarity[test] > threshold
    accuracies.append(float(np.mean(predicted == issame[test])))
    thresholds.append(_to_score_units(threshold, higher_is_same))
    if np.any(~issame[train]):
      val_threshold = _far_threshold(similarity[train], issame[train],
                                     far_target)
      accepted = similarity[test] > val_threshold
      vals.append(_rate(accepted, issame[test]))
      fars.append(_rate(accepted, ~issame[test]))
      val_thresholds.append(_to_score_units(val_threshold, higher_is_same))
    else:
      vals.append(np.nan)
      fars.append(np.nan)
      val_thresholds.append(np.nan)
  fpr, tpr, roc_thresholds = _roc(similarity, issame)
  return {
      'accuracy_mean': float(np.mean(accuracies)),
      'accuracy_std': float(np.std(accuracies)),
      'fold_accuracies': accuracies,
      'thresholds': thresholds,
      'fold_ids': fold_ids.tolist(),
      'val_at_far': float(np.mean(vals)),
      'val_at_far_std': float(np.std(vals)),
      'far': float(np.mean(fars)),
      'fold_vals': vals,
      'fold_fars': fars,
      'val_thresholds': val_thresholds,
      'far_target': far_target,
      'auc': _area_under_roc(similarity, issame),
      'eer': _equal_error_rate(fpr, tpr),
      'roc': {'fpr': fpr, 'tpr': tpr,
              'thresholds': (roc_thresholds if higher_is_same
                             else -roc_thresholds)},
  }


def ten_fold_accuracy(scores, issame, folds=10):
  """LFW-protocol accuracy of pair scores (higher means more alike).

  The pairs are split into ``folds`` contiguous folds (as LFW's ten folds of
  600); each fold is classified at the threshold that maximises accuracy on
  the other folds: :func:`evaluate`'s accuracy alone, for a training loop
  or a benchmark that reports one number per model.

  Returns:
    (mean, std) of the per-fold accuracies.

  Raises:
    ValueError: as evaluate (N < folds, folds < 2, a single class, ...).
  """
  result = evaluate(np.ravel(scores), np.ravel(issame), n_folds=folds)
  return result['accuracy_mean'], result['accuracy_std']


def _rate(accepted, among):
  """The fraction of the ``among`` pairs accepted; NaN when there are none."""
  count = int(np.sum(among))
  return float(np.sum(accepted & among) / count) if count else np.nan
