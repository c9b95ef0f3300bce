"""5-point similarity alignment of faces to the ArcFace 112x112 template.

A face detector (RetinaFace, SCRFD, MTCNN) gives five landmarks: left eye,
right eye, nose tip, left mouth corner, right mouth corner, *as seen in the
image* (the subject's right eye is the image's left eye). insightface crops
every face of its training and verification sets by fitting the similarity
(rotation, uniform scale, translation; never a reflection) that maps those
five points onto :data:`ARCFACE_TEMPLATE` in the least-squares sense and
warping the image with it (``insightface.utils.face_align.norm_crop``:
``skimage``'s ``SimilarityTransform.estimate``, then ``cv2.warpAffine`` with
bilinear interpolation and a black border). This module does the same:

* :func:`similarity_transform`, :func:`invert_similarity` and
  :func:`apply_affine` in numpy (float64), for landmarks and checks;
* :func:`similarity_transform_tf`, :func:`warp_affine` and :func:`align` in
  TensorFlow, in-graph, so that ``tf.data.Dataset.map(align)`` crops faces
  in the input pipeline. TensorFlow is imported inside those functions:
  importing this module imports only numpy.

**The fit.** Write a point ``(x, y)`` as the complex number ``z = x + i y``.
A proper similarity is ``z -> alpha z + beta`` (``alpha = a + i b``: scale
``|alpha|``, rotation ``arg alpha``), the 2x3 matrix
``[[a, -b, tx], [b, a, ty]]`` with ``beta = tx + i ty``. Minimising
``sum_k |alpha p_k + beta - q_k|^2`` over complex ``alpha`` and ``beta`` is
linear least squares, with the closed form

    beta = mean(q) - alpha mean(p),
    alpha = sum_k conj(p~_k) q~_k / sum_k |p~_k|^2,

where ``p~ = p - mean(p)`` and ``q~ = q - mean(q)``; in real terms

    a = sum(px~ qx~ + py~ qy~) / S,   b = sum(px~ qy~ - py~ qx~) / S,
    S = sum(px~^2 + py~^2).

It is unique whenever the source points are not all equal (``S > 0``). This
is Umeyama's solution (S. Umeyama, "Least-squares estimation of
transformation parameters between two point patterns", IEEE TPAMI 13(4),
1991, eq. 40-42), ``R = U diag(1, det(U V^T)) V^T`` from the SVD of the
cross-covariance and ``c = tr(D S) / sigma_p^2``, which in 2-D with
``det R = +1`` is the same minimiser written without an SVD, and is what
``skimage``'s ``SimilarityTransform.estimate`` computes. Mirrored landmarks
(a left/right swap) still get a proper rotation: the best one, never the
reflection that would fit them better.

**Pixel convention.** Pixel ``(i, j)`` (row ``i``, column ``j``) has its
centre at ``x = j``, ``y = i``; a landmark at ``(x, y)`` is a point in those
coordinates. That is OpenCV's ``warpAffine`` convention, which insightface
uses, and that of ``tf.raw_ops.ImageProjectiveTransformV3``, whose output
pixel ``(x, y)`` samples the input at the transformed integer coordinates
(a test moves a single bright pixel with a known matrix and checks where it
lands). Pixels outside the input read as 0 and blend into the border by
bilinear interpolation, as in ``cv2.warpAffine(..., borderValue=0)``.

**Other output sizes.** :func:`template_for` scales the template about the
origin by ``size / 112``, as insightface does for multiples of 112 (224:
every coordinate doubled). For sizes that are multiples of 128 but not of
112, insightface's ``estimate_norm`` instead scales by ``size / 128`` and
moves the template ``8 * size / 128`` pixels right (128: the 112 template,
unscaled, shifted 8 px, so the face is framed more loosely); this module does
not: pass ``template=`` to :func:`align` to reproduce that crop. Scaling
about the origin with pixel centres at integers is not an exact resampling
of the 112 crop: that would add ``(size / 112 - 1) / 2`` pixels to every
coordinate (half a pixel at 224); insightface ignores it, and so does this
module.
"""
import operator

import numpy as np

TEMPLATE_SIZE = 112

# insightface's ``arcface_dst``: (x, y) in a 112x112 crop, in the order left
# eye, right eye, nose tip, left mouth corner, right mouth corner (as seen in
# the image).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963],
     [73.5318, 51.5014],
     [56.0252, 71.7366],
     [41.5493, 92.3655],
     [70.7299, 92.2041]], dtype=np.float32)
ARCFACE_TEMPLATE.setflags(write=False)

# Points whose root-mean-square distance from their centroid is at most this
# fraction of their largest coordinate (or of 1, if larger) count as
# coincident: their spread is round-off.
_COINCIDENT_FLOAT64 = 1e-9
_COINCIDENT_FLOAT32 = 1e-6

# Integer image dtypes whose every value float32 holds exactly.
_INTEGER_DTYPES = ('uint8', 'int8', 'uint16', 'int16')


def _output_size(output_size):
  """``output_size`` as a positive int; ValueError names a bad value."""
  try:
    size = operator.index(output_size)
  except TypeError:
    raise ValueError(f'output_size must be a positive integer, got '
                     f'{output_size!r}') from None
  if isinstance(output_size, bool) or size < 1:
    raise ValueError(f'output_size must be a positive integer, got '
                     f'{output_size!r}')
  return size


def template_for(output_size):
  """The ArcFace template for a square ``output_size`` crop.

  ``ARCFACE_TEMPLATE * output_size / 112``: scaled about the origin (pixel
  centre ``(0, 0)``), as insightface scales it for multiples of 112. For
  multiples of 128 insightface uses another template (see the module
  docstring); this function does not.

  Args:
    output_size: the side of the crop in pixels, a positive integer.

  Returns:
    A new float32 array of shape (5, 2), (x, y) per landmark.

  Raises:
    ValueError: ``output_size`` is not a positive integer.
  """
  size = _output_size(output_size)
  if size == TEMPLATE_SIZE:
    return ARCFACE_TEMPLATE.copy()
  return (ARCFACE_TEMPLATE.astype(np.float64) * (size / TEMPLATE_SIZE)
          ).astype(np.float32)


# ------------------------------------------------------------------- numpy.


def _as_points(points, name):
  """``points`` as a float64 (N, 2) array, N >= 2, all finite."""
  array = np.asarray(points)
  if array.dtype == object or not (
      np.issubdtype(array.dtype, np.number)
      and not np.issubdtype(array.dtype, np.complexfloating)):
    raise ValueError(f'{name} must be real numbers, got dtype {array.dtype}')
  array = array.astype(np.float64)
  if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 2:
    raise ValueError(f'{name} must have shape (N, 2) with N >= 2 points of '
                     f'(x, y), got shape {array.shape}')
  if not np.all(np.isfinite(array)):
    bad = np.argwhere(~np.isfinite(array))[0]
    raise ValueError(f'{name} must be finite, got {array[tuple(bad)]} at '
                     f'index {tuple(int(i) for i in bad)}')
  return array


def _check_spread(centred, points, name):
  """ValueError when ``points`` coincide (zero spread about their mean)."""
  rms = np.sqrt(np.mean(np.sum(centred * centred, axis=1)))
  magnitude = max(1.0, float(np.max(np.abs(points))))
  if rms <= _COINCIDENT_FLOAT64 * magnitude:
    raise ValueError(
        f'{name} coincide: their root-mean-square distance from their '
        f'centroid {points.mean(axis=0).tolist()} is {rms:.3g}, so no '
        f'similarity is determined (points: {points.tolist()})')


def similarity_transform(source_points, target_points):
  """The least-squares 2-D similarity mapping source onto target points.

  Minimises ``sum_k |M [p_k; 1] - q_k|^2`` over proper similarities
  ``M = [[a, -b, tx], [b, a, ty]]`` (rotation, uniform scale, translation;
  never a reflection). In complex numbers ``z = x + i y`` the map is
  ``z -> alpha z + beta`` and

      alpha = a + i b = sum_k conj(p~_k) q~_k / sum_k |p~_k|^2,
      beta = tx + i ty = mean(q) - alpha mean(p),

  with ``p~``, ``q~`` the points minus their means: Umeyama (IEEE TPAMI
  13(4), 1991) with ``det R = +1``, as ``skimage``'s
  ``SimilarityTransform.estimate``. Computed in float64.

  Args:
    source_points: (N, 2) array of (x, y), N >= 2, not all equal: for
      alignment, the detected landmarks.
    target_points: (N, 2) array of (x, y), the same N: for alignment,
      :data:`ARCFACE_TEMPLATE` or :func:`template_for`. Target points that
      all coincide give ``a = b = 0`` (the least-squares answer, but a map
      that :func:`invert_similarity` refuses).

  Returns:
    A float64 (2, 3) matrix ``[[a, -b, tx], [b, a, ty]]`` mapping a source
    point ``(x, y)`` to ``(a x - b y + tx, b x + a y + ty)``; pass it to
    ``cv2.warpAffine`` or :func:`warp_affine` to crop the source image.

  Raises:
    ValueError: a shape other than (N, 2) with N >= 2, different N for the
      two, a value that is not finite, or source points that coincide.
  """
  source = _as_points(source_points, 'source_points')
  target = _as_points(target_points, 'target_points')
  if source.shape != target.shape:
    raise ValueError(f'source_points and target_points must have the same '
                     f'shape, got {source.shape} and {target.shape}')
  source_mean = source.mean(axis=0)
  target_mean = target.mean(axis=0)
  p = source - source_mean
  q = target - target_mean
  _check_spread(p, source, 'source_points')
  spread = np.sum(p * p)
  a = np.sum(p[:, 0] * q[:, 0] + p[:, 1] * q[:, 1]) / spread
  b = np.sum(p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]) / spread
  tx = target_mean[0] - (a * source_mean[0] - b * source_mean[1])
  ty = target_mean[1] - (b * source_mean[0] + a * source_mean[1])
  return np.array([[a, -b, tx], [b, a, ty]], dtype=np.float64)


def _as_matrix(matrix):
  """``matrix`` as a finite float64 (2, 3) array."""
  array = np.asarray(matrix, dtype=np.float64)
  if array.shape != (2, 3):
    raise ValueError(f'matrix must have shape (2, 3), got shape {array.shape}')
  if not np.all(np.isfinite(array)):
    raise ValueError(f'matrix must be finite, got {array.tolist()}')
  return array


def invert_similarity(matrix):
  """The inverse of a 2-D similarity given as a (2, 3) matrix.

  ``z -> alpha z + beta`` has inverse ``z -> (z - beta) / alpha``:
  ``a' = a / (a^2 + b^2)``, ``b' = -b / (a^2 + b^2)`` and
  ``t' = -[[a', -b'], [b', a']] t``.

  Args:
    matrix: ``[[a, -b, tx], [b, a, ty]]``, e.g. from
      :func:`similarity_transform`.

  Returns:
    The float64 (2, 3) matrix ``[[a', -b', tx'], [b', a', ty']]``.

  Raises:
    ValueError: not a finite (2, 3) matrix, not of the similarity form (to
      1e-9 relative), or ``a = b = 0`` (not invertible).
  """
  m = _as_matrix(matrix)
  a, b = m[0, 0], m[1, 0]
  size = max(abs(a), abs(b), abs(m[0, 1]), abs(m[1, 1]))
  if (abs(m[1, 1] - a) > 1e-9 * size or abs(m[0, 1] + b) > 1e-9 * size):
    raise ValueError(f'matrix is not a similarity [[a, -b, tx], [b, a, ty]]: '
                     f'{m.tolist()}')
  norm = a * a + b * b
  if not norm > 0:
    raise ValueError(f'matrix maps every point to one point (a = b = 0), it '
                     f'has no inverse: {m.tolist()}')
  inverse_a, inverse_b = a / norm, -b / norm
  tx, ty = m[0, 2], m[1, 2]
  return np.array(
      [[inverse_a, -inverse_b, -(inverse_a * tx - inverse_b * ty)],
       [inverse_b, inverse_a, -(inverse_b * tx + inverse_a * ty)]],
      dtype=np.float64)


def apply_affine(matrix, points):
  """Maps (N, 2) points by a (2, 3) affine matrix: ``M [x; y; 1]``.

  Args:
    matrix: a (2, 3) matrix, e.g. from :func:`similarity_transform`.
    points: (N, 2) array of (x, y).

  Returns:
    The float64 (N, 2) array of mapped points.

  Raises:
    ValueError: bad shapes or values that are not finite.
  """
  m = _as_matrix(matrix)
  array = np.asarray(points, dtype=np.float64)
  if array.ndim != 2 or array.shape[1] != 2:
    raise ValueError(f'points must have shape (N, 2), got shape '
                     f'{array.shape}')
  return array @ m[:, :2].T + m[:, 2]


# -------------------------------------------------------------- tensorflow.


def _check_point_shape(shape, name, rank):
  """ValueError unless the static ``shape`` can be ``rank``-D ``(..., 2)``."""
  if shape.rank is None:
    raise ValueError(f'{name} must have a known rank, got shape {shape}')
  if shape.rank != rank or shape[-1] not in (None, 2):
    batch = 'B, ' if rank == 3 else ''
    raise ValueError(f'{name} must have shape ({batch}N, 2), got shape '
                     f'{shape}')


def similarity_transform_tf(source_points, target_points):
  """In-graph :func:`similarity_transform`, float32, batched.

  The same closed form (``a``, ``b``, ``tx``, ``ty`` from the centred
  points; no SVD), usable in ``tf.function`` and ``tf.data``. Batch
  dimensions broadcast: e.g. (B, 5, 2) landmarks against one (5, 2)
  template.

  Args:
    source_points: (..., N, 2) tensor of (x, y), any real dtype.
    target_points: (..., N, 2) tensor of (x, y).

  Returns:
    A float32 (..., 2, 3) tensor ``[[a, -b, tx], [b, a, ty]]``.

  Raises:
    ValueError: (at trace time) static shapes whose last axis is not 2 or
      whose N differ.
    tf.errors.InvalidArgumentError: (when run) source points that are not
      finite or that coincide (root-mean-square distance from their centroid
      at most 1e-6 of their largest coordinate); inside ``tf.data`` the
      error reaches the iterator.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  source = tf.cast(tf.convert_to_tensor(source_points), tf.float32)
  target = tf.cast(tf.convert_to_tensor(target_points), tf.float32)
  for name, points in (('source_points', source), ('target_points', target)):
    if points.shape.rank is not None and (
        points.shape.rank < 2 or points.shape[-1] not in (None, 2)):
      raise ValueError(f'{name} must have shape (..., N, 2), got shape '
                       f'{points.shape}')
  if not source.shape[-2:].is_compatible_with(target.shape[-2:]):
    raise ValueError(f'source_points and target_points must have the same '
                     f'number of points, got shapes {source.shape} and '
                     f'{target.shape}')
  source_mean = tf.reduce_mean(source, axis=-2, keepdims=True)
  target_mean = tf.reduce_mean(target, axis=-2, keepdims=True)
  p = source - source_mean
  q = target - target_mean
  px, py = p[..., 0], p[..., 1]
  qx, qy = q[..., 0], q[..., 1]
  spread = tf.reduce_sum(px * px + py * py, axis=-1)
  magnitude = tf.maximum(
      1.0, tf.reduce_max(tf.abs(source), axis=[-2, -1]))
  count = tf.cast(tf.shape(source)[-2], tf.float32)
  threshold = count * tf.square(_COINCIDENT_FLOAT32 * magnitude)
  valid = tf.logical_and(
      tf.reduce_all(tf.math.is_finite(source)),
      tf.reduce_all(spread > threshold))  # False for NaN spread too.
  check = tf.debugging.Assert(
      valid,
      ['similarity_transform_tf: source points must be finite and not all '
       'equal (no similarity is determined); source points:', source],
      summarize=64)
  a = tf.reduce_sum(px * qx + py * qy, axis=-1) / spread
  b = tf.reduce_sum(px * qy - py * qx, axis=-1) / spread
  source_x, source_y = source_mean[..., 0, 0], source_mean[..., 0, 1]
  tx = target_mean[..., 0, 0] - (a * source_x - b * source_y)
  ty = target_mean[..., 0, 1] - (b * source_x + a * source_y)
  matrix = tf.stack([tf.stack([a, -b, tx], axis=-1),
                     tf.stack([b, a, ty], axis=-1)], axis=-2)
  with tf.control_dependencies([check]):
    return tf.identity(matrix)


def _image_rank(image):
  """The static rank of ``image``, 3 or 4; ValueError otherwise."""
  rank = image.shape.rank
  if rank not in (3, 4):
    raise ValueError(f'image must have shape (H, W, C) or (B, H, W, C), got '
                     f'shape {image.shape}')
  return rank


def _check_batch(image, other, name):
  """ValueError when the static batch sizes of a batch differ."""
  if not image.shape[:1].is_compatible_with(other.shape[:1]):
    raise ValueError(f'image and {name} must have the same batch size, got '
                     f'shapes {image.shape} and {other.shape}')


def warp_affine(image, matrix, output_size):
  """Warps images by 2x3 affine matrices, as ``cv2.warpAffine``, in-graph.

  The output pixel at ``(x, y)`` is the input, bilinearly interpolated, at
  ``M^-1 [x; y; 1]``, where ``M`` maps input to output coordinates (pixel
  centres at integer coordinates, see the module docstring); input pixels
  outside the image read as 0. Runs
  ``tf.raw_ops.ImageProjectiveTransformV3`` (interpolation ``BILINEAR``,
  fill mode ``CONSTANT``, fill value 0) on the inverse of ``M``.

  Integer images are warped in float32, then rounded half to even and
  clipped to the dtype's range, as ``cv2.warpAffine`` saturates; float32 and
  float64 images are warped in their dtype, other floats in float32.

  Args:
    image: (H, W, C) or (B, H, W, C) tensor of dtype uint8, int8, uint16,
      int16 or floating point; the rank must be known when tracing.
    matrix: (2, 3) or, for a batch, (B, 2, 3) tensor mapping input to output
      pixel coordinates, e.g. from :func:`similarity_transform_tf`; a
      single (2, 3) matrix applies to every image of a batch.
    output_size: the side of the square output, a positive integer.

  Returns:
    A (output_size, output_size, C) or (B, output_size, output_size, C)
    tensor of the input's dtype.

  Raises:
    ValueError: (at trace time) bad ranks or shapes, or a bad output_size.
    TypeError: an image dtype other than those above.
    tf.errors.InvalidArgumentError: (when run) a matrix that is not finite
      or not invertible.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size = _output_size(output_size)
  image = tf.convert_to_tensor(image)
  rank = _image_rank(image)
  matrix = tf.cast(tf.convert_to_tensor(matrix), tf.float32)
  if matrix.shape.rank not in ((2, 3) if rank == 4 else (2,)) or (
      not matrix.shape[-2:].is_compatible_with((2, 3))):
    expected = '(2, 3) or (B, 2, 3)' if rank == 4 else '(2, 3)'
    raise ValueError(f'matrix must have shape {expected} for an image of '
                     f'shape {image.shape}, got shape {matrix.shape}')
  if matrix.shape.rank == 3:
    _check_batch(image, matrix, 'matrix')
  dtype = image.dtype
  if dtype in (tf.float32, tf.float64):
    work_dtype = dtype
  elif dtype.is_floating or dtype.name in _INTEGER_DTYPES:
    work_dtype = tf.float32
  else:
    raise TypeError(f'image must be uint8, int8, uint16, int16 or floating '
                    f'point, got dtype {dtype.name}')

  images = image if rank == 4 else image[tf.newaxis]
  matrices = matrix if matrix.shape.rank == 3 else matrix[tf.newaxis]
  m00, m01, m02 = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 0, 2]
  m10, m11, m12 = matrices[:, 1, 0], matrices[:, 1, 1], matrices[:, 1, 2]
  determinant = m00 * m11 - m01 * m10
  valid = tf.logical_and(tf.reduce_all(tf.math.is_finite(matrices)),
                         tf.reduce_all(tf.abs(determinant) > 0))
  check = tf.debugging.Assert(
      valid, ['warp_affine: matrix must be finite and invertible:',
              matrices], summarize=64)
  # output -> input: [x_in; y_in] = A^-1 ([x; y] - t).
  i00, i01 = m11 / determinant, -m01 / determinant
  i10, i11 = -m10 / determinant, m00 / determinant
  i02 = -(i00 * m02 + i01 * m12)
  i12 = -(i10 * m02 + i11 * m12)
  zeros = tf.zeros_like(determinant)
  transforms = tf.stack([i00, i01, i02, i10, i11, i12, zeros, zeros],
                        axis=-1)
  with tf.control_dependencies([check]):
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, work_dtype),
        transforms=transforms,
        output_shape=tf.constant([size, size], tf.int32),
        fill_value=tf.constant(0.0, tf.float32),
        interpolation='BILINEAR',
        fill_mode='CONSTANT')
  if dtype.is_integer:
    warped = tf.clip_by_value(tf.round(warped), float(dtype.min),
                              float(dtype.max))
  warped = tf.cast(warped, dtype)
  return warped if rank == 4 else warped[0]


def align(image, landmarks, output_size=TEMPLATE_SIZE, template=None):
  """Crops faces to the ArcFace template by 5-point similarity, in-graph.

  Fits the least-squares similarity from ``landmarks`` to ``template``
  (:func:`similarity_transform_tf`, the closed form of the module
  docstring, in float32) and warps the image with it
  (:func:`warp_affine`: bilinear, 0 outside the image), as insightface's
  ``norm_crop``. Works eagerly, in ``tf.function`` and in
  ``tf.data.Dataset.map``::

      dataset = dataset.map(
          lambda image, landmarks: alignment.align(image, landmarks))

  Args:
    image: (H, W, C) or (B, H, W, C) tensor, uint8 or floating point (see
      :func:`warp_affine` for the others); the rank must be known when
      tracing.
    landmarks: (N, 2) or, for a batch, (B, N, 2) tensor of (x, y) in the
      input image's pixel coordinates (pixel centres at integers), N the
      number of template points: left eye, right eye, nose tip, left and
      right mouth corner, as seen in the image, for the default template.
    output_size: the side of the square crop, a positive integer.
    template: (N, 2) array-like of (x, y) in the crop (a numpy array or a
      constant, not a symbolic tensor); default
      ``template_for(output_size)``.

  Returns:
    The (output_size, output_size, C) or (B, output_size, output_size, C)
    crop, of the image's dtype (integers rounded and clipped).

  Raises:
    ValueError: (at trace time) bad ranks or shapes, a landmark count other
      than the template's, a bad output_size, or a template that is not
      finite or whose points coincide.
    TypeError: an unsupported image dtype.
    tf.errors.InvalidArgumentError: (when run) landmarks that are not
      finite or that all coincide.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size = _output_size(output_size)
  if template is None:
    target = template_for(size).astype(np.float64)
  else:
    target = _as_points(template, 'template')
    _check_spread(target - target.mean(axis=0), target, 'template points')
  image = tf.convert_to_tensor(image)
  landmarks = tf.convert_to_tensor(landmarks)
  rank = _image_rank(image)
  _check_point_shape(landmarks.shape, 'landmarks', rank - 1)
  if landmarks.shape[-2] not in (None, len(target)):
    raise ValueError(f'landmarks must have {len(target)} points, one per '
                     f'template point, got shape {landmarks.shape}')
  if rank == 4:
    _check_batch(image, landmarks, 'landmarks')
  matrix = similarity_transform_tf(landmarks, target.astype(np.float32))
  return warp_affine(image, matrix, size)
