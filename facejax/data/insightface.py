"""Readers for insightface's datasets, in pure Python and numpy.

No mxnet and no tensorflow: this module imports only the standard library,
numpy and :mod:`facejax.data.files` (pure python). A malformed or damaged file
is a :class:`facejax.data.files.DataFileError` (a ``ValueError``) naming the
file and the line, key or byte offset.

**MXNet RecordIO** (``train.rec`` + ``train.idx``: MS1MV2, MS1MV3, Glint360K,
WebFace42M). A ``.rec`` file is a sequence of records; each is stored as one
or more chunks

    uint32 magic 0xced7230a | uint32 lrecord | payload | zero padding

(little endian), where ``lrecord >> 29`` is the continuation flag and
``lrecord & (2**29 - 1)`` the length of the chunk's payload, which is padded
with zeros to a multiple of 4 bytes. Flag 0 is a whole record. MXNet's writer
(dmlc-core's ``RecordIOWriter``) cuts a record wherever its payload holds the
magic number at a multiple of 4 bytes, drops those 4 bytes and writes the
pieces with flags 1 (first), 2 (middle) and 3 (last); the reader joins the
pieces with the magic bytes put back between them.

The ``.idx`` file is text, one ``key<TAB>offset`` line per record: the byte
offset of the record's first chunk in the ``.rec`` file. dmlc-core reads both
numbers as ``size_t``.

A record's payload is an ``IRHeader``, struct ``'<IfQQ'`` (flag: uint32,
label: float32, id: uint64, id2: uint64; 24 bytes), then ``flag`` float32
labels when ``flag > 0`` (the label is then that vector and the class is its
first element; the float32 ``label`` field is unused, MXNet writes 0), then
the encoded image (JPEG).

insightface's datasets begin with a header record, key 0, whose label is
``(a, b)`` with ``flag > 0``: the images are keys ``1 .. a - 1`` and the
identity records keys ``a .. b - 1`` (one per class, label ``(start, end)``:
the keys of that identity's images), so there are ``b - a`` classes. Like
insightface's loaders, :class:`RecordReader` takes record 0 for that header
whenever its flag is positive. When it is not (flag 0: record 0 is itself an
image) or the ``.idx`` has no key 0, every record in the ``.idx`` is an image,
in the ``.idx``'s line order, and ``num_classes`` is ``None``: counting the
classes would mean reading every record (take ``max(label) + 1`` if the labels
are known to be dense).

What the format promises is checked when a :class:`RecordReader` is made,
cheaply (the ``.idx`` once, and at most four records of the ``.rec``): the
index is not empty; keys are unique; offsets are unique (two keys at one
offset would serve one image twice and another never), multiples of 4 (every
chunk is padded to 4 bytes) and leave room for a chunk header before the end
of the ``.rec``; with a header, every image key ``1 .. a - 1`` is listed, the
last of them is not an identity record and the first identity record (key
``a``, when listed) holds no image; without a header, the record of the
largest key is not an identity record (a label ``(start, end)`` of keys and no
image), which is what an index that lost its header line (key 0) looks like:
its identity records would otherwise be served as images.

All labels are float32, so keys and classes are exact only up to 2**24
(16,777,216); larger header keys are used as stored, rounded to float32, as
insightface's loaders use them.

**Verification sets** (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``): a
pickle of ``(bins, issame)``, the encoded images of the pairs (image ``2 i``
and ``2 i + 1`` form pair ``i``) and whether each pair shows one person.
:func:`load_bin` reads them with an unpickler that refuses every global but
the few that bytes, bool arrays and bool scalars pickle through, so that a
crafted ``.bin`` cannot run code, after a walk over the pickle's opcodes
(:mod:`pickletools`) has checked that no length field or memo index asks for
more than the file holds: the unpickler allocates what a length field says
before reading it, so a 20-byte file could otherwise ask for 2**36 bytes.
"""
import collections
import errno
import io
import math
import operator
import os
import pickle
import pickletools
import struct
import threading
import warnings

import numpy as np

from facejax.data import files

MAGIC = 0xced7230a
MAGIC_BYTES = struct.pack('<I', MAGIC)
LENGTH_BITS = 29
LENGTH_MASK = (1 << LENGTH_BITS) - 1
WHOLE, FIRST, MIDDLE, LAST = 0, 1, 2, 3

IR_FORMAT = '<IfQQ'
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24

# Bytes of the .idx parsed at a time: bounds the memory of the parse.
_IDX_CHUNK_BYTES = 1 << 22

IRHeader = collections.namedtuple('IRHeader', 'flag label id id2')
IRHeader.__doc__ = """An MXNet image record header.

Attributes:
  flag: the number of float32 labels after the header, 0 for a single label.
  label: a float when ``flag == 0``, otherwise a tuple of ``flag`` floats.
  id: the record's uint64 id.
  id2: the record's second uint64 id.
"""


# ------------------------------------------------------------------ RecordIO.


def _not_found(path, what, hint=''):
  return FileNotFoundError(errno.ENOENT, f'{what} not found{hint}', path)


def _open_existing(path, what):
  """Opens ``path`` for binary reading; FileNotFoundError names it."""
  try:
    return open(path, 'rb')
  except FileNotFoundError:
    raise _not_found(path, what) from None


def _bad_magic(path, magic, position, idx_path=None):
  """The error for a chunk that does not start with the magic number."""
  index = idx_path if idx_path is not None else 'the .idx'
  found = f' {magic:#010x}' if magic is not None else ''
  return files.DataFileError(
      f'{path}: bad magic number{found} at byte offset {position} (expected '
      f'{MAGIC:#010x}): not a RecordIO file, a corrupt one, or a wrong '
      f'offset in {index}')


def _read_record(f, path, offset, allow_eof=False, idx_path=None):
  """Reads the record whose first chunk starts at ``offset``.

  Args:
    f: the ``.rec`` file, opened in binary mode.
    path: its name, for error messages.
    offset: the byte offset of the record's first chunk.
    allow_eof: return ``(None, offset)`` when ``offset`` is the end of the
      file instead of raising.
    idx_path: the index ``offset`` was taken from, named in the message of
      a bad magic number.

  Returns:
    ``(payload, next_offset)``: the reassembled payload and the offset of the
    next record.

  Raises:
    files.DataFileError: bad magic number, truncated chunk or bad
      continuation flags, naming the file and the byte offset.
  """
  f.seek(offset)
  parts = []
  pos = offset
  while True:
    head = f.read(8)
    if len(head) < 8:
      if not head and not parts:
        if allow_eof:
          return None, offset
        raise files.DataFileError(
            f'{path}: no record at byte offset {offset}: it is at or past '
            'the end of the file')
      raise files.DataFileError(
          f'{path}: truncated record at byte offset {offset}: the chunk '
          f'header at byte offset {pos} has {len(head)} of its 8 bytes')
    magic, lrecord = struct.unpack('<II', head)
    if magic != MAGIC:
      raise _bad_magic(path, magic, pos, idx_path)
    cflag, length = lrecord >> LENGTH_BITS, lrecord & LENGTH_MASK
    expected = (WHOLE, FIRST) if not parts else (MIDDLE, LAST)
    if cflag not in expected:
      raise files.DataFileError(
          f'{path}: record at byte offset {offset}: the chunk at byte offset '
          f'{pos} has continuation flag {cflag}, expected one of {expected}')
    padded = (length + 3) & ~3
    data = f.read(padded)
    if len(data) < padded:
      raise files.DataFileError(
          f'{path}: truncated record at byte offset {offset}: the chunk at '
          f'byte offset {pos} needs {padded} bytes after its header, the file '
          f'has {len(data)}')
    parts.append(data[:length])
    pos += 8 + padded
    if cflag in (WHOLE, LAST):
      return MAGIC_BYTES.join(parts), pos


def _scan(rec_path):
  """Yields ``(offset, payload)`` for every record of a ``.rec`` file."""
  with _open_existing(rec_path, 'RecordIO file') as f:
    offset = 0
    while True:
      payload, next_offset = _read_record(f, rec_path, offset, allow_eof=True)
      if payload is None:
        return
      yield offset, payload
      offset = next_offset


def iter_records(rec_path):
  """Yields the payload of every record of a ``.rec`` file, in file order.

  Reads sequentially and needs no ``.idx``. Decode a payload with
  :func:`unpack`.
  """
  for _, payload in _scan(os.fspath(rec_path)):
    yield payload


def build_idx(rec_path, idx_path=None, overwrite=False):
  """Writes the ``.idx`` of a ``.rec`` file: key ``i`` for its ``i``-th record.

  That is the numbering of insightface's datasets and of MXNet's ``im2rec``.

  Args:
    rec_path: the ``.rec`` file.
    idx_path: where to write; default ``rec_path`` with the suffix ``.idx``.
    overwrite: replace an existing ``idx_path``.

  Returns:
    The number of records.

  Raises:
    FileExistsError: ``idx_path`` exists and ``overwrite`` is false.
  """
  rec_path = os.fspath(rec_path)
  idx_path = default_idx_path(rec_path) if idx_path is None else os.fspath(
      idx_path)
  if os.path.exists(idx_path) and not overwrite:
    raise FileExistsError(errno.EEXIST, 'index file exists (pass '
                          'overwrite=True to replace it)', idx_path)
  temporary = f'{idx_path}.tmp{os.getpid()}'
  count = 0
  try:
    with open(temporary, 'w', encoding='ascii') as out:
      for count, (offset, _) in enumerate(_scan(rec_path), start=1):
        out.write(f'{count - 1}\t{offset}\n')
    os.replace(temporary, idx_path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
  return count


def default_idx_path(rec_path):
  """``rec_path`` with its suffix (usually ``.rec``) replaced by ``.idx``."""
  return os.path.splitext(os.fspath(rec_path))[0] + '.idx'


def _idx_line_pair(line, idx_path, number):
  """``(key, offset)`` of one non-blank ``.idx`` line (bytes)."""
  try:
    text = line.decode('utf-8').rstrip()
  except UnicodeDecodeError:
    raise files.DataFileError(
        f'{idx_path}: line {number} is not UTF-8 text: {line.rstrip()!r}'
    ) from None
  fields = text.split()
  try:
    # ASCII digits only: int() would also take '1_0', '+1' and other
    # scripts' digits.
    if len(fields) != 2 or not all(
        f.isascii() and f.lstrip('-').isdigit() for f in fields):
      raise ValueError
    key, offset = int(fields[0]), int(fields[1])
    if not all(-2**63 <= value < 2**63 for value in (key, offset)):
      raise ValueError
  except ValueError:
    raise files.DataFileError(
        f'{idx_path}: line {number} is {text!r}, expected "key<TAB>offset" '
        '(two integers)') from None
  # dmlc-core reads both as size_t: a negative one is no record.
  if key < 0:
    raise files.DataFileError(f'{idx_path}: line {number}: key {key} is '
                              'negative')
  if offset < 0:
    raise files.DataFileError(f'{idx_path}: line {number}: key {key} has '
                              f'negative offset {offset}')
  return key, offset


def _parse_idx_lines(lines, idx_path, first_line):
  """Slow, exact parse of ``lines``: names the first malformed line."""
  pairs = [_idx_line_pair(line, idx_path, number)
           for number, line in enumerate(lines, start=first_line)
           if line.split()]
  return np.array(pairs, np.int64).reshape(-1)


def _parse_idx_fast(data):
  """Parses whole ``key<TAB>offset`` lines at C speed; None if unusual.

  Returns the integers of ``data`` in order, or ``None`` unless every line is
  two unsigned integers below 10**18 separated by one tab (the format MXNet
  writes; larger numbers could have been clamped to the int64 range); the
  slow parse deals with the rest.
  """
  lines = data.count(b'\n')
  if data.translate(None, b'0123456789') != b'\t\n' * lines:
    return None
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    try:
      values = np.fromstring(data, np.int64, sep=' ')
    except (ValueError, Warning):
      return None
  if values.size != 2 * lines or (values.size and values.max() >= 10**18):
    return None  # an empty field, or a number that may have been clamped
  return values


def read_idx(idx_path):
  """Parses a ``.idx`` file.

  Blank lines are skipped; fields may be separated by any whitespace.

  Args:
    idx_path: the ``.idx`` file.

  Returns:
    ``(keys, offsets)``: int64 arrays in the file's line order (empty for an
    empty file: :class:`RecordReader` refuses that).

  Raises:
    FileNotFoundError: no such file.
    files.DataFileError: a malformed line, bytes that are not UTF-8, a
      negative key or offset (naming the file and line number).
  """
  idx_path = os.fspath(idx_path)
  pieces, lines_before, rest = [], 0, b''
  with _open_existing(idx_path, 'RecordIO index (.idx) file') as f:
    while True:
      block = f.read(_IDX_CHUNK_BYTES)
      data = rest + block
      if block:  # parse whole lines only
        cut = data.rfind(b'\n') + 1
        data, rest = data[:cut], data[cut:]
      values = _parse_idx_fast(data)
      if values is None:
        values = _parse_idx_lines(data.split(b'\n'), idx_path,
                                  lines_before + 1)
      pieces.append(values)
      lines_before += data.count(b'\n')
      if not block:
        break
  values = np.concatenate(pieces)
  return values[0::2], values[1::2]


def unpack(payload):
  """Splits a record payload into its ``IRHeader`` and the image bytes.

  Raises:
    ValueError: the payload is shorter than its header says.
  """
  if len(payload) < IR_SIZE:
    raise ValueError(f'record payload of {len(payload)} bytes is shorter than '
                     f'the {IR_SIZE}-byte IRHeader')
  header = IRHeader(*struct.unpack_from(IR_FORMAT, payload))
  rest = payload[IR_SIZE:]
  if header.flag > 0:
    size = 4 * header.flag
    if len(rest) < size:
      raise ValueError(
          f'record payload of {len(payload)} bytes is too short for its '
          f'IRHeader with flag {header.flag} ({header.flag} float32 labels)')
    labels = struct.unpack_from(f'<{header.flag}f', rest)
    header = header._replace(label=labels)
    rest = rest[size:]
  return header, bytes(rest)


def _class_label(header):
  """The class of an image record: its label, or its first label."""
  label = header.label if header.flag == 0 else header.label[0]
  if not math.isfinite(label) or label < 0 or label != int(label):
    raise ValueError(f'label {label} is not a non-negative integer')
  return int(label)


def _identity_range(header, image):
  """``(start, end)`` if the record is an insightface identity record.

  An identity record has at least two labels, the first two a range of image
  keys ``1 <= start < end``, and no image; an image record has an image, or a
  single label, or labels that are no such range.

  Returns:
    The range, or ``None`` for a record that is not an identity record.
  """
  if header.flag < 2 or image:
    return None
  start, end = header.label[:2]
  if not all(math.isfinite(v) and v == int(v) for v in (start, end)):
    return None
  return (int(start), int(end)) if 1 <= start < end else None


class _Index:
  """The keys and offsets of a ``.idx``, checked against its ``.rec``.

  Attributes:
    keys, offsets: int64 arrays in the file's line order.
    sorted_keys: the keys in increasing order.
    order: the positions that sort ``keys``.
    last_offset: the largest offset: the record that a truncated ``.rec``
      cuts first.
  """

  def __init__(self, idx_path, rec_path):
    """Reads the ``.idx`` and checks what the format promises of it.

    Costs one parse of the ``.idx`` and two sorts (keys and offsets); reads
    nothing of the ``.rec`` but its size.

    Raises:
      files.DataFileError: an empty index; a key listed twice; an offset
        that is not a multiple of 4, leaves no room for a chunk header
        before the end of the ``.rec``, or is listed twice.
    """
    self.idx_path, self.rec_path = idx_path, rec_path
    self.keys, self.offsets = read_idx(idx_path)
    if not self.keys.size:
      raise files.DataFileError(
          f'{idx_path}: empty index: no "key<TAB>offset" line, so no record '
          f'of {rec_path} can be read')
    self.order = np.argsort(self.keys, kind='stable')
    self.sorted_keys = self.keys[self.order]
    twice = np.flatnonzero(self.sorted_keys[1:] == self.sorted_keys[:-1])
    if twice.size:
      raise files.DataFileError(f'{idx_path}: key {self.sorted_keys[twice[0]]}'
                                ' appears more than once')
    self._check_offsets(os.path.getsize(rec_path))

  def _check_offsets(self, rec_size):
    keys, offsets = self.keys, self.offsets
    past = np.flatnonzero(offsets > rec_size - 8)
    if past.size:
      at = past[0]
      raise files.DataFileError(
          f'{self.idx_path}: key {keys[at]} has offset {offsets[at]}, past '
          f'the last chunk header that fits in {self.rec_path} ({rec_size} '
          'bytes): a truncated .rec or a wrong offset')
    unaligned = np.flatnonzero(offsets % 4)
    if unaligned.size:
      at = unaligned[0]
      raise files.DataFileError(
          f'{self.idx_path}: key {keys[at]} has offset {offsets[at]}, not a '
          'multiple of 4: chunks are padded to 4 bytes, so every record '
          'starts at one')
    by_offset = np.argsort(offsets, kind='stable')
    sorted_offsets = offsets[by_offset]
    same = np.flatnonzero(sorted_offsets[1:] == sorted_offsets[:-1])
    if same.size:
      first, second = by_offset[same[0]], by_offset[same[0] + 1]
      raise files.DataFileError(
          f'{self.idx_path}: keys {keys[first]} and {keys[second]} both have '
          f'offset {offsets[first]}: one record would be read twice and '
          'another never')
    self.last_offset = int(sorted_offsets[-1])

  def offset_of(self, key):
    """The offset of ``key``, or ``None`` when it is not listed."""
    at = np.searchsorted(self.sorted_keys, key)
    if at < self.sorted_keys.size and self.sorted_keys[at] == key:
      return int(self.offsets[self.order[at]])
    return None

  def image_offsets(self, first, end):
    """Offsets of the image keys ``first .. end - 1``; all must be listed."""
    sorted_keys = self.sorted_keys
    wanted = np.arange(first, end, dtype=np.int64)
    position = np.minimum(np.searchsorted(sorted_keys, wanted),
                          sorted_keys.size - 1)
    missing = np.flatnonzero(sorted_keys[position] != wanted)
    if missing.size:
      raise files.DataFileError(
          f'{self.idx_path}: the header record (key 0) of {self.rec_path} '
          f'puts the images at keys {first} .. {end - 1}, but '
          f'{missing.size} of them are not in the index; the first is key '
          f'{wanted[missing[0]]}')
    return self.offsets[self.order[position]]


class RecordReader:
  """Random access to the images of an insightface ``.rec`` + ``.idx`` pair.

  ``reader[i]`` is ``(label, image_bytes)`` for the ``i``-th image record
  (negative ``i`` counts from the end, like a list); iterating yields them in
  order. See the module docstring for which records are images and what is
  checked when the reader is made.

  The ``.rec`` file is opened on first use and reopened after a fork; reads
  hold a lock, so threads may share a reader. Pickling keeps the paths and the
  parsed index, not the open file, so a reader can be sent to worker
  processes.

  Attributes:
    rec_path: the ``.rec`` file.
    idx_path: the ``.idx`` file.
    num_classes: ``b - a`` from the header record's label ``(a, b)``, or
      ``None`` without a header (or with a one-label header).
    header: the ``IRHeader`` of record 0 when it is the dataset header, else
      ``None``.
  """

  def __init__(self, rec_path, idx_path=None):
    """Reads and checks the ``.idx``, the header record and a few others.

    Args:
      rec_path: the ``.rec`` file.
      idx_path: its index; default ``rec_path`` with the suffix ``.idx``.

    Raises:
      FileNotFoundError: either file is missing (build a missing ``.idx``
        with :func:`build_idx`).
      files.DataFileError: a malformed ``.idx``, header record or ``.rec``
        file, or an index that does not fit its ``.rec`` (see the module
        docstring).
    """
    self.rec_path = os.fspath(rec_path)
    self.idx_path = (default_idx_path(self.rec_path) if idx_path is None
                     else os.fspath(idx_path))
    if not os.path.exists(self.rec_path):
      raise _not_found(self.rec_path, 'RecordIO file')
    if not os.path.exists(self.idx_path):
      raise _not_found(self.idx_path, 'RecordIO index (.idx) file',
                       ' (build it with build_idx(rec_path))')
    self._reset_file()
    index = _Index(self.idx_path, self.rec_path)
    self._read(index.last_offset)  # whole, unless the .rec is truncated
    self.header, self.num_classes = None, None
    self._offsets = index.offsets
    offset = index.offset_of(0)
    if offset is not None:
      header, _ = self._record(offset, 'header record (key 0)')
      if header.flag > 0:
        self._use_header(header, offset, index)
    if self.header is None:
      self._check_no_identity_records(index, offset is not None)

  def _use_header(self, header, offset, index):
    """Takes the images and the class count from the header record."""
    self.header = header
    first = self._header_key(header.label[0], offset)
    self._offsets = index.image_offsets(1, first)
    end = None
    if header.flag >= 2:
      end = self._header_key(header.label[1], offset)
      if end < first:
        raise files.DataFileError(
            f'{self.rec_path}: header record (key 0) at byte offset '
            f'{offset}: its label (a, b) = ({first}, {end}) has b < a')
      self.num_classes = end - first
    self._check_header_range(first, end, index)

  def _check_header_range(self, first, end, index):
    """The records on each side of the header's ``a`` are what it says."""
    if first > 1:
      last_image = int(self._offsets[-1])
      identity = _identity_range(*self._record(last_image, 'image record'))
      if identity is not None:
        raise files.DataFileError(
            f'{self.rec_path}: the header record (key 0) puts the images at '
            f'keys 1 .. {first - 1}, but key {first - 1} (byte offset '
            f'{last_image}) is an identity record (label {identity}, no '
            'image): the header is damaged')
    first_identity = index.offset_of(first)
    if end is not None and end > first and first_identity is not None:
      _, image = self._record(first_identity, f'identity record (key {first})')
      if image:
        raise files.DataFileError(
            f'{self.rec_path}: the header record (key 0) puts the identity '
            f'records at keys {first} .. {end - 1}, but key {first} (byte '
            f'offset {first_identity}) holds an image of {len(image)} bytes: '
            'the header is damaged')

  def _check_no_identity_records(self, index, has_key_zero):
    """Without a header no record may be an identity record.

    insightface's identity records follow the images, so when the index lost
    its header line (key 0), or the header record lost its flag, the record
    of the largest key is one of them.
    """
    key = int(index.sorted_keys[-1])
    offset = index.offset_of(key)
    try:
      identity = _identity_range(*unpack(self._read(offset)))
    except ValueError:  # not an identity record; reading it will say why
      return
    if identity is not None:
      why = ("key 0's record is not a dataset header (flag 0)" if has_key_zero
             else 'there is no line for key 0')
      raise files.DataFileError(
          f'{self.idx_path}: {why}, so every record would be an image, yet '
          f'the last key, {key} (byte offset {offset} of {self.rec_path}), '
          f'is an insightface identity record (label {identity}, no image): '
          'the index lost its header line or the header record is damaged')

  def _record(self, offset, what):
    """The ``IRHeader`` and image of the record at ``offset``."""
    return self._unpack(self._read(offset), what, offset)

  def _unpack(self, payload, what, offset):
    try:
      return unpack(payload)
    except ValueError as e:
      raise files.DataFileError(
          f'{self.rec_path}: {what} at byte offset {offset}: {e}') from None

  def _header_key(self, value, offset):
    if not math.isfinite(value) or value < 1 or value != int(value):
      raise files.DataFileError(
          f'{self.rec_path}: header record (key 0) at byte offset {offset}: '
          f'label {value} is not a record key >= 1')
    return int(value)

  def _reset_file(self):
    self._file = None
    self._pid = os.getpid()
    self._lock = threading.Lock()

  def _read(self, offset):
    if self._pid != os.getpid():  # forked: the file position is shared
      self._reset_file()
    with self._lock:
      if self._file is None:
        self._file = _open_existing(self.rec_path, 'RecordIO file')
      return _read_record(self._file, self.rec_path, offset,
                          idx_path=self.idx_path)[0]

  def __len__(self):
    return len(self._offsets)

  def __getitem__(self, index):
    """``(label, image_bytes)`` of the ``index``-th image record."""
    position = operator.index(index)
    if position < 0:
      position += len(self)
    if not 0 <= position < len(self):
      raise IndexError(f'{self.rec_path}: image index {index} out of range '
                       f'for {len(self)} images')
    offset = int(self._offsets[position])
    header, image = self._record(offset, 'image record')
    try:
      return _class_label(header), image
    except ValueError as e:
      raise files.DataFileError(f'{self.rec_path}: image record at byte '
                                f'offset {offset}: {e}') from None

  def __iter__(self):
    for index in range(len(self)):
      yield self[index]

  def labels(self):
    """The class label of every image record, as int32 (N,).

    Reads only each record's first chunk header, IRHeader and first extra
    label (at most 36 bytes), never the image, so it is quick even for
    millions of records.

    Raises:
      files.DataFileError: a record with a bad magic number, a short header
        or a label that is not a non-negative integer, naming the byte
        offset.
    """
    labels = np.empty(len(self), np.int32)
    with _open_existing(self.rec_path, 'RecordIO file') as f:
      for position, offset in enumerate(self._offsets):
        offset = int(offset)
        f.seek(offset)
        head = f.read(8 + IR_SIZE + 4)
        magic = struct.unpack_from('<I', head)[0] if len(head) >= 4 else None
        if magic != MAGIC:
          raise _bad_magic(self.rec_path, magic, offset, self.idx_path)
        length = struct.unpack_from('<I', head, 4)[0] & LENGTH_MASK
        payload = head[8:8 + min(length, IR_SIZE + 4)]
        try:
          header = IRHeader(*struct.unpack_from(IR_FORMAT, payload))
          if header.flag > 0:
            header = header._replace(
                label=struct.unpack_from('<f', payload, IR_SIZE))
          labels[position] = _class_label(header)
        except (struct.error, ValueError) as e:
          raise files.DataFileError(f'{self.rec_path}: image record at byte '
                                    f'offset {offset}: {e}') from None
    return labels

  def close(self):
    """Closes the ``.rec`` file; a later read reopens it."""
    with self._lock:
      if self._file is not None:
        self._file.close()
        self._file = None

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def __getstate__(self):
    state = self.__dict__.copy()
    for name in ('_file', '_pid', '_lock'):
      del state[name]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._reset_file()

  def __repr__(self):
    return (f'RecordReader({self.rec_path!r}, {self.idx_path!r}: '
            f'{len(self)} images, num_classes={self.num_classes})')


# ------------------------------------------------- verification .bin files.


class RefusedPickleError(pickle.UnpicklingError, files.DataFileError):
  """A pickle asked for something :func:`load_bin` does not allow."""


class _Frozen:
  """Refuses attribute assignment, so that a pickle's BUILD cannot use it."""
  __slots__ = ()

  def __setattr__(self, name, value):
    raise RefusedPickleError(f'setting attribute {name!r} of '
                             f'{type(self).__name__}')

  def __setstate__(self, state):
    raise RefusedPickleError(f'setting the state of {type(self).__name__}')


class _Global(_Frozen):
  """A fresh stand-in for an allowed global: calls ``target``."""
  __slots__ = ('target',)

  def __init__(self, target):
    object.__setattr__(self, 'target', target)

  def __call__(self, *args):
    return self.target(*args)


class _BoolDtype(_Frozen):
  """Stands for ``numpy.dtype('bool')`` while unpickling."""
  __slots__ = ()

  def __setstate__(self, state):
    if not isinstance(state, tuple):
      raise RefusedPickleError('numpy dtype state is not a tuple')


class _BoolArray(_Frozen):
  """Stands for a bool ndarray while unpickling; ``array`` is the result."""
  __slots__ = ('array',)

  def __init__(self, array=None):
    object.__setattr__(self, 'array', array)

  def __setstate__(self, state):
    if self.array is not None:
      raise RefusedPickleError('a numpy array is set up twice')
    if isinstance(state, tuple) and len(state) == 5:
      state = state[1:]  # (version, shape, dtype, is_fortran, data)
    if not (isinstance(state, tuple) and len(state) == 4):
      raise RefusedPickleError('unexpected numpy array state')
    shape, dtype, fortran, data = state
    object.__setattr__(
        self, 'array', _bool_array(data, dtype, shape, 'F' if fortran else 'C'))


def _bool_array(data, dtype, shape, order):
  """A bool array from raw bytes, checking every part."""
  if not isinstance(dtype, _BoolDtype):
    raise RefusedPickleError('numpy array without a bool dtype')
  # Each side is bounded, so that an empty array of side 2**64 is refused
  # here rather than overflowing in numpy.
  if not (isinstance(shape, tuple) and
          all(isinstance(n, int) and 0 <= n < 2**31 for n in shape)):
    raise RefusedPickleError(f'bad numpy array shape {shape!r}')
  if not isinstance(data, (bytes, bytearray)):
    raise RefusedPickleError(f'numpy array data of type {type(data).__name__}'
                             ', expected bytes')
  if len(data) != math.prod(shape):
    raise RefusedPickleError(f'numpy array of shape {shape} with '
                             f'{len(data)} data bytes')
  flat = np.frombuffer(bytes(data), np.uint8) != 0
  return flat.reshape(shape, order='F' if order == 'F' else 'C')


def _np_ndarray(*args):
  del args
  raise RefusedPickleError('calling numpy.ndarray')


def _np_dtype(name, align=False, copy=False):
  del align, copy
  if isinstance(name, (str, bytes)) and name in ('b1', b'b1', '?', b'?'):
    return _BoolDtype()
  raise RefusedPickleError(f'numpy dtype {name!r}: only bool is allowed')


def _np_reconstruct(subtype, shape, typecode):
  del shape, typecode
  if not (isinstance(subtype, _Global) and subtype.target is _np_ndarray):
    raise RefusedPickleError('numpy _reconstruct of a type other than '
                             'numpy.ndarray')
  return _BoolArray()


def _np_frombuffer(buffer, dtype, shape, order):
  return _BoolArray(_bool_array(buffer, dtype, shape, order))


def _np_scalar(dtype, data):
  if (not isinstance(dtype, _BoolDtype) or
      not isinstance(data, bytes) or len(data) != 1):
    raise RefusedPickleError('numpy scalar: only bool scalars are allowed')
  return data != b'\0'


def _codecs_encode(text, encoding):
  """How protocols 0-2 pickle bytes: ``_codecs.encode(text, 'latin1')``."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise RefusedPickleError(f'_codecs.encode with encoding {encoding!r}')
  return text.encode('latin1')


def _empty_bytes(*args):
  """How protocols 0-2 pickle ``b''``: ``bytes()``."""
  if args:
    raise RefusedPickleError('bytes() with arguments')
  return b''


# The globals that bytes (protocols 0-2), bool arrays (every protocol; numpy
# 1 and 2 module names) and bool scalars pickle through, and their stand-ins.
_ALLOWED_GLOBALS = {
    ('_codecs', 'encode'): _codecs_encode,
    ('builtins', 'bytes'): _empty_bytes,
    ('__builtin__', 'bytes'): _empty_bytes,
    ('numpy', 'ndarray'): _np_ndarray,
    ('numpy', 'dtype'): _np_dtype,
}
for _core in ('numpy.core', 'numpy._core'):
  _ALLOWED_GLOBALS[(f'{_core}.multiarray', '_reconstruct')] = _np_reconstruct
  _ALLOWED_GLOBALS[(f'{_core}.multiarray', 'scalar')] = _np_scalar
  _ALLOWED_GLOBALS[(f'{_core}.numeric', '_frombuffer')] = _np_frombuffer
del _core


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only ``_ALLOWED_GLOBALS``, to stand-ins that check arguments.

  numpy's own unpickling code never runs: the stand-ins build bool arrays
  from checked raw bytes. Each lookup returns a fresh stand-in that refuses
  attribute assignment, so that one pickle cannot alter them for the next.
  """

  def find_class(self, module, name):
    target = _ALLOWED_GLOBALS.get((module, name))
    if target is None:
      raise RefusedPickleError(
          f'refusing global {module}.{name}: a verification .bin holds only '
          'bytes, lists, tuples, bools and bool arrays')
    return _Global(target)


def _issame_array(path, issame):
  if isinstance(issame, _BoolArray):
    issame = issame.array
  if isinstance(issame, np.ndarray):
    if issame.dtype != bool or issame.ndim != 1:
      raise files.DataFileError(
          f'{path}: issame is a {issame.dtype} array of shape '
          f'{issame.shape}, expected a 1-D bool array')
    return issame.copy()
  if not isinstance(issame, (list, tuple)):
    raise files.DataFileError(
        f'{path}: issame has type {type(issame).__name__}, expected a list '
        'of bools or a bool array')
  for position, value in enumerate(issame):
    if not isinstance(value, (bool, np.bool_)):
      raise files.DataFileError(f'{path}: issame[{position}] has type '
                                f'{type(value).__name__}, expected bool')
  return np.array(issame, dtype=bool).reshape(-1)


# The opcodes that store into the unpickler's memo, whose table grows to the
# index given.
_MEMO_PUTS = frozenset(('PUT', 'BINPUT', 'LONG_BINPUT'))
# Bytes of the length field before a counted argument, and its signedness.
_LENGTH_FIELDS = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}


def _opcode_argument(stream, argument, left):
  """The raw bytes of one opcode's argument, or a problem (a ``str``).

  A counted argument (bytes, strings, long integers) is skipped, not read,
  once its length is known to fit in the ``left`` bytes after its field.
  """
  if argument.n == pickletools.UP_TO_NEWLINE:
    lines = 2 if argument.name == 'stringnl_noescape_pair' else 1
    raw = b''.join(stream.readline() for _ in range(lines))
    return raw if raw.count(b'\n') == lines else 'a text argument ends early'
  if argument.n >= 0:
    raw = stream.read(argument.n)
    return raw if len(raw) == argument.n else 'a fixed argument ends early'
  width, signed = _LENGTH_FIELDS[argument.n]
  field = stream.read(width)
  if len(field) < width:
    return 'a length field ends early'
  length = int.from_bytes(field, 'little', signed=signed)
  if not 0 <= length <= left - width:
    return (f'a length field says {length} bytes follow, '
            f'{left - width} do')
  stream.seek(length, io.SEEK_CUR)
  return field


def _pickle_problem(data):
  """Why ``data`` is no pickle to give the unpickler, or ``None``.

  Walks the opcodes up to STOP, reading their arguments' length fields from
  the bytes (:mod:`pickletools`' table of opcodes) and skipping the rest: a
  length larger than what is left, an unknown opcode or a missing STOP is a
  problem, and so is a memo index far larger than the number of opcodes so
  far (a pickler counts them up from 0; a BINPUT's byte is always allowed)
  or a frame longer than the rest of the file, since the unpickler
  allocates those sizes before reading. One pass
  in python over the opcodes: about a microsecond each (an lfw.bin has some
  30,000).
  """
  stream = io.BytesIO(data)
  count = 0
  while True:
    position = stream.tell()
    code = stream.read(1)
    if not code:
      return 'the pickle ends before its STOP opcode'
    opcode = pickletools.code2op.get(code.decode('latin-1'))
    if opcode is None:
      return f'unknown opcode {code!r} at byte {position}'
    count += 1
    raw = b''
    if opcode.arg is not None:
      raw = _opcode_argument(stream, opcode.arg, len(data) - position - 1)
      if isinstance(raw, str):
        return f'{opcode.name} at byte {position}: {raw}'
    if opcode.name in _MEMO_PUTS:
      index = (int(raw) if raw.strip().isdigit() else -1) if (
          opcode.name == 'PUT') else int.from_bytes(raw, 'little')
      if not 0 <= index <= count + 255:
        return (f'{opcode.name} at byte {position}: memo index {index}, '
                f'more than its {count} opcodes so far allow')
    if opcode.name == 'FRAME':
      left = len(data) - stream.tell()
      if int.from_bytes(raw, 'little') > left:
        return (f'FRAME at byte {position}: a frame of '
                f'{int.from_bytes(raw, "little")} bytes, {left} follow')
    if opcode.name == 'STOP':
      return None


def _read_bin(path):
  """The bytes of a ``.bin`` file; a folder is a DataFileError."""
  if os.path.isdir(path):
    raise files.DataFileError(f'{path}: is a folder, expected a verification '
                              '.bin file')
  with _open_existing(path, 'verification .bin file') as f:
    return f.read()


def _unpickle_bin(path):
  """The restricted unpickler's result for the ``.bin`` at ``path``."""
  data = _read_bin(path)
  problem = _pickle_problem(data)
  if problem is not None:
    raise files.DataFileError(
        f'{path}: not a valid verification .bin pickle: {problem}')
  try:
    return _RestrictedUnpickler(io.BytesIO(data), encoding='bytes').load()
  except RefusedPickleError as e:
    raise RefusedPickleError(f'{path}: {e}') from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
          AttributeError, IndexError, KeyError, OverflowError) as e:
    raise files.DataFileError(
        f'{path}: not a valid verification .bin pickle: '
        f'{type(e).__name__}: {e}') from None


def load_bin(path):
  """Loads an insightface verification set (``lfw.bin`` and the like).

  Reads pickles written by Python 2 (``str`` images, read as bytes) or 3, of
  any protocol, with a restricted unpickler: see the module docstring. The
  file is read whole, and nothing allocated while unpickling is larger than
  it.

  Args:
    path: the ``.bin`` file.

  Returns:
    ``(bins, issame)``: a list of ``2 * P`` encoded images (bytes) and a
    length-``P`` bool array; images ``2 i`` and ``2 i + 1`` form pair ``i``.

  Raises:
    FileNotFoundError: no such file.
    RefusedPickleError: the pickle names a global other than those bytes and
      bool arrays need, or a non-bool numpy dtype; nothing is executed.
    files.DataFileError: a folder, or not a pickle of ``(bins, issame)``
      with bytes images, bool labels and ``len(bins) == 2 * len(issame)``.
      Both are ``ValueError``s, and :class:`RefusedPickleError` is a
      ``DataFileError``.
  """
  path = os.fspath(path)
  loaded = _unpickle_bin(path)
  if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2):
    raise files.DataFileError(f'{path}: expected a pickled (bins, issame) '
                              f'pair, got {type(loaded).__name__}')
  bins, issame = loaded
  if not isinstance(bins, (list, tuple)):
    raise files.DataFileError(f'{path}: bins has type {type(bins).__name__}, '
                              'expected a list of bytes')
  for position, image in enumerate(bins):
    if not isinstance(image, bytes):
      raise files.DataFileError(f'{path}: bins[{position}] has type '
                                f'{type(image).__name__}, expected bytes')
  issame = _issame_array(path, issame)
  if len(bins) != 2 * len(issame):
    raise files.DataFileError(
        f'{path}: {len(bins)} images for {len(issame)} pairs, expected '
        f'{2 * len(issame)}')
  return list(bins), issame
