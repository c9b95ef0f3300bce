"""MTCNN's box arithmetic against the formulas written out per box."""
import jax.numpy as jnp
import numpy as np

from facejax.detection import boxes


def test_cell_boxes():
  offsets = np.random.default_rng(0).normal(0, 0.1, (3, 4, 4)).astype(
      np.float32)
  scale = 0.6
  got = np.asarray(boxes.cell_boxes(jnp.asarray(offsets), scale))
  for i in range(3):
    for j in range(4):
      dx1, dy1, dx2, dy2 = offsets[i, j]
      want = [(2 * j + 1 + 11 * dx1) / scale, (2 * i + 1 + 11 * dy1) / scale,
              (2 * j + 12 + 11 * dx2) / scale, (2 * i + 12 + 11 * dy2) / scale]
      np.testing.assert_allclose(got[i, j], want, rtol=1e-6)


def test_regress_square_landmarks_clip():
  box = np.array([[10.0, 20.0, 50.0, 40.0]], np.float32)
  offsets = np.array([[0.1, -0.2, 0.05, 0.3]], np.float32)
  width, height = 41.0, 21.0  # x2 - x1 + 1, y2 - y1 + 1
  np.testing.assert_allclose(
      boxes.regress(jnp.asarray(box), jnp.asarray(offsets)),
      [[10 + 0.1 * width, 20 - 0.2 * height, 50 + 0.05 * width,
        40 + 0.3 * height]], rtol=1e-6)
  np.testing.assert_allclose(boxes.square(jnp.asarray(box)),
                             [[10, 10, 50, 50]])  # 40 x 20 -> 40 x 40
  fractions = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9]],
                       np.float32)
  points = np.asarray(boxes.landmark_points(jnp.asarray(box),
                                            jnp.asarray(fractions)))
  np.testing.assert_allclose(points[0, :, 0], width * fractions[0, :5] + 9,
                             rtol=1e-6)
  np.testing.assert_allclose(points[0, :, 1], height * fractions[0, 5:] + 19,
                             rtol=1e-6)
  np.testing.assert_allclose(
      boxes.clip_to_image(jnp.array([[[-5.0, 3.0, 70.0, 90.0]]]),
                          jnp.array([[80, 60]])), [[[0, 3, 59, 79]]])
