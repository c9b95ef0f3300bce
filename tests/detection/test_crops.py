"""Crops for R-Net and O-Net against TensorFlow's crop_and_resize."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.detection import crops


def test_equals_the_packages_crop_and_resize_and_ignores_padding():
  tf = pytest.importorskip('tensorflow')
  rng = np.random.default_rng(0)
  height, width = 60, 45
  raw = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  corner = np.stack([rng.uniform(-20, 40, 50), rng.uniform(-20, 50, 50)], 1)
  boxes = np.concatenate([corner, corner + rng.uniform(3, 40, (50, 1))], 1)
  # The mtcnn package: boxes normalised by the image size, its image
  # normalised first, extrapolation 0.
  reference = tf.image.crop_and_resize(
      ((raw - 127.5) / 128)[None],
      boxes[:, [1, 0, 3, 2]] / [height, width, height, width],
      np.zeros(50, np.int32), (24, 24)).numpy()
  padded = np.full((1, height + 7, width + 9, 3), 255, np.uint8)
  padded[0, :height, :width] = raw
  crop = jax.jit(crops.crop_and_resize, static_argnums=(3, 4))
  ours = crop(jnp.asarray(padded), jnp.array([[height, width]]),
              jnp.asarray(boxes[None], jnp.float32), 24, False)[0]
  # float32 sample positions (the package's are float64 until TF casts).
  np.testing.assert_allclose(ours, reference, atol=3e-5)
  blocks = crop(jnp.asarray(padded), jnp.array([[height, width]]),
                jnp.asarray(boxes[None], jnp.float32), 24, True)[0]
  assert blocks.shape == (50, 12, 12, 2, 2, 3)
  np.testing.assert_array_equal(
      np.asarray(blocks).transpose(0, 1, 3, 2, 4, 5).reshape(50, 24, 24, 3),
      ours)
