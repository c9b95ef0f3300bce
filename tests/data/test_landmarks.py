"""facejax.data.sources.read_landmarks: an untrusted landmarks file.

Lines ``relative/path x1 y1 ... x5 y5``; the file is decoded as UTF-8 (the
bad line named), an image named twice is an error naming both lines, and
the parser is fuzzed with seeded mutants of a valid file
(tests/mutations.py).
"""

import numpy as np
import pytest

from facejax.data import files
from facejax.data import sources
from tests import mutations

IMAGES = ['id_000/000.png', 'id_000/001.png', 'id_001/000.png']


def landmarks_line(image, k):
  return image + ' ' + ' '.join(f'{10 * k + v}.5' for v in range(10))


def landmarks_text(images=IMAGES):
  return '# five points\n' + '\n'.join(
      landmarks_line(image, k) for k, image in enumerate(images)) + '\n'


def test_reads_the_points_in_the_given_order(tmp_path):
  path = tmp_path / 'landmarks.txt'
  path.write_text(landmarks_text())
  points = sources.read_landmarks(path, IMAGES[::-1])
  assert points.shape == (3, 5, 2) and points.dtype == np.float32
  np.testing.assert_array_equal(points[0, 0], [20.5, 21.5])
  np.testing.assert_array_equal(points[2, 4], [8.5, 9.5])


@pytest.mark.parametrize('again', ['id_000/001.png', './id_000/001.png',
                                   'id_000//001.png'])
def test_an_image_named_twice_names_both_lines(tmp_path, again):
  path = tmp_path / 'landmarks.txt'
  path.write_text(landmarks_text() + landmarks_line(again, 7) + '\n')
  with pytest.raises(ValueError, match=f'landmarks.txt:5: {again} has '
                     r'landmarks again \(first on line 3\)'):
    sources.read_landmarks(path, IMAGES)


def test_invalid_utf8_names_the_line(tmp_path):
  path = tmp_path / 'landmarks.txt'
  path.write_bytes(landmarks_text().encode().replace(b'id_001',
                                                     b'id_\xff01'))
  with pytest.raises(files.DataFileError,
                     match='landmarks.txt, line 4: not UTF-8'):
    sources.read_landmarks(path, IMAGES)


def test_a_folder_or_a_missing_file(tmp_path):
  with pytest.raises(files.DataFileError, match='is a folder'):
    sources.read_landmarks(tmp_path, IMAGES)
  with pytest.raises(FileNotFoundError, match='landmarks file not found'):
    sources.read_landmarks(tmp_path / 'absent.txt', IMAGES)


def test_fuzzed_landmarks_parse_consistently_or_name_the_file(tmp_path):
  path = tmp_path / 'landmarks.txt'
  valid = landmarks_text().encode()

  def check(points):
    assert points.shape == (len(IMAGES), 5, 2)
    assert np.all(np.isfinite(points))

  mutations.fuzz(path, valid, lambda: sources.read_landmarks(path, IMAGES),
                 check)
