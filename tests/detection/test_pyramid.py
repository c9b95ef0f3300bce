"""The image pyramid: scales, and area resampling against TensorFlow's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.detection import nets
from facejax.detection import pyramid


def test_scales_follow_the_paper():
  # Every level whose shorter side is at least 12 pixels, from 12 / 20.
  assert pyramid.scales(600, 512, 20, 0.709) == pytest.approx(
      [0.6 * 0.709**k for k in range(10)])
  assert min(512 * 0.6 * 0.709**9, 600) >= 12 > 512 * 0.6 * 0.709**10
  assert pyramid.scales(19, 400, 20, 0.709) == []  # smaller than the face
  assert len(pyramid.scales(20, 20, 20, 0.709)) == 1
  # Where the mtcnn package's formula would go below 12 pixels (it then
  # finds no face at all) the paper's rule stops.
  for shorter in range(20, 700, 7):
    for min_face in (12, 20, 40, 80):
      for scale in pyramid.scales(shorter, 999, min_face, 0.709):
        assert min(pyramid.level_size(shorter, 999, scale)) >= 12


def _brute_force_area(image, outputs, axis):
  """float64 area average: output y covers [y r, (y + 1) r) exactly."""
  image = np.moveaxis(np.asarray(image, np.float64), axis, 0)
  inputs = image.shape[0]
  ratio = inputs / outputs
  out = np.zeros((outputs,) + image.shape[1:])
  for y in range(outputs):
    start, end = y * ratio, (y + 1) * ratio
    for i in range(int(np.floor(start)), int(np.ceil(end))):
      covered = min(i + 1, end) - max(i, start)
      out[y] += covered * image[min(i, inputs - 1)]
    out[y] /= ratio
  return np.moveaxis(out, 0, axis)


@jax.jit
def _resample(*arrays):
  return pyramid.resample(*arrays, nets.PIXEL_SCALE, nets.PIXEL_OFFSET)


def _our_levels(raw, scales, pad=(0, 0)):
  """Our normalised levels of one uint8 image, padded as in a bucket."""
  height, width = raw.shape[:2]
  padded = np.zeros((1, height + pad[0], width + pad[1], 3), np.uint8)
  padded[0, :height, :width] = raw
  integral = pyramid.integral_rows(jnp.asarray(padded))
  levels = []
  for scale in scales:
    rows, columns = pyramid.level_size(height, width, scale)
    row_index, row_weight = pyramid.area_spans(height, rows, rows + 2)
    column_index, column_weight = pyramid.area_weights(
        width, columns, columns + 3, pyramid.taps(scale))
    level = _resample(jnp.asarray(padded), integral, row_index[None],
                      row_weight[None], column_index[None],
                      column_weight[None])[0]
    level = np.asarray(level)
    assert np.all(level[rows:] == 0) and np.all(level[:, columns:] == 0)
    levels.append(level[:rows, :columns])
  return levels


@pytest.mark.parametrize('height, width', [(150, 128), (37, 53)])
def test_area_resampling_equals_tensorflow_and_brute_force(height, width):
  tf = pytest.importorskip('tensorflow')
  raw = np.random.default_rng(height).integers(0, 256, (height, width, 3),
                                               dtype=np.uint8)
  normalised = (raw - 127.5) / 128  # float64, as the mtcnn package feeds TF
  # Down (the pyramid's first and last levels: few taps and many) and up
  # (a minimum face below 12 pixels).
  scales = pyramid.scales(height, width, 20, 0.709)
  scales = [scales[0], scales[-1], 1.5, 1.0635]
  for scale, level in zip(scales, _our_levels(raw, scales, pad=(9, 5))):
    size = np.asarray([height, width]) * scale  # the package's float size
    reference = tf.image.resize(normalised[None], size, method='area')
    assert level.shape[:2] == tuple(reference.shape[1:3])
    np.testing.assert_allclose(level, reference.numpy()[0], atol=1e-6)
    exact = _brute_force_area(_brute_force_area(normalised, level.shape[0],
                                                0), level.shape[1], 1)
    # TensorFlow's float32 spans [y r, (y + 1) r) are off by up to an ulp
    # of y r, which weighs pixels by up to ~1e-4 more or less.
    np.testing.assert_allclose(level, exact, atol=2e-4)


def test_taps_suffice_for_every_level():
  for inputs in range(12, 700, 11):
    for scale in pyramid.scales(inputs, inputs, 20, 0.709):
      outputs = int(inputs * scale)
      pyramid.area_weights(inputs, outputs, outputs, pyramid.taps(scale))
  with pytest.raises(ValueError, match='needs 3 taps, more than 2'):
    pyramid.area_weights(100, 40, 40, 2)


def test_pnet_cells():
  assert [pyramid.pnet_cells(n) for n in (11, 12, 13, 14, 15, 57)] == [
      0, 1, 2, 2, 3, 24]
