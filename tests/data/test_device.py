"""Process-local batches to global sharded jax.Arrays."""
import jax
import numpy as np

from facejax.data import device


def mesh_sharding():
  mesh = jax.make_mesh((8,), ('data',))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))


def test_to_global_keeps_values_and_shards_the_batch_axis():
  sharding = mesh_sharding()
  batch = dict(image=np.arange(16 * 3 * 2, dtype=np.float32).reshape(
      16, 3, 2), label=np.arange(16, dtype=np.int32))
  got = device.to_global(batch, sharding)
  assert got['image'].shape == (16, 3, 2)  # one process: local == global
  assert got['image'].sharding == sharding
  np.testing.assert_array_equal(np.asarray(got['image']), batch['image'])
  shards = got['label'].addressable_shards
  assert len(shards) == 8
  for shard in shards:
    np.testing.assert_array_equal(np.asarray(shard.data),
                                  batch['label'][shard.index])


def test_device_batches_yields_all_in_order():
  sharding = mesh_sharding()
  local = [dict(x=np.full((8,), i, np.int32)) for i in range(5)]
  for prefetch in (0, 2, 10):
    got = [int(np.asarray(b['x'])[0])
           for b in device.device_batches(local, sharding, prefetch)]
    assert got == list(range(5))
