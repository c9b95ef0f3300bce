"""Tests of facejax.metrics.video.

video_embedding and pair_scores are checked against plain loops over
frames and coordinates (python floats and math). Which frames a video keeps
is the reader's choice (tests/data/test_protocols.py).
"""
import math
import subprocess
import sys

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from facejax.metrics import verification
from facejax.metrics import video

# ----------------------------------------------------------------------------
# Brute-force references.
# ----------------------------------------------------------------------------


def ref_normalise(vector):
  norm = math.sqrt(sum(float(x) ** 2 for x in vector))
  return [float(x) / max(norm, 1e-12) for x in vector]


def ref_dot(u, v):
  return sum(a * b for a, b in zip(u, v))


def ref_embedding(frames):
  unit = [ref_normalise(f) for f in frames]
  mean = [sum(f[d] for f in unit) / len(unit) for d in range(len(unit[0]))]
  return ref_normalise(mean)


def ref_mean_pairwise(frames_a, frames_b):
  unit_a = [ref_normalise(f) for f in frames_a]
  unit_b = [ref_normalise(f) for f in frames_b]
  total = 0.0
  for x in unit_a:
    for y in unit_b:
      total += ref_dot(x, y)
  return total / (len(unit_a) * len(unit_b))


def random_video(rng, frames, dim=5):
  return rng.normal(size=(frames, dim)) * rng.uniform(0.1, 10)


# ----------------------------------------------------------------------------
# video_embedding and pair_scores.
# ----------------------------------------------------------------------------


@hypothesis.given(st.integers(0, 2**32 - 1), st.integers(1, 12))
def test_video_embedding_matches_reference(seed, frames):
  features = random_video(np.random.default_rng(seed), frames)
  got = video.video_embedding(features)
  np.testing.assert_allclose(got, ref_embedding(features),
                             rtol=1e-12, atol=1e-14)
  assert got.shape == (5,) and got.dtype == np.float64
  assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-12)


def test_video_embedding_weighs_frames_not_norms():
  # A long frame does not dominate: the directions are averaged.
  features = np.array([[100.0, 0.0], [0.0, 0.01]])
  np.testing.assert_allclose(video.video_embedding(features),
                             [math.sqrt(0.5)] * 2)
  # One frame: its own direction. Zero frames cancel nothing: zero stays 0.
  np.testing.assert_allclose(video.video_embedding([[3.0, 4.0]]), [0.6, 0.8])
  np.testing.assert_array_equal(video.video_embedding(np.zeros((3, 2))),
                                [0.0, 0.0])


@hypothesis.given(st.integers(0, 2**32 - 1),
                  st.sampled_from(video.MODES))
def test_pair_scores_match_reference(seed, mode):
  rng = np.random.default_rng(seed)
  videos_a = [random_video(rng, rng.integers(1, 9)) for _ in range(4)]
  videos_b = [random_video(rng, rng.integers(1, 9)) for _ in range(4)]
  got = video.pair_scores(videos_a, videos_b, mode)
  if mode == 'mean_embedding':
    expected = [ref_dot(ref_embedding(a), ref_embedding(b))
                for a, b in zip(videos_a, videos_b)]
  else:
    expected = [ref_mean_pairwise(a, b)
                for a, b in zip(videos_a, videos_b)]
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
  assert np.all(np.abs(got) <= 1 + 1e-12)


def test_pair_scores_of_a_video_with_itself():
  rng = np.random.default_rng(0)
  clip = random_video(rng, 6)
  assert video.pair_scores([clip], [clip])[0] == pytest.approx(1.0)
  # The mean pairwise cosine is 1 only for frames all alike.
  assert video.pair_scores([clip], [clip], 'mean_pairwise')[0] < 0.9
  still = np.tile(clip[:1], (4, 1)) * np.arange(1, 5)[:, None]
  assert video.pair_scores([still], [still[:2]], 'mean_pairwise')[0] == (
      pytest.approx(1.0))


def test_pair_scores_feed_evaluate():
  # Identities as directions: same-identity videos score higher.
  rng = np.random.default_rng(1)
  identities = rng.normal(size=(20, 8))
  first, second, issame = [], [], []
  for pair in range(40):
    a = pair % 20
    b = a if pair % 2 == 0 else (a + 1) % 20
    first.append(identities[a] + 0.3 * rng.normal(size=(5, 8)))
    second.append(identities[b] + 0.3 * rng.normal(size=(7, 8)))
    issame.append(a == b)
  for mode in video.MODES:
    scores = video.pair_scores(first, second, mode)
    result = verification.evaluate(scores, issame, n_folds=4)
    assert result['accuracy_mean'] > 0.9, mode


def test_video_bad_input():
  with pytest.raises(ValueError, match='F, D'):
    video.video_embedding(np.zeros(4))
  with pytest.raises(ValueError, match='F, D'):
    video.video_embedding(np.zeros((0, 4)))
  with pytest.raises(ValueError, match='finite'):
    video.video_embedding([[np.nan, 1.0]])
  with pytest.raises(ValueError, match='mode'):
    video.pair_scores([np.ones((1, 2))], [np.ones((1, 2))], 'max')
  with pytest.raises(ValueError, match='as many videos'):
    video.pair_scores([np.ones((1, 2))], [])
  with pytest.raises(ValueError, match='one feature dimension'):
    video.pair_scores([np.ones((1, 2))], [np.ones((1, 3))])


def test_imports_no_data_reader():
  # Dependencies point down the data flow: a metric takes arrays, whatever
  # read them.
  code = ('import sys, facejax.metrics.video\n'
          'assert not [m for m in sys.modules if m.startswith("facejax.data")]'
          '\n')
  subprocess.run([sys.executable, '-c', code], check=True)
