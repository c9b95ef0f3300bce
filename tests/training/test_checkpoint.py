"""Tests of facejax.training.checkpoint.Checkpointer (orbax underneath).

A train state (sharded and replicated parameters, an optax momentum state,
an int step, typed PRNG keys) goes to disk and back bit for bit, into the
shardings asked for, also on other meshes than the one it was saved from;
the last-N plus best-N preservation, the refusal of non-finite metrics, the
partial restore of one subtree, interrupted saves and restarts are checked
on the 8 simulated CPU devices of tests/conftest.py.
"""
import json
import math
import shutil

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

from facejax.training import checkpoint

EXPLICIT = jax.sharding.AxisType.Explicit


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array
  dropout_rngs: jax.Array
  epoch: int


@pytest.fixture(scope='module')
def mesh8():
  return jax.make_mesh((8,), ('x',), axis_types=(EXPLICIT,))


def _make_state(mesh, seed=0):
  """A train state after one SGD-momentum update, so momenta are not 0."""
  sharded = NamedSharding(mesh, P('x'))
  replicated = NamedSharding(mesh, P())
  rng = np.random.default_rng(seed)
  params = {
      'backbone': {
          'kernel': jax.device_put(
              rng.standard_normal((16, 8), np.float32), sharded),
          'bias': jax.device_put(
              rng.standard_normal(8).astype(jnp.bfloat16), replicated),
      },
      'head': {
          'class_weights': jax.device_put(
              rng.standard_normal((4, 32), np.float32),
              NamedSharding(mesh, P(None, 'x'))),
      },
  }
  optimizer = optax.sgd(0.1, momentum=0.9)
  opt_state = optimizer.init(params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  keys = jax.random.split(jax.random.key(seed + 1), 8)
  return TrainState(
      step=jax.device_put(jnp.int32(seed + 7), replicated),
      params=params,
      opt_state=opt_state,
      rng=jax.device_put(jax.random.key(seed + 42), replicated),
      dropout_rngs=jax.device_put(keys, sharded),
      epoch=seed + 3)


def _abstract(tree):
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)
      if isinstance(a, jax.Array) else a, tree)


def _bits(value):
  """The raw bytes of an array (key data for typed PRNG keys)."""
  if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
    value = jax.random.key_data(value)
  return np.asarray(value).tobytes()


def _assert_restored(restored, saved, abstract):
  """Same structure, bit-equal values, the dtypes and the target shardings."""
  assert jax.tree.structure(restored) == jax.tree.structure(saved)
  for got, want, target in zip(jax.tree.leaves(restored),
                               jax.tree.leaves(saved),
                               jax.tree.leaves(abstract)):
    if not isinstance(want, jax.Array):
      assert type(got) is type(want) and got == want
      continue
    assert isinstance(got, jax.Array)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.sharding == target.sharding
    assert _bits(got) == _bits(want)


def _small_state(mesh, value):
  return {'w': jax.device_put(jnp.full((8, 4), value, jnp.float32),
                              NamedSharding(mesh, P('x')))}


def _step_dirs(directory):
  return sorted(int(path.name) for path in directory.iterdir()
                if path.name.isdigit())


def test_round_trip_of_a_train_state_with_typed_keys(tmp_path, mesh8):
  state = _make_state(mesh8)
  assert jax.dtypes.issubdtype(state.rng.dtype, jax.dtypes.prng_key)
  with checkpoint.Checkpointer(tmp_path / 'ckpt') as checkpointer:
    assert checkpointer.save(7, state, metrics={'loss': 1.5})
    checkpointer.wait()
    abstract = _abstract(state)
    restored = checkpointer.restore(abstract)
  assert isinstance(restored, TrainState)
  _assert_restored(restored, state, abstract)
  assert jax.random.key_impl(restored.rng) == jax.random.key_impl(state.rng)
  # The restored key is usable as a key.
  np.testing.assert_array_equal(
      np.asarray(jax.random.uniform(restored.rng, (3,))),
      np.asarray(jax.random.uniform(state.rng, (3,))))


def test_relative_directory_saves_asynchronously(tmp_path, mesh8,
                                                 monkeypatch):
  # `make demo`'s workdir is relative (runs/demo); orbax's async save needs
  # an absolute path.
  monkeypatch.chdir(tmp_path)
  state = _small_state(mesh8, 3.0)
  with checkpoint.Checkpointer('runs/ckpt') as checkpointer:
    assert checkpointer.save(1, state)
    checkpointer.wait()
    restored = checkpointer.restore(state)
  assert _step_dirs(tmp_path / 'runs' / 'ckpt') == [1]
  np.testing.assert_array_equal(np.asarray(restored['w']), 3.0)


def test_round_trip_into_concrete_arrays(tmp_path, mesh8):
  state = _make_state(mesh8)
  with checkpoint.Checkpointer(tmp_path, async_save=False) as checkpointer:
    checkpointer.save(1, state)
    target = _make_state(mesh8, seed=5)  # Same layout, other values.
    restored = checkpointer.restore(target)
  _assert_restored(restored, state, target)


def test_keeps_the_last_two_and_the_best_one(tmp_path, mesh8):
  directory = tmp_path / 'ckpt'
  accuracies = [0.5, 0.9, 0.6, 0.7, 0.4]
  with checkpoint.Checkpointer(directory, keep_last=2, keep_best=1,
                               best_metric='accuracy') as checkpointer:
    for step, accuracy in enumerate(accuracies, start=1):
      assert checkpointer.save(step, _small_state(mesh8, step),
                               metrics={'accuracy': accuracy, 'loss': 1.0})
    checkpointer.wait()
    # Last two (4, 5) plus the best (2, accuracy 0.9).
    assert checkpointer.all_steps() == [2, 4, 5]
    assert checkpointer.best_step() == 2
    assert checkpointer.latest_step() == 5
  assert _step_dirs(directory) == [2, 4, 5]
  # The metrics are JSON a human can read.
  metrics_file = directory / '2' / 'metrics' / 'metrics'
  assert json.loads(metrics_file.read_text()) == {
      'accuracy': 0.9, 'loss': 1.0}

  # After a restart the best step is known from disk and still kept.
  with checkpoint.Checkpointer(directory, keep_last=2, keep_best=1,
                               best_metric='accuracy') as checkpointer:
    assert checkpointer.best_step() == 2
    checkpointer.save(6, _small_state(mesh8, 6), metrics={'accuracy': 0.1})
    checkpointer.wait()
    assert checkpointer.all_steps() == [2, 5, 6]
    checkpointer.save(7, _small_state(mesh8, 7), metrics={'accuracy': 0.95})
    checkpointer.wait()
    assert checkpointer.all_steps() == [6, 7]
    assert checkpointer.best_step() == 7
  assert _step_dirs(directory) == [6, 7]


def test_min_mode_and_saves_without_the_metric(tmp_path, mesh8):
  with checkpoint.Checkpointer(tmp_path, keep_last=1, keep_best=1,
                               best_metric='loss', best_mode='min',
                               async_save=False) as checkpointer:
    for step, loss in enumerate([3.0, 1.0, 2.0], start=1):
      checkpointer.save(step, _small_state(mesh8, step),
                        metrics={'loss': loss})
    checkpointer.save(4, _small_state(mesh8, 4))  # No metrics: ranks last.
    checkpointer.save(5, _small_state(mesh8, 5), metrics={'other': 0.0})
    assert checkpointer.all_steps() == [2, 5]
    assert checkpointer.best_step() == 2


def test_without_best_metric_keeps_only_the_last(tmp_path, mesh8):
  with checkpoint.Checkpointer(tmp_path, keep_last=2,
                               async_save=False) as checkpointer:
    for step in range(1, 5):
      checkpointer.save(step, _small_state(mesh8, step),
                        metrics={'accuracy': 1.0 / step})
    assert checkpointer.all_steps() == [3, 4]
    assert checkpointer.best_step() is None
  assert json.loads((tmp_path / '4' / 'metrics' / 'metrics').read_text()) == {
      'accuracy': 0.25}


def test_save_interval_and_force(tmp_path, mesh8):
  with checkpoint.Checkpointer(tmp_path, keep_last=5, save_interval_steps=2,
                               async_save=False) as checkpointer:
    saved = [checkpointer.save(step, _small_state(mesh8, step))
             for step in range(1, 5)]
    assert saved == [False, True, False, True]
    assert checkpointer.save(5, _small_state(mesh8, 5), force=True)
    assert not checkpointer.save(4, _small_state(mesh8, 4))  # Not after 5.
    assert checkpointer.all_steps() == [2, 4, 5]


@pytest.mark.parametrize('bad_value', [math.nan, math.inf, -math.inf,
                                       np.float32('nan')])
def test_refuses_non_finite_metrics(tmp_path, mesh8, bad_value):
  with checkpoint.Checkpointer(tmp_path, best_metric='accuracy') as ckpt:
    ckpt.save(1, _small_state(mesh8, 1), metrics={'accuracy': 0.5})
    with pytest.raises(ValueError, match='loss'):
      ckpt.save(2, _small_state(mesh8, 2),
                metrics={'accuracy': 0.6, 'loss': bad_value})
    ckpt.wait()
    assert ckpt.all_steps() == [1]
  assert [path.name for path in tmp_path.iterdir()
          if path.name.startswith('2')] == []


@pytest.mark.parametrize('mesh_shape, axis_names, spec', [
    ((4,), ('y',), P('y')),
    ((4,), ('y',), P(None, 'y')),
    ((2, 4), ('a', 'b'), P('b', 'a')),
    ((2, 4), ('a', 'b'), P(None, ('a', 'b'))),
])
def test_restore_reshards_onto_another_mesh(tmp_path, mesh8, mesh_shape,
                                            axis_names, spec):
  values = np.arange(16 * 8, dtype=np.float32).reshape(16, 8)
  saved = {'params': {'kernel': jax.device_put(
      values, NamedSharding(mesh8, P('x')))}}
  devices = np.asarray(jax.devices()[:math.prod(mesh_shape)])
  mesh = jax.make_mesh(mesh_shape, axis_names,
                       axis_types=(EXPLICIT,) * len(mesh_shape),
                       devices=devices)
  target = {'params': {'kernel': jax.ShapeDtypeStruct(
      (16, 8), jnp.float32, sharding=NamedSharding(mesh, spec))}}
  with checkpoint.Checkpointer(tmp_path, async_save=False) as checkpointer:
    checkpointer.save(1, saved)
    restored = checkpointer.restore(target)
  kernel = restored['params']['kernel']
  assert kernel.sharding == target['params']['kernel'].sharding
  assert len(kernel.sharding.device_set) == math.prod(mesh_shape)
  np.testing.assert_array_equal(np.asarray(kernel), values)


def test_restore_subtree_reads_only_the_backbone(tmp_path, mesh8):
  state = _make_state(mesh8)
  backbone = state.params['backbone']
  # Restored onto 4 devices, replicated: e.g. for evaluation.
  mesh4 = jax.make_mesh((4,), ('y',), axis_types=(EXPLICIT,),
                        devices=jax.devices()[:4])
  target = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                     sharding=NamedSharding(mesh4, P())),
      backbone)
  with checkpoint.Checkpointer(tmp_path) as checkpointer:
    checkpointer.save(3, state)
    checkpointer.wait()
    restored = checkpointer.restore_subtree(target, ('params', 'backbone'))
    rng = checkpointer.restore_subtree(
        jax.ShapeDtypeStruct((), state.rng.dtype,
                             sharding=NamedSharding(mesh4, P())), ['rng'])
  assert set(restored) == {'kernel', 'bias'}
  _assert_restored(restored, backbone, target)
  assert _bits(rng) == _bits(state.rng)


def test_interrupted_save_is_ignored(tmp_path, mesh8):
  directory = tmp_path / 'ckpt'
  with checkpoint.Checkpointer(directory) as checkpointer:
    for step in (1, 2):
      checkpointer.save(step, _small_state(mesh8, step))
  # An unfinished save is a directory orbax has not yet renamed to <step>:
  # '<step>.orbax-checkpoint-tmp' in orbax 0.12.8 (step.py,
  # atomicity.py), with a '-<timestamp>' suffix in other versions.
  shutil.copytree(directory / '2', directory / '3.orbax-checkpoint-tmp')
  shutil.copytree(directory / '2',
                  directory / '4.orbax-checkpoint-tmp-1700000000')
  with checkpoint.Checkpointer(directory) as checkpointer:
    assert checkpointer.latest_step() == 2
    assert checkpointer.all_steps() == [1, 2]
    restored = checkpointer.restore(_abstract(_small_state(mesh8, 0)))
    np.testing.assert_array_equal(np.asarray(restored['w']),
                                  np.full((8, 4), 2.0, np.float32))
    with pytest.raises(FileNotFoundError, match='step 3'):
      checkpointer.restore(_abstract(_small_state(mesh8, 0)), step=3)
    # The next save of that step is not confused by the leftover.
    assert checkpointer.save(3, _small_state(mesh8, 3))
    checkpointer.wait()
    assert checkpointer.latest_step() == 3


def test_restore_without_checkpoint_names_the_directory(tmp_path, mesh8):
  directory = tmp_path / 'empty_run'
  abstract = _abstract(_small_state(mesh8, 0))
  with checkpoint.Checkpointer(directory) as checkpointer:
    assert checkpointer.latest_step() is None
    assert checkpointer.best_step() is None
    assert checkpointer.all_steps() == []
    with pytest.raises(FileNotFoundError, match=str(directory)):
      checkpointer.restore(abstract)
    with pytest.raises(FileNotFoundError, match=str(directory)):
      checkpointer.restore_subtree(abstract['w'], ('w',))


def test_async_save_then_resume_after_restart(tmp_path, mesh8):
  directory = tmp_path / 'ckpt'
  state = _make_state(mesh8)
  checkpointer = checkpoint.Checkpointer(directory, async_save=True)
  assert checkpointer.save(10, state, metrics={'loss': 0.25})
  checkpointer.wait()
  assert (directory / '10' / 'default').is_dir()
  assert (directory / '10' / 'metrics' / 'metrics').is_file()
  checkpointer.close()

  with checkpoint.Checkpointer(directory, async_save=True) as resumed:
    assert resumed.all_steps() == [10]
    assert resumed.latest_step() == 10
    abstract = _abstract(state)
    restored = resumed.restore(abstract, step=10)
    _assert_restored(restored, state, abstract)
    assert resumed.save(11, restored)
  with checkpoint.Checkpointer(directory) as resumed_again:
    assert resumed_again.all_steps() == [10, 11]


def test_bad_arguments():
  with pytest.raises(ValueError, match='best_mode'):
    checkpoint.Checkpointer('/nonexistent/unused', best_mode='maximum')
  with pytest.raises(ValueError, match='keep_last'):
    checkpoint.Checkpointer('/nonexistent/unused', keep_last=0)
