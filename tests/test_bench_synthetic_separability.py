"""bench.synthetic_separability's raw-pixel baseline, at tiny sizes.

The baseline is facejax.inference.raw_pixel_features scored on the LFW
protocol (verification.ten_fold_accuracy); training is not run here (the
demo's tests train).
"""
import numpy as np
import pytest

from bench import synthetic_separability
from facejax.data import synthetic


def test_raw_pixel_baseline_is_weak_but_not_chance():
  images_a, images_b, issame = synthetic.verification_pairs(300, seed=0)
  mean, std = synthetic_separability.raw_pixel_accuracy(images_a, images_b,
                                                        issame)
  # 0.637 +- 0.039 on 3000 pairs when written; a trained model should be
  # far above the bound.
  assert 0.52 < mean < 0.75, (mean, std)
  assert 0 < std < 0.2


def test_raw_pixel_accuracy_on_known_pairs():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (40, 8, 8, 3), np.uint8)
  issame = np.arange(40) % 2 == 0
  b = np.where(issame[:, None, None, None], a,
               rng.integers(0, 256, a.shape, np.uint8))
  mean, std = synthetic_separability.raw_pixel_accuracy(a, b, issame)
  assert mean == 1 and std == 0
  with pytest.raises(ValueError, match='folds'):
    synthetic_separability.raw_pixel_accuracy(a[:5], b[:5], issame[:5])


def test_baseline_only(capsys):
  synthetic_separability.main(['--baseline-only', '--pairs', '20'])
  printed = capsys.readouterr().out
  assert 'raw-pixel accuracy' in printed and 'images/s' in printed
