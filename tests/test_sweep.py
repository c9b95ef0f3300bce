"""train.sweep: every loss family through the same train-and-evaluate path."""
import json

import pytest

from train import sweep
from train.configs import default


@pytest.fixture
def tiny_default(monkeypatch):
  """The sweep's base config shrunk (16 identities, a 4-8-wide IResNet)."""
  full = default.get_config

  def tiny(arg=None):
    c = full(arg)
    c.batch_size = 32
    c.data.synthetic = dict(num_identities=16, images_per_identity=4, seed=0)
    c.data.image_size = 32
    c.model.kwargs = dict(stage_units=(1, 1, 1, 1),
                          stage_features=(4, 4, 8, 8), stem_features=4,
                          embedding_dim=8)
    c.eval.batch_size = 16
    c.checkpoint_every = 2
    return c
  monkeypatch.setattr(default, 'get_config', tiny)


def test_sweep_trains_and_evaluates_each_loss(tiny_default, tmp_path,
                                              capsys):
  args = ['--workdir', str(tmp_path), '--losses', 'center,lmle',
          '--steps', '2', '--pairs', '20', '--distractors', '20',
          '--probe-identities', '3', '--probe-images', '3']
  assert sweep.main(args) == 0
  printed = capsys.readouterr().out
  assert '| center |' in printed and '| lmle |' in printed
  results = json.loads((tmp_path / 'sweep.json').read_text())['losses']
  for loss in ('center', 'lmle'):
    assert results[loss]['steps'] == 2
    assert 0 <= results[loss]['accuracy_mean'] <= 1
    assert 0 <= results[loss]['rank1'] <= 1
    assert results[loss]['train_seconds'] > 0
  # A finished sweep is kept: the rerun trains nothing, keeps the times.
  assert sweep.main(args) == 0
  again = json.loads((tmp_path / 'sweep.json').read_text())['losses']
  assert again['center']['train_seconds'] >= results['center'][
      'train_seconds']
  assert again['center']['accuracy_mean'] == results['center'][
      'accuracy_mean']


def test_unknown_loss(capsys):
  with pytest.raises(SystemExit):
    sweep.main(['--losses', 'arcfase'])
  assert "unknown losses ['arcfase']" in capsys.readouterr().err
