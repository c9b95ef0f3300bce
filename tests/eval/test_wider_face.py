"""python -m eval.wider_face end to end: generated ground truth and photos."""
import json
import os

import numpy as np
from PIL import Image
import pytest

from eval import wider_face
from facejax.metrics import detection
from tests.metrics.test_detection import generated_dataset
from tests.metrics.test_detection import write_ground_truth
from tests.metrics.test_detection import write_prediction_folder

SETTINGS = ('easy', 'medium', 'hard')


@pytest.fixture
def submission(tmp_path):
  """(gt folder, prediction folder, predictions) of a planted dataset."""
  events, predictions = generated_dataset(2)
  gt_dir = write_ground_truth(str(tmp_path / 'gt'), events)
  folder = write_prediction_folder(str(tmp_path / 'pred'), predictions)
  return gt_dir, folder, predictions


def test_the_command_prints_writes_and_plots_the_official_aps(
    tmp_path, submission, capsys):
  gt_dir, folder, predictions = submission
  out = str(tmp_path / 'out')
  assert wider_face.main(['--predictions', folder, '--gt', gt_dir,
                          '--out', out]) == 0
  captured = capsys.readouterr()
  expected = detection.wider_face_evaluate(predictions, gt_dir)
  for setting in SETTINGS:
    assert f'| {setting} | {expected[setting]:.4f} |' in captured.out
  assert '1 of ' in captured.err and '1--Event1/1_Event1_1' in captured.err
  with open(os.path.join(out, 'wider_face.json')) as f:
    written = json.load(f)
  assert written['ap'] == {s: expected[s] for s in SETTINGS}
  assert written['missing_images'] == ['1--Event1/1_Event1_1']
  recall = written['curves']['hard']['recall']
  assert recall == expected['curves']['hard'][1].tolist()
  assert len(recall) == 1000
  with open(os.path.join(out, 'wider_face_pr.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def _error(capsys, argv):
  assert wider_face.main(argv) == 1
  captured = capsys.readouterr()
  assert not captured.out
  assert captured.err.startswith('error: ')
  return captured.err


def test_a_missing_ground_truth_file_is_a_one_line_error(
    tmp_path, submission, capsys):
  gt_dir, folder, _ = submission
  os.remove(os.path.join(gt_dir, 'wider_hard_val.mat'))
  err = _error(capsys, ['--predictions', folder, '--gt', gt_dir,
                        '--out', str(tmp_path / 'out')])
  assert 'wider_hard_val.mat: no such file' in err
  assert not os.path.exists(tmp_path / 'out')


def test_a_malformed_prediction_line_names_file_and_line(
    tmp_path, submission, capsys):
  gt_dir, folder, _ = submission
  path = os.path.join(folder, '0--Event0', '0_Event0_1.txt')
  with open(path) as f:
    lines = f.read().splitlines()
  lines[2] = '12 14 x 30 0.9'
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  err = _error(capsys, ['--predictions', folder, '--gt', gt_dir,
                        '--out', str(tmp_path / 'out')])
  assert f'{path}, line 3: expected five numbers' in err


def test_an_empty_prediction_folder_is_a_one_line_error(
    tmp_path, submission, capsys):
  gt_dir, _, _ = submission
  (tmp_path / 'empty').mkdir()
  err = _error(capsys, ['--predictions', str(tmp_path / 'empty'),
                        '--gt', gt_dir, '--out', str(tmp_path / 'out')])
  assert 'no prediction files' in err


def test_detector_and_images_go_together(tmp_path, submission):
  gt_dir, folder, _ = submission
  with pytest.raises(SystemExit):
    wider_face.main(['--predictions', folder, '--gt', gt_dir,
                     '--detector', 'mtcnn', '--out', str(tmp_path / 'out')])


# --- The detector branch, with a detector that knows the planted faces. ---


class PlantedDetector:
  """Finds the faces planted in each photo, told apart by the photo's size."""

  def __init__(self, faces_by_size):
    self.faces_by_size = faces_by_size
    self.seen = []

  def detect(self, image):
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    self.seen.append(image.shape[:2])
    faces = self.faces_by_size.get(image.shape[:2], [])
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in faces],
                     np.float32).reshape(-1, 4)
    scores = np.array([s for *_, s in faces], np.float32)
    return boxes, scores, np.zeros((len(faces), 5, 2), np.float32)


def _photo_folder(root):
  """Photos of two events in several encodings, and their planted faces.

  Returns (images folder, ground-truth events, faces by photo size, names
  of the photos that cannot be read).
  """
  plain = dict(mode='RGB', suffix='.jpg')
  photos = [  # (event, name, (h, w), faces x y w h score, kept, encoding)
      ('0--A', '0_A_0', (60, 80), [(10, 12, 20, 24, 0.99), (50, 5, 12, 12,
                                                             0.6)], [1], plain),
      ('0--A', '0_A_1', (64, 64), [], [], dict(mode='L', suffix='.png')),
      ('0--A', '0_A_2', (50, 90), [(30, 8, 16, 20, 0.95)], [1],
       dict(mode='CMYK', suffix='.jpg')),
      ('1--B', '1_B_0', (70, 70), [(4, 4, 30, 30, 0.9)], [1],
       dict(mode='I;16', suffix='.png')),
      ('1--B', '1_B_1', (40, 40), [(1, 1, 9, 9, 0.8)], [1],
       dict(mode='RGB', suffix='.jpg', truncate=True)),
      ('1--B', '1_B_2', (30, 30), [(2, 2, 10, 10, 0.7)], [1],
       dict(mode='RGB', suffix='.jpg', text=True)),
  ]
  images_dir = os.path.join(root, 'images')
  events, faces_by_size, unreadable = {}, {}, []
  rng = np.random.default_rng(0)
  for event, name, size, faces, kept, encoding in photos:
    os.makedirs(os.path.join(images_dir, event), exist_ok=True)
    path = os.path.join(images_dir, event, name + encoding['suffix'])
    if encoding.get('text'):
      with open(path, 'w') as f:
        f.write('not an image')
    else:
      pixels = rng.integers(0, 255, (*size, 3), np.uint8)
      image = Image.fromarray(pixels)
      if encoding['mode'] == 'I;16':
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
      elif encoding['mode'] != 'RGB':
        image = image.convert(encoding['mode'])
      image.save(path)
      if encoding.get('truncate'):
        with open(path, 'rb') as f:
          data = f.read()
        with open(path, 'wb') as f:
          f.write(data[:len(data) // 2])
    if encoding.get('truncate') or encoding.get('text'):
      unreadable.append(f'{event}/{name}{encoding["suffix"]}')
    faces_by_size[size] = faces
    boxes = np.array([face[:4] for face in faces], np.float64).reshape(-1, 4)
    events.setdefault(event, []).append(
        (name, boxes, {s: kept for s in SETTINGS}))
  return images_dir, list(events.items()), faces_by_size, unreadable


def test_write_predictions_writes_the_submission_format(tmp_path):
  images_dir, events, faces_by_size, unreadable = _photo_folder(str(tmp_path))
  detector = PlantedDetector(faces_by_size)
  written, skipped = wider_face.write_predictions(
      images_dir, str(tmp_path / 'pred'), detector)
  assert written == 4 and [name for name, _ in skipped] == unreadable
  assert all('cannot be read as an image' in reason for _, reason in skipped)
  predictions = detection.read_predictions(str(tmp_path / 'pred'))
  np.testing.assert_allclose(predictions['0--A']['0_A_0'],
                             [[10, 12, 20, 24, 0.99], [50, 5, 12, 12, 0.6]],
                             rtol=1e-6)
  assert predictions['0--A']['0_A_1'].shape == (0, 5)  # K = 0
  with open(tmp_path / 'pred' / '0--A' / '0_A_1.txt') as f:
    assert f.read() == '0_A_1\n0\n'
  gt_dir = write_ground_truth(str(tmp_path / 'gt'), events)
  result = detection.wider_face_evaluate(predictions, gt_dir)
  # Every readable photo's counted face found; the second face of 0_A_0
  # is ignored; the two unreadable photos' faces are missed.
  assert result['missing_images'] == ['1--B/1_B_1', '1--B/1_B_2']
  assert result['hard'] == pytest.approx(3 / 5)


def test_read_rgb_converts_every_mode_to_uint8_rgb(tmp_path):
  images_dir, _, faces_by_size, _ = _photo_folder(str(tmp_path))
  for event, name in wider_face.image_paths(images_dir):
    path = os.path.join(images_dir, event, name)
    if name.startswith(('1_B_1', '1_B_2')):
      with pytest.raises(ValueError, match=f'{path}: cannot be read'):
        wider_face.read_rgb(path)
      continue
    pixels = wider_face.read_rgb(path)
    assert pixels.dtype == np.uint8 and pixels.shape[2] == 3
    assert pixels.shape[:2] in faces_by_size
  with pytest.raises(ValueError, match='more than 100'):
    wider_face.read_rgb(os.path.join(images_dir, '0--A', '0_A_0.jpg'),
                        max_pixels=100)


def test_the_detector_branch_end_to_end(tmp_path, capsys, monkeypatch):
  images_dir, events, faces_by_size, _ = _photo_folder(str(tmp_path))
  gt_dir = write_ground_truth(str(tmp_path / 'gt'), events)
  detector = PlantedDetector(faces_by_size)
  asked = []
  monkeypatch.setitem(wider_face.DETECTORS, 'mtcnn',
                      lambda min_face: asked.append(min_face) or detector)
  pred = str(tmp_path / 'pred')
  argv = ['--detector', 'mtcnn', '--images', images_dir, '--min-face', '12',
          '--predictions', pred, '--gt', gt_dir, '--out', str(tmp_path / 'o')]
  assert wider_face.main(argv) == 0
  captured = capsys.readouterr()
  assert asked == [12] and len(detector.seen) == 4
  assert '| hard | 0.6000 |' in captured.out
  assert '2 images could not be read (skipped)' in captured.err
  with open(tmp_path / 'o' / 'wider_face.json') as f:
    written = json.load(f)
  assert written['detector'] == 'mtcnn' and written['written'] == 4
  assert [s['image'] for s in written['skipped']] == ['1--B/1_B_1.jpg',
                                                      '1--B/1_B_2.jpg']
  # The folder now holds a submission: a second run would mix two.
  err = _error(capsys, argv)
  assert 'not empty' in err and len(detector.seen) == 4


def test_the_detector_branch_refuses_an_empty_image_folder(
    tmp_path, submission, capsys, monkeypatch):
  gt_dir, _, _ = submission
  (tmp_path / 'images').mkdir()
  monkeypatch.setitem(wider_face.DETECTORS, 'mtcnn',
                      lambda min_face: pytest.fail('built the detector'))
  err = _error(capsys, ['--detector', 'mtcnn', '--images',
                        str(tmp_path / 'images'), '--predictions',
                        str(tmp_path / 'new_pred'), '--gt', gt_dir,
                        '--out', str(tmp_path / 'out')])
  assert 'no images' in err


@pytest.mark.parametrize('boxes, scores, message', [
    ([[0, 0, 5, 5]], [0.9, 0.8], 'shape'),
    ([[5, 0, 0, 5]], [0.9], 'x2 < x1'),
    ([[0, 0, np.nan, 5]], [0.9], 'not finite')])
def test_a_broken_detector_output_is_refused(boxes, scores, message):
  with pytest.raises(ValueError, match=message):
    wider_face.submission_text('img', boxes, scores)


def test_facejax_mtcnn_end_to_end(tmp_path, capsys):
  """The real detector over two photos: Grace Hopper's portrait (its face
  as the one ground-truth face, a box placed by hand) and a face-free grey
  image of the same size, whose prediction file is empty (K = 0)."""
  from matplotlib import cbook  # pylint: disable=g-import-not-at-top
  # Until facejax.detection is committed beside this test.
  if not hasattr(pytest.importorskip('facejax.detection'), 'MTCNN'):
    pytest.skip('facejax.detection has no MTCNN yet')
  events_dir = tmp_path / 'images' / '0--Portrait'
  events_dir.mkdir(parents=True)
  with open(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False),
            'rb') as f:
    (events_dir / 'grace_hopper.jpg').write_bytes(f.read())
  height, width = wider_face.read_rgb(str(events_dir / 'grace_hopper.jpg')
                                      ).shape[:2]
  Image.new('RGB', (width, height), (128, 128, 128)).save(
      events_dir / 'grey.png')
  hand_placed_face = np.array([[180.0, 110.0, 170.0, 220.0]])
  gt_dir = write_ground_truth(str(tmp_path / 'gt'), [('0--Portrait', [
      ('grace_hopper', hand_placed_face, {s: [1] for s in SETTINGS}),
      ('grey', np.zeros((0, 4)), {s: [] for s in SETTINGS})])])
  pred = tmp_path / 'pred'
  assert wider_face.main([
      '--detector', 'mtcnn', '--images', str(tmp_path / 'images'),
      '--predictions', str(pred), '--gt', gt_dir,
      '--out', str(tmp_path / 'out')]) == 0
  assert '| easy | 1.0000 |' in capsys.readouterr().out
  assert (pred / '0--Portrait' / 'grey.txt').read_text() == 'grey\n0\n'
  found = detection.read_predictions(str(pred))['0--Portrait']
  assert found['grace_hopper'].shape[0] >= 1
  assert found['grace_hopper'][:, 4].max() >= 0.9
