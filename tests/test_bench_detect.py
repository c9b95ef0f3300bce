"""bench.detect on two LFW-size photos, one round: its rows and table."""
import pytest

from bench import detect

pytest.importorskip('mtcnn')


def test_times_both_detectors_on_the_same_photos(capsys):
  rows = detect.main(['--rounds', '1', '--sets', 'LFW-size', '--photos',
                      '2', '--markdown'])
  printed = capsys.readouterr().out
  assert [row['method'] for row in rows] == [
      'facejax, batched', 'facejax, one at a time', 'mtcnn package']
  for row in rows:
    assert row['set'] == 'LFW-size' and row['images'] == 2
    assert row['faces'] == 2 and row['images_per_second'] > 0
  assert rows[2]['speedup'] == 1.0
  assert rows[0]['speedup'] == pytest.approx(
      rows[0]['images_per_second'] / rows[2]['images_per_second'])
  assert 'found by both 2, by one only 0' in printed
  assert ('| photos | method | images | faces (score >= 0.9) | images/s | '
          'CPU ms / image | vs the package |') in printed


def test_composites_and_crops():
  sets = detect.photo_sets()
  assert {len(photo.shape) for photos in sets.values() for photo in photos
          } == {3}
  assert {photo.shape for photo in sets['LFW-size']} == {(250, 250, 3)}
  image, boxes, landmarks = detect.composite(detect.COMPOSITES[0])
  assert image.shape == (600, 512, 3) and image.dtype.name == 'uint8'
  assert boxes.shape == (3, 4) and landmarks.shape == (3, 5, 2)
  # The mirrored paste keeps the template order: left eye left.
  assert all(points[0, 0] < points[1, 0] for points in landmarks)
  with pytest.raises(ValueError, match='does not fit'):
    detect.paste_face(image.copy(), detect.grace_hopper(),
                      detect.GRACE_HOPPER_FACE,
                      detect.Paste('grace_hopper', 1.0, 400, 400))
