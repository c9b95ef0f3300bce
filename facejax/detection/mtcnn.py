"""The MTCNN face detector: photos in, boxes, scores and 5 landmarks out.

    detector = MTCNN(min_face_size=20)
    boxes, scores, landmarks = detector.detect(image)   # HxWx3 uint8 RGB
    results = detector.detect_batch([image_a, image_b])  # any sizes

Zhang et al., "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks", IEEE SPL 2016, with the released weights
(:mod:`facejax.detection.weights`) and the stages of
:mod:`facejax.detection.cascade`.

**Fixed shapes, no recompiling per photo.** Each photo is padded at the
bottom and right to a bucket: each side rounded up to a multiple of 32
pixels up to 256, and beyond that to an eighth of the next power of two
(250 -> 256, 512 -> 512, 600 -> 640, 1000 -> 1024; at most 25% more
pixels per side). Photos of one bucket are stacked into batches of a power
of two up to ``max_batch`` (padded with empty images) and share one
compiled P-Net stage; R-Net and O-Net are compiled per bucket, batch and
number of candidate rows (4, 6, 8, 12, ..., 96, 128, then quarter octaves
160, 192, 224, 256, 320, ...; see ``_box_bucket``). So a
folder of same-sized photos compiles each stage a few times at the start
and then never again; :attr:`MTCNN.trace_counts` counts the compilations.

**Agreement with the ``mtcnn`` package** (its ``MTCNN().detect_faces``,
ipazc's implementation, whose weights we use): the networks agree to 1e-6;
pyramid resampling (TensorFlow's area resize, to 4e-7), crop sampling (its
``crop_and_resize`` arithmetic, to 3e-5), NMS (its Fast NMS by default),
box and landmark conventions are the same (:mod:`~facejax.detection.
pyramid`, :mod:`~facejax.detection.crops`, :mod:`~facejax.detection.nms`,
:mod:`~facejax.detection.boxes`). Measured with ``bench.detect``'s photos
(``grace_hopper.jpg``, scikit-image's astronaut, three composites with
faces pasted at known places and scales, some mirrored, on plain and noisy
backgrounds, and 250 x 250 crops of every face; the package at
``threshold_onet=0.7``): the same 22 faces, every box at IoU 1.0000, every
landmark within 2.3e-6 of the box diagonal, scores within 1.3e-6. What
differs, by choice:

* **Pyramid depth**: the paper's rule (every level with a shorter side of
  at least 12 pixels). The package's formula ignores ``min_face_size``: at
  the default 20 it has one level fewer for 30 of the shorter sides from
  40 to 1999 pixels (112, 158, 223, 314, 442-444, ...; none of the photos
  above), where we also look for faces filling most of the photo; from
  ``min_face_size`` of about 30 its last levels fall below 12 pixels and it
  finds nothing at all (:mod:`~facejax.detection.pyramid`).
* **O-Net threshold**: 0.7 by default, the paper's; the package defaults
  to 0.8 (``threshold_onet``).
* **Greedy NMS** is available (``nms='greedy'``, Zhang et al.'s): it keeps
  other candidates between the stages, and on one of the 22 faces (an LFW-
  size crop) ends on another box of the same face, IoU 0.85 with the
  package's, landmarks 2.1% of the diagonal apart, score 0.9931 instead of
  0.9972; on the 21 others it agrees as Fast NMS does.

**Landmarks** are (x, y) pixels in the order of the ArcFace template
(:data:`facejax.data.alignment.ARCFACE_TEMPLATE`): left eye, right eye,
nose, left mouth corner, right mouth corner, as seen in the image (O-Net's
order), ready for :func:`facejax.data.alignment.similarity_transform`.
**Boxes** are ``(x1, y1, x2, y2)`` pixels clipped to ``[0, W - 1] x [0,
H - 1]``, as the package's ``fit_to_image``.
"""
import collections
import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from facejax.detection import cascade
from facejax.detection import pyramid
from facejax.detection import weights

NMS_METHODS = ('fast', 'greedy')
# Candidate boxes per pyramid level and per stage, doubled for a photo that
# has more; the largest set a stage ever runs on is MAX_CAPACITY boxes.
DEFAULT_CAPACITY = 256
# Photos of one bucket per batch on accelerators; on a CPU batching only
# adds padding (a batch's stages run on its largest candidate count).
DEFAULT_MAX_BATCH = 16
MAX_CAPACITY = 8192
_MIN_BOX_BUCKET = 4
_LEVELS_CACHE_SIZE = 64


def bucket_side(pixels):
  """The padded size of an image side: see the module docstring."""
  if pixels <= 256:
    step = 32
  else:
    step = 2**math.ceil(math.log2(pixels)) // 8
  return max(step, -(-pixels // step) * step)


def _box_bucket(count, capacity):
  """Candidate rows to run a stage on, at most ``capacity``: the next of 4,
  6, 8, 12, ..., 96, 128 (powers of two and 1.5 times them), then quarter
  octaves (160, 192, 224, 256, 320, ...): rows at most half again the
  count, a quarter beyond 128, where R-Net's work is felt."""
  size = _MIN_BOX_BUCKET
  while size < count:
    if size >= 128:
      size += 1 << (size.bit_length() - 3)  # a quarter of the octave
    else:
      size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
  return min(size, capacity)


def _batch_bucket(count, max_batch):
  return min(max_batch, 1 << max(0, count - 1).bit_length())


def _as_rgb_uint8(image, what='image'):
  """``image`` as an (H, W, 3) uint8 array; grayscale is replicated.

  Raises:
    ValueError: another dtype (16-bit, float, ...) or channel count.
  """
  array = np.asarray(image)
  if array.dtype != np.uint8:
    raise ValueError(
        f'{what} must be uint8 RGB (0..255), got dtype {array.dtype}; '
        'convert it first (16-bit: (image >> 8).astype(np.uint8); float in '
        '[0, 1]: (image * 255).round().astype(np.uint8))')
  if array.ndim == 3 and array.shape[2] == 1:
    array = array[:, :, 0]
  if array.ndim == 2:  # grayscale: MTCNN sees it as grey RGB
    return np.repeat(array[:, :, None], 3, axis=2)
  if array.ndim != 3 or array.shape[2] != 3:
    raise ValueError(
        f'{what} must have shape (H, W, 3) (RGB), (H, W, 1) or (H, W) '
        f'(grayscale), got shape {array.shape}; convert RGBA or CMYK '
        'photos to RGB first')
  return array


def _empty():
  return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
          np.zeros((0, 5, 2), np.float32))


class MTCNN:
  """The MTCNN detector, jit-compiled, batched over photos.

  Args:
    min_face_size: the smallest face to find, in pixels (its box side).
    thresholds: face-probability thresholds of P-Net, R-Net and O-Net.
    scale_factor: the ratio of successive pyramid levels, in (0, 1).
    nms: 'fast' (the ``mtcnn`` package's Fast NMS) or 'greedy' (Zhang et
      al.'s); see :mod:`facejax.detection.nms`.
    max_batch: photos of one bucket run together, up to this many; default
      1 on a CPU (where a batch gains nothing and pads every photo's
      candidates to the batch's largest count), 16 on an accelerator.
    capacity: candidate boxes per pyramid level and stage to start with
      (256); a photo with more reruns with twice as many, up to 8192.
    variables: {'pnet', 'rnet', 'onet'} Flax variables; default the
      released weights (:func:`facejax.detection.weights.load_params`).

  Raises:
    ValueError: a bad argument (named).
    facejax.detection.weights.WeightsError: the ``mtcnn`` package is not
      installed (``pip install mtcnn``) or its files are unusable.
  """

  def __init__(self, min_face_size=20, thresholds=(0.6, 0.7, 0.7),
               scale_factor=0.709, nms='fast', max_batch=None,
               capacity=DEFAULT_CAPACITY, variables=None):
    if not min_face_size > 0:
      raise ValueError(f'min_face_size must be positive, got {min_face_size}')
    thresholds = tuple(float(t) for t in thresholds)
    if len(thresholds) != 3 or not all(0 <= t < 1 for t in thresholds):
      raise ValueError(f'thresholds must be three probabilities in [0, 1), '
                       f'got {thresholds}')
    if not 0 < scale_factor < 1:
      raise ValueError(f'scale_factor must be in (0, 1), got {scale_factor}')
    if nms not in NMS_METHODS:
      raise ValueError(f'nms must be one of {NMS_METHODS}, got {nms!r}')
    if max_batch is None:
      max_batch = 1 if jax.default_backend() == 'cpu' else DEFAULT_MAX_BATCH
    if not (isinstance(max_batch, int) and max_batch >= 1):
      raise ValueError(f'max_batch must be a positive int, got {max_batch}')
    if not (isinstance(capacity, int) and 1 <= capacity <= MAX_CAPACITY):
      raise ValueError(f'capacity must be an int in [1, {MAX_CAPACITY}], '
                       f'got {capacity}')
    self.min_face_size = min_face_size
    self.scale_factor = scale_factor
    self.max_batch = max_batch
    self._capacity = capacity
    self._settings = cascade.Settings(thresholds, nms == 'greedy')
    if variables is None:
      variables = weights.load_params()
    self._variables = jax.device_put(variables)
    self._traces = collections.Counter()
    self._levels = {}
    self._pyramid = jax.jit(self._counted('pyramid',
                                          cascade.pyramid_levels))
    self._propose = jax.jit(
        self._counted('propose', cascade.propose),
        static_argnames=('scales', 'capacity', 'settings'))
    self._refine = jax.jit(self._counted('refine', cascade.refine),
                           static_argnames=('settings',))
    self._output = jax.jit(self._counted('output', cascade.output),
                           static_argnames=('settings',))

  @property
  def thresholds(self):
    return self._settings.thresholds

  @property
  def trace_counts(self):
    """{'pyramid', 'propose', 'refine', 'output'}: traces of each stage."""
    return dict(self._traces)

  def _counted(self, name, function):
    @functools.wraps(function)
    def traced(*args, **kwargs):
      self._traces[name] += 1  # runs only while jax traces
      return function(*args, **kwargs)
    return traced

  def detect(self, image):
    """Faces in one photo.

    Args:
      image: (H, W, 3) uint8 RGB; (H, W) or (H, W, 1) uint8 grayscale is
        replicated to RGB.

    Returns:
      ``(boxes, scores, landmarks)``: float32 arrays (K, 4) ``x1, y1, x2,
      y2``, (K,) and (K, 5, 2) ``(x, y)``, sorted by descending score; K = 0
      when no face is found (e.g. a photo smaller than the minimum face).

    Raises:
      ValueError: not uint8, or not RGB or grayscale (the message says how
        to convert).
    """
    return self.detect_batch([image], _what='image')[0]

  def detect_batch(self, images, _what=None):
    """:meth:`detect` for each photo of a list; sizes may differ.

    Photos of one bucket size run together as one batch.

    Raises:
      ValueError: a photo that is not uint8 RGB or grayscale (the message
        names its index).
    """
    arrays = [_as_rgb_uint8(image, _what or f'images[{index}]')
              for index, image in enumerate(images)]
    results = [None] * len(arrays)
    groups = collections.defaultdict(list)
    for index, array in enumerate(arrays):
      height, width = array.shape[:2]
      if not pyramid.scales(height, width, self.min_face_size,
                            self.scale_factor):
        results[index] = _empty()  # smaller than the minimum face
      else:
        groups[(bucket_side(height), bucket_side(width))].append(index)
    for bucket, indices in groups.items():
      for start in range(0, len(indices), self.max_batch):
        chunk = indices[start:start + self.max_batch]
        found = self._detect_bucket([arrays[i] for i in chunk], bucket)
        for index, result in zip(chunk, found):
          results[index] = result
    return results

  def _pyramid_levels(self, image_sizes, bucket, batch):
    """:func:`_pyramid_levels` with its arrays on the device, cached (a
    folder of photos repeats its sizes)."""
    key = (tuple(image_sizes), bucket, batch)
    if key not in self._levels:
      if len(self._levels) >= _LEVELS_CACHE_SIZE:
        self._levels.pop(next(iter(self._levels)))
      scales, resampling, level_sizes = _pyramid_levels(
          image_sizes, bucket, batch, self.min_face_size, self.scale_factor)
      self._levels[key] = (scales, jax.device_put(resampling),
                           jax.device_put(level_sizes))
    return self._levels[key]

  def _detect_bucket(self, arrays, bucket):
    """Runs the cascade on photos of one bucket (at most max_batch)."""
    batch = _batch_bucket(len(arrays), self.max_batch)
    pixels = np.zeros((batch,) + bucket + (3,), np.uint8)
    sizes = np.zeros((batch, 2), np.int32)
    for n, array in enumerate(arrays):
      pixels[n, :array.shape[0], :array.shape[1]] = array
      sizes[n] = array.shape[:2]
    scales, resampling, level_sizes = self._pyramid_levels(
        [array.shape[:2] for array in arrays], bucket, batch)
    pixels, sizes = jnp.asarray(pixels), jnp.asarray(sizes)
    levels = self._pyramid(pixels, resampling)
    capacity = self._capacity
    while True:
      candidates, _, valid, overflow = self._propose(
          self._variables['pnet'], levels, level_sizes, scales=scales,
          capacity=capacity, settings=self._settings)
      if not np.any(np.asarray(overflow)):
        break
      if capacity >= MAX_CAPACITY:
        warnings.warn(f'MTCNN: more than {MAX_CAPACITY} candidate boxes in a '
                      'photo of this batch; the lowest-scoring were dropped')
        break
      capacity = min(2 * capacity, MAX_CAPACITY)
    for stage, variables in ((self._refine, 'rnet'), (self._output, 'onet')):
      count = int(np.max(np.asarray(valid.sum(axis=1))))
      if count == 0:
        return [_empty() for _ in arrays]
      rows = _box_bucket(count, capacity)
      result = stage(self._variables[variables], pixels, sizes,
                     candidates[:, :rows], valid[:, :rows],
                     settings=self._settings)
      candidates, valid = result[0], result[-1]
    boxes, scores, landmarks, valid = (np.asarray(a) for a in result)
    counts = valid.sum(axis=1)
    return [(boxes[n, :counts[n]], scores[n, :counts[n]],
             landmarks[n, :counts[n]]) for n in range(len(arrays))]


def _pyramid_levels(image_sizes, bucket, batch, min_face_size, scale_factor):
  """The bucket's pyramid for a batch of images of ``image_sizes``.

  Returns:
    ``(scales, resampling, level_sizes)``: the bucket's scales; per level,
    the area-resampling spans of the rows, (batch, rows, 3) and (batch,
    rows, 4), the taps of the columns, (batch, columns, taps) twice, and
    each image's (batch, 2) level size, all zero for images (and batch
    padding) without such a level.
  """
  scales = tuple(pyramid.scales(*bucket, min_face_size, scale_factor))
  resampling, level_sizes = [], []
  for k, scale in enumerate(scales):
    rows, columns = pyramid.level_size(*bucket, scale)
    taps = pyramid.taps(scale)
    row_index = np.zeros((batch, rows, 3), np.int32)
    row_weight = np.zeros((batch, rows, 4), np.float32)
    column_index = np.zeros((batch, columns, taps), np.int32)
    column_weight = np.zeros((batch, columns, taps), np.float32)
    sizes = np.zeros((batch, 2), np.int32)
    for n, (height, width) in enumerate(image_sizes):
      if k >= len(pyramid.scales(height, width, min_face_size,
                                 scale_factor)):
        continue  # the image has no such level: all weights 0
      own_rows, own_columns = pyramid.level_size(height, width, scale)
      row_index[n], row_weight[n] = _area_spans(height, own_rows, rows)
      column_index[n], column_weight[n] = _area_weights(
          width, own_columns, columns, taps)
      sizes[n] = own_rows, own_columns
    resampling.append((row_index, row_weight, column_index, column_weight))
    level_sizes.append(sizes)
  return scales, tuple(resampling), tuple(level_sizes)


def _read_only(arrays):
  for array in arrays:
    array.setflags(write=False)
  return arrays


@functools.lru_cache(maxsize=4096)
def _area_spans(inputs, outputs, padded_outputs):
  """:func:`pyramid.area_spans`, cached: a folder repeats its sizes."""
  return _read_only(pyramid.area_spans(inputs, outputs, padded_outputs))


@functools.lru_cache(maxsize=4096)
def _area_weights(inputs, outputs, padded_outputs, taps):
  """:func:`pyramid.area_weights`, cached."""
  return _read_only(pyramid.area_weights(inputs, outputs, padded_outputs,
                                         taps))
