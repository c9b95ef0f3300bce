"""eval.lfw: LFW pairs.txt, .bin sets and synthetic pairs from a checkpoint."""
import json
import pickle

import numpy as np
import pytest

from eval import lfw
from facejax.data import synthetic
from facejax.evaluators import verification
from tests.data import image_fixtures

PEOPLE = ['Ann_Lee', 'Bo_Chan', 'Cy_Dorn', 'Di_Eve']


@pytest.fixture(scope='module')
def lfw_root(tmp_path_factory):
  """LFW's layout: <name>/<name>_0001.jpg, 3 images per person."""
  root = tmp_path_factory.mktemp('lfw')
  images, _ = synthetic.generate(len(PEOPLE), 3, seed=1, image_size=32)
  for person, name in enumerate(PEOPLE):
    (root / name).mkdir()
    for number in range(1, 4):
      (root / name / f'{name}_{number:04d}.jpg').write_bytes(
          image_fixtures.encode(images[person * 3 + number - 1], 'jpeg'))
  return root


def write_pairs(path, folds):
  lines = [f'{len(folds)}\t3']
  for matched, mismatched in folds:
    lines += ['\t'.join(map(str, pair)) for pair in matched + mismatched]
  path.write_text('\n'.join(lines) + '\n')
  return path


MATCHED = [('Ann_Lee', 1, 2), ('Bo_Chan', 1, 3), ('Cy_Dorn', 2, 3)]
MISMATCHED = [('Ann_Lee', 1, 'Bo_Chan', 2), ('Cy_Dorn', 1, 'Di_Eve', 3),
              ('Di_Eve', 2, 'Ann_Lee', 3)]


def test_pairs_txt_report_table_and_plot(workdir, lfw_root, tmp_path, capsys):
  pairs = write_pairs(tmp_path / 'pairs.txt',
                      [(MATCHED, MISMATCHED), (MATCHED[::-1], MISMATCHED)])
  out = tmp_path / 'out'
  assert lfw.main(['--checkpoint', workdir, '--pairs', str(pairs), '--data',
                   str(lfw_root), '--out', str(out), '--baseline']) == 0
  printed = capsys.readouterr().out
  assert '| pairs.txt | model |' in printed
  assert '| pairs.txt | raw pixels |' in printed
  report = json.loads((out / 'verification.json').read_text())
  assert report['checkpoint_step'] == 2 and report['flip'] is True
  for method in ('model', 'raw pixels'):
    result = report['sets']['pairs.txt'][method]
    assert result['pairs'] == 12 and result['fold_ids'] == [0, 1]
    for key in ('accuracy_mean', 'accuracy_std', 'val_at_far', 'eer', 'auc'):
      assert 0 <= result[key] <= 1, (method, key)
    assert len(result['thresholds']) == 2
  assert (out / 'roc.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_scores_follow_the_pairs(workdir, lfw_root, tmp_path):
  pairs = write_pairs(tmp_path / 'pairs.txt', [(MATCHED, MISMATCHED)] * 2)
  pair_set = verification.lfw_pairs(str(pairs), str(lfw_root))
  assert len(pair_set.source.paths) == 11  # each image embedded once
  features = np.random.default_rng(0).normal(size=(11, 4))
  cosine = verification.pair_scores(features, pair_set, 'cosine')
  euclidean = verification.pair_scores(features, pair_set, 'euclidean')
  for i, (a, b) in enumerate(zip(pair_set.first, pair_set.second)):
    assert cosine[i] == pytest.approx(features[a] @ features[b])
    assert euclidean[i] == pytest.approx(np.linalg.norm(features[a]
                                                        - features[b]))
  path_a = pair_set.source.paths[pair_set.first[3]]
  assert path_a.endswith('Ann_Lee/Ann_Lee_0001.jpg')  # line 5: mismatched
  assert pair_set.source.paths[pair_set.second[3]].endswith(
      'Bo_Chan/Bo_Chan_0002.jpg')


def test_bin_and_synthetic_sets(workdir, lfw_root, tmp_path, capsys):
  jpegs = sorted((lfw_root / 'Ann_Lee').iterdir()) + sorted(
      (lfw_root / 'Bo_Chan').iterdir())
  bins = [p.read_bytes() for p in jpegs] * 4  # 24 images, 12 pairs
  issame = [True, False] * 6
  (tmp_path / 'tiny.bin').write_bytes(pickle.dumps((bins, issame)))
  out = tmp_path / 'out'
  assert lfw.main(['--checkpoint', workdir, '--bin', str(tmp_path / 'tiny.bin'),
                   '--synthetic', '20', '--metric', 'euclidean', '--out',
                   str(out)]) == 0
  report = json.loads((out / 'verification.json').read_text())
  assert set(report['sets']) == {'tiny', 'synthetic (20 pairs)'}
  assert report['sets']['tiny']['model']['pairs'] == 12
  assert report['metric'] == 'euclidean'
  assert '| tiny | model |' in capsys.readouterr().out


def test_errors_name_the_file_and_line(workdir, lfw_root, tmp_path, capsys):
  absent = [('Ann_Lee', 1, 2), ('Bo_Chan', 1, 9), ('Cy_Dorn', 2, 3)]
  pairs = write_pairs(tmp_path / 'pairs.txt', [(absent, MISMATCHED)])
  assert lfw.main(['--checkpoint', workdir, '--pairs', str(pairs), '--data',
                   str(lfw_root), '--out', str(tmp_path / 'out')]) == 1
  err = capsys.readouterr().err
  assert 'pairs.txt, line 3' in err and 'Bo_Chan_0009.jpg' in err
  with pytest.raises(SystemExit):
    lfw.main(['--checkpoint', workdir, '--out', str(tmp_path)])
