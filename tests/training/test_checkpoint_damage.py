"""Damaged checkpoints: checksums, incomplete steps, the async-save bound.

Each test damages a saved step the way a crash, a full disk, a half-run
``rm -r`` or a flipped bit would, and checks the step is never restored
silently: a reader (evaluation) refuses it naming the step and why, a
writer (the trainer) moves it aside and falls back to the previous step.
"""
import json
import os
import shutil
import threading
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import orbax.checkpoint as ocp
import pytest

from facejax.training import checkpoint
from facejax.training import checksums

EXPLICIT = jax.sharding.AxisType.Explicit


@pytest.fixture(scope='module')
def mesh8():
  return jax.make_mesh((8,), ('x',), axis_types=(EXPLICIT,))


def _state(mesh, value):
  """Float32 and bfloat16 arrays, sharded and replicated, a key, a scalar.

  The kernel (64 KiB) is big enough for OCDBT to store it out of line, in
  data files that, unlike its b-tree nodes, carry no checksum of their own.
  """
  rng = np.random.default_rng(int(value))
  return {
      'params': {
          'kernel': jax.device_put(
              rng.standard_normal((512, 32)).astype(np.float32) + value,
              NamedSharding(mesh, P('x'))),
          'bias': jax.device_put(
              rng.standard_normal(8).astype(jnp.bfloat16),
              NamedSharding(mesh, P())),
      },
      'rng': jax.random.key(int(value)),
      'epoch': int(value),
  }


def _abstract(tree):
  return checkpoint._abstract(tree)  # pylint: disable=protected-access


def _plain(tree):
  def leaf(x):
    if hasattr(x, 'dtype') and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.asarray(x)
  return [leaf(x) for x in jax.tree.leaves(tree)]


def _assert_equal(a, b):
  for x, y in zip(_plain(a), _plain(b), strict=True):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def _save_steps(directory, mesh, steps, metrics=None):
  states = {}
  with checkpoint.Checkpointer(directory, keep_last=10,
                               best_metric='accuracy',
                               async_save=False) as writer:
    for step in steps:
      states[step] = _state(mesh, step)
      writer.save(step, states[step], metrics=metrics)
  return states


@pytest.fixture(scope='module')
def saved(tmp_path_factory, mesh8):
  """Steps 1 and 2 saved once; tests damage copies of the directory."""
  directory = tmp_path_factory.mktemp('saved') / 'ckpt'
  return directory, _save_steps(directory, mesh8, (1, 2),
                                metrics={'accuracy': 0.5})


@pytest.fixture
def copy(saved, tmp_path):
  directory, states = saved
  shutil.copytree(directory, tmp_path / 'ckpt')
  return tmp_path / 'ckpt', states


def test_checksums_are_stored_with_the_step(copy):
  directory, states = copy
  metadata = json.loads((directory / '2' / '_CHECKPOINT_METADATA')
                        .read_text())
  record = metadata['custom_metadata'][checkpoint.CHECKSUMS_KEY]
  assert set(record) == {'params/kernel', 'params/bias', 'rng', 'epoch'}
  assert record['epoch'] == {'value': 2}
  assert record['params/bias']['dtype'] == 'bfloat16'
  assert record['params/kernel']['shape'] == [512, 32]
  assert record['params/kernel'] == checksums.of_tree(
      states[2])['params/kernel']


def _data_files(step_dir):
  return sorted(path for path in (step_dir / 'default').rglob('*')
                if path.is_file() and path.parent.name == 'd')


def _flip(directory, step, fraction):
  """Flips one bit of the largest data file of a step (the kernel's)."""
  path = max(_data_files(directory / str(step)),
             key=lambda path: path.stat().st_size)
  data = bytearray(path.read_bytes())
  data[int(fraction * (len(data) - 1))] ^= 0x40
  path.write_bytes(bytes(data))


def test_flipped_bits_never_restore_silently(saved, tmp_path):
  directory, states = saved
  abstract = _abstract(states[2])
  mismatches = []
  for fraction in np.linspace(0, 1, 12):
    # A fresh copy each time: tensorstore caches what it read by path.
    copy = tmp_path / f'{fraction:.3f}'
    shutil.copytree(directory, copy)
    _flip(copy, 2, fraction)
    with checkpoint.Checkpointer(copy, read_only=True) as reader:
      try:
        restored = reader.restore(abstract, step=2)
      except checkpoint.DamagedCheckpointError as error:
        assert error.step == 2 and 'checkpoint step 2 in' in str(error)
        if error.slug == 'checksum-mismatch':
          mismatches.append(str(error))
      else:  # the flip hit bytes that are never read: nothing changed
        _assert_equal(restored, states[2])
  # Most flips changed the kernel's values without any error from orbax
  # or tensorstore: the checksums caught them, naming the array.
  assert len(mismatches) >= 6
  assert all('array params/kernel does not match its checksum' in message
             for message in mismatches)


def test_a_flipped_subtree_is_an_error_naming_step_and_array(copy):
  directory, states = copy
  _flip(directory, 2, 0.5)
  with checkpoint.Checkpointer(directory, read_only=True) as reader:
    with pytest.raises(checkpoint.DamagedCheckpointError,
                       match='step 2 .* array params/kernel does not match'):
      reader.restore_subtree(_abstract(states[2])['params'], ('params',))
    # The bias is in other bytes: it restores.
    bias = reader.restore_subtree(_abstract(states[2])['params']['bias'],
                                  ('params', 'bias'))
  _assert_equal(bias, states[2]['params']['bias'])


def test_restore_into_another_dtype_and_mesh_is_verified(copy):
  directory, states = copy
  mesh4 = jax.make_mesh((4,), ('y',), axis_types=(EXPLICIT,),
                        devices=jax.devices()[:4])
  target = jax.ShapeDtypeStruct((512, 32), jnp.bfloat16,
                                sharding=NamedSharding(mesh4, P(None, 'y')))
  with checkpoint.Checkpointer(directory, read_only=True) as reader:
    kernel = reader.restore_subtree(target, ('params', 'kernel'), step=1)
    host = reader.restore_subtree(
        jax.ShapeDtypeStruct((8,), jnp.bfloat16), ('params', 'bias'), step=1)
  assert kernel.dtype == jnp.bfloat16 and kernel.sharding == target.sharding
  np.testing.assert_array_equal(
      np.asarray(kernel),
      np.asarray(states[1]['params']['kernel']).astype(jnp.bfloat16))
  assert isinstance(host, np.ndarray)
  np.testing.assert_array_equal(host, np.asarray(states[1]['params']['bias']))
  with checkpoint.Checkpointer(directory, read_only=True) as reader:
    with pytest.raises(ValueError, match=r'params/kernel was saved with '
                       r'shape \(512, 32\)'):
      reader.restore_subtree(jax.ShapeDtypeStruct((4, 8), jnp.float32),
                             ('params', 'kernel'))


def test_steps_without_checksums_restore_with_a_warning(copy):
  directory, states = copy
  path = directory / '2' / '_CHECKPOINT_METADATA'
  metadata = json.loads(path.read_text())
  del metadata['custom_metadata'][checkpoint.CHECKSUMS_KEY]
  path.write_text(json.dumps(metadata))
  messages = []
  with checkpoint.Checkpointer(directory, read_only=True,
                               report=messages.append) as reader:
    _assert_equal(reader.restore(_abstract(states[2])), states[2])
    _assert_equal(reader.restore(_abstract(states[1]), step=1), states[1])
  assert messages == ['step 2 has no checksums (saved before they were '
                      'recorded): restored without verification']


# Each damage of a copy of steps 1 and 2 returns (the damaged step, the step
# to fall back to, the error it gets).


def _empty_higher_step(directory):
  (directory / '9').mkdir()
  return 9, 2, 'step 9 .* is damaged: _CHECKPOINT_METADATA is missing'


def _half_deleted(directory):
  # rm -r interrupted: the metadata went, part of the array data too.
  (directory / '2' / '_CHECKPOINT_METADATA').unlink()
  for path in _data_files(directory / '2')[:1]:
    path.unlink()
  return 2, 1, 'step 2 .* is damaged: _CHECKPOINT_METADATA is missing'


def _half_deleted_data(directory):
  # Only array data files gone: the metadata all reads.
  for path in _data_files(directory / '2'):
    path.unlink()
  return 2, 1, 'step 2 .* is damaged: its arrays cannot be read \\(.*\\)'


def _emptied_metadata(directory):
  (directory / '2' / '_CHECKPOINT_METADATA').write_text('')
  return 2, 1, 'step 2 .* is damaged: _CHECKPOINT_METADATA is empty'


def _emptied_tree_metadata(directory):
  (directory / '2' / 'default' / '_METADATA').write_text('')
  return 2, 1, 'step 2 .* is damaged: default/_METADATA is empty'


def _emptied_metrics(directory):
  (directory / '2' / 'metrics' / 'metrics').write_text('')
  return 2, 1, 'step 2 .* is damaged: metrics/metrics is empty'


DAMAGES = [_empty_higher_step, _half_deleted, _half_deleted_data,
           _emptied_metadata, _emptied_tree_metadata, _emptied_metrics]


@pytest.mark.parametrize('damage', DAMAGES, ids=lambda f: f.__name__[1:])
def test_a_reader_refuses_a_damaged_newest_step(copy, damage):
  directory, states = copy
  step, good, message = damage(directory)
  with checkpoint.Checkpointer(directory, read_only=True) as reader:
    with pytest.raises(checkpoint.DamagedCheckpointError, match=(
        f'{message}; the newest step that looks intact is {good}')) as raised:
      reader.restore(_abstract(states[2]))
    assert raised.value.step == step
    _assert_equal(reader.restore(_abstract(states[good]), step=good),
                  states[good])
  assert step in checkpoint.step_numbers(directory)  # nothing moved


@pytest.mark.parametrize('damage', DAMAGES, ids=lambda f: f.__name__[1:])
def test_a_writer_moves_a_damaged_step_aside_and_falls_back(copy, mesh8,
                                                            damage):
  directory, states = copy
  step, good, _ = damage(directory)
  messages = []
  with checkpoint.Checkpointer(directory, keep_last=10,
                               best_metric='accuracy',
                               report=messages.append) as writer:
    restored, restored_step = writer.restore_latest(_abstract(states[2]))
    assert restored_step == good
    _assert_equal(restored, states[good])
    assert writer.all_steps() == list(range(1, good + 1))
    # The same step number saves again without colliding.
    assert writer.save(step, states[2], force=True)
    writer.wait()
    assert writer.all_steps() == sorted({*range(1, good + 1), step})
  moved = sorted(os.listdir(directory / 'damaged'))
  assert len(moved) == 1 and moved[0].startswith(f'{step}-')
  assert len(messages) == 1
  assert f'step {step} is damaged' in messages[0]
  assert str(directory / 'damaged' / moved[0]) in messages[0]
  with checkpoint.Checkpointer(directory, read_only=True) as reader:
    _assert_equal(reader.restore(_abstract(states[2])), states[2])


def test_a_step_failing_its_checksums_is_moved_aside(copy):
  directory, states = copy
  _flip(directory, 2, 0.5)
  messages = []
  with checkpoint.Checkpointer(directory, report=messages.append) as writer:
    restored, step = writer.restore_latest(_abstract(states[2]))
  assert step == 1
  _assert_equal(restored, states[1])
  assert os.listdir(directory / 'damaged') == ['2-checksum-mismatch']
  assert 'array params/kernel does not match its checksum' in messages[0]


def test_a_target_that_does_not_fit_is_not_damage(copy):
  directory, states = copy
  wrong = dict(_abstract(states[2]), extra=jax.ShapeDtypeStruct(
      (3,), jnp.float32))
  with checkpoint.Checkpointer(directory) as writer:
    with pytest.raises(Exception) as raised:
      writer.restore_latest(wrong)
    assert not isinstance(raised.value, checkpoint.DamagedCheckpointError)
    assert writer.all_steps() == [1, 2]
  assert not (directory / 'damaged').exists()


def test_wait_if_behind_bounds_the_save_in_flight(tmp_path, mesh8,
                                                  monkeypatch):
  # The background write of step 2 holds before its commit (the rename of
  # the temporary directory) until the test releases it.
  release = threading.Event()
  finalize = ocp.path.atomicity.AtomicRenameTemporaryPath.finalize

  async def held_finalize(self):
    if self.get_final().name == '2':
      await _wait_in_thread(release)
    return await finalize(self)

  monkeypatch.setattr(ocp.path.atomicity.AtomicRenameTemporaryPath,
                      'finalize', held_finalize)
  state = _state(mesh8, 2)
  with checkpoint.Checkpointer(tmp_path, max_lag_steps=2) as writer:
    try:
      assert writer.save(2, state)
      writer.wait_if_behind(3)  # one step past the save: no wait
      assert checkpoint.step_numbers(tmp_path) == []
      threading.Timer(0.3, release.set).start()
      begin = time.monotonic()
      writer.wait_if_behind(4)  # two steps past it: waits for the commit
      assert time.monotonic() - begin >= 0.2
      assert checkpoint.step_numbers(tmp_path) == [2]
    finally:
      release.set()  # never leave the save held, even on a failure


async def _wait_in_thread(event):
  import asyncio  # pylint: disable=g-import-not-at-top
  await asyncio.to_thread(event.wait)
