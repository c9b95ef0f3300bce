"""Checksums of a train state's arrays, computed where the arrays live.

Two 32-bit checksums per array, over its bits as 32-bit words ``w_i`` (one
per element of up to 4 bytes, two per 8-byte element, in row-major order)
and their positions ``i``, arithmetic modulo 2^32:

  weighted = sum_i (2 i + 1) w_i
  mixed    = sum_i fmix32(w_i XOR (i * 0x9E3779B9))

The weights 2 i + 1 are odd, so changing any single word (a flipped bit, a
damaged byte) changes ``weighted``; ``fmix32`` (MurmurHash3's finaliser) is
a bijection that mixes bits, so ``mixed`` also changes when words are
swapped or several change together. Both are computed on the devices, on
the sharded arrays (one jitted call per mesh), or on the host for numpy
arrays, with the same result; :mod:`facejax.training.checkpoint` stores
them with each step and verifies them on every restore.
"""
import json

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

_GOLDEN = 0x9E3779B9  # odd: multiplying by it permutes 32-bit words


def _fmix32(h):
  """MurmurHash3's finaliser: a bijection of uint32 words that mixes bits."""
  h = h ^ (h >> 16)
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * np.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _device_words(x):
  """The bits of ``x`` as uint32 words (one per element of up to 4 bytes,
  two per 8-byte element, in memory order), inside ``jit``."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    x = jnp.stack([x.real, x.imag], axis=-1)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  unsigned = {1: jnp.uint8, 2: jnp.uint16}.get(x.dtype.itemsize, jnp.uint32)
  return lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _device_folds(x):
  """(2,) uint32: the two checksums of one array, on its devices."""
  words = _device_words(x)
  # The row-major position of each word, as broadcast iotas (a reshape to
  # 1-D would have to gather a sharded array).
  position = jnp.zeros(words.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(words.ndim)):
    position += (lax.broadcasted_iota(jnp.uint32, words.shape, axis)
                 * np.uint32(stride % 2**32))
    stride *= words.shape[axis]
  weighted = jnp.sum((position * np.uint32(2) + np.uint32(1)) * words,
                     dtype=jnp.uint32)
  mixed = jnp.sum(_fmix32(words ^ (position * np.uint32(_GOLDEN))),
                  dtype=jnp.uint32)
  return jnp.stack([weighted, mixed])


@jax.jit
def _device_checksums(arrays):
  """(len(arrays), 2) uint32, replicated: the checksums of each array."""
  return jnp.stack([_device_folds(x) for x in arrays])


def host_folds(x):
  """The two checksums of a numpy array, as :func:`_device_folds`."""
  x = np.ascontiguousarray(x)
  if np.iscomplexobj(x):
    x = np.stack([x.real, x.imag], axis=-1)
  if x.dtype == np.bool_:
    x = x.astype(np.uint8)
  unsigned = {1: np.uint8, 2: np.uint16}.get(x.dtype.itemsize, np.uint32)
  words = np.ascontiguousarray(x).view(unsigned).astype(np.uint32).ravel()
  position = np.arange(words.size, dtype=np.uint64).astype(np.uint32)
  with np.errstate(over='ignore'):  # arithmetic modulo 2**32, as uint32
    weighted = np.sum((position * np.uint32(2) + np.uint32(1)) * words,
                      dtype=np.uint32)
    mixed = np.sum(_fmix32(words ^ (position * np.uint32(_GOLDEN))),
                   dtype=np.uint32)
  return [int(weighted), int(mixed)]


def _mesh_of(array):
  """What a group of arrays checksummed in one ``jit`` call must share."""
  sharding = array.sharding
  if isinstance(sharding, jax.sharding.NamedSharding):
    return sharding.mesh
  return tuple(sorted(device.id for device in sharding.device_set))


def path_name(path):
  return jax.tree_util.keystr(path, simple=True, separator='/')


def is_array(value):
  return isinstance(value, (jax.Array, np.ndarray, np.generic))


def of_tree(tree):
  """The checksum record of every leaf of ``tree``, by tree path.

  Arrays: ``{'dtype', 'shape', 'checksums': [weighted, mixed]}``, both
  uint32 as ints, equal for a ``jax.Array`` (computed on its devices,
  whatever its sharding) and its numpy copy. Other leaves (Python scalars,
  strings): ``{'value': leaf}``.
  """
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  record, by_mesh = {}, {}
  for path, leaf in leaves:
    name = path_name(path)
    if isinstance(leaf, jax.Array):
      by_mesh.setdefault(_mesh_of(leaf), []).append((name, leaf))
    elif is_array(leaf):
      record[name] = array_record(leaf, host_folds(leaf))
    else:
      record[name] = {'value': leaf}
  for group in by_mesh.values():
    folds = _device_checksums([leaf for _, leaf in group])
    # Replicated: this process's copy is the whole result.
    folds = np.asarray(folds.addressable_data(0))
    for (name, leaf), pair in zip(group, folds):
      record[name] = array_record(leaf, [int(pair[0]), int(pair[1])])
  return record


def array_record(leaf, folds):
  return {'dtype': str(leaf.dtype), 'shape': list(np.shape(leaf)),
          'checksums': folds}


def _same_value(a, b):
  """Scalar equality as JSON sees it (NaN equals NaN)."""
  if isinstance(a, np.ndarray) and a.ndim == 0:
    a = a.item()
  return json.dumps(a) == json.dumps(b)


def first_mismatch(record, expected):
  """The first tree path whose checksums (or value) differ, or None."""
  for name, got in record.items():
    want = expected.get(name)
    if want is None:
      return name, 'has no checksum in the step metadata'
    if 'value' in want:
      if 'value' in got:
        equal = _same_value(got['value'], want['value'])
      else:  # read back as a 0-d array (e.g. without a restore target)
        equal = got['shape'] == [] and _same_value(
            got.get('scalar'), want['value'])
      if not equal:
        return name, 'differs from the value recorded at save time'
    elif got.get('checksums') != want['checksums']:
      return name, 'does not match its checksum'
  return None
