"""facejax.metrics.plots: ROC and CMC curves written as PNG files."""
import numpy as np
import pytest

from facejax.metrics import plots
from facejax.metrics import verification

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def test_save_roc_writes_a_png(tmp_path):
  rng = np.random.default_rng(2)
  issame = rng.random(400) < 0.5
  scores = rng.normal(issame * 2.0, 1.0)
  result = verification.evaluate(scores, issame)
  fpr, tpr, _ = verification.roc_curve(-scores, issame)
  path = str(tmp_path / 'plots' / 'nested' / 'roc.png')
  curves = {'model': dict(result['roc'], auc=result['auc']),
            'reversed': (fpr, tpr),
            'chance': ([0.0, 1e-3, 1.0], [0.0, 1e-3, 1.0], 0.5)}
  assert plots.save_roc(path, curves, title='synthetic') == path
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE
  linear = str(tmp_path / 'linear.png')
  plots.save_roc(linear, {'model': result['roc']}, log_far=False)
  with open(linear, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE
  with pytest.raises(ValueError, match='at least one curve'):
    plots.save_roc(linear, {})
  with pytest.raises(ValueError, match='one shape'):
    plots.save_roc(linear, {'bad': ([0.0, 1.0], [1.0])})


def test_save_cmc_writes_a_png(tmp_path):
  path = str(tmp_path / 'cmc' / 'cmc.png')
  assert plots.save_cmc(path, {'10 distractors': [0.9, 0.95, 1.0],
                               '1000 distractors': [0.5, 0.6, 0.7]},
                        title='CMC') == path
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE
  with pytest.raises(ValueError, match='at least one curve'):
    plots.save_cmc(path, {})
