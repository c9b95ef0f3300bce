"""Checksums of arrays: the equations against plain loops, devices against
the host, and what changes them."""
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from facejax.training import checksums

EXPLICIT = jax.sharding.AxisType.Explicit
MASK = 2**32 - 1


@pytest.fixture(scope='module')
def mesh8():
  return jax.make_mesh((8,), ('x',), axis_types=(EXPLICIT,))


def fmix32(h):
  """MurmurHash3's 32-bit finaliser, written out on Python integers."""
  h ^= h >> 16
  h = (h * 0x85EBCA6B) & MASK
  h ^= h >> 13
  h = (h * 0xC2B2AE35) & MASK
  return h ^ (h >> 16)


def reference(words):
  """The module docstring's two sums, one word at a time."""
  weighted = mixed = 0
  for i, w in enumerate(int(w) for w in words):
    weighted = (weighted + (2 * i + 1) * w) & MASK
    mixed = (mixed + fmix32(w ^ ((i * 0x9E3779B9) & MASK))) & MASK
  return [weighted, mixed]


@pytest.mark.parametrize('dtype, words', [
    (np.float32, lambda x: x.view(np.uint32)),
    (np.int8, lambda x: x.view(np.uint8)),
    (jnp.bfloat16, lambda x: x.view(np.uint16)),
    (np.float64, lambda x: x.view(np.uint32)),  # two words per element
])
def test_checksums_are_the_documented_sums(dtype, words):
  values = np.random.default_rng(1).standard_normal((3, 5)) * 50
  x = values.astype(dtype)
  expected = reference(words(np.ascontiguousarray(x)).ravel())
  assert checksums.of_tree({'a': x})['a']['checksums'] == expected
  if dtype is not np.float64:  # jax stores float64 as float32 without x64
    assert checksums.of_tree({'a': jnp.asarray(x)})['a'][
        'checksums'] == expected


def test_checksums_are_equal_on_devices_and_on_the_host(mesh8):
  mesh = jax.make_mesh((2, 4), ('a', 'b'), axis_types=(EXPLICIT,) * 2)
  values = np.random.default_rng(0).standard_normal((8, 16))
  for dtype in (np.float32, jnp.bfloat16, np.int8, np.bool_, np.uint32):
    host = (values > 0) if dtype is np.bool_ else values.astype(dtype)
    for sharding in (NamedSharding(mesh8, P('x')),
                     NamedSharding(mesh, P('b', 'a')),
                     NamedSharding(mesh, P(None, ('a', 'b')))):
      device = jax.device_put(host, sharding)
      assert (checksums.of_tree({'a': device})
              == checksums.of_tree({'a': host})), (dtype, sharding)
  # Any single changed word changes the first checksum; a swap of two
  # words keeps the sum of the words but not the checksums.
  base = np.arange(64, dtype=np.uint32)
  sums = {tuple(checksums.of_tree({'a': base})['a']['checksums'])}
  for position in range(64):
    for delta in (1, 2**31, 12345):
      changed = base.copy()
      changed[position] += np.uint32(delta)
      sums.add(tuple(checksums.of_tree(
          {'a': changed})['a']['checksums']))
  swapped = base.copy()
  swapped[[3, 40]] = swapped[[40, 3]]
  sums.add(tuple(checksums.of_tree(
      {'a': swapped})['a']['checksums']))
  assert len(sums) == 1 + 64 * 3 + 1
