"""python -m facejax.data.align on tiny generated photo folders."""
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from facejax.data import align
from facejax.data import alignment
from facejax.data import sources

pytest.importorskip('mtcnn')  # the detector's released weights

# A large minimum face keeps the pyramid (and the compile) small; Grace
# Hopper's face is about 175 pixels wide in the 512x600 sample.
MIN_FACE = 80


@pytest.fixture(scope='module')
def detector():
  """One detector for the module: it compiles once per size bucket."""
  from facejax import detection
  return detection.MTCNN(min_face_size=MIN_FACE)


@pytest.fixture(scope='module')
def hopper_bytes():
  import matplotlib.cbook
  with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
    return f.read()


def _photos(root, hopper_bytes):
  """alice/hopper.jpg (a face), alice/blank.png (none), bob/cut.jpg
  (truncated), bob/notes.txt (ignored)."""
  for name in ('alice', 'bob'):
    os.makedirs(root / name)
  (root / 'alice' / 'hopper.jpg').write_bytes(hopper_bytes)
  Image.fromarray(np.full((600, 512, 3), 128, np.uint8)).save(
      root / 'alice' / 'blank.png')
  (root / 'bob' / 'cut.jpg').write_bytes(hopper_bytes[:len(hopper_bytes) // 3])
  (root / 'bob' / 'notes.txt').write_text('not a photo')
  return root


def test_aligns_reports_and_resumes(tmp_path, detector, hopper_bytes):
  src = _photos(tmp_path / 'src', hopper_bytes)
  dst = tmp_path / 'dst'
  summary = align.align_folder(src, dst, detector, size=112, stream=False)
  assert summary['photos'] == 3
  assert summary['cropped'] == 1 and summary['faces'] == 1
  assert summary['no_face'] == [os.path.join('alice', 'blank.png')]
  assert summary['undecodable'] == [os.path.join('bob', 'cut.jpg')]
  crop = np.asarray(Image.open(dst / 'alice' / 'hopper.png'))
  assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
  assert crop.std() > 20  # a face, not the black border
  assert (dst / align.NO_FACE_FILE).read_text().split() == [
      'alice/blank.png']
  assert (dst / align.UNDECODABLE_FILE).read_text().split() == ['bob/cut.jpg']
  # ImageFolder reads the crops with the landmarks file: the template.
  folder = sources.ImageFolder(dst, landmarks_file=summary['landmarks_file'])
  assert folder.num_examples == 1
  np.testing.assert_allclose(folder.landmarks[0], alignment.ARCFACE_TEMPLATE,
                             atol=1e-4)

  # A rerun skips the finished photo (it is not decoded or detected again).
  before = os.stat(dst / 'alice' / 'hopper.png').st_mtime_ns
  again = align.align_folder(src, dst, detector, size=112, stream=False)
  assert again['skipped'] == 1 and again['cropped'] == 0
  assert os.stat(dst / 'alice' / 'hopper.png').st_mtime_ns == before
  assert again['crops'] == 1


def test_other_size_and_all_faces(tmp_path, detector, hopper_bytes):
  src = tmp_path / 'src'
  os.makedirs(src / 'grace')
  (src / 'grace' / 'a.jpg').write_bytes(hopper_bytes)
  dst = tmp_path / 'dst'
  summary = align.align_folder(src, dst, detector, size=96, all_faces=True,
                               stream=False)
  assert summary['faces'] >= 1
  crop = np.asarray(Image.open(dst / 'grace' / 'a_0.png'))
  assert crop.shape == (96, 96, 3)
  folder = sources.ImageFolder(dst, landmarks_file=summary['landmarks_file'])
  np.testing.assert_allclose(folder.landmarks[0], alignment.template_for(96),
                             atol=1e-4)


def test_decode_converts_modes(tmp_path, hopper_bytes):
  rgb = np.asarray(Image.open(io.BytesIO(hopper_bytes)).convert('RGB'))
  grey = Image.fromarray(rgb[:, :, 0])
  grey.save(tmp_path / 'grey.png')
  Image.open(io.BytesIO(hopper_bytes)).convert('CMYK').save(
      tmp_path / 'cmyk.jpg')
  Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(
      tmp_path / 'sixteen.png')
  for name in ('grey.png', 'cmyk.jpg', 'sixteen.png'):
    image = align.decode_photo(tmp_path / name)
    assert image.shape == rgb.shape and image.dtype == np.uint8, name
  np.testing.assert_array_equal(
      align.decode_photo(tmp_path / 'sixteen.png')[:, :, 1], rgb[:, :, 0])
  (tmp_path / 'junk.jpg').write_bytes(b'not an image')
  assert align.decode_photo(tmp_path / 'junk.jpg') is None


def test_command_line_errors(tmp_path, capsys):
  os.makedirs(tmp_path / 'empty')
  assert align.main([str(tmp_path / 'empty'), str(tmp_path / 'out')]) == 1
  assert 'no photos' in capsys.readouterr().err
  assert align.main([str(tmp_path / 'missing'), str(tmp_path / 'out')]) == 1
  assert 'not found' in capsys.readouterr().err


def test_command_line(tmp_path, hopper_bytes, capsys):
  src = _photos(tmp_path / 'src', hopper_bytes)
  shutil.rmtree(src / 'bob')
  assert align.main([str(src), str(tmp_path / 'dst'), '--min-face',
                     str(MIN_FACE), '--size', '112']) == 0
  out = capsys.readouterr().out
  assert '2 photos: 1 cropped (1 faces)' in out
  assert '1 without a face' in out
