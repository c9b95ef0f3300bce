"""Where examples come from: the tables the tf.data pipelines read.

A *source* is a table of ``num_examples`` labelled face images. Every source
says how many classes it has and what they are called (``class_names``), and
how to read one example inside tf.data; :mod:`facejax.data.pipeline` does the
rest (order, sharding, decoding, augmentation, batching) the same way for all.

Random-access sources (every index can be read on its own, so the pipeline
shuffles indices, shards them over processes and samples P x K batches):

* :class:`ImageFolder`: ``root/<identity>/<image>.jpg|png``, one folder per
  identity (CASIA-WebFace, VGGFace2, a user's own crops). Labels are the
  positions of the folder names in sorted order; an optional landmarks file
  gives each image's five points for alignment.
* :class:`RecordIO`: insightface's ``.rec`` + ``.idx`` (MS1MV2, Glint360K...),
  read by :class:`facejax.data.insightface.RecordReader`.
* :class:`InMemory`: decoded uint8 images in a numpy array, e.g. the embedded
  synthetic dataset (:func:`synthetic_source`).

Sequential source (read in order, shuffled by files and a buffer):

* :class:`TFRecords`: shards written by :mod:`facejax.data.convert`, with
  the manifest ``dataset.json`` and the label map ``labels.json`` beside them.

A source's ``read(index)`` (or ``records()`` for TFRecords) returns a dict of
tensors: ``label`` (int32), ``key`` (a string naming the example for error
messages: its file, or ``file.rec#i``), ``landmarks`` (float32 (5, 2), NaN
when unknown) and either ``encoded`` (the image file's bytes) or ``image``
(uint8 (H, W, 3)). Nothing here imports tensorflow at import time.
"""

import dataclasses
import math
import os
import struct

import numpy as np

from facejax.data import files
from facejax.data import image_headers
from facejax.data import insightface


IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
MANIFEST = 'dataset.json'
LABEL_MAP = 'labels.json'
NUM_LANDMARKS = 5


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def check_labels(labels, num_classes, keys, where):
  """Raises a ValueError naming the first example whose label is bad.

  JAX gathers clamp out-of-range indices silently, so labels are checked
  where they enter: every label must be an integer in ``[0, num_classes)``.

  Args:
    labels: integer array (N,).
    num_classes: the class count the model will be built with.
    keys: (N,) names of the examples (file paths) for the message.
    where: the source's description (its root or file).
  """
  labels = np.asarray(labels)
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    first = int(bad[0])
    raise ValueError(
        f'{where}: {bad.size} label(s) outside [0, {num_classes}); the first '
        f'is {int(labels[first])} for {keys[first]}')


def _missing_landmarks(n):
  return np.full((n, NUM_LANDMARKS, 2), np.nan, np.float32)


def check_attributes(attributes, attribute_names, num_examples, where):
  """Binary attributes as bool (N, A), with their A names; errors name them.

  Args:
    attributes: (N, A) bool, or 0/1 integers.
    attribute_names: A names.
    num_examples: N, the source's example count.
    where: the source's description for the message.
  """
  attributes = np.asarray(attributes)
  names = () if attribute_names is None else tuple(attribute_names)
  if attributes.ndim != 2 or len(attributes) != num_examples:
    raise ValueError(f'{where}: attributes must be (num_examples='
                     f'{num_examples}, num_attributes), got '
                     f'{attributes.shape}')
  if len(names) != attributes.shape[1]:
    raise ValueError(f'{where}: {attributes.shape[1]} attribute columns but '
                     f'{len(names)} attribute names')
  if attributes.dtype != bool:
    bad = np.argwhere((attributes != 0) & (attributes != 1))
    if bad.size:
      row, column = bad[0]
      raise ValueError(f'{where}: attribute {names[column]!r} of example '
                       f'{row} is {attributes[row, column]!r}, not 0 or 1')
    attributes = attributes.astype(bool)
  return attributes, names


class _RandomAccess:
  """What the random-access sources share.

  ``attributes`` (bool (N, A), or None) are per-image binary attributes
  (CelebA's 40) named by ``attribute_names``; a source with them adds
  ``attributes`` to every example it reads.
  """

  num_examples: int
  labels: np.ndarray
  class_names: tuple
  landmarks: np.ndarray
  attributes = None
  attribute_names = ()

  @property
  def num_classes(self):
    return len(self.class_names)

  @property
  def has_landmarks(self):
    return bool(np.isfinite(self.landmarks).all())

  @property
  def has_attributes(self):
    return self.attributes is not None

  def _set_attributes(self, attributes, attribute_names, where):
    if attributes is not None:
      self.attributes, self.attribute_names = check_attributes(
          attributes, attribute_names, self.num_examples, where)

  def _landmarks_of(self, index):
    tf = _tf()
    return tf.gather(tf.constant(self.landmarks), index)

  def _with_attributes(self, example, index):
    """``example`` plus the image's ``attributes`` when the source has them."""
    if self.attributes is not None:
      tf = _tf()
      example['attributes'] = tf.gather(tf.constant(self.attributes), index)
    return example


class ImageFiles(_RandomAccess):
  """An explicit list of image files (evaluation sets: LFW's pairs, YTF's
  frames, MegaFace's lists).

  Args:
    paths: the image files, in the order embeddings are wanted.
    labels: optional (N,) int identities (default all 0).
    landmarks: optional (N, 5, 2) landmarks (see :class:`ImageFolder`).
    check_exists: raise naming the first missing file.
    name: how the source presents itself.
    attributes, attribute_names: optional per-image binary attributes
      (N, A) and their A names (CelebA's list).
  """

  def __init__(self, paths, labels=None, landmarks=None, check_exists=True,
               name='image files', attributes=None, attribute_names=None):
    self.paths = np.array([os.fspath(p) for p in paths])
    if check_exists:
      missing = [p for p in self.paths if not os.path.isfile(p)]
      if missing:
        raise FileNotFoundError(
            f'{missing[0]}: image not found ({len(missing)} of the '
            f'{len(self.paths)} {name} are missing)')
    self.num_examples = len(self.paths)
    self.labels = (np.zeros(self.num_examples, np.int32) if labels is None
                   else np.asarray(labels, np.int32))
    if self.labels.shape != (self.num_examples,):
      raise ValueError(f'{name}: {self.num_examples} paths but labels of '
                       f'shape {self.labels.shape}')
    self.class_names = tuple(
        str(c) for c in range(int(self.labels.max(initial=-1)) + 1))
    self.landmarks = (_missing_landmarks(self.num_examples)
                      if landmarks is None else
                      np.asarray(landmarks, np.float32))
    self.name = name
    self._set_attributes(attributes, attribute_names, name)

  def __repr__(self):
    return f'ImageFiles({self.num_examples} {self.name})'

  def read(self, index):
    tf = _tf()
    path = tf.gather(tf.constant(self.paths), index)
    return self._with_attributes(dict(
        encoded=tf.io.read_file(path),
        label=tf.gather(tf.constant(self.labels), index), key=path,
        landmarks=self._landmarks_of(index)), index)


def _image_files(folder):
  """The image files in ``folder``, sorted, and the other entries named so.

  Only regular files (or links to them) are images: a folder named
  ``x.jpg`` or a link whose target is gone would stop the pipeline when
  read, so they are returned apart, to be left out and reported.
  """
  images, not_files = [], []
  with os.scandir(folder) as entries:
    for entry in entries:
      if (entry.name.startswith('.')
          or not entry.name.lower().endswith(IMAGE_EXTENSIONS)):
        continue
      try:
        regular = entry.is_file()  # follows links; False when dangling
      except OSError:  # a link loop, or a target we may not look at
        regular = False
      (images if regular else not_files).append(entry.name)
  return sorted(images), sorted(not_files)


class ImageFolder(ImageFiles):
  """``root/<identity>/<image>``: one sub-folder per identity.

  Identity folders are taken in sorted order, so the label of an image is the
  position of its folder's name in ``class_names``; images in a folder are
  sorted by name. Files whose extension is not an image extension
  (``IMAGE_EXTENSIONS``, any case) are ignored (a ``Thumbs.db``, a
  ``.DS_Store``); an identity folder with no image in it is an error, since
  its label would have no example. An entry named like an image that is not
  a regular file (a folder ``x.jpg``, a link to nothing) is left out and
  listed in ``left_out`` (paths relative to the root), with a line for the
  log in ``left_out_message``, instead of stopping a run when it is read.

  Landmarks (optional): a text file with one line per image, ``relative/path
  x1 y1 x2 y2 ... x5 y5`` (left eye, right eye, nose, left and right mouth
  corner, in pixels of the image as stored), as produced by a face detector
  such as RetinaFace or MTCNN; ``#`` starts a comment. Every image must have
  a line.
  """

  def __init__(self, root, landmarks_file=None):
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise FileNotFoundError(
          f'{self.root}: image folder not found (expected one sub-folder '
          'per identity)')
    names = sorted(entry.name for entry in os.scandir(self.root)
                   if entry.is_dir() and not entry.name.startswith('.'))
    if not names:
      raise ValueError(f'{self.root}: no identity sub-folders in it')
    relative_paths, labels, left_out = [], [], []
    for label, name in enumerate(names):
      folder = os.path.join(self.root, name)
      images, not_files = _image_files(folder)
      left_out.extend(os.path.join(name, f) for f in not_files)
      if not images:
        also = (f'; {len(not_files)} entries named like images are not '
                'files' if not_files else '')
        raise ValueError(
            f'{folder}: identity folder has no images (extensions '
            f'{", ".join(IMAGE_EXTENSIONS)}{also}); remove it or add images')
      relative_paths.extend(os.path.join(name, f) for f in images)
      labels.extend([label] * len(images))
    self.left_out = tuple(left_out)
    self.relative_paths = np.array(relative_paths)
    super().__init__(
        [os.path.join(self.root, p) for p in relative_paths], labels,
        landmarks=None if landmarks_file is None else read_landmarks(
            landmarks_file, self.relative_paths),
        check_exists=False, name='images')
    self.class_names = tuple(names)

  def __repr__(self):
    return (f'ImageFolder({self.root!r}: {self.num_examples} images of '
            f'{self.num_classes} identities)')

  @property
  def left_out_message(self):
    """A line for the log naming what the listing left out ('' if nothing)."""
    if not self.left_out:
      return ''
    shown = ', '.join(self.left_out[:5])
    more = ', ...' if len(self.left_out) > 5 else ''
    return (f'{self.root}: left out {len(self.left_out)} entries named like '
            f'images that are not files (folders, broken links): '
            f'{shown}{more}')


def read_landmarks(path, relative_paths):
  """Reads a landmarks file into (N, 5, 2) float32 in the given order.

  Args:
    path: UTF-8 text file, lines ``relative/path x1 y1 ... x5 y5`` (``#``
      starts a comment), one line per image.
    relative_paths: the images' paths relative to the folder root, in order.

  Raises:
    FileNotFoundError: the file is missing.
    ValueError: a malformed line (file and line number named), an image
      named twice (both lines named: which one holds is unknowable), an
      image with no line, a folder or bytes that are not UTF-8.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: landmarks file not found')
  points, line_of = {}, {}
  for number, line in files.read_text_lines(path):
    fields = line.split('#', 1)[0].split()
    if not fields:
      continue
    if len(fields) != 1 + 2 * NUM_LANDMARKS:
      raise ValueError(
          f'{path}:{number}: expected a path and {2 * NUM_LANDMARKS} '
          f'numbers, got {len(fields)} fields')
    try:
      values = [float(v) for v in fields[1:]]
    except ValueError:
      raise ValueError(
          f'{path}:{number}: landmark values must be numbers: '
          f'{" ".join(fields[1:])}') from None
    if not all(math.isfinite(v) for v in values):
      raise ValueError(f'{path}:{number}: non-finite landmark value')
    key = os.path.normpath(fields[0])
    if key in line_of:
      raise ValueError(f'{path}:{number}: {fields[0]} has landmarks again '
                       f'(first on line {line_of[key]})')
    points[key], line_of[key] = values, number
  missing = [p for p in relative_paths if os.path.normpath(p) not in points]
  if missing:
    raise ValueError(
        f'{path}: no landmarks for {len(missing)} image(s), the first is '
        f'{missing[0]}')
  return np.array([points[os.path.normpath(p)] for p in relative_paths],
                  np.float32).reshape(-1, NUM_LANDMARKS, 2)


class RecordIO(_RandomAccess):
  """insightface's ``.rec`` + ``.idx`` (read without mxnet).

  Labels are read from every image record's header once, when the source is
  made (only the header bytes, not the images); the class count is the
  dataset header's identity range when it has one, else ``max label + 1``.
  """

  def __init__(self, rec_path, idx_path=None, num_classes=None):
    self.reader = insightface.RecordReader(rec_path, idx_path)
    self.rec_path = self.reader.rec_path
    self.labels = self.reader.labels()
    self.num_examples = len(self.labels)
    if num_classes is None:
      num_classes = self.reader.num_classes
    if num_classes is None:
      num_classes = int(self.labels.max()) + 1 if self.num_examples else 0
    check_labels(self.labels, num_classes,
                 [f'{self.rec_path}#{i}' for i in range(self.num_examples)],
                 self.rec_path)
    self.class_names = tuple(str(i) for i in range(num_classes))
    self.landmarks = _missing_landmarks(self.num_examples)

  def __repr__(self):
    return (f'RecordIO({self.rec_path!r}: {self.num_examples} images of '
            f'{self.num_classes} identities)')

  def _image_bytes(self, index):
    return self.reader[int(index)][1]

  def read(self, index):
    tf = _tf()
    encoded = tf.numpy_function(self._image_bytes, [index], tf.string,
                                stateful=False)
    encoded.set_shape([])
    return dict(encoded=encoded,
                label=tf.gather(tf.constant(self.labels), index),
                key=tf.strings.join([self.rec_path, '#',
                                     tf.strings.as_string(index)]),
                landmarks=self._landmarks_of(index))


class InMemory(_RandomAccess):
  """Decoded uint8 images (N, H, W, 3) held in memory, with int labels.

  The arrays become constants of the tf.data graph, so keep them under
  about 1 GB; export larger sets to an image folder or TFRecords.
  ``attributes`` and ``attribute_names``: optional per-image binary
  attributes (N, A) and their names.
  """

  def __init__(self, images, labels, class_names=None, name='arrays',
               attributes=None, attribute_names=None):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f'{name}: images must be uint8 (N, H, W, 3), got '
                       f'{images.dtype} {images.shape}')
    if labels.shape != images.shape[:1]:
      raise ValueError(f'{name}: {len(labels)} labels for {len(images)} '
                       'images')
    if not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f'{name}: labels must be integers, got {labels.dtype}')
    if class_names is None:
      class_names = [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
    self.name = name
    self.images = images
    self.labels = labels.astype(np.int32)
    self.class_names = tuple(class_names)
    self.num_examples = len(images)
    check_labels(self.labels, self.num_classes,
                 [f'{name}[{i}]' for i in range(self.num_examples)], name)
    self.landmarks = _missing_landmarks(self.num_examples)
    self._set_attributes(attributes, attribute_names, name)

  def __repr__(self):
    return (f'InMemory({self.name!r}: {self.num_examples} images of '
            f'{self.num_classes} identities)')

  def read(self, index):
    tf = _tf()
    return self._with_attributes(dict(
        image=tf.gather(tf.constant(self.images), index),
        label=tf.gather(tf.constant(self.labels), index),
        key=tf.strings.join([self.name, '[', tf.strings.as_string(index),
                             ']']),
        landmarks=self._landmarks_of(index)), index)


def synthetic_source(num_identities, images_per_identity, seed=0,
                     first_identity=0, image_size=None):
  """The embedded synthetic identity dataset as an :class:`InMemory`.

  Identities ``first_identity ...`` of :mod:`facejax.data.synthetic` get
  labels ``0 ...`` here; use ``first_identity=synthetic.EVAL_FIRST_IDENTITY``
  for held-out identities. The faces are drawn at ``image_size`` (default
  ``synthetic.IMAGE_SIZE``, 112): draw them at the model's input side, so
  that no pixel is drawn only to be resized away, and the pipelines pass
  them through as they are.
  """
  from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
  images, identities = synthetic.generate(
      num_identities, images_per_identity, seed=seed,
      first_identity=first_identity,
      image_size=image_size or synthetic.IMAGE_SIZE)
  names = [synthetic.identity_name(first_identity + i)
           for i in range(num_identities)]
  return InMemory(images, identities - first_identity, names,
                  name=f'synthetic(seed={seed}, first={first_identity})')


def verification_bin(path):
  """An insightface ``.bin`` verification set as (source, first, second, issame).

  The images are decoded once (tensorflow, eagerly) into an
  :class:`InMemory` source; pair ``i`` is images ``first[i] = 2 i`` and
  ``second[i] = 2 i + 1``. An image that cannot be decoded, or whose
  header declares more than ``image_headers.DEFAULT_MAX_PIXELS`` (read
  before decoding), is an error naming the file and the image's position.
  """
  tf = _tf()
  encoded, issame = insightface.load_bin(path)
  declared = image_headers.pixels(encoded)
  images = []
  for position, data in enumerate(encoded):
    try:
      if declared[position] > image_headers.DEFAULT_MAX_PIXELS:
        raise ValueError('its header declares more than '
                         f'{image_headers.DEFAULT_MAX_PIXELS:,} pixels')
      images.append(tf.io.decode_image(data, channels=3,
                                       expand_animations=False).numpy())
    except (tf.errors.InvalidArgumentError, ValueError) as e:
      raise ValueError(f'{path}: image {position} cannot be decoded: '
                       f'{str(e).splitlines()[0]}') from None
  shapes = {image.shape for image in images}
  if len(shapes) != 1:
    raise ValueError(f'{path}: images of different sizes {sorted(shapes)}')
  pairs = len(issame)
  source = InMemory(np.stack(images), np.zeros(2 * pairs, np.int32),
                    name=os.path.basename(os.fspath(path)))
  return (source, np.arange(0, 2 * pairs, 2), np.arange(1, 2 * pairs, 2),
          np.asarray(issame, bool))


# The features of one converted example (see facejax.data.convert).
FEATURE_IMAGE = 'image/encoded'
FEATURE_LABEL = 'image/label'
FEATURE_KEY = 'image/key'
FEATURE_LANDMARKS = 'image/landmarks'


# ------------------------------------------------ TFRecords: the manifest.

MANIFEST_FORMAT = 'facejax-tfrecords-1'


def _crc32c_table():
  """The byte table of CRC-32C (Castagnoli, reflected 0x82f63b78)."""
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def masked_crc32c(data):
  """TFRecord's checksum of ``data``: CRC-32C, rotated and offset."""
  table, crc = _CRC32C_TABLE, 0xffffffff
  for byte in data:
    crc = table[(crc ^ byte) & 0xff] ^ (crc >> 8)
  crc ^= 0xffffffff
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def _read_at(f, size, offset):
  """``size`` bytes at ``offset``, in one system call where there is pread."""
  if hasattr(os, 'pread'):
    return os.pread(f.fileno(), size, offset)
  f.seek(offset)
  return f.read(size)


def count_tfrecords(path):
  """The number of records of a TFRecord file, from its framing alone.

  Each record is ``uint64 length | uint32 masked CRC-32C of the length |
  data | uint32 masked CRC-32C of the data`` (little endian). The walk reads
  the 12 bytes before each record's data, checks the length's CRC and skips
  the data and its CRC without reading them: one 12-byte read per record,
  never a payload. From the page cache that is about 2.5 microseconds per
  record (MS1MV2's 5.8M images: some 15 s, half of it the length's CRC in
  python); on a network file system, one small read per record. The data's
  CRC is checked by tensorflow as the record is read.

  Raises:
    files.DataFileError: a damaged length (its CRC does not match) or a
      record that runs past the end of the file (a truncated shard), naming
      the file, the record and its byte offset.
  """
  path = os.fspath(path)
  size = os.path.getsize(path)
  count = offset = 0
  with open(path, 'rb', buffering=0) as f:
    while offset < size:
      head = _read_at(f, 12, offset)
      if len(head) == 12:
        length, length_crc = struct.unpack('<QI', head)
        if masked_crc32c(head[:8]) != length_crc:
          raise files.DataFileError(
              f'{path}: record {count} at byte offset {offset}: its length '
              'field is damaged (CRC mismatch): not a TFRecord file, or a '
              'corrupt one')
        if offset + 16 + length <= size:
          offset += 16 + length
          count += 1
          continue
      raise files.DataFileError(
          f'{path}: truncated shard: record {count} at byte offset {offset} '
          f'runs past the end of the file ({size} bytes)')
  return count


# The manifest's keys and the kind of each (see _checked).
_MANIFEST_KEYS = dict(complete='bool', num_classes='count', shards='list')
_OPTIONAL_MANIFEST_KEYS = dict(
    has_landmarks='bool', num_examples='count', fingerprint='str',
    skipped_count='count', skipped='list')


def _manifest_error(path, key, problem):
  return files.DataFileError(f'{files.where(path, key=key)}: {problem}')


def _shown(value):
  """``repr(value)``, cut short: a manifest's values may be anything."""
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + '...'


def _checked(path, key, value, kind):
  """``value`` if it is of ``kind``: 'count', 'bool', 'str' or 'list'."""
  if kind == 'count':
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
      return value
    raise _manifest_error(path, key, f'{_shown(value)} is not a count (an '
                          'integer >= 0)')
  if isinstance(value, dict(bool=bool, str=str, list=list)[kind]):
    return value
  raise _manifest_error(path, key, f'{_shown(value)} is not a {kind}')


def _checked_shards(path, shards):
  """The manifest's ``shards``: a list of ``{file, num_examples, ...}``."""
  names = set()
  for position, shard in enumerate(_checked(path, 'shards', shards, 'list')):
    key = f'shards[{position}]'
    if not isinstance(shard, dict):
      raise _manifest_error(path, key, f'{_shown(shard)} is not an object')
    _checked(path, f'{key}.file', shard.get('file'), 'str')
    _checked(path, f'{key}.num_examples', shard.get('num_examples'), 'count')
    if 'skipped' in shard:
      _checked(path, f'{key}.skipped', shard['skipped'], 'count')
    if shard['file'] in names:
      raise _manifest_error(path, f'{key}.file', f'{_shown(shard["file"])} '
                            'is listed twice')
    names.add(shard['file'])
  return shards


def read_manifest(directory, require_complete=True):
  """The manifest ``dataset.json`` of a converted folder, its types checked.

  Keys: ``complete`` (bool), ``num_classes`` (a count), ``shards`` (a list
  of ``{"file": name, "num_examples": count, "skipped": count}``, names
  unique, not empty once complete), and, when present, ``format``
  (:data:`MANIFEST_FORMAT`), ``has_landmarks`` (bool), ``num_examples``
  (the shards' sum), ``fingerprint`` (str), ``skipped_count`` (a count) and
  ``skipped`` (a list of paths). Shard names are not yet confined to the
  folder, nor the shards opened: :class:`TFRecords` does that.

  Args:
    directory: the converted folder.
    require_complete: refuse a conversion that has not finished
      (``complete`` false: it is to be resumed).

  Raises:
    FileNotFoundError: no ``dataset.json``.
    files.DataFileError: not UTF-8 JSON, not an object, or a key missing or
      of the wrong type, naming the file and the key (e.g.
      ``shards[1].num_examples``).
    ValueError: ``require_complete`` and the conversion has not finished.
  """
  path = os.path.join(os.fspath(directory), MANIFEST)
  manifest = files.read_json(path)
  if not isinstance(manifest, dict):
    raise files.DataFileError(f'{path}: the manifest is a '
                              f'{type(manifest).__name__}, expected an object')
  for key, kind in _MANIFEST_KEYS.items():
    _checked(path, key, manifest.get(key), kind)
  for key, kind in _OPTIONAL_MANIFEST_KEYS.items():
    if key in manifest:
      _checked(path, key, manifest[key], kind)
  if manifest.get('format', MANIFEST_FORMAT) != MANIFEST_FORMAT:
    raise _manifest_error(path, 'format', f'{_shown(manifest["format"])} is '
                          f'not {MANIFEST_FORMAT!r}')
  for position, skipped in enumerate(manifest.get('skipped', ())):
    _checked(path, f'skipped[{position}]', skipped, 'str')
  if require_complete and not manifest['complete']:
    raise ValueError(
        f'{path}: the conversion has not finished; run the same '
        '`python -m facejax.data.convert` command again to resume it')
  shards = _checked_shards(path, manifest['shards'])
  if manifest['complete'] and not shards:
    raise _manifest_error(path, 'shards', 'a finished conversion lists no '
                          'shard')
  total = sum(shard['num_examples'] for shard in shards)
  if manifest.get('num_examples', total) != total:
    raise _manifest_error(path, 'num_examples', f'{manifest["num_examples"]} '
                          f'is not the sum of the shards\' counts, {total}')
  return manifest


def _read_label_map(directory, num_classes):
  """The class names of ``labels.json``: ``num_classes`` unique strings."""
  path = os.path.join(directory, LABEL_MAP)
  names = files.read_json(path)
  if not isinstance(names, list):
    raise files.DataFileError(f'{path}: the label map is a '
                              f'{type(names).__name__}, expected a list of '
                              'class names')
  for position, name in enumerate(names):
    if not isinstance(name, str):
      raise files.DataFileError(f'{files.where(path, key=f"[{position}]")}: '
                                f'{_shown(name)} is not a class name (a '
                                'string)')
  seen = set()
  for name in names:
    if name in seen:
      raise files.DataFileError(f'{path}: the class name {_shown(name)} is '
                                'listed twice')
    seen.add(name)
  if len(names) != num_classes:
    raise files.DataFileError(
        f'{directory}: {LABEL_MAP} names {len(names)} classes, {MANIFEST} '
        f'says {num_classes}')
  return tuple(names)


@dataclasses.dataclass(frozen=True)
class Shard:
  path: str
  num_examples: int


class TFRecords:
  """TFRecord shards written by :mod:`facejax.data.convert`.

  The folder holds ``dataset.json`` (the manifest: the shards and their
  example counts, the class count and the conversion's provenance) and
  ``labels.json`` (the class names in label order). Labels are checked
  against the class count as examples are parsed: a bad one stops the
  pipeline with an error naming the shard and the example's key.

  Opening checks the manifest's keys and types (:func:`read_manifest`),
  confines the shard names to the folder and counts each shard's records by
  walking its framing (:func:`count_tfrecords`: one 12-byte read per
  record), so a count that is not the shard's, or a truncated or damaged
  shard, is refused here with its name, before evaluation scores or epochs
  depend on it. A record's data CRC is checked only as the record is read
  (by tensorflow); :mod:`facejax.data.pipeline` turns a mismatch into an
  error naming the shard.
  """

  def __init__(self, directory):
    """Reads and checks the manifest, the label map and every shard's framing.

    Raises:
      FileNotFoundError: no manifest, label map or shard.
      files.DataFileError: a malformed manifest or label map (naming the key
        or entry), a shard name that leaves the folder
        (:class:`files.UnsafePathError`), a shard whose record count is not
        the manifest's, or a truncated or damaged shard.
      ValueError: the conversion has not finished.
    """
    self.directory = os.fspath(directory)
    manifest_path = os.path.join(self.directory, MANIFEST)
    if not os.path.exists(manifest_path):
      raise FileNotFoundError(
          f'{manifest_path}: manifest not found; is {self.directory} the '
          'output of `python -m facejax.data.convert`, and did it finish?')
    manifest = read_manifest(self.directory)
    self.class_names = _read_label_map(self.directory, manifest['num_classes'])
    self.shards = tuple(
        self._checked_shard(manifest_path, position, entry)
        for position, entry in enumerate(manifest['shards']))
    self.num_examples = sum(s.num_examples for s in self.shards)
    self.has_landmarks = manifest.get('has_landmarks', False)
    self.manifest = manifest

  def _checked_shard(self, manifest_path, position, entry):
    """The :class:`Shard` of ``shards[position]``, its count checked."""
    key = f'shards[{position}]'
    path = files.confine(self.directory, entry['file'], source=manifest_path,
                         key=f'{key}.file')
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path}: shard listed in {manifest_path} '
                              f'({key}.file) is missing')
    if not os.path.isfile(path):
      raise files.DataFileError(f'{path}: listed in {manifest_path} '
                                f'({key}.file) as a shard, but not a file')
    count = count_tfrecords(path)
    if count != entry['num_examples']:
      raise _manifest_error(
          manifest_path, f'{key}.num_examples',
          f'says {entry["num_examples"]} records, but {path} holds {count}')
    return Shard(path, count)

  @property
  def num_classes(self):
    return len(self.class_names)

  def __repr__(self):
    return (f'TFRecords({self.directory!r}: {self.num_examples} images of '
            f'{self.num_classes} identities in {len(self.shards)} shards)')

  def parse(self, serialized, shard_path):
    """One serialized example -> the source's dict of tensors."""
    tf = _tf()
    features = tf.io.parse_single_example(serialized, {
        FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
        FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64),
        FEATURE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
        FEATURE_LANDMARKS: tf.io.FixedLenFeature(
            [2 * NUM_LANDMARKS], tf.float32,
            default_value=[math.nan] * (2 * NUM_LANDMARKS)),
    })
    label = features[FEATURE_LABEL]
    key = tf.strings.join([shard_path, ':', features[FEATURE_KEY]])
    in_range = tf.logical_and(label >= 0, label < self.num_classes)
    with tf.control_dependencies([tf.debugging.Assert(
        in_range, [key, 'has label', label, 'outside [0,',
                   self.num_classes, ')'])]):
      label = tf.identity(label)
    return dict(encoded=features[FEATURE_IMAGE],
                label=tf.cast(label, tf.int32), key=key,
                landmarks=tf.reshape(features[FEATURE_LANDMARKS],
                                     [NUM_LANDMARKS, 2]))

  def records(self, shard_paths, counts, parallel_reads=None):
    """The parsed examples of the given shards, each checked to be intact.

    Args:
      shard_paths: the shards' paths (a list or a string tensor).
      counts: the number of records each holds, as the manifest lists them
        (int64, same length).
      parallel_reads: read that many files at once and interleave their
        examples (deterministically); None: file after file.

    A shard whose readable records are not its count (a CRC mismatch or a
    truncated record ends what tensorflow can read) stops the pipeline with
    an error naming it: see :func:`_intact_records`.
    """
    tf = _tf()
    paths = tf.data.Dataset.from_tensor_slices((shard_paths, counts))

    def read_file(path, count):
      return _intact_records(path, count).map(
          lambda serialized: self.parse(serialized, path))

    if not parallel_reads:
      return paths.flat_map(read_file)
    return paths.interleave(read_file, cycle_length=parallel_reads,
                            num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)


def _intact_records(path, expected):
  """The serialized records of one shard; a damaged shard is an error naming it.

  tf.data's TFRecord reader reports a CRC mismatch or a truncated record as
  a DataLossError that gives an offset but not the file. So its errors are
  dropped here (it gives up on the file at the first one) and the records
  counted instead: when a shard's readable records are not the ``expected``
  number its manifest lists, the pipeline stops with an error naming it.
  """
  tf = _tf()
  records = tf.data.TFRecordDataset(path).ignore_errors()
  end = tf.data.Dataset.from_tensors((tf.constant(b''), tf.constant(False)))
  counted = records.map(lambda record: (record, tf.constant(True)))
  counted = counted.concatenate(end).enumerate()

  def intact(position, record_and_real):
    real = record_and_real[1]
    complete = tf.logical_or(real, tf.equal(position, expected))
    message = tf.strings.join([
        path, ': damaged TFRecord shard: ', tf.strings.as_string(position),
        ' readable records where ', MANIFEST, ' lists ',
        tf.strings.as_string(expected), ' (a CRC mismatch or a truncated '
        'record ends the readable part); convert the data again or restore '
        'the file'])
    with tf.control_dependencies([tf.debugging.Assert(complete, [message])]):
      return tf.identity(real)

  return counted.filter(intact).map(lambda _, pair: pair[0])


def open_source(spec, landmarks_file=None):
  """A source from a path: a folder of TFRecords, a ``.rec``, or images."""
  spec = os.fspath(spec)
  if spec.endswith('.rec'):
    return RecordIO(spec)
  if os.path.exists(os.path.join(spec, MANIFEST)):
    return TFRecords(spec)
  return ImageFolder(spec, landmarks_file=landmarks_file)
