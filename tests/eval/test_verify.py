"""python -m eval.verify with the tiny trained run."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from eval import verify

pytest.importorskip('mtcnn')  # the detector's released weights


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """grace_hopper.jpg, its mirror image and a blank photo."""
  import matplotlib.cbook
  folder = tmp_path_factory.mktemp('photos')
  with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
    image = np.asarray(Image.open(f).convert('RGB'))
  Image.fromarray(image).save(folder / 'hopper.png')
  Image.fromarray(image[:, ::-1]).save(folder / 'mirror.png')
  Image.fromarray(np.full_like(image, 200)).save(folder / 'blank.png')
  return {name: str(folder / f'{name}.png')
          for name in ('hopper', 'mirror', 'blank')}


def _run(args, capsys):
  status = verify.main(args)
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def test_mirror_image_is_the_same_person(workdir, photos, capsys):
  status, out, err = _run(
      ['--checkpoint', workdir, photos['hopper'], photos['mirror'],
       '--threshold', '0.5', '--min-face', '80'], capsys)
  assert status == 0, err
  similarity = float(out.split('cosine similarity ')[1].split()[0])
  # The flip test makes the embedding of a face and of its mirror image
  # nearly equal, whatever the weights.
  assert similarity > 0.9
  assert 'given by --threshold' in out
  assert 'verdict: same' in out


def test_no_face_names_the_photo(workdir, photos, capsys):
  status, _, err = _run(
      ['--checkpoint', workdir, photos['hopper'], photos['blank'],
       '--threshold', '0.5', '--min-face', '80'], capsys)
  assert status == 1
  assert 'no face found' in err and photos['blank'] in err


def test_threshold_from_the_latest_report(workdir, photos, tmp_path, capsys):
  run = tmp_path / 'run'
  shutil.copytree(workdir, run)
  status, _, err = _run(['--checkpoint', str(run), photos['hopper'],
                         photos['mirror'], '--min-face', '80'], capsys)
  assert status == 1 and '--threshold' in err  # no report yet
  os.makedirs(run / 'eval')
  report = dict(checkpoint_step=2, metric='cosine', flip=True, sets={
      'lfw': {'raw pixels': {'thresholds': [0.0]},
              'model': {'thresholds': [0.9999, 0.9999, None]}}})
  (run / 'eval' / 'verification.json').write_text(json.dumps(report))
  status, out, err = _run(['--checkpoint', str(run), photos['hopper'],
                           photos['mirror'], '--min-face', '80'], capsys)
  assert status == 0, err
  assert 'threshold 0.9999' in out
  assert "set 'lfw'" in out and str(run / 'eval') in out
  report['metric'] = 'euclidean'
  (run / 'eval' / 'verification.json').write_text(json.dumps(report))
  status, _, err = _run(['--checkpoint', str(run), photos['hopper'],
                         photos['mirror'], '--min-face', '80'], capsys)
  assert status == 1 and 'euclidean' in err
