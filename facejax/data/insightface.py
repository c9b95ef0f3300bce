"""Readers for insightface's datasets, in pure Python and numpy.

No mxnet and no tensorflow: this module imports only the standard library and
numpy.

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
offset of the record's first chunk in the ``.rec`` file.

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

All labels are float32, so keys and classes are exact only up to 2**24
(16,777,216); larger header keys are used as stored, rounded to float32, as
insightface's loaders use them.

**Verification sets** (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``): a
pickle of ``(bins, issame)``, the encoded images of the pairs (image ``2 i``
and ``2 i + 1`` form pair ``i``) and whether each pair shows one person.
:func:`load_bin` reads them with an unpickler that refuses every global but
the few that bytes, bool arrays and bool scalars pickle through, so that a
crafted ``.bin`` cannot run code.
"""
import collections
import errno
import math
import operator
import os
import pickle
import struct
import threading
import warnings

import numpy as np

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


def _read_record(f, path, offset, allow_eof=False):
  """Reads the record whose first chunk starts at ``offset``.

  Args:
    f: the ``.rec`` file, opened in binary mode.
    path: its name, for error messages.
    offset: the byte offset of the record's first chunk.
    allow_eof: return ``(None, offset)`` when ``offset`` is the end of the
      file instead of raising.

  Returns:
    ``(payload, next_offset)``: the reassembled payload and the offset of the
    next record.

  Raises:
    ValueError: bad magic number, truncated chunk or bad continuation flags,
      naming the file and the byte offset.
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
        raise ValueError(f'{path}: no record at byte offset {offset}: it is '
                         'at or past the end of the file')
      raise ValueError(
          f'{path}: truncated record at byte offset {offset}: the chunk '
          f'header at byte offset {pos} has {len(head)} of its 8 bytes')
    magic, lrecord = struct.unpack('<II', head)
    if magic != MAGIC:
      raise ValueError(
          f'{path}: bad magic number {magic:#010x} at byte offset {pos} '
          f'(expected {MAGIC:#010x}): not a RecordIO file, a corrupt one, or '
          'a wrong offset in the .idx')
    cflag, length = lrecord >> LENGTH_BITS, lrecord & LENGTH_MASK
    expected = (WHOLE, FIRST) if not parts else (MIDDLE, LAST)
    if cflag not in expected:
      raise ValueError(
          f'{path}: record at byte offset {offset}: the chunk at byte offset '
          f'{pos} has continuation flag {cflag}, expected one of {expected}')
    padded = (length + 3) & ~3
    data = f.read(padded)
    if len(data) < padded:
      raise ValueError(
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


def _parse_idx_lines(lines, idx_path, first_line):
  """Slow, exact parse of ``lines``: names the first malformed line."""
  pairs = []
  for number, line in enumerate(lines, start=first_line):
    fields = line.split()
    if not fields:
      continue
    try:
      if len(fields) != 2:
        raise ValueError
      pair = int(fields[0]), int(fields[1])
      if not all(-2**63 <= value < 2**63 for value in pair):
        raise ValueError
      pairs.append(pair)
    except ValueError:
      raise ValueError(
          f'{idx_path}: line {number} is {line.rstrip()!r}, expected '
          '"key<TAB>offset" (two integers)') from None
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
    ``(keys, offsets)``: int64 arrays in the file's line order.

  Raises:
    FileNotFoundError: no such file.
    ValueError: a malformed line (naming the file and line number) or a
      negative offset.
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
  keys, offsets = values[0::2], values[1::2]
  if offsets.size and offsets.min() < 0:
    key = keys[np.argmin(offsets)]
    raise ValueError(f'{idx_path}: key {key} has negative offset '
                     f'{offsets.min()}')
  return keys, offsets


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


def _image_offsets(idx_path, keys, offsets, first, end):
  """Offsets of the image keys ``first .. end - 1``."""
  order = np.argsort(keys, kind='stable')
  sorted_keys = keys[order]
  duplicate = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
  if duplicate.size:
    raise ValueError(f'{idx_path}: key {sorted_keys[duplicate[0]]} appears '
                     'more than once')
  wanted = np.arange(first, end, dtype=np.int64)
  position = np.minimum(np.searchsorted(sorted_keys, wanted),
                        max(keys.size - 1, 0))
  missing = (np.flatnonzero(sorted_keys[position] != wanted) if keys.size
             else np.arange(wanted.size))
  if missing.size:
    raise ValueError(
        f'{idx_path}: the header record (key 0) puts the images at keys '
        f'{first} .. {end - 1}, but {missing.size} of them are not in the '
        f'index; the first is key {wanted[missing[0]]}')
  return offsets[order[position]]


class RecordReader:
  """Random access to the images of an insightface ``.rec`` + ``.idx`` pair.

  ``reader[i]`` is ``(label, image_bytes)`` for the ``i``-th image record
  (negative ``i`` counts from the end, like a list); iterating yields them in
  order. See the module docstring for which records are images.

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
    """Reads the ``.idx`` and the header record.

    Args:
      rec_path: the ``.rec`` file.
      idx_path: its index; default ``rec_path`` with the suffix ``.idx``.

    Raises:
      FileNotFoundError: either file is missing (build a missing ``.idx``
        with :func:`build_idx`).
      ValueError: a malformed ``.idx``, header record or ``.rec`` file.
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
    keys, offsets = read_idx(self.idx_path)
    self.header, self.num_classes = None, None
    self._offsets = offsets
    zero = np.flatnonzero(keys == 0)
    if zero.size:
      offset = int(offsets[zero[0]])
      header, _ = self._unpack(self._read(offset), 'header record (key 0)',
                               offset)
      if header.flag > 0:
        self.header = header
        first = self._header_key(header.label[0], offset)
        self._offsets = _image_offsets(self.idx_path, keys, offsets, 1, first)
        if header.flag >= 2:
          end = self._header_key(header.label[1], offset)
          if end < first:
            raise ValueError(
                f'{self.rec_path}: header record (key 0) at byte offset '
                f'{offset}: its label (a, b) = ({first}, {end}) has b < a')
          self.num_classes = end - first

  def _unpack(self, payload, what, offset):
    try:
      return unpack(payload)
    except ValueError as e:
      raise ValueError(
          f'{self.rec_path}: {what} at byte offset {offset}: {e}') from None

  def _header_key(self, value, offset):
    if not math.isfinite(value) or value < 1 or value != int(value):
      raise ValueError(
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
      return _read_record(self._file, self.rec_path, offset)[0]

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
    header, image = self._unpack(self._read(offset), 'image record', offset)
    try:
      return _class_label(header), image
    except ValueError as e:
      raise ValueError(f'{self.rec_path}: image record at byte offset '
                       f'{offset}: {e}') from None

  def __iter__(self):
    for index in range(len(self)):
      yield self[index]

  def labels(self):
    """The class label of every image record, as int32 (N,).

    Reads only each record's first chunk header, IRHeader and first extra
    label (at most 36 bytes), never the image, so it is quick even for
    millions of records.

    Raises:
      ValueError: a record with a bad magic number, a short header or a
        label that is not a non-negative integer, naming the byte offset.
    """
    labels = np.empty(len(self), np.int32)
    with _open_existing(self.rec_path, 'RecordIO file') as f:
      for position, offset in enumerate(self._offsets):
        offset = int(offset)
        f.seek(offset)
        head = f.read(8 + IR_SIZE + 4)
        magic = struct.unpack_from('<I', head)[0] if len(head) >= 4 else None
        if magic != MAGIC:
          raise ValueError(
              f'{self.rec_path}: bad magic number at byte offset {offset} '
              f'(expected {MAGIC:#010x}): not a RecordIO file, a corrupt '
              'one, or a wrong offset in the .idx')
        length = struct.unpack_from('<I', head, 4)[0] & LENGTH_MASK
        payload = head[8:8 + min(length, IR_SIZE + 4)]
        try:
          header = IRHeader(*struct.unpack_from(IR_FORMAT, payload))
          if header.flag > 0:
            header = header._replace(
                label=struct.unpack_from('<f', payload, IR_SIZE))
          labels[position] = _class_label(header)
        except (struct.error, ValueError) as e:
          raise ValueError(f'{self.rec_path}: image record at byte offset '
                           f'{offset}: {e}') from None
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


class RefusedPickleError(pickle.UnpicklingError, ValueError):
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
  if not (isinstance(shape, tuple) and
          all(isinstance(n, int) and n >= 0 for n in shape)):
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
      raise ValueError(f'{path}: issame is a {issame.dtype} array of shape '
                       f'{issame.shape}, expected a 1-D bool array')
    return issame.copy()
  if not isinstance(issame, (list, tuple)):
    raise ValueError(f'{path}: issame has type {type(issame).__name__}, '
                     'expected a list of bools or a bool array')
  for position, value in enumerate(issame):
    if not isinstance(value, (bool, np.bool_)):
      raise ValueError(f'{path}: issame[{position}] has type '
                       f'{type(value).__name__}, expected bool')
  return np.array(issame, dtype=bool).reshape(-1)


def load_bin(path):
  """Loads an insightface verification set (``lfw.bin`` and the like).

  Reads pickles written by Python 2 (``str`` images, read as bytes) or 3, of
  any protocol, with a restricted unpickler: see the module docstring.

  Args:
    path: the ``.bin`` file.

  Returns:
    ``(bins, issame)``: a list of ``2 * P`` encoded images (bytes) and a
    length-``P`` bool array; images ``2 i`` and ``2 i + 1`` form pair ``i``.

  Raises:
    FileNotFoundError: no such file.
    RefusedPickleError: the pickle names a global other than those bytes and
      bool arrays need, or a non-bool numpy dtype; nothing is executed.
    ValueError: not a pickle of ``(bins, issame)`` with bytes images, bool
      labels and ``len(bins) == 2 * len(issame)``.
  """
  path = os.fspath(path)
  with _open_existing(path, 'verification .bin file') as f:
    try:
      loaded = _RestrictedUnpickler(f, encoding='bytes').load()
    except RefusedPickleError as e:
      raise RefusedPickleError(f'{path}: {e}') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as e:
      raise ValueError(f'{path}: not a valid verification .bin pickle: '
                       f'{type(e).__name__}: {e}') from None
  if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2):
    raise ValueError(f'{path}: expected a pickled (bins, issame) pair, got '
                     f'{type(loaded).__name__}')
  bins, issame = loaded
  if not isinstance(bins, (list, tuple)):
    raise ValueError(f'{path}: bins has type {type(bins).__name__}, expected '
                     'a list of bytes')
  for position, image in enumerate(bins):
    if not isinstance(image, bytes):
      raise ValueError(f'{path}: bins[{position}] has type '
                       f'{type(image).__name__}, expected bytes')
  issame = _issame_array(path, issame)
  if len(bins) != 2 * len(issame):
    raise ValueError(f'{path}: {len(bins)} images for {len(issame)} pairs, '
                     f'expected {2 * len(issame)}')
  return list(bins), issame
