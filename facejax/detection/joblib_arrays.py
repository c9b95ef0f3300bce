"""Reading a joblib file of numpy arrays without running code from it.

The ``mtcnn`` package ships its weights as ``joblib.dump`` files: an
LZ4-compressed pickle of a list of float32 arrays. A pickle can call any
function it names, so ``joblib.load`` (and ``pickle.load``) of a file that
someone could have replaced is a code-execution hole; facejax never
unpickles without restriction. :func:`read_array_list` reads the format with
a restricted unpickler instead:

* the only globals a file may name are the three such a file needs:
  joblib's ``NumpyArrayWrapper`` (the header it writes before each array's
  raw bytes; here a plain record, joblib's class is never imported),
  ``numpy.ndarray`` (the header's ``subclass`` field, which must be exactly
  that) and ``numpy.dtype`` (rebuilt from its pickled arguments, the only
  thing that may be called). Anything else is refused with
  :class:`UnsafePickleError` before it is looked up, let alone run;
* only plain numeric dtypes (bool, integers, floats) are read: object
  arrays are joblib's nested pickles;
* sizes are bounded: the decompressed file by ``max_bytes``, each array by
  what is left of it.

joblib's layout (``joblib/numpy_pickle.py``, format of joblib >= 0.10): the
pickle holds, in place of each array, a ``NumpyArrayWrapper`` whose state
gives ``shape``, ``order``, ``dtype`` and (joblib >= 1.2) the alignment;
right after that object's BUILD opcode, outside the pickle's frames, come a
padding-length byte and that many padding bytes (when the state has
``numpy_array_alignment_bytes``), then the array's bytes in ``order``.
"""
import io
import pickle

import numpy as np

# The decompressed size of a file we agree to read: MTCNN's largest weights
# file (O-Net) is 1.6 MB.
DEFAULT_MAX_BYTES = 64 * 2**20

_LZ4_FRAME_MAGIC = b'\x04\x22\x4d\x18'
_NUMERIC_KINDS = 'biuf'


class UnsafePickleError(pickle.UnpicklingError):
  """A joblib file that asks for more than numpy arrays; nothing of it ran."""


class _ArrayHeader:
  """Stands in for joblib's ``NumpyArrayWrapper``: BUILD fills its fields."""


_ALLOWED_GLOBALS = {
    ('joblib.numpy_pickle', 'NumpyArrayWrapper'): _ArrayHeader,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
}
_HEADER_FIELDS = frozenset({'subclass', 'shape', 'order', 'dtype',
                            'allow_mmap', 'numpy_array_alignment_bytes'})


class _RestrictedUnpickler(pickle._Unpickler):  # pylint: disable=protected-access
  """The pure-Python unpickler with globals, calls and BUILD restricted.

  joblib's own reader subclasses the same class for the same reason: the
  array bytes follow a BUILD opcode, which only the pure-Python unpickler
  lets a subclass intercept.
  """

  def __init__(self, data, name):
    self._data = io.BytesIO(data)
    self._name = name
    super().__init__(self._data)

  def _refuse(self, what):
    raise UnsafePickleError(
        f'{self._name}: refused: the pickle asks for {what}; only numpy '
        'arrays in joblib\'s layout are read (facejax never runs code from '
        'a weights file)')

  def find_class(self, module, name):
    allowed = _ALLOWED_GLOBALS.get((module, name))
    if allowed is None:
      self._refuse(f'the global {module}.{name}')
    return allowed

  def persistent_load(self, pid):
    self._refuse(f'a persistent id ({pid!r})')

  def _load_reduce(self):
    args = self.stack.pop()
    function = self.stack[-1]
    if function is not np.dtype or not isinstance(args, tuple):
      self._refuse(f'a call of {function!r}')
    self.stack[-1] = np.dtype(*args)

  def _load_newobj(self):
    args = self.stack.pop()
    cls = self.stack.pop()
    if cls is not _ArrayHeader or args:
      self._refuse(f'a new object of {cls!r}')
    self.append(_ArrayHeader())

  def _load_call_refused(self):
    self._refuse('an INST, OBJ or NEWOBJ_EX call')

  def _load_build(self):
    state = self.stack[-1]
    target = self.stack[-2]
    if isinstance(target, _ArrayHeader):
      if not isinstance(state, dict) or not set(state) <= _HEADER_FIELDS:
        self._refuse(f'an array header with fields {state!r}')
      self.stack.pop()
      self.stack[-1] = self._read_array(state)
    elif isinstance(target, np.dtype) and isinstance(state, tuple):
      super().load_build()
    else:
      self._refuse(f'a BUILD of {type(target).__name__}')

  dispatch = dict(pickle._Unpickler.dispatch)  # pylint: disable=protected-access
  dispatch[pickle.REDUCE[0]] = _load_reduce
  dispatch[pickle.NEWOBJ[0]] = _load_newobj
  dispatch[pickle.BUILD[0]] = _load_build
  for _opcode in (pickle.INST, pickle.OBJ, pickle.NEWOBJ_EX):
    dispatch[_opcode[0]] = _load_call_refused
  del _opcode

  def _read_exactly(self, count, what):
    data = self._data.read(count)
    if len(data) != count:
      raise pickle.UnpicklingError(
          f'{self._name}: truncated: {what} needs {count} bytes, '
          f'{len(data)} are left')
    return data

  def _read_array(self, header):
    """The array whose raw bytes follow its header in the stream."""
    frame = self._unframer.current_frame
    if frame is not None and frame.tell() != len(frame.getbuffer()):
      raise pickle.UnpicklingError(
          f'{self._name}: malformed: array data inside a pickle frame')
    dtype, shape = header.get('dtype'), header.get('shape')
    order = header.get('order', 'C')
    if (header.get('subclass') is not np.ndarray
        or not isinstance(dtype, np.dtype)
        or dtype.kind not in _NUMERIC_KINDS
        or not isinstance(shape, tuple)
        or not all(isinstance(n, int) and n >= 0 for n in shape)
        or order not in ('C', 'F')):
      self._refuse(
          f'an array other than a plain numeric ndarray (subclass '
          f'{header.get("subclass")!r}, dtype {dtype!r}, shape {shape!r}, '
          f'order {order!r})')
    if header.get('numpy_array_alignment_bytes') is not None:
      padding = self._read_exactly(1, 'the alignment byte')[0]
      self._read_exactly(padding, 'the alignment padding')
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    left = len(self._data.getbuffer()) - self._data.tell()
    if count * dtype.itemsize > left:
      raise pickle.UnpicklingError(
          f'{self._name}: truncated: an array of shape {shape} and dtype '
          f'{dtype} needs {count * dtype.itemsize} bytes, {left} are left')
    flat = np.frombuffer(self._read_exactly(count * dtype.itemsize, 'array'),
                         dtype=dtype, count=count)
    if order == 'F':
      return flat.reshape(shape[::-1]).transpose().copy()
    return flat.reshape(shape).copy()


def _decompress(data, name, max_bytes):
  """``data`` itself (a bare pickle) or its LZ4 frame decompressed."""
  if not data.startswith(_LZ4_FRAME_MAGIC):
    return data
  import lz4.frame  # pylint: disable=import-outside-toplevel
  decompressor = lz4.frame.LZ4FrameDecompressor()
  try:
    raw = decompressor.decompress(data, max_length=max_bytes + 1)
  except RuntimeError as e:  # lz4 reports corrupt frames as RuntimeError
    raise pickle.UnpicklingError(f'{name}: not a readable LZ4 frame ({e})'
                                 ) from None
  if len(raw) > max_bytes:
    raise pickle.UnpicklingError(
        f'{name}: decompresses to more than {max_bytes} bytes; not read')
  return raw


def read_array_list(path, max_bytes=DEFAULT_MAX_BYTES):
  """The list of numpy arrays in the joblib file at ``path``, read safely.

  Args:
    path: a ``joblib.dump`` file of a list of numeric numpy arrays, bare or
      LZ4-compressed (joblib's ``compress='lz4'``).
    max_bytes: refuse files that decompress to more than this.

  Returns:
    The list of arrays (each a fresh, writable array).

  Raises:
    UnsafePickleError: the file names a global, calls a function or builds
      an object beyond numpy arrays (the message names what it asked for).
    pickle.UnpicklingError: truncated, corrupt, larger than ``max_bytes``
      (on disk or decompressed), or not a list of arrays; the message names
      the file.
  """
  name = str(path)
  with open(path, 'rb') as f:
    data = f.read(max_bytes + 1)
  if len(data) > max_bytes:
    raise pickle.UnpicklingError(
        f'{name}: larger than {max_bytes} bytes; not read')
  data = _decompress(data, name, max_bytes)
  try:
    loaded = _RestrictedUnpickler(data, name).load()
  except (pickle.UnpicklingError, MemoryError):
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Garbage and cut-short pickles fail in the opcode loop with EOFError,
    # KeyError, IndexError, struct.error, ...
    raise pickle.UnpicklingError(
        f'{name}: not a readable joblib file ({type(e).__name__}: {e})'
        ) from None
  if not isinstance(loaded, list) or not all(
      isinstance(a, np.ndarray) for a in loaded):
    raise pickle.UnpicklingError(
        f'{name}: holds a {type(loaded).__name__}, not a list of arrays')
  return loaded
