"""Process-local numpy batches -> global sharded ``jax.Array``s, prefetched.

Each process's pipeline yields its own part of the global batch (its
``process_index`` shard); :func:`device_batches` assembles the parts into one
global ``jax.Array`` per field with
``jax.make_array_from_process_local_data``, laid out by the given sharding
(usually ``NamedSharding(mesh, P('data'))``: the batch axis split over the
data axis of the mesh), and keeps ``prefetch`` batches in flight so the
host-to-device copies overlap the train step.

This module imports jax but not tensorflow: it takes any iterator of dicts
of numpy arrays (``dataset.as_numpy_iterator()``).
"""

import collections

import jax


def to_global(batch, sharding):
  """One process-local dict of numpy arrays -> dict of global jax.Arrays.

  Args:
    batch: a pytree of numpy arrays whose leading axis is this process's
      part of the global batch.
    sharding: a ``jax.sharding.Sharding`` for the leading axis (every leaf
      uses it; leaves of any rank >= 1).

  Returns:
    The same pytree of global arrays, leading axis ``local * process_count``.
  """
  def one(local):
    global_shape = ((local.shape[0] * jax.process_count(),)
                    + tuple(local.shape[1:]))
    return jax.make_array_from_process_local_data(sharding, local,
                                                  global_shape)
  return jax.tree.map(one, batch)


def device_batches(batches, sharding, prefetch=2):
  """Yields global sharded batches, keeping ``prefetch`` of them in flight.

  Args:
    batches: an iterator of process-local numpy batches.
    sharding: as in :func:`to_global`.
    prefetch: how many batches to transfer ahead of the one in use (2 hides
      the copy behind a step; 0 transfers on demand).
  """
  queue = collections.deque()
  batches = iter(batches)
  for batch in batches:
    queue.append(to_global(batch, sharding))
    if len(queue) > prefetch:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
