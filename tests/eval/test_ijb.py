"""python -m eval.ijb end to end: a tiny trained run and an imported model
on the synthetic IJB-style set; resumable extraction; clear errors."""
import json
import os

import pytest

from eval import ijb


def test_the_job_on_a_trained_run(workdir, tmp_path, capsys):
  out = str(tmp_path / 'out')
  assert ijb.main(['--checkpoint', workdir, '--synthetic', '6', '--out',
                   out, '--baseline']) == 0
  printed = capsys.readouterr().out
  assert '| raw pixels |' in printed
  assert '| Methods | 1e-06 | 1e-05 | 0.0001 | 0.001 | 0.01 | 0.1 | AUC |' in (
      printed)
  assert '| Methods | gallery | rank 1 | rank 5 | rank 10 |' in printed
  report = json.load(open(os.path.join(out, 'ijb.json')))
  assert set(report['identification']) == {'G1', 'G2'}
  assert 0 <= report['auc'] <= 1 and report['pairs'] > 0
  assert 0 <= report['baseline']['auc'] <= 1
  assert os.path.exists(os.path.join(out, 'roc.png'))
  # A rerun reuses the extracted features (resumable) and agrees.
  blocks = os.path.join(out, 'features', 'blocks', '000000.npy')
  stamp = os.stat(blocks).st_mtime_ns
  assert ijb.main(['--checkpoint', workdir, '--root',
                   os.path.join(out, 'synthetic_ijb'), '--out', out]) == 0
  assert os.stat(blocks).st_mtime_ns == stamp
  again = json.load(open(os.path.join(out, 'ijb.json')))
  assert again['tar_at_far'] == report['tar_at_far']


def test_the_job_on_an_imported_model(tmp_path, capsys):
  torch = pytest.importorskip('torch')
  from bench import arcface_torch_models as reference  # pylint: disable=import-outside-toplevel
  from facejax.interop import __main__ as interop  # pylint: disable=import-outside-toplevel
  net = reference.randomise(reference.IResNet(
      (1, 1, 1, 1), (4, 4, 8, 8), 4, 8, 32), 0, 32)
  torch.save(net.state_dict(), tmp_path / 'model.pt')
  imported = str(tmp_path / 'imported')
  assert interop.main(['import-torch', str(tmp_path / 'model.pt'),
                       '--workdir', imported]) == 0
  assert ijb.main(['--checkpoint', imported, '--synthetic', '4',
                   '--no-detector-score', '--out',
                   str(tmp_path / 'out')]) == 0
  report = json.load(open(tmp_path / 'out' / 'ijb.json'))
  assert report['detector_score'] is False


def test_errors_are_one_line(workdir, tmp_path, capsys):
  assert ijb.main(['--checkpoint', workdir, '--root', str(tmp_path),
                   '--out', str(tmp_path / 'o')]) == 1
  assert 'ijbc_face_tid_mid.txt: missing' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    ijb.main(['--checkpoint', workdir, '--out', str(tmp_path / 'o')])
