"""Tests of facejax.metrics.verification against plain brute-force loops.

The references below try every candidate threshold of the training folds in
a python loop, count pairs one at a time, and apply the rules the module doc
documents (classification "same iff similarity >= u" for every distinct
training similarity u, or none; ties in accuracy to the lowest u; the
threshold halfway across the gap; "same" predicted by similarity > t). They
are compared exactly (accuracies, thresholds, VAL, AUC) or against a dense
scan (EER), for similarities and distances, LFW-style consecutive folds and
YTF-style custom fold ids in any order.
"""
import math

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from facejax.metrics import verification

# ----------------------------------------------------------------------------
# Brute-force references (python floats and loops).
# ----------------------------------------------------------------------------


def ref_gap_threshold(distinct, j):
  """Similarity threshold of "same iff similarity >= distinct[j]"."""
  if j == 0:
    return -math.inf
  if j == len(distinct):
    return math.inf
  lower, upper = distinct[j - 1], distinct[j]
  middle = 0.5 * lower + 0.5 * upper
  return middle if lower <= middle < upper else lower


def ref_accepts(similarities, u):
  return [s >= u for s in similarities]


def ref_best_threshold(similarities, same):
  distinct = sorted(set(similarities))
  best_j, best_correct = None, -1
  for j in range(len(distinct) + 1):
    u = distinct[j] if j < len(distinct) else math.inf
    correct = 0
    for accepted, is_same in zip(ref_accepts(similarities, u), same):
      correct += accepted == is_same
    if correct > best_correct:  # strictly: ties keep the lowest u
      best_j, best_correct = j, correct
  return ref_gap_threshold(distinct, best_j)


def ref_far_threshold(similarities, same, far_target):
  distinct = sorted(set(similarities))
  different = sum(not is_same for is_same in same)
  for j in range(len(distinct) + 1):
    u = distinct[j] if j < len(distinct) else math.inf
    false_accepts = 0
    for accepted, is_same in zip(ref_accepts(similarities, u), same):
      false_accepts += accepted and not is_same
    if false_accepts / different <= far_target:
      return ref_gap_threshold(distinct, j)
  raise AssertionError('unreachable: "none same" has FAR 0')


def ref_evaluate(scores, issame, fold_of_pair, higher_is_same, far_target):
  """Per-fold accuracies, thresholds, VALs and FARs, in increasing fold id."""
  sign = 1.0 if higher_is_same else -1.0
  similarities = [sign * float(s) for s in scores]
  same = [bool(x) for x in issame]
  out = dict(accuracies=[], thresholds=[], val_thresholds=[], vals=[],
             fars=[])
  for fold in sorted(set(int(f) for f in fold_of_pair)):
    train = [i for i in range(len(same)) if fold_of_pair[i] != fold]
    test = [i for i in range(len(same)) if fold_of_pair[i] == fold]
    t = ref_best_threshold([similarities[i] for i in train],
                           [same[i] for i in train])
    correct = sum((similarities[i] > t) == same[i] for i in test)
    out['accuracies'].append(correct / len(test))
    out['thresholds'].append(sign * t)
    if all(same[i] for i in train):  # FAR undefined on the training folds
      out['val_thresholds'].append(math.nan)
      out['vals'].append(math.nan)
      out['fars'].append(math.nan)
      continue
    t = ref_far_threshold([similarities[i] for i in train],
                          [same[i] for i in train], far_target)
    out['val_thresholds'].append(sign * t)
    true_accepts = sum(similarities[i] > t and same[i] for i in test)
    false_accepts = sum(similarities[i] > t and not same[i] for i in test)
    positives = sum(same[i] for i in test)
    negatives = len(test) - positives
    out['vals'].append(true_accepts / positives if positives else math.nan)
    out['fars'].append(false_accepts / negatives if negatives else math.nan)
  return out


def ref_auc(scores, issame, higher_is_same=True):
  """Mann-Whitney: every (same, different) couple, ties counting half."""
  sign = 1 if higher_is_same else -1
  twice_wins, couples = 0, 0
  for s, a in zip(scores, issame):
    for d, b in zip(scores, issame):
      if a and not b:
        couples += 1
        twice_wins += 2 if sign * s > sign * d else (1 if s == d else 0)
  return twice_wins / (2 * couples)


def ref_roc_points(scores, issame):
  """(fpr, tpr) lists from accepting nothing to accepting each distinct
  similarity and above, in decreasing order."""
  positives = sum(bool(x) for x in issame)
  negatives = len(issame) - positives
  fpr, tpr = [0.0], [0.0]
  for u in sorted(set(float(s) for s in scores), reverse=True):
    accepted = ref_accepts([float(s) for s in scores], u)
    tpr.append(sum(a and s for a, s in zip(accepted, issame)) / positives)
    fpr.append(sum(a and not s for a, s in zip(accepted, issame)) / negatives)
  return fpr, tpr


def ref_eer_dense_scan(scores, issame, steps=2000):
  """The point of the piecewise-linear ROC closest to FAR = FRR."""
  fpr, tpr = ref_roc_points(scores, issame)
  best_gap, best_rate = math.inf, None
  for k in range(1, len(fpr)):
    for step in range(steps + 1):
      a = step / steps
      far = fpr[k - 1] + a * (fpr[k] - fpr[k - 1])
      frr = 1 - (tpr[k - 1] + a * (tpr[k] - tpr[k - 1]))
      if abs(far - frr) < best_gap:
        best_gap, best_rate = abs(far - frr), (far + frr) / 2
  return best_rate


# ----------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------


@st.composite
def pair_problems(draw):
  """(scores, issame, folds or None, n_folds, higher_is_same, far_target)."""
  n = draw(st.integers(4, 36))
  issame = draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(
      lambda x: any(x) and not all(x)))
  if draw(st.booleans()):  # few values: many ties
    scores = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    scores = [s / 2 for s in scores]
  else:
    scores = draw(st.lists(st.floats(-10, 10, allow_nan=False, width=32),
                           min_size=n, max_size=n))
  if draw(st.booleans()):
    folds, n_folds = None, draw(st.integers(2, min(5, n)))
  else:
    # YTF-style ids: arbitrary integers, interleaved in any order.
    ids = draw(st.lists(st.integers(-5, 20), min_size=2, max_size=4,
                        unique=True))
    folds = draw(st.lists(st.sampled_from(ids), min_size=n, max_size=n)
                 .filter(lambda f: len(set(f)) >= 2))
    n_folds = None
  return (np.array(scores, np.float64), np.array(issame), folds, n_folds,
          draw(st.booleans()), draw(st.sampled_from([0.0, 0.1, 0.25, 1.0])))


def assert_same_floats(actual, expected):
  """Lists equal element by element, NaN matching NaN."""
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    assert (math.isnan(a) and math.isnan(e)) or a == e, (actual, expected)


# ----------------------------------------------------------------------------
# evaluate.
# ----------------------------------------------------------------------------


@hypothesis.given(pair_problems())
def test_evaluate_matches_brute_force(problem):
  scores, issame, folds, n_folds, higher_is_same, far_target = problem
  kwargs = dict(higher_is_same=higher_is_same, far_target=far_target)
  if folds is None:
    result = verification.evaluate(scores, issame, n_folds=n_folds, **kwargs)
    fold_of_pair = [i * n_folds // len(scores) for i in range(len(scores))]
  else:
    result = verification.evaluate(scores, issame, folds=folds, **kwargs)
    fold_of_pair = folds
  expected = ref_evaluate(scores, issame, fold_of_pair, **kwargs)
  assert result['fold_ids'] == sorted(set(fold_of_pair))
  assert result['fold_accuracies'] == expected['accuracies']
  assert result['thresholds'] == expected['thresholds']
  assert result['accuracy_mean'] == np.mean(expected['accuracies'])
  assert result['accuracy_std'] == np.std(expected['accuracies'])
  assert_same_floats(result['val_thresholds'], expected['val_thresholds'])
  assert_same_floats(result['fold_vals'], expected['vals'])
  assert_same_floats(result['fold_fars'], expected['fars'])
  assert_same_floats([result['val_at_far'], result['val_at_far_std'],
                      result['far']],
                     [np.mean(expected['vals']), np.std(expected['vals']),
                      np.mean(expected['fars'])])
  assert result['auc'] == ref_auc(scores, issame, higher_is_same)


def test_lfw_sized_evaluation_against_brute_force():
  rng = np.random.default_rng(0)
  issame = np.tile(np.repeat([True, False], 30), 10)  # LFW's fold layout
  scores = np.round(rng.normal(issame * 1.5, 1.0), 1)  # ties
  result = verification.evaluate(scores, issame, far_target=0.05)
  expected = ref_evaluate(scores, issame, np.arange(600) * 10 // 600, True,
                          0.05)
  assert result['fold_accuracies'] == expected['accuracies']
  assert result['thresholds'] == expected['thresholds']
  assert result['fold_vals'] == expected['vals']
  assert result['fold_fars'] == expected['fars']
  assert 0.7 < result['accuracy_mean'] < 0.9  # not a degenerate problem
  assert result['auc'] == ref_auc(scores, issame)
  assert result['eer'] == pytest.approx(ref_eer_dense_scan(scores, issame),
                                        abs=1e-3)


def test_accuracy_tie_break_takes_the_most_lenient_threshold():
  # Calling >= 2 or >= 4 "same" both classify 3 of 4 right: the lower wins,
  # at the midpoint of 1 and 2.
  scores = np.array([1.0, 2.0, 3.0, 4.0])
  same = np.array([False, True, False, True])
  assert verification.best_accuracy_threshold(scores, same) == 1.5
  # As distances (same iff d < t), the mirror image: the largest threshold.
  assert verification.best_accuracy_threshold(-scores, same, False) == -1.5
  # All tied: "all same" and "none same" score 2 of 4; all same wins.
  assert verification.best_accuracy_threshold(
      np.ones(4), same) == -math.inf
  assert verification.best_accuracy_threshold(
      np.ones(4), same, higher_is_same=False) == math.inf


def test_a_worked_two_fold_example():
  # Fold 0: 0.1 (diff), 0.4 (same), 0.6 (diff); fold 1: 0.2, 0.5, 0.9.
  scores = np.array([0.1, 0.4, 0.6, 0.2, 0.5, 0.9])
  issame = np.array([False, True, False, False, True, True])
  result = verification.evaluate(scores, issame, n_folds=2, far_target=0.0)
  # Trained on fold 1: >= 0.5 is perfect, threshold (0.2 + 0.5) / 2.
  # Fold 0 at 0.35: 0.1 diff (right), 0.4 same (right), 0.6 same (wrong).
  # Trained on fold 0: >= 0.4 and "none same" both score 2 of 3; the lower
  # wins, threshold 0.25: 0.2 diff, 0.5 and 0.9 same, all right.
  assert result['thresholds'] == [0.5 * 0.2 + 0.5 * 0.5, 0.5 * 0.1 + 0.5 * 0.4]
  assert result['fold_accuracies'] == [2 / 3, 1.0]
  assert result['accuracy_mean'] == pytest.approx(5 / 6)
  assert result['accuracy_std'] == pytest.approx(1 / 6)
  # FAR 0 on fold 1 is first reached at >= 0.5 (same threshold): fold 0 has
  # VAL 1/1 and FAR 1/2. On fold 0, at "none same" (threshold +inf).
  assert result['val_thresholds'] == [0.5 * 0.2 + 0.5 * 0.5, math.inf]
  assert result['fold_vals'] == [1.0, 0.0]
  assert result['fold_fars'] == [0.5, 0.0]


def test_a_test_score_on_the_threshold_is_not_accepted():
  # Fold 1 puts both thresholds of fold 0 at the midpoint of 0.2 and 0.5,
  # where fold 0 has a different pair: "same" needs score > threshold.
  middle = 0.5 * 0.2 + 0.5 * 0.5
  scores = np.array([middle, 0.9, 0.2, 0.5])
  issame = np.array([False, True, False, True])
  for higher_is_same in (True, False):
    sign = 1 if higher_is_same else -1
    result = verification.evaluate(sign * scores, issame, n_folds=2,
                                   higher_is_same=higher_is_same,
                                   far_target=0.0)
    assert result['thresholds'][0] == sign * middle
    assert result['val_thresholds'][0] == sign * middle
    assert result['fold_accuracies'][0] == 1.0
    assert result['fold_fars'][0] == 0.0


@hypothesis.given(pair_problems())
def test_distances_give_the_results_of_negated_similarities(problem):
  scores, issame, folds, n_folds, _, far_target = problem
  kwargs = dict(folds=folds, n_folds=n_folds or 10, far_target=far_target)
  as_distances = verification.evaluate(scores, issame, higher_is_same=False,
                                       **kwargs)
  as_similarities = verification.evaluate(-scores, issame, **kwargs)
  for key in ('fold_accuracies', 'accuracy_mean', 'accuracy_std', 'auc',
              'eer'):
    assert as_distances[key] == as_similarities[key], key
  assert_same_floats(as_distances['fold_vals'], as_similarities['fold_vals'])
  assert as_distances['thresholds'] == [
      -t for t in as_similarities['thresholds']]
  for key in ('fpr', 'tpr'):
    np.testing.assert_array_equal(as_distances['roc'][key],
                                  as_similarities['roc'][key])
  np.testing.assert_array_equal(as_distances['roc']['thresholds'],
                                -as_similarities['roc']['thresholds'])


def test_perfectly_separable_scores():
  rng = np.random.default_rng(1)
  issame = rng.permutation(np.arange(100) % 2 == 0)
  scores = np.where(issame, rng.uniform(0.9, 1.0, 100),
                    rng.uniform(-0.2, 0.1, 100))
  result = verification.evaluate(scores, issame, far_target=0.0)
  assert result['accuracy_mean'] == 1 and result['accuracy_std'] == 0
  assert result['auc'] == 1 and result['eer'] == 0
  assert result['val_at_far'] == 1 and result['far'] == 0
  distances = verification.evaluate(1 - scores, issame, higher_is_same=False)
  assert distances['accuracy_mean'] == 1 and distances['eer'] == 0


def test_custom_fold_ids_in_any_order():
  # YTF-style: 10 splits numbered 1 to 10, pairs listed in shuffled order.
  rng = np.random.default_rng(2)
  splits = rng.permutation(np.repeat(np.arange(1, 11), 20))
  issame = rng.random(200) < 0.5
  scores = rng.normal(issame * 1.0, 1.0)
  result = verification.evaluate(scores, issame, folds=splits)
  assert result['fold_ids'] == list(range(1, 11))
  # The same pairs sorted into consecutive blocks of 20, LFW-style.
  order = np.argsort(splits, kind='stable')
  blocks = verification.evaluate(scores[order], issame[order], n_folds=10)
  for key in ('fold_accuracies', 'thresholds', 'fold_vals', 'auc', 'eer'):
    assert result[key] == blocks[key], key
  # Relabelling the folds changes nothing but their ids.
  relabelled = verification.evaluate(scores, issame, folds=splits * 7 - 30)
  assert relabelled['fold_accuracies'] == result['fold_accuracies']


def test_default_folds_are_consecutive_blocks():
  rng = np.random.default_rng(3)
  issame = rng.random(25) < 0.5
  scores = rng.normal(issame * 1.0, 1.0)
  blocks = np.arange(25) * 10 // 25  # pair i in fold i * n_folds // N
  default = verification.evaluate(scores, issame)
  explicit = verification.evaluate(scores, issame, folds=blocks)
  assert default['fold_accuracies'] == explicit['fold_accuracies']
  assert default['thresholds'] == explicit['thresholds']


def test_undefined_val_and_far_are_nan():
  scores = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.6])
  issame = np.array([True, True, False, False, True, True])
  # Fold 0 has no different pair: its FAR is NaN. Fold 1 holds both
  # different pairs, so on its training folds FAR, and its VAL threshold,
  # are undefined.
  result = verification.evaluate(scores, issame, n_folds=3)
  assert math.isnan(result['fold_fars'][0])
  assert result['fold_vals'][0] == 1.0
  assert math.isnan(result['fold_vals'][1])
  assert math.isnan(result['fold_fars'][1])
  assert math.isnan(result['val_thresholds'][1])
  assert math.isnan(result['val_at_far'])
  assert not math.isnan(result['accuracy_mean'])


def test_ten_fold_accuracy_delegates_to_evaluate():
  rng = np.random.default_rng(4)
  issame = rng.random(300) < 0.5
  scores = rng.normal(issame * 0.8, 1.0)
  result = verification.evaluate(scores, issame)
  assert verification.ten_fold_accuracy(scores, issame) == (
      result['accuracy_mean'], result['accuracy_std'])


def brute_force_ten_fold(scores, issame, folds=10):
  """Every candidate threshold tried on the nine folds, plainly."""
  fold = np.arange(len(scores)) * folds // len(scores)
  accuracies = []
  for k in range(folds):
    train, test = fold != k, fold == k
    # Thresholds halfway between neighbouring distinct training scores, or
    # below / above them all.
    distinct = np.unique(scores[train])
    candidates = np.concatenate([[-np.inf], (distinct[1:] + distinct[:-1])
                                 / 2, [np.inf]])
    best = max(candidates, key=lambda t: (
        np.mean((scores[train] > t) == issame[train]), -t))
    accuracies.append(np.mean((scores[test] > best) == issame[test]))
  return np.mean(accuracies)


def test_ten_fold_accuracy_against_brute_force():
  rng = np.random.default_rng(3)
  for trial in range(5):
    issame = rng.random(200) < 0.5
    scores = np.round(rng.normal(issame * (trial / 2.0), 1.0), 1)
    mean, _ = verification.ten_fold_accuracy(scores, issame)
    # Ties in training accuracy go to the lowest threshold in both.
    assert mean == pytest.approx(brute_force_ten_fold(scores, issame),
                                 abs=1e-12)
  separable = np.arange(100) % 2 == 0
  assert verification.ten_fold_accuracy(separable * 1.0, separable) == (1, 0)
  # Tied scores cannot be split: below the first tie or above the last.
  # (Splitting inside the ties would score 3 of 4 on these train folds.)
  threshold = verification.best_accuracy_threshold(
      np.ones(4), np.array([False, True, False, True]))
  assert verification.predict_same(np.ones(2), threshold).all()
  with pytest.raises(ValueError, match='folds'):
    verification.ten_fold_accuracy(np.ones(5), np.arange(5) % 2 == 0)


# ----------------------------------------------------------------------------
# ROC, AUC, EER on all pairs.
# ----------------------------------------------------------------------------


@hypothesis.given(pair_problems())
def test_roc_curve_matches_brute_force(problem):
  scores, issame, _, _, higher_is_same, _ = problem
  fpr, tpr, thresholds = verification.roc_curve(scores, issame,
                                                higher_is_same)
  sign = 1 if higher_is_same else -1
  expected_fpr, expected_tpr = ref_roc_points(sign * scores, issame)
  assert fpr.tolist() == expected_fpr
  assert tpr.tolist() == expected_tpr
  assert len(thresholds) == len(set(scores.tolist())) + 1
  # Each threshold reproduces its point with predict_same.
  for k, threshold in enumerate(thresholds):
    accepted = verification.predict_same(scores, threshold, higher_is_same)
    assert np.mean(accepted[issame]) == tpr[k]
    assert np.mean(accepted[~issame]) == fpr[k]


def test_thresholds_stay_inside_tiny_and_huge_gaps():
  # Adjacent floats, subnormals and scores whose sum would overflow: every
  # threshold must still separate the scores it is meant to.
  for values in ([1.0, np.nextafter(1.0, 2.0), np.nextafter(1.0, 0.0)],
                 [0.0, 5e-324, 1e-323, -5e-324],
                 [-1.7e308, 1.7e308, 1e308]):
    scores = np.array(values * 2)
    issame = np.arange(len(scores)) % 2 == 0
    for higher_is_same in (True, False):
      fpr, tpr, thresholds = verification.roc_curve(scores, issame,
                                                    higher_is_same)
      assert len(thresholds) == len(values) + 1
      for k, threshold in enumerate(thresholds):
        accepted = verification.predict_same(scores, threshold,
                                             higher_is_same)
        # Point k accepts exactly the pairs of the k best distinct scores.
        assert np.sum(accepted) == 2 * k
        assert np.mean(accepted[issame]) == tpr[k]
      assert np.all(np.isfinite(thresholds[1:-1]))


@hypothesis.given(pair_problems())
def test_auc_is_the_mann_whitney_probability(problem):
  scores, issame, _, _, higher_is_same, _ = problem
  assert verification.area_under_roc(scores, issame, higher_is_same) == (
      ref_auc(scores, issame, higher_is_same))
  # And the trapezoidal area of the ROC, up to rounding.
  fpr, tpr, _ = verification.roc_curve(scores, issame, higher_is_same)
  trapezoids = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
  assert verification.area_under_roc(
      scores, issame, higher_is_same) == pytest.approx(trapezoids, abs=1e-12)


def test_auc_counts_ties_as_half():
  # One same and one different pair, tied: P(>) = 0, P(=) = 1.
  assert verification.area_under_roc([0.3, 0.3], [True, False]) == 0.5
  assert verification.area_under_roc([0.1, 0.2, 0.2],
                                     [False, True, False]) == 0.75


@hypothesis.given(pair_problems())
def test_eer_matches_a_dense_scan_of_the_roc(problem):
  scores, issame, _, _, higher_is_same, _ = problem
  sign = 1 if higher_is_same else -1
  assert verification.equal_error_rate(
      scores, issame, higher_is_same) == pytest.approx(
          ref_eer_dense_scan(sign * scores, issame, steps=400), abs=3e-3)


def test_eer_of_known_curves():
  # Reversed scores: every same pair below every different one.
  assert verification.equal_error_rate([0.0, 1.0], [True, False]) == 1.0
  # Ties everywhere: the diagonal, FAR = FRR at 0.5.
  assert verification.equal_error_rate(np.zeros(4),
                                       [True, False, True, False]) == 0.5
  # 3 same, 3 different, one of each on the wrong side of the other class.
  scores = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1]
  issame = [True, True, True, False, False, False]
  assert verification.equal_error_rate(scores, issame) == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------


GOOD_SCORES = np.array([0.1, 0.9, 0.2, 0.8])
GOOD_SAME = np.array([False, True, False, True])


@pytest.mark.parametrize('scores, issame, kwargs, match', [
    (GOOD_SCORES[:3], GOOD_SAME, {}, 'one shape'),
    (GOOD_SCORES.reshape(2, 2), GOOD_SAME.reshape(2, 2), {}, 'one shape'),
    (GOOD_SCORES, [0, 2, 0, 1], {}, 'boolean'),
    (GOOD_SCORES, ['a', 'b', 'a', 'b'], {}, 'boolean'),
    (['x', 'y', 'z', 'w'], GOOD_SAME, {}, 'numeric'),
    ([0.1, np.nan, 0.2, 0.8], GOOD_SAME, {}, 'finite'),
    ([0.1, np.inf, 0.2, 0.8], GOOD_SAME, {}, 'finite'),
    (GOOD_SCORES, GOOD_SAME, dict(n_folds=1), 'n_folds'),
    (GOOD_SCORES, GOOD_SAME, dict(n_folds=5), 'n_folds'),
    (GOOD_SCORES, GOOD_SAME, dict(folds=[3, 3, 3, 3]), 'at least 2 folds'),
    (GOOD_SCORES, GOOD_SAME, dict(folds=[0, 1, 0]), 'one fold id'),
    (GOOD_SCORES, GOOD_SAME, dict(folds=[0.0, 1.0, 0.0, 1.0]), 'integer'),
    (GOOD_SCORES, [True] * 4, dict(n_folds=2), 'both same and different'),
    (GOOD_SCORES, GOOD_SAME, dict(n_folds=2, far_target=1.5), 'far_target'),
    (GOOD_SCORES, GOOD_SAME, dict(n_folds=2, far_target=-0.1), 'far_target'),
])
def test_bad_input_raises(scores, issame, kwargs, match):
  with pytest.raises(ValueError, match=match):
    verification.evaluate(scores, issame, **kwargs)


def test_helpers_reject_bad_input():
  with pytest.raises(ValueError, match='different pair'):
    verification.threshold_at_far(GOOD_SCORES, [True] * 4, 0.1)
  with pytest.raises(ValueError, match='both same and different'):
    verification.roc_curve(GOOD_SCORES, [False] * 4)
  with pytest.raises(ValueError, match='at least one pair'):
    verification.best_accuracy_threshold([], [])
