"""MegaFace identification against brute force on tiny sets.

The references below build the whole probe x distractor score matrix in
numpy and loop over the trials in Python. Most sets have small integer
features scored unnormalised (:mod:`tests.metrics.integer_sets`): results
must be equal, ties included; the normalised sets avoid near-ties or use
exactly representable unit vectors. Searches run over the 8 simulated
devices (the default mesh); the search itself is tested in test_search.py.
"""
import math

import numpy as np
import pytest

from facejax.metrics import identification
from tests.metrics.integer_sets import integer_set


def brute_force_ranks(probes, ids, distractors, probe_keep=None):
  """{(p, m): rank} with rank = 1 + #{d : s(p, d) >= s(p, m)}."""
  scores = probes @ distractors.T
  ranks = {}
  for p in range(len(probes)):
    for m in range(len(probes)):
      if p == m or ids[p] != ids[m]:
        continue
      if probe_keep is not None and not (probe_keep[p] and probe_keep[m]):
        continue
      mate = float(probes[p] @ probes[m])
      ranks[p, m] = 1 + int(np.sum(scores[p] >= mate))
  return ranks


def brute_force_cmc(ranks, max_rank):
  return np.array([np.mean([rank <= r for rank in ranks.values()])
                   for r in range(1, max_rank + 1)])


def brute_force_tar(probes, ids, distractors, far, probe_keep=None):
  keep = np.ones(len(probes), bool) if probe_keep is None else probe_keep
  impostors = np.sort((probes[keep] @ distractors.T).ravel())[::-1]
  genuine = [float(probes[p] @ probes[m])
             for p in range(len(probes)) for m in range(len(probes))
             if p != m and ids[p] == ids[m] and keep[p] and keep[m]]
  allowed = math.floor(far * len(impostors) + 1e-9)
  threshold = impostors[allowed] if allowed < len(impostors) else -np.inf
  return float(np.mean(np.array(genuine) > threshold))

# ---------------------------------------------------- rank-1, CMC, trials ---


def test_trials_are_every_ordered_same_identity_pair():
  probe, mate = identification.trials(['a', 'b', 'a', 'c', 'a', 'b'])
  assert sorted(zip(probe.tolist(), mate.tolist())) == [
      (0, 2), (0, 4), (1, 5), (2, 0), (2, 4), (4, 0), (4, 2), (5, 1)]
  keep = np.array([True, True, False, True, True, True])
  probe, mate = identification.trials(['a', 'b', 'a', 'c', 'a', 'b'], keep)
  assert sorted(zip(probe.tolist(), mate.tolist())) == [
      (0, 4), (1, 5), (4, 0), (5, 1)]


@pytest.mark.parametrize('chunk_size', [7, 48])
def test_rank1_and_cmc_match_brute_force(chunk_size):
  probes, ids, distractors = integer_set(seed=5, num_distractors=61)
  ranks = brute_force_ranks(probes, ids, distractors)
  expected = brute_force_cmc(ranks, 6)
  assert 0 < expected[0] < expected[-1] < 1  # a discriminating set
  got = identification.cmc(probes, ids, distractors, 6,
                           chunk_size=chunk_size, normalize=False)
  np.testing.assert_array_equal(got, expected)
  assert identification.megaface_rank1(
      probes, ids, distractors, chunk_size=chunk_size,
      normalize=False) == expected[0]


def unit_vector(dim, *entries):
  vector = np.zeros(dim, np.float32)
  vector[:len(entries)] = entries
  return vector


def test_ties_count_against_the_mate():
  # Exactly representable unit vectors: every score is exact.
  probe = unit_vector(8, 0.5, 0.5, 0.5, 0.5)
  mate = unit_vector(8, 1)
  ids = [0, 0]
  tie = unit_vector(8, 0.5, 0.5, -0.5, 0.5)  # 0.5 with both images
  below = unit_vector(8, 0.5, -0.5, 0.5, -0.5)
  far_away = unit_vector(8, 0, 0, 0, 0, 1)
  probes = np.stack([probe, mate])
  # s(probe, mate) = 0.5. The tie scores 0.5 against both: both trials fail
  # at rank 1 (rank 2, one distractor "at or above").
  got = identification.cmc(probes, ids, np.stack([tie, far_away]), 2)
  np.testing.assert_array_equal(got, [0.0, 1.0])
  # `below` scores 0 with the probe and 0.5 with the mate (as a probe): only
  # the trial probed by the mate image meets a tie.
  got = identification.cmc(probes, ids, np.stack([below, far_away]), 2)
  np.testing.assert_array_equal(got, [0.5, 1.0])


def test_planted_answers():
  # Identity i's images all equal e_i: mates score exactly 1, distractors
  # (+-0.5 on four coordinates) at most 0.5: rank-1 is 1.
  dim, rng = 6, np.random.default_rng(6)
  ids = np.repeat(np.arange(6), [3, 2, 4, 2, 7, 6])
  probes = np.eye(dim, dtype=np.float32)[ids]
  signs = rng.choice([-0.5, 0.5], size=(50, 4)).astype(np.float32)
  distractors = np.concatenate([signs, np.zeros((50, 2), np.float32)], 1)
  assert identification.megaface_rank1(probes, ids, distractors,
                                       chunk_size=48) == 1.0
  # A distractor equal to e_0 ties every trial of identity 0 (3 x 2 of the
  # 6 + 2 + 12 + 2 + 42 + 30 = 94 trials) and beats nothing else.
  planted = np.concatenate([distractors[:20], np.eye(dim)[:1],
                            distractors[20:]])
  got = identification.cmc(probes, ids, planted, 2, chunk_size=48)
  np.testing.assert_array_equal(got, [1 - 6 / 94, 1.0])


def test_identical_mates_of_random_features_rank_first():
  rng = np.random.default_rng(7)
  centres = rng.normal(size=(6, 6)).astype(np.float32)
  ids = np.repeat(np.arange(6), 4)
  distractors = rng.normal(size=(500, 6)).astype(np.float32)
  assert identification.megaface_rank1(centres[ids], ids, distractors,
                                       chunk_size=48) == 1.0


# --------------------------------------------------------- the evaluation ---


def test_evaluate_nested_sizes_exclusions_and_tar():
  probes, ids, distractors = integer_set(seed=8, num_probes=20,
                                         num_distractors=150)
  probe_exclude = np.zeros(len(probes), bool)
  probe_exclude[[3, 11]] = True
  distractor_exclude = [0, 5, 77, 140]
  sizes = (10, 40, 150, 1000)
  far = 0.05
  results = identification.megaface_evaluate(
      probes, ids, distractors, sizes=sizes, max_rank=4, far=far, seed=3,
      probe_exclude=probe_exclude, distractor_exclude=distractor_exclude,
      chunk_size=48, normalize=False, verification_top_k=2)
  assert list(results) == list(sizes)
  assert results[1000]['skipped'] and '150' in results[1000]['note']
  order = np.random.default_rng(3).permutation(len(distractors))
  keep = ~probe_exclude
  for size in sizes[:-1]:
    chosen = [row for row in order[:size] if row not in distractor_exclude]
    subset = distractors[chosen]
    ranks = brute_force_ranks(probes, ids, subset, keep)
    result = results[size]
    np.testing.assert_array_equal(result['cmc'], brute_force_cmc(ranks, 4))
    assert result['rank1'] == result['cmc'][0]
    assert result['tar_at_far'] == brute_force_tar(probes, ids, subset, far,
                                                   keep)
    assert result['distractors'] == len(chosen)
    assert result['probes'] == 18 and result['trials'] == len(ranks)
    assert result['impostor_pairs'] == 18 * len(chosen)
    assert result['tar_exact'] and not result['skipped']


@pytest.mark.parametrize('far', [1e-3, 0.02, 0.3, 1.0])
def test_tar_at_far_is_exact_after_rescans(far):
  # verification_top_k=1 keeps one impostor per probe: any FAR above
  # 1 / distractors needs the rescan of the probes whose lists are short.
  probes, ids, distractors = integer_set(seed=9, num_distractors=90)
  results = identification.megaface_evaluate(
      probes, ids, distractors, sizes=(30, 90), max_rank=1, far=far,
      chunk_size=48, normalize=False, verification_top_k=1)
  order = np.random.default_rng(0).permutation(len(distractors))
  for size in (30, 90):
    expected = brute_force_tar(probes, ids, distractors[order[:size]], far)
    assert results[size]['tar_at_far'] == expected


def test_tar_warns_when_a_rescan_would_be_too_large(monkeypatch):
  monkeypatch.setattr(identification, '_MAX_RESCAN_SCORES', 10)
  probes, ids, distractors = integer_set(seed=9, num_distractors=90)
  with pytest.warns(UserWarning, match='TAR at FAR=0.3 is not exact'):
    results = identification.megaface_evaluate(
        probes, ids, distractors, sizes=(90,), max_rank=1, far=0.3,
        chunk_size=48, normalize=False, verification_top_k=1)
  assert not results[90]['tar_exact']
  assert results[90]['tar_at_far'] >= brute_force_tar(
      probes, ids, distractors, 0.3)  # a lower threshold: an upper bound


def test_tar_from_short_lists_reports_inexact():
  top = np.array([[5.0, 4.0], [3.0, 1.0]], np.float32)
  genuine = np.array([4.5, 3.5, 0.5])
  # 2 probes x 10 distractors, far 0.1: a = 2, threshold = 3rd largest.
  result = identification.tar_at_far_from_top_k(top, [0, 1], 10, genuine,
                                                0.1)
  assert result['threshold'] == 3.0 and result['allowed'] == 2
  assert not result['exact']  # probe 0's cut list ends at 4 > 3
  assert result['short_rows'].tolist() == [0]
  assert result['tar'] == pytest.approx(2 / 3)
  exact = identification.tar_at_far_from_top_k(top, [0, 1], 2, genuine, 0.1)
  assert exact['exact'] and exact['threshold'] == 5.0 and exact['tar'] == 0


def test_evaluate_with_devkit_lists():
  probes, ids, distractors = integer_set(seed=10, num_distractors=80)
  rng = np.random.default_rng(0)
  big = rng.permutation(80)[:60]
  nested = {'10': big[:10], '60': big, '25': big[:25][::-1]}
  results = identification.megaface_evaluate(
      probes, ids, distractors, distractor_lists=nested, max_rank=3,
      far=0.01, distractor_exclude=[int(big[3])], chunk_size=48,
      normalize=False)
  assert list(results) == ['10', '25', '60']
  apart = {'a': [1, 2, 3, 4], 'b': [5, 6, 7, 8, 9, 10, 11]}  # not nested
  results.update(identification.megaface_evaluate(
      probes, ids, distractors, distractor_lists=apart, max_rank=3,
      far=0.01, chunk_size=48, normalize=False))
  expected_rows = {label: [row for row in rows if row != big[3]]
                   for label, rows in nested.items()}
  expected_rows.update(apart)
  for label, rows in expected_rows.items():
    subset = distractors[np.array(rows)]
    ranks = brute_force_ranks(probes, ids, subset)
    np.testing.assert_array_equal(results[label]['cmc'],
                                  brute_force_cmc(ranks, 3))
    assert results[label]['tar_at_far'] == brute_force_tar(probes, ids,
                                                           subset, 0.01)
    assert results[label]['distractors'] == len(rows)


# --------------------------------------------------------------- errors ---


def test_bad_input_is_named():
  probes, ids, distractors = integer_set()
  with pytest.raises(ValueError, match='probe_ids'):
    identification.megaface_rank1(probes, ids[:3], distractors)
  with pytest.raises(ValueError, match='fewer than two'):
    identification.megaface_rank1(probes, np.arange(len(probes)),
                                  distractors)
  with pytest.raises(ValueError, match='array or memmap'):
    identification.megaface_evaluate(probes, ids, iter([distractors]))
  with pytest.raises(ValueError, match='distractor_exclude'):
    identification.megaface_evaluate(probes, ids, distractors,
                                     distractor_exclude=[500])
  with pytest.raises(ValueError, match='far'):
    identification.megaface_evaluate(probes, ids, distractors, far=2)
