"""The pixels an encoded image declares, read before it is decoded.

A small file can declare a huge image (a decompression bomb: a 95 KB PNG of
10000 x 10000 decodes to 300 MB, 1.2 GB once cast to float32), so the
pipeline reads each image's declared size from its header and skips the
image, counted and named, when it is over ``max_pixels``, instead of
decoding it. The formats are those ``tf.io.decode_image`` knows (JPEG, PNG,
GIF, BMP, WebP, JPEG XL), told apart by the same magic bytes: fixed-offset
headers are read by one set of vector ops for a batch of images, JPEG's by
libjpeg (``tf.image.extract_jpeg_shape``), GIF's and JPEG XL's by a short
walk in Python. -1 means "not known here", and the image goes on to decode,
which fails (and is skipped) for anything it does not recognise.

Tensorflow is imported inside the functions that build ops, as everywhere
in :mod:`facejax.data`.
"""
import struct

import numpy as np

# Images whose header declares more pixels than this are skipped before they
# are decoded. 40 megapixels is above any face photo (a 24 MP camera frame is
# 6000 x 4000; face sets are crops of a few hundred pixels a side), and it
# bounds one decode at 120 MB of uint8 RGB (480 MB once cast to float32 for
# resizing) where a 95 KB PNG of 10000 x 10000 would take 1.5 GB.
DEFAULT_MAX_PIXELS = 40_000_000
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


def batch_declared_pixels(encoded):
  """(B,) encoded images -> (B,) int64 the pixels their headers declare.

  -1 for what no format claims; :data:`_JPEG_DECLARED` for a JPEG, whose
  header only libjpeg reads (see :func:`declared_pixels`), one at a time.
  Vector ops over :data:`_FORMATS`: the magic bytes pick the format, fixed
  offsets give the sides; GIF and JPEG XL headers need a walk through the
  file, done in Python for the images of those formats only.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
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


def with_declared_pixels(examples):
  """Adds ``declared`` (int64) to encoded examples: see
  :func:`batch_declared_pixels`, run on batches so that its ops' cost is
  shared by many images."""
  return examples.batch(_HEADER_BATCH).map(
      lambda batch: dict(batch, declared=batch_declared_pixels(
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
STAND_IN_IMAGE = _one_pixel_bmp()


def declared_pixels(encoded, declared):
  """``declared`` (see :func:`batch_declared_pixels`), a JPEG's read from
  its frame header by libjpeg. Raises when libjpeg cannot read the header,
  as decoding would."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  is_jpeg = tf.equal(declared, _JPEG_DECLARED)
  shape = tf.image.extract_jpeg_shape(
      tf.where(is_jpeg, encoded, _STAND_IN_JPEG), output_type=tf.int64)
  return tf.where(is_jpeg, shape[0] * shape[1], declared)


# What :func:`pixels` gives a JPEG whose frame header libjpeg cannot read
# (decoding it fails the same way).
UNREADABLE = -3
_PIXELS_FUNCTION = []  # the traced function of pixels(), made on first use


def _pixels_function():
  """:func:`batch_declared_pixels` then :func:`declared_pixels` of a batch
  of images, as one ``tf.function`` traced once: run eagerly op by op, one
  image at a time, they would cost several times a decode
  (``python -m bench.decompression_bombs`` times the batched form)."""
  if not _PIXELS_FUNCTION:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def run(encoded):
      declared = batch_declared_pixels(encoded)
      return tf.map_fn(lambda pair: declared_pixels(*pair),
                       (encoded, declared), fn_output_signature=tf.int64)

    _PIXELS_FUNCTION.append(run)
  return _PIXELS_FUNCTION[0]


def pixels(encoded_images):
  """(N,) int64: the pixels each encoded image (bytes) declares.

  For code outside tf.data (the TFRecords converter's validation pass,
  ``.bin`` verification sets): give it many images at once. -1 for an
  image no format claims, :data:`UNREADABLE` for a JPEG whose frame header
  libjpeg cannot read.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  encoded_images = list(encoded_images)
  if not encoded_images:
    return np.zeros(0, np.int64)
  run = _pixels_function()
  try:
    return run(tf.constant(encoded_images, tf.string)).numpy()
  except tf.errors.InvalidArgumentError:
    pass  # one unreadable JPEG fails the batch: again one image at a time
  declared = []
  for data in encoded_images:
    try:
      declared.append(int(run(tf.constant([data], tf.string)).numpy()[0]))
    except tf.errors.InvalidArgumentError:
      declared.append(UNREADABLE)
  return np.array(declared, np.int64)
