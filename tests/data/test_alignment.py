"""5-point similarity alignment: the fit, its inverse and the in-graph warp.

The references are written here independently of the module: Umeyama's
estimator through ``numpy.linalg.svd`` with the determinant correction, a
check that perturbing a fitted similarity never lowers the squared error, a
brute-force rotation scan, and images whose bright dots must land where the
template says.
"""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from facejax.data import alignment

TEMPLATE = alignment.ARCFACE_TEMPLATE.astype(np.float64)
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def similarity(angle_degrees, scale, tx, ty):
  """The matrix of rotation by ``angle_degrees``, ``scale``, then (tx, ty)."""
  angle = np.radians(angle_degrees)
  a, b = scale * np.cos(angle), scale * np.sin(angle)
  return np.array([[a, -b, tx], [b, a, ty]])


def transform(matrix, points):
  """``matrix [x; y; 1]`` per point, written out coordinate by coordinate."""
  points = np.asarray(points, np.float64)
  x, y = points[:, 0], points[:, 1]
  return np.stack([matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2],
                   matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]],
                  axis=1)


def umeyama_svd(source, target, proper=True):
  """Umeyama (1991): the least-squares similarity through an SVD.

  With ``proper`` the rotation gets ``det R = +1`` (S = diag(1, det(U V^T)));
  without it, the best orthogonal map, which may be a reflection.
  """
  source = np.asarray(source, np.float64)
  target = np.asarray(target, np.float64)
  mean_source, mean_target = source.mean(0), target.mean(0)
  p, q = source - mean_source, target - mean_target
  covariance = q.T @ p / len(source)
  u, d, vt = np.linalg.svd(covariance)
  s = np.eye(2)
  if proper and np.linalg.det(u) * np.linalg.det(vt) < 0:
    s[1, 1] = -1
  rotation = u @ s @ vt
  scale = np.trace(np.diag(d) @ s) / (np.sum(p * p) / len(source))
  translation = mean_target - scale * rotation @ mean_source
  return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def squared_error(matrix, source, target):
  return np.sum((transform(matrix, source) - target) ** 2)


def noisy_pair(seed, noise=2.0):
  """Landmarks: a random similarity of the template plus gaussian noise."""
  rng = np.random.default_rng(seed)
  matrix = similarity(rng.uniform(-180, 180), rng.uniform(0.3, 3),
                      *rng.uniform(-200, 300, size=2))
  return transform(matrix, TEMPLATE) + rng.normal(0, noise, (5, 2))


def splat_dots(height, width, points, channels=1):
  """A float32 image of 1-pixel dots of mass 1 at non-integer points.

  Each dot is split bilinearly over its 4 neighbouring pixels, so that the
  intensity centroid of a dot is exactly its point.
  """
  image = np.zeros((height, width, channels), np.float32)
  for x, y in points:
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    image[y0, x0] += (1 - fx) * (1 - fy)
    image[y0, x0 + 1] += fx * (1 - fy)
    image[y0 + 1, x0] += (1 - fx) * fy
    image[y0 + 1, x0 + 1] += fx * fy
  return image


def centroids(image, points, radius=4):
  """The intensity centroid of ``image`` (H, W) within ``radius`` of each."""
  rows, columns = np.mgrid[:image.shape[0], :image.shape[1]]
  result = []
  for x, y in points:
    weight = image * ((columns - x) ** 2 + (rows - y) ** 2 <= radius ** 2)
    result.append([np.sum(weight * columns) / np.sum(weight),
                   np.sum(weight * rows) / np.sum(weight)])
  return np.array(result)


def face_in_image(angle, scale, centre=(125, 125)):
  """A similarity putting the template's centroid at ``centre``."""
  matrix = similarity(angle, scale, 0, 0)
  matrix[:, 2] = np.asarray(centre) - matrix[:, :2] @ TEMPLATE.mean(0)
  return matrix


# ---------------------------------------------------------------- template.


def test_template_constants():
  assert alignment.TEMPLATE_SIZE == 112
  assert alignment.ARCFACE_TEMPLATE.dtype == np.float32
  np.testing.assert_array_equal(
      alignment.ARCFACE_TEMPLATE,
      np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                [41.5493, 92.3655], [70.7299, 92.2041]], np.float32))
  with pytest.raises(ValueError):
    alignment.ARCFACE_TEMPLATE[0, 0] = 0  # read-only


@pytest.mark.parametrize('size', [112, 128, 224, 56, 1])
def test_template_for_scales_about_the_origin(size):
  template = alignment.template_for(size)
  assert template.dtype == np.float32 and template.shape == (5, 2)
  np.testing.assert_allclose(template, TEMPLATE * size / 112, rtol=1e-6)
  template[0, 0] = -1  # a copy: the constant is untouched
  assert alignment.ARCFACE_TEMPLATE[0, 0] == np.float32(38.2946)


@pytest.mark.parametrize('size', [0, -112, 112.0, '112', True, None])
def test_template_for_rejects_bad_sizes(size):
  with pytest.raises(ValueError, match='output_size must be a positive'):
    alignment.template_for(size)


# ------------------------------------------------------------------- numpy.


def test_template_maps_onto_itself():
  matrix = alignment.similarity_transform(TEMPLATE, TEMPLATE)
  assert matrix.dtype == np.float64 and matrix.shape == (2, 3)
  np.testing.assert_allclose(matrix, IDENTITY, atol=1e-6)


@pytest.mark.parametrize('angle', [0, 17, -63, 90, 135, 179.9, 180, -179.7])
@pytest.mark.parametrize('scale', [0.3, 1.0, 3.0])
def test_recovers_a_known_similarity(angle, scale):
  matrix = similarity(angle, scale, 123.4, -56.7)
  moved = transform(matrix, TEMPLATE)
  np.testing.assert_allclose(
      alignment.similarity_transform(TEMPLATE, moved), matrix, atol=1e-9)
  np.testing.assert_allclose(
      alignment.similarity_transform(moved, TEMPLATE),
      alignment.invert_similarity(matrix), atol=1e-9)


@pytest.mark.parametrize('seed', range(8))
def test_noisy_fit_matches_svd_umeyama(seed):
  landmarks = noisy_pair(seed)
  matrix = alignment.similarity_transform(landmarks, TEMPLATE)
  np.testing.assert_allclose(matrix, umeyama_svd(landmarks, TEMPLATE),
                             atol=1e-6)
  # Least squares: no perturbation of (a, b, tx, ty) lowers the error.
  best = squared_error(matrix, landmarks, TEMPLATE)
  a, b, tx, ty = matrix[0, 0], matrix[1, 0], matrix[0, 2], matrix[1, 2]
  for delta in np.concatenate([np.eye(4), -np.eye(4)]) * 1e-4:
    da, db, dtx, dty = delta
    perturbed = np.array([[a + da, -(b + db), tx + dtx],
                          [b + db, a + da, ty + dty]])
    assert squared_error(perturbed, landmarks, TEMPLATE) > best


def test_fit_minimises_over_a_scan_of_rotations():
  """Brute force: for each rotation, the best scale and translation."""
  landmarks = noisy_pair(11, noise=5.0)
  fitted = squared_error(
      alignment.similarity_transform(landmarks, TEMPLATE), landmarks,
      TEMPLATE)
  p = landmarks - landmarks.mean(0)
  q = TEMPLATE - TEMPLATE.mean(0)
  for angle in np.linspace(-np.pi, np.pi, 3601):
    rotated = p @ np.array([[np.cos(angle), np.sin(angle)],
                            [-np.sin(angle), np.cos(angle)]])
    scale = max(np.sum(rotated * q) / np.sum(rotated * rotated), 0.0)
    assert np.sum((scale * rotated - q) ** 2) >= fitted - 1e-9


@pytest.mark.parametrize('mirror', ['x', 'y', 'swap'])
def test_mirrored_points_get_a_proper_rotation(mirror):
  landmarks = transform(similarity(20, 1.5, 30, 40), TEMPLATE)
  if mirror == 'x':
    landmarks[:, 0] = 250 - landmarks[:, 0]
  elif mirror == 'y':
    landmarks[:, 1] = -landmarks[:, 1]
  else:  # left/right labels swapped, as a flipped detector would give
    landmarks = landmarks[[1, 0, 2, 4, 3]]
  matrix = alignment.similarity_transform(landmarks, TEMPLATE)
  a, b = matrix[0, 0], matrix[1, 0]
  assert matrix[1, 1] == a and matrix[0, 1] == -b
  assert np.linalg.det(matrix[:, :2]) == pytest.approx(a * a + b * b)
  assert a * a + b * b > 0
  np.testing.assert_allclose(matrix, umeyama_svd(landmarks, TEMPLATE),
                             atol=1e-6)
  # The data are mirrored: the unconstrained fit is a reflection, and fits
  # better than any proper similarity.
  reflection = umeyama_svd(landmarks, TEMPLATE, proper=False)
  assert np.linalg.det(reflection[:, :2]) < 0
  assert (squared_error(reflection, landmarks, TEMPLATE)
          < squared_error(matrix, landmarks, TEMPLATE))


def test_two_points_are_enough():
  source = np.array([[0.0, 0.0], [1.0, 0.0]])
  target = np.array([[5.0, 5.0], [5.0, 7.0]])
  np.testing.assert_allclose(alignment.similarity_transform(source, target),
                             [[0, -2, 5], [2, 0, 5]], atol=1e-12)


@pytest.mark.parametrize('seed', range(4))
def test_invert_similarity(seed):
  rng = np.random.default_rng(seed)
  matrix = similarity(rng.uniform(-180, 180), rng.uniform(0.3, 3),
                      *rng.uniform(-100, 100, 2))
  inverse = alignment.invert_similarity(matrix)
  points = rng.uniform(-50, 150, (7, 2))
  np.testing.assert_allclose(transform(inverse, transform(matrix, points)),
                             points, atol=1e-9)
  np.testing.assert_allclose(alignment.invert_similarity(inverse), matrix,
                             atol=1e-9)
  np.testing.assert_allclose(alignment.apply_affine(matrix, points),
                             transform(matrix, points), atol=1e-12)


@pytest.mark.parametrize('source, target, message', [
    (np.zeros((5, 3)), np.zeros((5, 3)), r'shape \(N, 2\).*\(5, 3\)'),
    (np.zeros(10), np.zeros(10), r'shape \(N, 2\).*\(10,\)'),
    (np.zeros((1, 2)), np.zeros((1, 2)), r'N >= 2.*\(1, 2\)'),
    (np.zeros((2, 5, 2)), np.zeros((2, 5, 2)), r'\(2, 5, 2\)'),
    (TEMPLATE, TEMPLATE[:4], r'same shape.*\(5, 2\) and \(4, 2\)'),
    (np.where(np.eye(5, 2) > 0, np.nan, TEMPLATE), TEMPLATE,
     r'source_points must be finite.*nan.*\(0, 0\)'),
    (TEMPLATE, np.where(np.eye(5, 2) > 0, np.inf, TEMPLATE),
     r'target_points must be finite.*inf'),
    (np.full((5, 2), 40.0), TEMPLATE, 'source_points coincide'),
    ([['a', 'b'], ['c', 'd']], TEMPLATE[:2], 'real numbers'),
    (TEMPLATE + 0j, TEMPLATE, 'real numbers'),
])
def test_similarity_transform_errors(source, target, message):
  with pytest.raises(ValueError, match=message):
    alignment.similarity_transform(source, target)


def test_coincident_target_points_give_a_zero_map():
  matrix = alignment.similarity_transform(TEMPLATE, np.full((5, 2), 3.0))
  np.testing.assert_allclose(matrix, [[0, 0, 3], [0, 0, 3]], atol=1e-12)
  with pytest.raises(ValueError, match='no inverse'):
    alignment.invert_similarity(matrix)


@pytest.mark.parametrize('matrix, message', [
    (np.eye(3), r'shape \(2, 3\).*\(3, 3\)'),
    ([[1, 2, 0], [3, 4, 0]], 'not a similarity'),
    ([[1, 0, 0], [0, -1, 0]], 'not a similarity'),  # a reflection
    ([[1, 0, np.nan], [0, 1, 0]], 'finite'),
])
def test_invert_similarity_errors(matrix, message):
  with pytest.raises(ValueError, match=message):
    alignment.invert_similarity(matrix)


# -------------------------------------------------------------- tensorflow.


def test_tf_transform_matches_numpy():
  landmarks = np.stack([noisy_pair(seed) for seed in range(6)])
  batched = alignment.similarity_transform_tf(landmarks, TEMPLATE).numpy()
  assert batched.dtype == np.float32 and batched.shape == (6, 2, 3)
  for points, matrix in zip(landmarks, batched):
    expected = alignment.similarity_transform(points, TEMPLATE)
    np.testing.assert_allclose(matrix, expected, atol=1e-4)
    single = alignment.similarity_transform_tf(points, TEMPLATE).numpy()
    np.testing.assert_allclose(single, expected, atol=1e-4)
  # A batch of targets against one set of source points broadcasts too.
  reverse = alignment.similarity_transform_tf(TEMPLATE, landmarks).numpy()
  np.testing.assert_allclose(
      reverse[2], alignment.similarity_transform(TEMPLATE, landmarks[2]),
      atol=1e-4)


def test_pixel_centres_are_integer_coordinates():
  """A bright pixel lands exactly where the matrix sends its centre."""
  image = np.zeros((40, 50, 1), np.uint8)
  image[7, 11] = 255  # x = 11, y = 7
  # A quarter turn and an integer shift: (x, y) -> (-y + 20, x + 5).
  matrix = np.array([[0.0, -1.0, 20.0], [1.0, 0.0, 5.0]])
  expected = np.zeros((32, 32, 1), np.uint8)
  expected[16, 13] = 255  # x = 13, y = 16
  np.testing.assert_array_equal(
      alignment.warp_affine(image, matrix, 32).numpy(), expected)
  # The same through the fit: landmarks that the matrix maps onto the
  # template.
  template = alignment.template_for(32)
  landmarks = transform(alignment.invert_similarity(matrix), template)
  np.testing.assert_array_equal(
      alignment.align(image, landmarks, 32).numpy(), expected)
  # Doubling about the origin: the output pixel at M(p) samples p itself,
  # its 4-neighbours sample half a pixel away (half the intensity), its
  # diagonal neighbours a quarter.
  image = np.zeros((20, 20, 1), np.float32)
  image[4, 5] = 1.0  # x = 5, y = 4
  matrix = np.array([[2.0, 0.0, 3.0], [0.0, 2.0, 1.0]])
  warped = alignment.warp_affine(image, matrix, 24).numpy()[..., 0]
  expected = np.zeros((24, 24), np.float32)
  expected[8:11, 12:15] = np.outer([0.5, 1, 0.5], [0.5, 1, 0.5])  # (13, 9)
  np.testing.assert_allclose(warped, expected, atol=1e-6)


def test_align_template_landmarks_is_the_identity():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
  aligned = alignment.align(image, alignment.ARCFACE_TEMPLATE)
  assert aligned.dtype == tf.uint8 and aligned.shape == (112, 112, 3)
  np.testing.assert_array_equal(aligned.numpy(), image)
  floats = image.astype(np.float32) / 255
  np.testing.assert_allclose(
      alignment.align(floats, alignment.ARCFACE_TEMPLATE).numpy(), floats,
      atol=1e-4)


@pytest.mark.parametrize('angle, scale', [
    (0, 1.0), (25, 0.6), (-140, 1.5), (179, 1.2), (-90, 0.8)])
def test_dots_land_on_the_template(angle, scale):
  landmarks = transform(face_in_image(angle, scale), TEMPLATE)
  image = splat_dots(250, 250, landmarks)
  aligned = alignment.align(image, landmarks).numpy()[..., 0]
  assert aligned.shape == (112, 112)
  error = np.hypot(*(centroids(aligned, TEMPLATE) - TEMPLATE).T)
  assert np.max(error) < 0.5, error
  # Other output sizes: the dots land on the scaled template.
  aligned = alignment.align(image, landmarks, output_size=224).numpy()
  error = np.hypot(*(centroids(aligned[..., 0], 2 * TEMPLATE)
                     - 2 * TEMPLATE).T)
  assert np.max(error) < 0.5, error


def test_custom_template():
  template = TEMPLATE + [8.0, 0.0]  # insightface's 128 crop
  landmarks = transform(face_in_image(30, 1.1), TEMPLATE)
  image = splat_dots(250, 250, landmarks)
  aligned = alignment.align(image, landmarks, 128, template=template).numpy()
  error = np.hypot(*(centroids(aligned[..., 0], template) - template).T)
  assert np.max(error) < 0.5, error


def dot_images(count):
  """uint8 images of 3 channels with a face of dots, and their landmarks."""
  rng = np.random.default_rng(1)
  images, landmarks = [], []
  for _ in range(count):
    points = transform(face_in_image(rng.uniform(-180, 180),
                                     rng.uniform(0.6, 1.4),
                                     rng.uniform(100, 150, 2)), TEMPLATE)
    image = splat_dots(250, 250, points, channels=3) * [255, 128, 64]
    images.append(np.round(np.minimum(image, 255)).astype(np.uint8))
    landmarks.append(points.astype(np.float32))
  return np.stack(images), np.stack(landmarks)


def test_batch_equals_per_image():
  images, landmarks = dot_images(4)
  batched = alignment.align(images, landmarks).numpy()
  assert batched.shape == (4, 112, 112, 3) and batched.dtype == np.uint8
  for image, points, aligned in zip(images, landmarks, batched):
    single = alignment.align(image, points).numpy()
    # Same arithmetic per image; allow one level for a rounding tie that a
    # differently vectorised float32 reduction could flip.
    assert np.max(np.abs(single.astype(int) - aligned.astype(int))) <= 1
  floats = images.astype(np.float32)
  batched = alignment.align(floats, landmarks).numpy()
  for image, points, aligned in zip(floats, landmarks, batched):
    np.testing.assert_allclose(alignment.align(image, points).numpy(),
                               aligned, atol=1e-3)


def test_in_tf_data_map():
  images, landmarks = dot_images(3)
  dataset = tf.data.Dataset.from_tensor_slices((images, landmarks)).map(
      lambda image, points: alignment.align(image, points))
  assert dataset.element_spec.shape == (112, 112, 3)
  assert dataset.element_spec.dtype == tf.uint8
  eager = alignment.align(images, landmarks).numpy()
  mapped = np.stack([aligned.numpy() for aligned in dataset])
  assert np.max(np.abs(mapped.astype(int) - eager.astype(int))) <= 1
  # Batched before the map, with float32 images.
  dataset = tf.data.Dataset.from_tensor_slices(
      (images.astype(np.float32), landmarks)).batch(2).map(alignment.align)
  mapped = np.concatenate([aligned.numpy() for aligned in dataset])
  np.testing.assert_allclose(mapped, eager, atol=1)


def test_tf_function_with_unknown_image_size():
  images, landmarks = dot_images(1)
  aligned = tf.function(
      alignment.align,
      input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                       tf.TensorSpec([5, 2], tf.float32)])
  result = aligned(images[0], landmarks[0])
  assert result.shape == (112, 112, 3)
  eager = alignment.align(images[0], landmarks[0]).numpy()
  # A graph may order float32 operations differently: one level at a tie.
  assert np.max(np.abs(result.numpy().astype(int) - eager.astype(int))) <= 1


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.int16,
                                   np.float16, np.float32, np.float64])
def test_output_dtype_is_the_input_dtype(dtype):
  image = np.full((60, 60, 2), 100, dtype)
  aligned = alignment.align(image, TEMPLATE / 2 + 2, output_size=56)
  assert aligned.dtype == tf.as_dtype(dtype)
  assert aligned.shape == (56, 56, 2)


def test_uint8_rounds_half_to_even():
  image = np.zeros((4, 4, 1), np.uint8)
  image[1, 1], image[1, 2] = 255, 0
  # Half a pixel to the left: outputs x = 0 and 1 sample x = 0.5 and 1.5.
  matrix = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]])
  warped = alignment.warp_affine(image, matrix, 4).numpy()[..., 0]
  assert warped[1, 0] == 128 and warped[1, 1] == 128  # 127.5 to even: 128
  assert warped.max() <= 255


@pytest.mark.parametrize('image_shape, landmark_shape, message', [
    ((112, 112), (5, 2), r'\(H, W, C\) or \(B, H, W, C\)'),
    ((1, 1, 112, 112, 3), (1, 1, 5, 2), r'\(H, W, C\) or \(B, H, W, C\)'),
    ((112, 112, 3), (5, 3), r'landmarks must have shape \(N, 2\)'),
    ((112, 112, 3), (2, 5, 2), r'landmarks must have shape \(N, 2\)'),
    ((2, 112, 112, 3), (5, 2), r'landmarks must have shape \(B, N, 2\)'),
    ((112, 112, 3), (4, 2), 'landmarks must have 5 points'),
    ((2, 112, 112, 3), (3, 5, 2), 'same batch size'),
])
def test_align_shape_errors(image_shape, landmark_shape, message):
  with pytest.raises(ValueError, match=message):
    alignment.align(np.zeros(image_shape, np.uint8),
                    np.ones(landmark_shape, np.float32))


def test_align_argument_errors():
  image = np.zeros((112, 112, 3), np.uint8)
  with pytest.raises(ValueError, match='output_size must be a positive'):
    alignment.align(image, TEMPLATE, output_size=0)
  with pytest.raises(ValueError, match='template points coincide'):
    alignment.align(image, TEMPLATE, template=np.ones((5, 2)))
  with pytest.raises(ValueError, match=r'template must have shape'):
    alignment.align(image, TEMPLATE, template=np.ones((5, 3)))
  with pytest.raises(TypeError, match='got dtype int32'):
    alignment.align(image.astype(np.int32), TEMPLATE)
  with pytest.raises(ValueError, match=r'matrix must have shape \(2, 3\)'):
    alignment.warp_affine(image, np.zeros((1, 2, 3)), 112)
  with pytest.raises(ValueError, match='output_size'):
    alignment.warp_affine(image, IDENTITY, -1)


@pytest.mark.parametrize('landmarks', [
    np.full((5, 2), 40.0),
    np.where(np.eye(5, 2) > 0, np.nan, TEMPLATE),
])
def test_degenerate_landmarks_fail_when_run(landmarks):
  image = np.zeros((112, 112, 3), np.uint8)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='finite and not all equal'):
    alignment.align(image, landmarks)
  dataset = tf.data.Dataset.from_tensors(
      (image, landmarks.astype(np.float32))).map(alignment.align)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='finite and not all equal'):
    next(iter(dataset))


def test_singular_matrix_fails_when_run():
  with pytest.raises(tf.errors.InvalidArgumentError, match='invertible'):
    alignment.warp_affine(np.zeros((8, 8, 1), np.float32),
                          np.zeros((2, 3)), 8)


# ----------------------------------------------------------------- imports.


def test_module_imports_no_tensorflow():
  code = ('import sys\n'
          'import facejax.data.alignment\n'
          'assert "tensorflow" not in sys.modules, "tensorflow imported"\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
