"""P-Net, R-Net and O-Net against the mtcnn package's own Keras networks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.detection import nets
from facejax.detection import weights
from tests.detection import keras_reference

pytest.importorskip('mtcnn')  # the released weights


@pytest.fixture(scope='module')
def variables():
  return weights.load_params()


_pnet = jax.jit(nets.PNet().apply)
_rnet = jax.jit(nets.RNet().apply)
_onet = jax.jit(nets.ONet().apply)


def _uniform(shape, seed):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# Odd and even sizes: ceil-mode pooling hangs a window over the end of odd
# ones; 12 x 12 is a single cell.
@pytest.mark.parametrize('height, width', [(57, 43), (12, 12), (13, 17),
                                           (64, 31)])
def test_pnet_equals_the_package(variables, height, width):
  x = _uniform((2, height, width, 3), seed=height)
  box, prob = (np.asarray(a) for a in keras_reference.keras_net('pnet')(x))
  face, offsets = _pnet(variables['pnet'], x)
  rows = -(-(height - 2) // 2) - 4
  columns = -(-(width - 2) // 2) - 4
  assert face.shape == (2, rows, columns) == prob.shape[:3]
  np.testing.assert_allclose(face, prob[..., 1], atol=1e-5)
  np.testing.assert_allclose(offsets, box, atol=1e-5)


def test_rnet_and_onet_equal_the_package(variables):
  x = _uniform((16, 24, 24, 3), seed=1)
  box, prob = (np.asarray(a) for a in keras_reference.keras_net('rnet')(x))
  face, offsets = _rnet(variables['rnet'], x)
  np.testing.assert_allclose(face, prob[:, 1], atol=1e-5)
  np.testing.assert_allclose(offsets, box, atol=1e-5)
  x = _uniform((16, 48, 48, 3), seed=2)
  box, points, prob = (np.asarray(a)
                       for a in keras_reference.keras_net('onet')(x))
  face, offsets, landmarks = _onet(variables['onet'], x)
  np.testing.assert_allclose(face, prob[:, 1], atol=1e-5)
  np.testing.assert_allclose(offsets, box, atol=1e-5)
  np.testing.assert_allclose(landmarks, points, atol=1e-5)


def test_an_h_major_flatten_would_be_wrong(variables):
  # The released dense layers read the feature map column by column: the
  # ordinary row-by-row flatten moves R-Net's probabilities by far more
  # than the tolerance above (the trap the W-major flatten avoids).
  x = _uniform((16, 24, 24, 3), seed=3)
  face, _ = _rnet(variables['rnet'], x)
  original = nets._width_major_flatten  # pylint: disable=protected-access
  try:
    nets._width_major_flatten = lambda y: y.reshape(y.shape[0], -1)  # pylint: disable=protected-access
    wrong, _ = jax.jit(nets.RNet().apply)(variables['rnet'], x)
  finally:
    nets._width_major_flatten = original  # pylint: disable=protected-access
  assert np.max(np.abs(face - wrong)) > 0.05


@pytest.mark.parametrize('window, height, width', [(2, 17, 14), (3, 24, 24),
                                                   (3, 15, 20)])
def test_conv_pool_on_blocks_equals_conv_then_ceil_pool(window, height,
                                                        width):
  # The layer computed on 2x2 blocks against the plain composition.
  module = nets.ConvPool(6, window=window)
  x = _uniform((3, height, width, 4), seed=window)
  params = module.init(jax.random.PRNGKey(0), x)
  params = jax.tree_util.tree_map(
      lambda p: p + jnp.asarray(_uniform(p.shape, seed=5)) * 0.3, params)
  kernel = params['params']['kernel']
  bias = params['params']['bias']
  slope = params['params']['prelu']['negative_slope']
  conv = jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + bias
  expected = nets.max_pool_ceil(jnp.where(conv >= 0, conv, slope * conv),
                                window, 2)
  np.testing.assert_allclose(module.apply(params, x), expected, atol=1e-5)
  # In blocks already (as the crops come), the same.
  blocks = x.reshape(3, height // 2, 2, width // 2, 2, 4).transpose(
      0, 1, 3, 2, 4, 5) if height % 2 == width % 2 == 0 else None
  if blocks is not None:
    np.testing.assert_allclose(module.apply(params, blocks), expected,
                               atol=1e-5)


def test_pnet_on_padded_images_equals_the_unpadded(variables):
  # Bucketed batches pad images at the bottom and right; with the true
  # sizes every cell inside an image is as without padding, although the
  # padding is not what ceil mode's -inf would be.
  sizes = [(57, 43), (40, 52)]
  padded = np.zeros((2, 64, 64, 3), np.float32)
  expected = []
  for n, (height, width) in enumerate(sizes):
    image = _uniform((1, height, width, 3), seed=10 + n)
    padded[n, :height, :width] = image[0]
    expected.append(_pnet(variables['pnet'], image))
  face, offsets = _pnet(variables['pnet'], padded, jnp.asarray(sizes))
  unmasked, _ = _pnet(variables['pnet'], padded)
  for n, (want_face, want_offsets) in enumerate(expected):
    rows, columns = want_face.shape[1:]
    np.testing.assert_allclose(face[n, :rows, :columns], want_face[0],
                               atol=1e-6)
    np.testing.assert_allclose(offsets[n, :rows, :columns], want_offsets[0],
                               atol=1e-6)
  # Without the sizes the border cells of the odd-sized image differ.
  assert np.max(np.abs(unmasked[0, :24, :17] - expected[0][0][0])) > 1e-3
