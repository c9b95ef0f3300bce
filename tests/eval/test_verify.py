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


def test_lfw_align_detects_raw_images(workdir, photos, tmp_path, capsys):
  """eval.lfw --align (kept here beside the other detector-backed job):
  raw images in LFW's layout are detected and aligned on the fly; a photo
  without a face is centre-cropped and listed, never fatal."""
  from eval import lfw
  root = tmp_path / 'lfw'
  for name, sources in (('Grace_Hopper', ('hopper', 'mirror')),
                        ('Blank_Person', ('blank', 'blank'))):
    (root / name).mkdir(parents=True)
    for number, source in enumerate(sources, 1):
      shutil.copy(photos[source], root / name / f'{name}_{number:04d}.jpg')
  pairs = tmp_path / 'pairs.txt'
  pairs.write_text('2\t1\nGrace_Hopper\t1\t2\nGrace_Hopper\t1\tBlank_Person'
                   '\t1\nBlank_Person\t1\t2\nGrace_Hopper\t2\tBlank_Person'
                   '\t2\n')
  out = tmp_path / 'out'
  status = lfw.main(['--checkpoint', workdir, '--pairs', str(pairs),
                     '--data', str(root), '--align', '--min-face', '80',
                     '--out', str(out)])
  printed = capsys.readouterr()
  assert status == 0, printed.err
  assert 'no face found in 2 images, centre-cropped' in printed.out
  report = json.loads((out / 'verification.json').read_text())
  assert report['sets']['pairs.txt']['model']['pairs'] == 4
  with pytest.raises(SystemExit):  # --align needs raw LFW images
    lfw.main(['--checkpoint', workdir, '--synthetic', '20', '--align',
              '--out', str(out)])


def test_lfw_landmarks_come_from_the_detector(photos, tmp_path):
  from facejax import detection
  from facejax.data import alignment
  from facejax.evaluators import verification
  detector = detection.MTCNN(min_face_size=80)
  landmarks, undetected = verification.detected_landmarks(
      [photos['hopper'], photos['blank']], detector)
  image = np.asarray(Image.open(photos['hopper']))
  _, _, expected = detector.detect(image)
  np.testing.assert_allclose(landmarks[0], expected[0], atol=1e-4)
  assert undetected == (photos['blank'],)
  # No face: the 112 template at the centre of the 512x600 photo.
  np.testing.assert_allclose(
      landmarks[1], alignment.ARCFACE_TEMPLATE + [200, 244], atol=1e-4)
