"""tf.data pipelines for training and evaluation, from any source.

    source (sources.py) -> order and process shard -> read -> decode, skipping
    corrupt images -> align or resize -> augment -> normalise -> batch

Training (:func:`train_dataset`) is an endless stream of process-local
batches ``{'image': float32 (B, S, S, 3) in [-1, 1], 'label': int32 (B,)}``
with ``B = global_batch_size / process_count``:

* **Order.** Random-access sources are shuffled per epoch by a stateless
  permutation of the example indices (``index_shuffle`` seeded by the run's
  seed and the epoch), so the order is a pure function of (seed, step): a
  run restarted with ``start_step=k`` continues exactly where step ``k``
  left off, and skipping costs no image reads. TFRecords are shuffled by
  file order per epoch and a seeded buffer.
* **Processes.** Every process computes the same permutation and keeps the
  positions ``process_index::process_count``, each epoch truncated to a
  multiple of ``process_count``, so the processes read disjoint shards that
  together cover the epoch and always have the same number of batches
  (``drop_remainder`` makes every local batch full).
* **P x K** (``identities_per_batch=P, images_per_identity=K``): every global
  batch holds P distinct identities with K images each, grouped (rows
  ``k*K .. k*K+K-1`` are one identity), for the triplet family and LMLE. The
  identities of an epoch are a stateless permutation of those with at least
  two images; an identity with fewer than K images is sampled with
  replacement. Process ``i`` gets the identities ``i*P/n .. (i+1)*P/n - 1``
  of each global batch.
* **Bad images.** Undecodable or truncated images, and images whose header
  declares more than ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`;
  checked before decoding, so a small file declaring a huge image costs
  nothing), are skipped and counted in a :class:`SkippedImages` report
  (distinct images, by reason, and the first paths), never fatal; in a
  P x K stream the whole batch holding one is skipped, so the structure
  holds. A missing file, a label outside the class range or a damaged
  TFRecord shard stops the pipeline with an error naming the file.
* **Augmentation** (:mod:`facejax.data.augment`) uses stateless ops seeded by
  (seed, epoch, example), deterministic whatever the parallelism.

Evaluation (:func:`eval_dataset`) reads every example exactly once, in order:
process ``i`` reads the contiguous block ``[i N / n, (i + 1) N / n)``, padded
to the same whole number of batches on every process; batches carry ``index`` (the example's position
in the source, -1 for padding) and ``mask`` (False for padding and for an
image that could not be decoded), so no example is lost or counted twice.

To put the batches on devices as sharded ``jax.Array``s see
:mod:`facejax.data.device`.
"""

import collections
import dataclasses
import struct
import threading

import numpy as np

from facejax.data import augment as augment_lib
from facejax.data import sources

AUTOTUNE = -1  # tf.data.AUTOTUNE
DEFAULT_IMAGE_SIZE = 112
DEFAULT_SHUFFLE_BUFFER = 16_384  # TFRecord sources only
_ORDER_STREAM, _AUGMENT_STREAM, _SAMPLE_STREAM = 0x0D, 0xA6, 0x5A
# Images whose header declares more pixels than this are skipped before they
# are decoded. 40 megapixels is above any face photo (a 24 MP camera frame is
# 6000 x 4000; face sets are crops of a few hundred pixels a side), and it
# bounds one decode at 120 MB of uint8 RGB (480 MB once cast to float32 for
# resizing) where a 95 KB PNG of 10000 x 10000 would take 1.5 GB.
DEFAULT_MAX_PIXELS = 40_000_000
UNDECODABLE = 'undecodable'  # SkippedImages reason


def too_large(max_pixels):
  """The SkippedImages reason for an image over ``max_pixels``."""
  return f'over {max_pixels:,} pixels'


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


class SkippedImages:
  """Counts the distinct images a pipeline skipped, and why; keeps a few keys.

  The pipeline calls :meth:`record` (from a tf.data thread) for each image
  it skips: one that cannot be decoded, or whose header declares more than
  the pipeline's ``max_pixels``. An image is counted once however many
  epochs meet it, so ``count`` is the number of bad images in the data, not
  of encounters. ``count``, ``by_reason`` and ``first_keys`` are read by the
  training loop, which logs them. Thread-safe.
  """

  def __init__(self, keep=10):
    self.keep = keep
    self.first_keys = []
    self.by_reason = collections.Counter()
    self._seen = set()  # keys: a few bad images in practice
    self._lock = threading.Lock()

  @property
  def count(self):
    """Distinct images skipped so far."""
    with self._lock:
      return len(self._seen)

  def record(self, key, reason=UNDECODABLE):
    with self._lock:
      if key in self._seen:
        return
      self._seen.add(key)
      self.by_reason[reason] += 1
      if len(self.first_keys) < self.keep:
        self.first_keys.append(key)

  def __str__(self):
    with self._lock:
      count = len(self._seen)
      reasons = ', '.join(f'{number} {reason}' for reason, number
                          in sorted(self.by_reason.items()))
      keys = list(self.first_keys)
    if not count:
      return 'no images skipped'
    more = ', ...' if count > len(keys) else ''
    return f'{count} image(s) skipped ({reasons}): {", ".join(keys)}{more}'


@dataclasses.dataclass(frozen=True)
class ProcessShard:
  """Which part of the data this process reads: ``index`` of ``count``."""
  index: int = 0
  count: int = 1

  def __post_init__(self):
    if not 0 <= self.index < self.count:
      raise ValueError(f'process index {self.index} not in [0, '
                       f'{self.count})')


def current_process():
  """``ProcessShard(jax.process_index(), jax.process_count())``."""
  import jax  # pylint: disable=g-import-not-at-top
  return ProcessShard(jax.process_index(), jax.process_count())


def local_batch_size(global_batch_size, process):
  if global_batch_size % process.count:
    raise ValueError(
        f'global batch size {global_batch_size} does not split evenly over '
        f'{process.count} processes')
  return global_batch_size // process.count


# ---------------------------------------------------------------------------
# Example order (random-access sources): streams of dicts
# {'index': int64, 'seed': int32 (2,)}, 'seed' keying the augmentation.


def _seed_pair(seed, *data):
  """A (2,) int32 stateless seed from the run's seed and integers."""
  tf = _tf()
  pair = tf.constant([seed % (1 << 31), 0x5eed], tf.int32)
  for value in data:
    pair = tf.random.experimental.stateless_fold_in(
        pair, tf.cast(value, tf.int64))
  return pair


def _shuffled_epochs(num_examples, seed, process):
  """Endless per-epoch permutations of ``range(num_examples)``, sharded."""
  tf = _tf()
  per_process = num_examples // process.count
  if per_process == 0:
    raise ValueError(f'{num_examples} examples cannot be shared by '
                     f'{process.count} processes')
  max_index = tf.constant(num_examples - 1, tf.int64)

  def one_epoch(epoch):
    order_seed = _seed_pair(seed, _ORDER_STREAM, epoch)
    positions = tf.data.Dataset.range(per_process * process.count)
    positions = positions.shard(process.count, process.index)
    return positions.map(lambda position: dict(
        index=tf.random.experimental.index_shuffle(
            position, order_seed, max_index),
        seed=_seed_pair(seed, _AUGMENT_STREAM, epoch, position)))

  return tf.data.Dataset.counter().flat_map(one_epoch)


def _identity_balanced(labels, seed, process, identities, images):
  """P x K index stream: ``identities`` x ``images`` per global batch."""
  tf = _tf()
  counts = np.bincount(labels)
  eligible = np.flatnonzero(counts >= 2)
  if len(eligible) < identities:
    raise ValueError(
        f'P x K batches need {identities} identities with at least 2 images '
        f'each, the source has {len(eligible)}')
  if identities % process.count:
    raise ValueError(f'{identities} identities per batch do not split over '
                     f'{process.count} processes')
  local = identities // process.count
  by_class = np.argsort(labels, kind='stable').astype(np.int64)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
  eligible_t = tf.constant(eligible, tf.int64)
  starts_t, counts_t = tf.constant(starts), tf.constant(counts, tf.int64)
  by_class_t = tf.constant(by_class)
  per_epoch = len(eligible) // identities * identities

  def identities_of_epoch(epoch):
    order_seed = _seed_pair(seed, _ORDER_STREAM, epoch)
    return tf.data.Dataset.range(per_epoch).map(
        lambda j: tf.gather(eligible_t, tf.random.experimental.index_shuffle(
            j, order_seed, len(eligible) - 1)))

  def sample(step, classes):
    classes = classes[process.index * local:(process.index + 1) * local]
    count = tf.gather(counts_t, classes)[:, None]  # (local, 1)
    slot = tf.range(images, dtype=tf.int64)[None, :]  # (1, K)
    slot_seed = _seed_pair(seed, _SAMPLE_STREAM, step)
    flat_count = tf.reshape(tf.broadcast_to(count, [local, images]), [-1])
    flat_slot = tf.reshape(tf.broadcast_to(slot, [local, images]), [-1])
    # One permutation of each identity's images: seed (slot_seed, class).
    # One permutation of each identity's images, seeded by (step, class).
    # (The raw op: tf.random.experimental.index_shuffle pads a batch of
    # seeds along the wrong axis in TF 2.21.)
    seeds = tf.concat([
        tf.broadcast_to(tf.cast(slot_seed, tf.int64), [local * images, 2]),
        tf.repeat(classes, images)[:, None]], axis=1)
    without = tf.raw_ops.RandomIndexShuffle(
        index=tf.minimum(flat_slot, flat_count - 1), seed=seeds,
        max_index=flat_count - 1, rounds=4)
    with_replacement = tf.cast(tf.floor(
        tf.random.stateless_uniform([local * images], slot_seed,
                                    dtype=tf.float64)
        * tf.cast(flat_count, tf.float64)), tf.int64)
    position = tf.where(flat_count >= images, without, with_replacement)
    first = tf.repeat(tf.gather(starts_t, classes), images)
    index = tf.gather(by_class_t, first + position)
    slots = tf.range(local * images, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((index, slots)).map(
        lambda index, slot: dict(index=index, seed=_seed_pair(
            seed, _AUGMENT_STREAM, step, process.index, slot)))

  batches = tf.data.Dataset.counter().flat_map(identities_of_epoch)
  batches = batches.batch(identities, drop_remainder=True).enumerate()
  return batches.flat_map(sample)


# ---------------------------------------------------------------------------
# Declared image size: read from the encoded header before decoding, so that
# a small file declaring a huge image (a decompression bomb) is skipped
# instead of decoded. The formats are those tf.io.decode_image knows, told
# apart by the same magic bytes; -1 means "not known here", and the image
# goes on to decode (which fails for anything it does not recognise).

_HEADER_BATCH = 32  # examples whose headers are read by one set of ops
_HEAD = 32  # bytes of header the fixed-offset formats need
_MAGIC_SPAN = 16  # every magic lies in the first 16 bytes
_SIDE_CAP = 1 << 31  # a product of two sides stays in int64
_JPEG_MAGIC = b'\xff\xd8\xff'
_JPEG_DECLARED = -2  # a JPEG: its size is read by libjpeg
_JXL_CODESTREAM = b'\xff\x0a'
_JXL_CONTAINER = b'\0\0\0\x0cJXL \r\n\x87\n'
# The JPEG XL SizeHeader's width/height ratios, by its 3-bit code 1..7.
_JXL_RATIOS = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))


def _side(start, size, big_endian=False, shift=0, bits=None, add=0,
          signed=False):
  """Where a header keeps one side: ``size`` bytes from ``start``, then
  ``bits`` bits from bit ``shift`` of that number, plus ``add``; ``signed``:
  a two's complement 32-bit number whose magnitude is the side."""
  return dict(start=start, size=size, big_endian=big_endian, shift=shift,
              bits=8 * size if bits is None else bits, add=add, signed=signed)


_JPEG, _WALKED = 'jpeg', 'walked'  # sides read by libjpeg, or in Python
_RIFF_WEBP = ((0, b'RIFF'), (8, b'WEBP'))
# The formats tf.io.decode_image knows, in the order it tries them: magic
# bytes (offset, bytes), and where the header keeps (width, height).
_FORMATS = (
    (((0, _JPEG_MAGIC),), _JPEG),
    (((0, b'\x89PNG\r\n\x1a\n'),),  # IHDR
     (_side(16, 4, big_endian=True), _side(20, 4, big_endian=True))),
    (((0, b'GIF8'),), _WALKED),
    (((0, b'BM'),),  # BITMAPINFOHEADER; a height < 0 means top-down
     (_side(18, 4, signed=True), _side(22, 4, signed=True))),
    (_RIFF_WEBP + ((12, b'VP8L'),),  # lossless: 14-bit sides minus 1
     (_side(21, 4, bits=14, add=1), _side(21, 4, shift=14, bits=14, add=1))),
    (_RIFF_WEBP + ((12, b'VP8X'),),  # extended: 24-bit canvas minus 1
     (_side(24, 3, add=1), _side(27, 3, add=1))),
    (_RIFF_WEBP,  # lossy ('VP8 '): 14-bit sides after the start code
     (_side(26, 2, bits=14), _side(28, 2, bits=14))),
    (((0, _JXL_CODESTREAM),), _WALKED),
    (((0, _JXL_CONTAINER),), _WALKED),
)


def _header_tables():
  """:data:`_FORMATS` as arrays: one set of vector ops reads every format."""
  count = len(_FORMATS)
  magic = np.zeros((count, _MAGIC_SPAN), np.int64)
  checked = np.zeros((count, _MAGIC_SPAN), bool)
  index = np.zeros((2 * count, 4), np.int32)
  weight = np.zeros((2 * count, 4), np.int64)
  divisor = np.ones(2 * count, np.int64)
  modulus = np.full(2 * count, 1 << 32, np.int64)
  add = np.zeros(2 * count, np.int64)
  signed = np.zeros(2 * count, bool)
  for row, (magics, sides) in enumerate(_FORMATS):
    for offset, expected in magics:
      magic[row, offset:offset + len(expected)] = list(expected)
      checked[row, offset:offset + len(expected)] = True
    if sides in (_JPEG, _WALKED):
      continue
    for column, side in enumerate(sides, 2 * row):
      size = side['size']
      index[column, :size] = np.arange(side['start'], side['start'] + size)
      powers = 256 ** np.arange(size, dtype=np.int64)
      weight[column, :size] = powers[::-1] if side['big_endian'] else powers
      divisor[column] = 1 << side['shift']
      modulus[column] = 1 << side['bits']
      add[column], signed[column] = side['add'], side['signed']
  kinds = [sides if sides in (_JPEG, _WALKED) else '' for _, sides in _FORMATS]
  return dict(magic=magic, unchecked=~checked, index=index, weight=weight,
              divisor=divisor, modulus=modulus, add=add, signed=signed,
              jpeg=np.array([k == _JPEG for k in kinds]),
              walked=np.array([k == _WALKED for k in kinds]))


_TABLES = _header_tables()


def _skip_gif_sub_blocks(data, position):
  """The position after a chain of GIF data sub-blocks (a 0 size ends it)."""
  while position < len(data) and data[position]:
    position += data[position] + 1
  return position + 1


def _gif_pixels(data):
  """What decoding a GIF allocates, in pixels: all frames, not just one.

  giflib (which tf uses) reads every frame's raster into memory before tf
  keeps the first, so a GIF of many frames costs their summed sizes; the
  output is the logical screen.
  """
  if len(data) < 13:
    return -1
  width, height, flags = struct.unpack_from('<HHB', data, 6)
  position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
  frames = 0
  while position < len(data):
    block = data[position]
    if block == 0x2C and position + 10 <= len(data):  # an image descriptor
      frame_width, frame_height, flags = struct.unpack_from(
          '<HHB', data, position + 5)
      frames += frame_width * frame_height
      position += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
      position = _skip_gif_sub_blocks(data, position + 1)  # + LZW code size
    elif block == 0x21:  # an extension: its label, then sub-blocks
      position = _skip_gif_sub_blocks(data, position + 2)
    else:  # the trailer, or damage that decoding will report
      break
  return max(width * height, frames)


def _jxl_codestream(data):
  """A JPEG XL codestream, bare or from its ISO BMFF container (b'': none)."""
  if data.startswith(_JXL_CODESTREAM):
    return data
  position = 0
  while position + 8 <= len(data):
    size, kind = struct.unpack_from('>I4s', data, position)
    header = 8
    if size == 1 and position + 16 <= len(data):  # a 64-bit size follows
      size, header = struct.unpack_from('>Q', data, position + 8)[0], 16
    elif size == 0:  # the box runs to the end of the file
      size = len(data) - position
    if kind == b'jxlc':
      return data[position + header:]
    if kind == b'jxlp':  # a partial codestream, after its 4-byte index
      return data[position + header + 4:]
    if size < header:
      return b''
    position += size
  return b''


def _jxl_pixels(data):
  """Width x height from a JPEG XL codestream's SizeHeader (-1: none)."""
  codestream = _jxl_codestream(data)
  if not codestream.startswith(_JXL_CODESTREAM) or len(codestream) < 11:
    return -1
  bits = int.from_bytes(codestream[2:11], 'little')  # read LSB first
  used = 0

  def read(count):
    nonlocal used
    value = (bits >> used) & ((1 << count) - 1)
    used += count
    return value

  def side(small):
    if small:
      return (read(5) + 1) * 8
    return read((9, 13, 18, 30)[read(2)]) + 1

  small = read(1)
  height = side(small)
  ratio = read(3)
  if ratio:
    numerator, denominator = _JXL_RATIOS[ratio - 1]
    width = height * numerator // denominator
  else:
    width = side(small)
  return width * height


def _walked_pixels(data):
  """Declared pixels of a GIF or JPEG XL (-1: not one, or no header)."""
  try:
    if data.startswith(b'GIF8'):
      return min(_gif_pixels(data), _SIDE_CAP ** 2)
    return min(_jxl_pixels(data), _SIDE_CAP ** 2)
  except (IndexError, struct.error):  # damage: decoding will report it
    return -1


def _walk_headers(encoded):
  """numpy (N,) bytes -> (N,) int64 :func:`_walked_pixels`; b'' gives -1."""
  return np.array([_walked_pixels(data) if data else -1 for data in encoded],
                  np.int64)


def _batch_declared_pixels(encoded):
  """(B,) encoded images -> (B,) int64 the pixels their headers declare.

  -1 for what no format claims; :data:`_JPEG_DECLARED` for a JPEG, whose
  header only libjpeg reads (see :func:`_declared_pixels`), one at a time.
  Vector ops over :data:`_FORMATS`: the magic bytes pick the format, fixed
  offsets give the sides; GIF and JPEG XL headers need a walk through the
  file, done in Python for the images of those formats only.
  """
  tf = _tf()
  t = _TABLES
  octets = tf.cast(tf.io.decode_raw(encoded, tf.uint8, fixed_length=_HEAD),
                   tf.int64)  # (B, _HEAD), zero-padded when shorter
  matches = tf.reduce_all(tf.equal(octets[:, None, :_MAGIC_SPAN], t['magic'])
                          | t['unchecked'], axis=2)  # (B, formats)
  walk = tf.reduce_any(matches & t['walked'], axis=1)
  walked = tf.numpy_function(_walk_headers, [tf.where(walk, encoded, b'')],
                             tf.int64, stateful=False)
  walked = tf.reshape(walked, [-1, 1])
  sides = tf.reduce_sum(tf.gather(octets, t['index'], axis=1) * t['weight'],
                        axis=2)  # (B, 2 x formats)
  sides = sides // t['divisor'] % t['modulus']
  negative = t['signed'] & (sides >= 1 << 31)
  sides = tf.where(negative, (1 << 32) - sides, sides) + t['add']
  sides = tf.reshape(tf.minimum(sides, _SIDE_CAP), [-1, len(_FORMATS), 2])
  pixels = tf.where(t['walked'], walked, tf.where(
      t['jpeg'], tf.constant(_JPEG_DECLARED, tf.int64),
      sides[..., 0] * sides[..., 1]))
  none = tf.ones_like(walked)  # a last column: no format matched
  first = tf.argmax(tf.concat([matches, none > 0], 1), axis=1,
                    output_type=tf.int32)
  return tf.gather(tf.concat([pixels, -none], 1), first[:, None],
                   batch_dims=1)[:, 0]


def _with_declared_pixels(examples):
  """Adds ``declared`` (int64) to encoded examples: see
  :func:`_batch_declared_pixels`, run on batches so that its ops' cost is
  shared by many images."""
  return examples.batch(_HEADER_BATCH).map(
      lambda batch: dict(batch, declared=_batch_declared_pixels(
          batch['encoded']))).unbatch()


def _segment(marker, payload):
  """A JPEG marker segment."""
  return b'\xff' + bytes([marker]) + struct.pack('>H', len(payload) + 2) + (
      payload)


# A JPEG header of 1 x 1 (start of image, frame, scan): what
# tf.image.extract_jpeg_shape reads when the image is not a JPEG.
_STAND_IN_JPEG = (
    b'\xff\xd8' + _segment(0xC0, struct.pack('>BHHB', 8, 1, 1, 1)
                           + b'\x01\x11\x00')
    + _segment(0xDA, b'\x01\x01\x00\x00\x3f\x00') + b'\xff\xd9')


def _one_pixel_bmp():
  row = bytes(4)  # one black pixel, padded to 4 bytes
  info = struct.pack('<IiiHHIIiiII', 40, 1, 1, 1, 24, 0, len(row), 0, 0, 0,
                     0)
  offset = 14 + len(info)
  return b'BM' + struct.pack('<IHHI', offset + len(row), 0, 0, offset) + (
      info + row)


# Decoded in place of an image over the limit (a black image once resized),
# which needs no tf.cond: one per image costs more than the whole check.
_STAND_IN_IMAGE = _one_pixel_bmp()


def _declared_pixels(encoded, declared):
  """``declared`` (see :func:`_batch_declared_pixels`), a JPEG's read from
  its frame header by libjpeg. Raises when libjpeg cannot read the header,
  as decoding would."""
  tf = _tf()
  is_jpeg = tf.equal(declared, _JPEG_DECLARED)
  shape = tf.image.extract_jpeg_shape(
      tf.where(is_jpeg, encoded, _STAND_IN_JPEG), output_type=tf.int64)
  return tf.where(is_jpeg, shape[0] * shape[1], declared)


# ---------------------------------------------------------------------------
# Decoding and preprocessing


def _read(source, order):
  """Order stream -> examples: the source's fields plus the order's seed."""
  def read_one(element):
    example = source.read(element['index'])
    example.update(element)
    return example
  return order.map(read_one, num_parallel_calls=AUTOTUNE)


def _to_size(image, landmarks, image_size, align):
  """uint8 (H, W, 3) -> float32 (S, S, 3) in [0, 255]: align or resize."""
  tf = _tf()
  if align:
    from facejax.data import alignment  # pylint: disable=g-import-not-at-top
    image = alignment.align(image, landmarks, output_size=image_size)
    return tf.cast(image, tf.float32)
  image = tf.cast(image, tf.float32)
  same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [image_size,
                                                      image_size]))
  resized = tf.cond(
      same, lambda: image,
      lambda: tf.image.resize(image, [image_size, image_size],
                              antialias=True))
  return tf.reshape(resized, [image_size, image_size, 3])


def _outcome(example, image, ok, over=False):
  """``example`` with its ``image`` (S, S, 3), whether it is usable and, if
  not, whether it is because the image is ``over`` the pixel limit (else it
  is undecodable)."""
  tf = _tf()
  out = {k: v for k, v in example.items()
         if k not in ('encoded', 'image', 'declared')}
  out['image'] = image
  out['ok'] = tf.convert_to_tensor(ok)
  out['over'] = tf.convert_to_tensor(over)
  return out


def _decode(example, image_size, align, max_pixels):
  """Decodes and sizes one example; one declaring more than ``max_pixels``
  comes out flagged (``ok`` False) without being decoded."""
  tf = _tf()
  if 'image' in example:  # decoded already, when the source was made
    return _outcome(example, _to_size(example['image'], example['landmarks'],
                                      image_size, align), True)

  def decoded(encoded):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return _to_size(image, example['landmarks'], image_size, align)

  if max_pixels is None:
    return _outcome(example, decoded(example['encoded']), True)
  over = _declared_pixels(example['encoded'], example['declared']) > (
      max_pixels)
  # Over the limit, a black pixel is decoded instead: no tf.cond, whose
  # cost per image is more than the check's.
  image = decoded(tf.where(over, _STAND_IN_IMAGE, example['encoded']))
  return _outcome(example, image, tf.logical_not(over), over)


def _blank(image_size):
  return _tf().zeros([image_size, image_size, 3], _tf().float32)


def _failed(example, image_size):
  return _outcome(example, _blank(image_size), False)


def _decoded(examples, image_size, align, max_pixels):
  """Decodes every example; one that fails comes out with ``ok`` False.

  TensorFlow cannot catch a kernel error inside a map function, so each
  encoded example is decoded in a one-element dataset whose errors are
  dropped (``ignore_errors``), followed by a flagged placeholder; the first
  element of the two is kept. The key and whether the image was over
  ``max_pixels`` travel with it, so the failure is reported by name and
  reason.
  """
  tf = _tf()
  if 'image' in examples.element_spec:  # decoded already: nothing can fail
    return examples.map(lambda e: _decode(e, image_size, align, max_pixels),
                        num_parallel_calls=AUTOTUNE)

  if max_pixels is not None:
    examples = _with_declared_pixels(examples)

  def decode_or_flag(example):
    one = tf.data.Dataset.from_tensors(example)
    good = one.map(lambda e: _decode(e, image_size, align, max_pixels))
    return good.ignore_errors().concatenate(
        one.map(lambda e: _failed(e, image_size))).take(1)

  return examples.interleave(decode_or_flag, cycle_length=AUTOTUNE,
                             num_parallel_calls=AUTOTUNE)


def _reporting(skipped, max_pixels):
  """A tf predicate: True for a decoded example; records a failed one, and
  why: undecodable, or ``over`` ``max_pixels``."""
  tf = _tf()

  def record(key, over):
    skipped.record(key.numpy().decode('utf-8', 'replace'),
                   too_large(max_pixels) if over else UNDECODABLE)
    return False

  def keep(ok, key, over):
    return tf.cond(ok, lambda: tf.constant(True),
                   lambda: tf.reshape(tf.py_function(
                       record, [key, over], tf.bool), []))
  return keep


def _options(dataset, deterministic):
  tf = _tf()
  options = tf.data.Options()
  options.deterministic = deterministic
  return dataset.with_options(options)


def _check_source(source, num_classes):
  if num_classes is not None and num_classes < source.num_classes:
    raise ValueError(f'{source}: has {source.num_classes} classes, more '
                     f'than the model\'s num_classes={num_classes}')


def _wants_alignment(source, align):
  if align and not source.has_landmarks:
    raise ValueError(f'{source}: align=True needs landmarks for every image '
                     '(ImageFolder(..., landmarks_file=...))')
  return source.has_landmarks if align is None else align


def train_dataset(source, global_batch_size, *, seed=0, image_size=None,
                  augmentation=augment_lib.Augmentation(), align=None,
                  identities_per_batch=None, images_per_identity=None,
                  process=None, start_step=0, skipped=None,
                  num_classes=None, deterministic=True,
                  shuffle_buffer=DEFAULT_SHUFFLE_BUFFER, with_index=False,
                  max_pixels=DEFAULT_MAX_PIXELS):
  """The endless training stream of process-local batches.

  Args:
    source: a source from :mod:`facejax.data.sources`.
    global_batch_size: images per step over all processes.
    seed: the run's seed; order and augmentation are functions of it.
    image_size: output side S (default 112).
    augmentation: an :class:`facejax.data.augment.Augmentation`.
    align: align with the source's landmarks (default: when it has them).
    identities_per_batch, images_per_identity: P and K for identity-balanced
      batches (then ``global_batch_size`` must be P * K); None for plain
      shuffled batches.
    process: a :class:`ProcessShard`; default :func:`current_process`.
    start_step: resume: the first batch is the one step ``start_step`` of an
      uninterrupted run gets (exact when no image is skipped before it).
    skipped: a :class:`SkippedImages` to report skipped images to.
    num_classes: the model's class count; a source with more is an error.
    deterministic: keep the order fixed (True) or let tf.data reorder for
      speed.
    shuffle_buffer: examples in the shuffle buffer (TFRecord sources).
    with_index: batches also carry ``index`` (int32 (B,)), each example's
      position in the source (LMLE looks its cluster up by it); not for
      TFRecord sources, which are read sequentially.
    max_pixels: skip (and report to ``skipped``) an image whose header
      declares more pixels than this, before decoding it; None: no limit.

  Returns:
    A ``tf.data.Dataset`` of dicts ``image`` (float32 (B, S, S, 3) in
    [-1, 1]) and ``label`` (int32 (B,)), ``B = global_batch_size /
    process_count``, ``index`` with ``with_index``, and ``attributes``
    (bool (B, A)) when the source has attributes.
  """
  tf = _tf()
  if with_index and isinstance(source, sources.TFRecords):
    raise ValueError(f'{source}: with_index needs random access to the '
                     'examples; use the image folder or .rec the TFRecords '
                     'were made from')
  process = process or current_process()
  image_size = image_size or DEFAULT_IMAGE_SIZE
  skipped = skipped if skipped is not None else SkippedImages()
  _check_source(source, num_classes)
  align = _wants_alignment(source, align)
  batch = local_batch_size(global_batch_size, process)
  balanced = identities_per_batch is not None
  if balanced:
    if identities_per_batch * (images_per_identity or 0) != global_batch_size:
      raise ValueError(
          f'P x K = {identities_per_batch} x {images_per_identity} is not '
          f'the global batch size {global_batch_size}')
    if isinstance(source, sources.TFRecords):
      raise ValueError(
          f'{source}: P x K batches need random access to the examples of '
          'each identity; use the image folder or .rec the TFRecords were '
          'made from')
    order = _identity_balanced(source.labels, seed, process,
                               identities_per_batch, images_per_identity)
    examples = _read(source, order)
  elif isinstance(source, sources.TFRecords):
    examples = _tfrecord_train_examples(source, seed, process, shuffle_buffer)
  else:
    examples = _read(source, _shuffled_epochs(source.num_examples, seed,
                                              process))
  decoded = _decoded(examples, image_size, align, max_pixels)
  keep = _reporting(skipped, max_pixels)

  def finish(example):
    image = augment_lib.augment(example['image'], example['seed'],
                                augmentation)
    out = dict(image=augment_lib.normalise(image), label=example['label'])
    if 'attributes' in example:
      out['attributes'] = example['attributes']
    if with_index:
      out['index'] = tf.cast(example['index'], tf.int32)
    return out

  if balanced:  # skip whole batches, so every batch stays P x K
    batches = decoded.batch(batch, drop_remainder=True)
    batches = batches.filter(lambda b: tf.reduce_all(tf.map_fn(
        lambda row: keep(*row), (b['ok'], b['key'], b['over']),
        fn_output_signature=tf.bool)))
    batches = batches.unbatch().map(finish, num_parallel_calls=AUTOTUNE)
    batches = batches.batch(batch, drop_remainder=True)
  else:
    kept = decoded.filter(lambda e: keep(e['ok'], e['key'], e['over']))
    kept = kept.map(finish, num_parallel_calls=AUTOTUNE)
    batches = kept.batch(batch, drop_remainder=True)
  batches = batches.skip(start_step)
  return _options(batches.prefetch(AUTOTUNE), deterministic)


def _checked_shard(path, expected):
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
        ' readable records where ', sources.MANIFEST, ' lists ',
        tf.strings.as_string(expected), ' (a CRC mismatch or a truncated '
        'record ends the readable part); convert the data again or restore '
        'the file'])
    with tf.control_dependencies([tf.debugging.Assert(complete, [message])]):
      return tf.identity(real)

  return counted.filter(intact).map(lambda _, pair: pair[0])


def _shard_examples(source, paths, counts, parallel_reads=None):
  """The parsed examples of TFRecord shards (``paths``, with the example
  ``counts`` the manifest lists), read through :func:`_checked_shard`.

  With ``parallel_reads``, that many files are read at once and their
  examples interleaved (deterministically); without, file after file.
  """
  tf = _tf()
  files = tf.data.Dataset.from_tensor_slices((paths, counts))

  def read_file(path, count):
    return _checked_shard(path, count).map(
        lambda serialized: source.parse(serialized, path))

  if not parallel_reads:
    return files.flat_map(read_file)
  return files.interleave(read_file, cycle_length=parallel_reads,
                          num_parallel_calls=AUTOTUNE, deterministic=True)


def _tfrecord_train_examples(source, seed, process, shuffle_buffer):
  """TFRecords: files shuffled per epoch, sharded by file or by example."""
  tf = _tf()
  paths = tf.constant([shard.path for shard in source.shards])
  counts = tf.constant([shard.num_examples for shard in source.shards],
                       tf.int64)
  num_files = len(source.shards)
  by_file = num_files >= process.count

  def one_epoch(epoch):
    order_seed = _seed_pair(seed, _ORDER_STREAM, epoch)
    order = tf.random.experimental.index_shuffle(
        tf.range(num_files, dtype=tf.int64), order_seed, num_files - 1)
    files, sizes = tf.gather(paths, order), tf.gather(counts, order)
    if by_file:
      files = files[process.index::process.count]
      sizes = sizes[process.index::process.count]
    records = _shard_examples(source, files, sizes,
                              parallel_reads=min(num_files, 16))
    if not by_file:
      records = records.shard(process.count, process.index)
    buffer_seed = tf.cast(_seed_pair(seed, _ORDER_STREAM, epoch)[0],
                          tf.int64)
    records = records.shuffle(shuffle_buffer, seed=buffer_seed,
                              reshuffle_each_iteration=False)
    return records.enumerate().map(lambda position, example: dict(
        example, seed=_seed_pair(seed, _AUGMENT_STREAM, epoch, position)))

  return tf.data.Dataset.counter().flat_map(one_epoch)


def eval_dataset(source, global_batch_size, *, image_size=None, align=None,
                 process=None, skipped=None, flip=False,
                 max_pixels=DEFAULT_MAX_PIXELS):
  """Every example once, in order, in padded and masked batches.

  Args:
    source: a source from :mod:`facejax.data.sources`.
    global_batch_size: images per step over all processes.
    image_size: output side S (default 112).
    align: align with the source's landmarks (default: when it has them).
    process: a :class:`ProcessShard`; default :func:`current_process`.
    skipped: a :class:`SkippedImages`; undecodable images (and those over
      ``max_pixels``) are recorded there and come out with ``mask`` False.
    flip: add ``image_flipped`` (the mirror image) for flip test-time
      augmentation.
    max_pixels: an image whose header declares more pixels than this is
      not decoded: it is recorded in ``skipped`` and masked; None: no limit.

  Returns:
    A finite ``tf.data.Dataset`` of dicts ``image`` (float32 (B, S, S, 3)),
    ``label`` (int32), ``index`` (int64; -1 for padding), ``mask`` (bool)
    and ``attributes`` (bool (B, A)) when the source has them, the same
    number of batches on every process.
  """
  tf = _tf()
  process = process or current_process()
  image_size = image_size or DEFAULT_IMAGE_SIZE
  skipped = skipped if skipped is not None else SkippedImages()
  align = _wants_alignment(source, align)
  batch = local_batch_size(global_batch_size, process)
  total = source.num_examples
  # Balanced contiguous blocks, padded to the same number of batches.
  start = process.index * total // process.count
  stop = (process.index + 1) * total // process.count
  real = stop - start
  per_process = -(-(-(-total // process.count)) // batch) * batch
  if isinstance(source, sources.TFRecords):
    examples = _shard_examples(
        source, [s.path for s in source.shards],
        np.array([s.num_examples for s in source.shards], np.int64))
    examples = examples.skip(start).take(real)
    examples = examples.enumerate(start).map(
        lambda index, example: dict(example, index=index))
  else:
    order = tf.data.Dataset.range(start, start + real).map(
        lambda index: dict(index=index))
    examples = _read(source, order)
  decoded = _decoded(examples, image_size, align, max_pixels)
  keep = _reporting(skipped, max_pixels)

  def finish(example):
    mask = keep(example['ok'], example['key'], example['over'])
    out = dict(image=augment_lib.normalise(example['image']),
               label=example['label'], index=example['index'], mask=mask)
    if 'attributes' in example:
      out['attributes'] = example['attributes']
    if flip:
      out['image_flipped'] = tf.image.flip_left_right(out['image'])
    return out

  finished = decoded.map(finish, num_parallel_calls=AUTOTUNE)
  padding = per_process - real
  if padding:
    blank = {k: tf.zeros(spec.shape, spec.dtype)
             for k, spec in finished.element_spec.items()}
    blank['index'] = tf.constant(-1, tf.int64)
    finished = finished.concatenate(
        tf.data.Dataset.from_tensors(blank).repeat(padding))
  return _options(finished.batch(batch, drop_remainder=True).prefetch(
      AUTOTUNE), True)
