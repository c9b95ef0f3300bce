"""Checkpoints of the train state, over orbax's ``CheckpointManager``.

What is saved: the whole train state as one pytree (a ``flax.struct``
dataclass or nested dicts of ``jax.Array``s, optax states, Python scalars),
one directory per step, ``<directory>/<step>/default`` (orbax's pytree
format, OCDBT + zarr). Typed PRNG keys (``jax.random.key``) are saved as
they are: orbax 0.12.8's ``PyTreeCheckpointHandler`` writes their
``jax.random.key_data`` and wraps the data again on restore, with the key
implementation of the restore target. The metrics passed to ``save`` (a dict
of finite floats) are written by orbax as JSON in
``<directory>/<step>/metrics/metrics``, readable by a human, and read back by
the preservation policy after a restart.

Checksums: ``save`` computes two 32-bit checksums of every array (on the
devices, where the array lives: a position-weighted sum of its bits as
32-bit words with odd weights, which changes with any single changed word,
and a sum of a bijective mix of each word and its position, see
:mod:`facejax.training.checksums`) and stores them with the step, in the step
metadata orbax writes before it commits the step:
``<step>/_CHECKPOINT_METADATA``, JSON, under ``custom_metadata`` ->
``facejax_checksums`` -> tree path (``params/backbone/kernel``) -> ``dtype``,
``shape``, ``checksums``; Python scalars are stored as their ``value``.
``restore`` and ``restore_subtree`` recompute them on what they read and
raise :class:`DamagedCheckpointError` naming the step and the array on a
mismatch. A leaf restored into another dtype is read in its saved dtype,
checked, then cast; the sharding does not enter the checksums, so a
checkpoint restores onto any mesh. Steps saved before checksums existed
restore unverified, with a warning.

Damaged steps: a step directory counts only when complete: readable
``_CHECKPOINT_METADATA``, ``default/_METADATA`` and OCDBT manifests, and a
readable ``metrics/metrics`` if it has a metrics item (orbax reads every
step's metrics when the manager starts; an empty file would stop it). A
writing ``Checkpointer`` (the trainer's) moves a damaged step aside before
orbax sees it, to ``<directory>/damaged/<step>-<why>``, and says so;
:meth:`Checkpointer.restore_latest` also moves aside a step whose arrays
cannot be read or fail their checksums and falls back to the previous step.
A ``read_only`` ``Checkpointer`` (evaluation) never changes the directory:
restoring a damaged step raises :class:`DamagedCheckpointError` naming the
step, why, and the newest step that looks intact.

Preservation: ``CheckpointManagerOptions.preservation_policy`` is
``AnyPreservationPolicy([LatestN(keep_last), BestN(keep_best)])``: a step
is kept while it is among the ``keep_last`` newest or the ``keep_best`` best
by ``best_metric`` (``best_mode`` 'max' or 'min'); with ``best_metric`` None
only the newest are kept. The deprecated ``max_to_keep`` / ``keep_period``
options are not used. A ``best_fn`` is still given to orbax, only because in
0.12.8 it is the switch that makes the manager write (and re-read) the
metrics item; the policy alone decides what is deleted. A checkpoint saved
without ``best_metric`` among its metrics ranks last for ``BestN``.

Async semantics: with ``async_save`` (the default) ``save`` blocks only to
checksum the arrays and copy them off the devices; the write runs in a
background thread, and the next ``save`` (or ``wait``, ``close``, leaving the
``with`` block) waits for it: at most one save is in flight.
:meth:`Checkpointer.wait_if_behind` bounds how far the run gets ahead of it,
and so the work a crash loses (see :class:`Checkpointer`).
Steps are saved at multiples of ``save_interval_steps`` (or on preemption),
any step with ``force=True``.

Resharding on restore: ``restore`` takes an abstract state, a pytree of
``jax.ShapeDtypeStruct``s with ``sharding`` set (or of concrete arrays), and
each leaf is read straight into that leaf's sharding, dtype and shape,
whatever mesh it was saved from: a checkpoint written on 8 devices restores
onto 4, or onto a 2-D mesh with another partition spec. A
``ShapeDtypeStruct`` without a sharding restores as a ``numpy`` array.

Partial restore: ``restore_subtree`` reads one subtree, e.g.
``('params', 'backbone')``, through ``ocp.args.PyTreeRestore(...,
partial_restore=True)``: the other leaves (optimizer state, class weights)
are not read at all.

Atomicity: orbax writes a step into ``<step>.orbax-checkpoint-tmp`` (local
disks; on GCS it uses a ``commit_success.txt`` file instead) and renames it
to ``<step>`` once every file is written. A save interrupted before that
leaves only the temporary directory, which ``latest_step``, ``all_steps`` and
``restore`` never see: they return the last complete step. The leftover is
not removed here (a reader must not delete a writer's save in progress).

Several processes: every process calls ``save`` and ``restore`` (the
checksums are computed on the global arrays); only process 0 moves damaged
steps aside, the others wait for it. A data file that only some processes
fail to read is not moved aside: those processes raise, and the others may
wait for them until the job is stopped.
"""
import dataclasses
import json
import math
import os
import re
import sys

from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from facejax.training import checksums as checksums_lib

_preservation = ocp.checkpoint_managers
_BEST_MODES = ('max', 'min')
ITEM = 'default'  # orbax's name of the single (unnamed) item
STEP_METADATA_FILE = '_CHECKPOINT_METADATA'
CHECKSUMS_KEY = 'facejax_checksums'
DAMAGED_DIR = 'damaged'


class DamagedCheckpointError(ValueError):
  """A checkpoint step that is incomplete, unreadable or fails its checksums.

  Attributes:
    step: the step.
    reason: why, in words (names the file or the array).
    slug: a short name of the reason, used in the name it is moved to.
  """

  def __init__(self, directory, step, reason, slug, hint=''):
    super().__init__(f'checkpoint step {step} in {directory} is damaged: '
                     f'{reason}{hint}')
    self.step, self.reason, self.slug = step, reason, slug


def _warn(message):
  """Prints a message about the checkpoints (process 0 only)."""
  if jax.process_index() == 0:
    print(f'checkpoints: {message}', file=sys.stderr, flush=True)


# Step directories.


@dataclasses.dataclass
class StepInfo:
  """What a step directory holds, read without orbax.

  Attributes:
    step: the step number.
    path: the step directory.
    damage: None when complete, else (reason, slug).
    metrics: the saved metrics dict, or None.
    checksums: the checksum record (see
      :func:`facejax.training.checksums.of_tree`), or None
      for a step saved without one.
  """
  step: int
  path: epath.Path
  damage: tuple = None
  metrics: dict = None
  checksums: dict = None


def _read_json(path, what):
  """(value, None) or (None, (reason, slug)) for a JSON file."""
  try:
    text = path.read_text()
  except FileNotFoundError:
    return None, (f'{what} is missing', 'incomplete')
  except OSError as e:
    return None, (f'{what} cannot be read ({e})', 'unreadable')
  try:
    return json.loads(text), None
  except ValueError:
    state = 'empty' if not text.strip() else 'not valid JSON'
    return None, (f'{what} is {state}', 'bad-metadata')


def inspect_step(path):
  """A :class:`StepInfo` of one step directory (never raises)."""
  path = epath.Path(path)
  info = StepInfo(step=int(path.name), path=path)
  metadata, damage = _read_json(path / STEP_METADATA_FILE, STEP_METADATA_FILE)
  if damage is None and not isinstance(metadata, dict):
    damage = (f'{STEP_METADATA_FILE} is not a JSON object', 'bad-metadata')
  if damage is None:
    tree, damage = _read_json(path / ITEM / '_METADATA', f'{ITEM}/_METADATA')
  if damage is None and not (isinstance(tree, dict)
                             and 'tree_metadata' in tree):
    damage = (f'{ITEM}/_METADATA has no tree metadata', 'bad-metadata')
  if damage is None:
    damage = _missing_manifest(path / ITEM)
  if damage is None and (path / 'metrics').exists():
    info.metrics, damage = _read_json(path / 'metrics' / 'metrics',
                                      'metrics/metrics')
    if damage is None and not isinstance(info.metrics, dict):
      damage = ('metrics/metrics is not a JSON object', 'bad-metrics')
    if damage is not None:
      damage = (damage[0], 'bad-metrics')
  if damage is None:
    custom = metadata.get('custom_metadata') or {}
    info.checksums = custom.get(CHECKSUMS_KEY)
  info.damage = damage
  return info


def _missing_manifest(item):
  """(reason, slug) if an OCDBT manifest of the item is missing or empty."""
  manifests = [item / 'manifest.ocdbt'] + [
      process / 'manifest.ocdbt' for process in item.glob('ocdbt.process_*')]
  for manifest in manifests:
    if not manifest.exists() or manifest.stat().length == 0:
      return (f'{manifest.relative_to(item.parent)} is missing or empty',
              'incomplete')
  return None


def step_numbers(directory):
  """The numbers of the step directories in ``directory`` (complete or not;
  orbax's unfinished ``<step>.orbax-checkpoint-tmp*`` are not steps)."""
  directory = epath.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(int(path.name) for path in directory.iterdir()
                if path.name.isdigit() and path.is_dir())


def _slug(text):
  return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-') or 'damaged'


class Checkpointer:
  """Saves and restores the train state in one directory.

  Work lost by a crash: the steps after the newest committed step. With a
  save every ``N`` steps, the save in flight may still be uncommitted when
  the run is killed, so up to ``2 N`` steps are lost when nothing bounds it
  (orbax waits for a save only when the next one starts). With
  ``max_lag_steps`` ``L`` and :meth:`wait_if_behind` called before each
  step, the run gets at most ``L`` steps past a save before it is
  committed: at most ``N + L`` steps are lost (the trainer uses
  ``L = max(1, N // 2)``: 3 steps for ``N = 2``, 300 for ``N = 200``).

  Attributes:
    directory: the checkpoint directory (an ``etils.epath.Path``).
    best_metric: the metric ranking checkpoints for ``keep_best``, or None.
    best_mode: 'max' or 'min': which ``best_metric`` values are best.
    max_lag_steps: see :meth:`wait_if_behind`.
  """

  def __init__(self, directory, keep_last=3, keep_best=1, best_metric=None,
               best_mode='max', save_interval_steps=1, async_save=True,
               read_only=False, max_lag_steps=None, report=_warn):
    """Opens (or creates) the checkpoint directory.

    Args:
      directory: where the step directories live; created if missing.
      keep_last: how many of the newest checkpoints to keep (at least 1).
      keep_best: how many of the best checkpoints by ``best_metric`` to keep
        besides; ignored when ``best_metric`` is None.
      best_metric: the name of the metric (a key of the ``metrics`` passed
        to ``save``) that ranks checkpoints, or None to keep the newest only.
      best_mode: 'max' if a higher ``best_metric`` is better, else 'min'.
      save_interval_steps: ``save`` writes only at multiples of this (or on
        preemption), unless forced.
      async_save: write in a background thread.
      read_only: only restore (evaluation): no orbax manager, nothing is
        created, saved, deleted or moved; a damaged step raises.
      max_lag_steps: for :meth:`wait_if_behind`; None: no bound beyond one
        save in flight.
      report: called with each message about damaged or unverified steps.

    Raises:
      ValueError: a bad ``keep_last``, ``keep_best``, ``best_mode``,
        ``save_interval_steps`` or ``max_lag_steps``.
    """
    if keep_last < 1:
      raise ValueError(f'keep_last must be at least 1, got {keep_last}')
    if keep_best < 0:
      raise ValueError(f'keep_best must be at least 0, got {keep_best}')
    if best_mode not in _BEST_MODES:
      raise ValueError(f'best_mode must be one of {_BEST_MODES}, '
                       f'got {best_mode!r}')
    if save_interval_steps < 1:
      raise ValueError('save_interval_steps must be at least 1, '
                       f'got {save_interval_steps}')
    if max_lag_steps is not None and max_lag_steps < 1:
      raise ValueError(f'max_lag_steps must be at least 1, got '
                       f'{max_lag_steps}')
    self.best_metric = best_metric
    self.best_mode = best_mode
    self.max_lag_steps = max_lag_steps
    self._report = report
    # orbax's asynchronous save refuses relative paths (in its background
    # thread, after the step): resolve against the working directory here.
    self.directory = epath.Path(os.path.abspath(directory))
    self._reader = ocp.PyTreeCheckpointer()
    self._infos = {}  # step -> StepInfo, of steps read from disk
    self._saved = {}  # step -> (metrics, checksums) of this run's saves
    self._in_flight = None  # the step of an asynchronous save not waited for
    self._unverified = set()  # steps without checksums already reported
    self._manager = None
    if read_only:
      return
    for info in self._scan():
      if info.damage:
        self._move_aside(info.step, *info.damage)
    self._manager = ocp.CheckpointManager(
        self.directory, options=self._options(
            keep_last, keep_best, save_interval_steps, async_save))

  def _options(self, keep_last, keep_best, save_interval_steps, async_save):
    policies = [_preservation.LatestN(n=keep_last)]
    if self.best_metric is not None and keep_best > 0:
      policies.append(_preservation.BestN(
          get_metric_fn=self._rank_value,
          # BestN keeps the last n after sorting; descending for 'min'.
          reverse=self.best_mode == 'min',
          n=keep_best,
          keep_checkpoints_without_metrics=False))
    return ocp.CheckpointManagerOptions(
        preservation_policy=_preservation.AnyPreservationPolicy(policies),
        save_decision_policy=_preservation.AnySavePolicy([
            _preservation.FixedIntervalPolicy(save_interval_steps),
            _preservation.PreemptionCheckpointingPolicy(),
        ]),
        # Not used for preservation (the policy above overrides it): it only
        # makes orbax 0.12.8 write the metrics item and read it back.
        best_fn=self._rank_value,
        best_mode=self.best_mode,
        enable_async_checkpointing=async_save,
        create=True)

  def _rank_value(self, metrics):
    """``best_metric`` in ``metrics``; the worst value when it is absent."""
    value = (metrics or {}).get(self.best_metric)
    if value is None:
      return -math.inf if self.best_mode == 'max' else math.inf
    return float(value)

  def _scan(self):
    """A fresh :class:`StepInfo` of every step directory, ascending."""
    self._infos = {step: inspect_step(self.directory / str(step))
                   for step in step_numbers(self.directory)}
    return list(self._infos.values())

  def _info(self, step):
    if step not in self._infos:
      self._infos[step] = inspect_step(self.directory / str(step))
    return self._infos[step]

  def _move_aside(self, step, reason, slug):
    """Renames a damaged step to ``damaged/<step>-<slug>`` (process 0)."""
    target = self.directory / DAMAGED_DIR / f'{step}-{_slug(slug)}'
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      suffix = 1
      while target.exists():  # the same step damaged again in a later run
        suffix += 1
        target = target.parent / f'{step}-{_slug(slug)}-{suffix}'
      os.rename(self.directory / str(step), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'facejax move aside {step}')
    self._infos.pop(step, None)
    self._report(f'step {step} is damaged ({reason}): moved it to {target}')
    return target

  def save(self, step, state, metrics=None, force=False):
    """Saves ``state`` as checkpoint ``step`` (asynchronously by default).

    Blocks while the arrays are checksummed and copied off the devices (and
    for the previous asynchronous save, if it is still being written).

    Args:
      step: the train step, an int greater than the latest saved step.
      state: the train state pytree; its arrays may be sharded.
      metrics: optional dict of metric name to float (e.g. the eval
        accuracy), ranked by the best-N policy and written as JSON.
      force: save even if ``step`` is not a multiple of
        ``save_interval_steps``.

    Returns:
      Whether a checkpoint was started: False when the interval skips the
      step or ``step`` is not after the latest saved step.

    Raises:
      ValueError: a metric is NaN or infinite (nothing is written).
    """
    step = int(step)
    metrics = _finite_metrics(metrics)
    if not force and not self._manager.should_save(step):
      return False
    record = checksums_lib.of_tree(state)
    saved = self._manager.save(
        step, args=ocp.args.PyTreeSave(state), metrics=metrics,
        force=force, custom_metadata={CHECKSUMS_KEY: record})
    if saved:
      self._saved[step] = (metrics, record)
      self._in_flight = step
    return saved

  def wait_if_behind(self, step):
    """Waits for the save in flight if ``step`` is ``max_lag_steps`` past it.

    Call before running the step after ``step``. With saves every ``N``
    steps and ``max_lag_steps`` ``L``, a save runs in the background during
    at most ``L`` steps; a crash at any moment loses at most ``N + L``
    steps of work (the steps since the newest save on disk, which may be
    the one before the save in flight). Without a bound (``L`` None) the
    in-flight save is only waited for by the next save: up to ``2 N``.
    """
    if (self.max_lag_steps is not None and self._in_flight is not None
        and step - self._in_flight >= self.max_lag_steps):
      self.wait()

  def latest_step(self):
    """The newest step (read-only: the newest step directory, complete or
    not; restoring a damaged one raises), or None if there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def all_steps(self):
    """The steps kept on disk (or being saved), ascending."""
    if self._manager is None:
      return step_numbers(self.directory)
    return sorted(self._manager.all_steps())

  def best_step(self):
    """The kept step with the best ``best_metric``, or None.

    None when ``best_metric`` is None or no kept step has it. Between equal
    values the newest step wins.
    """
    if self.best_metric is None:
      return None
    best_step, best_value = None, None
    for step, metrics in self._metrics_by_step().items():
      if not metrics or self.best_metric not in metrics:
        continue
      value = float(metrics[self.best_metric])
      if (best_value is None
          or (value >= best_value if self.best_mode == 'max'
              else value <= best_value)):
        best_step, best_value = step, value
    return best_step

  def _metrics_by_step(self):
    """The saved metrics (a dict or None) of every kept step."""
    return {step: (self._saved[step][0] if step in self._saved
                   else self._info(step).metrics)
            for step in self.all_steps()}

  def restore(self, abstract_state, step=None):
    """Restores a step into the layout of ``abstract_state``, verified.

    Args:
      abstract_state: the structure to restore into: a pytree like the
        saved state whose leaves are ``jax.ShapeDtypeStruct``s with
        ``sharding`` set (e.g. ``jax.eval_shape`` plus shardings) or
        concrete arrays. Each array is restored with the leaf's dtype and
        sharding, on any mesh.
      step: the step to restore; the latest step if None.

    Returns:
      The state, with the structure of ``abstract_state``.

    Raises:
      FileNotFoundError: no checkpoint (or no checkpoint ``step``) in the
        directory.
      DamagedCheckpointError: the step is incomplete, cannot be read, or an
        array does not match its checksum (the message names it).
    """
    return self.restore_subtree(abstract_state, (), step)

  def restore_subtree(self, abstract_subtree, path, step=None):
    """Restores only the subtree of the saved state at ``path``, verified.

    For evaluation or fine-tuning: e.g. ``path=('params', 'backbone')``
    reads the backbone parameters and nothing else (no optimizer state, no
    class weights), with orbax's partial restore.

    Args:
      abstract_subtree: the layout of the subtree, as for ``restore``.
      path: the keys (dict keys or dataclass field names) from the root of
        the saved state to the subtree; empty for the whole state.
      step: the step to restore; the latest step if None.

    Returns:
      The subtree, with the structure of ``abstract_subtree``.

    Raises:
      FileNotFoundError: no checkpoint (or no checkpoint ``step``) in the
        directory.
      DamagedCheckpointError: as for ``restore``.
    """
    step = self._existing_step(step)
    info = self._checked_info(step)
    path = tuple(path)
    wanted = _abstract(abstract_subtree)
    target = wanted
    if info.checksums is None:
      if step not in self._unverified:
        self._unverified.add(step)
        self._report(f'step {step} has no checksums (saved before they '
                     'were recorded): restored without verification')
    else:
      target = _in_saved_dtypes(wanted, info.checksums, path, step)
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    for key in reversed(path):
      target, restore_args = {key: target}, {key: restore_args}
    try:
      restored = self._reader.restore(
          info.path / ITEM, args=ocp.args.PyTreeRestore(
              item=target, restore_args=restore_args,
              partial_restore=bool(path)))
    except Exception as error:  # pylint: disable=broad-except
      damage = self._unreadable(info)
      if damage is None:
        raise  # the step reads back as saved: the target does not fit it
      raise self._damaged(step, *damage) from error
    if info.checksums is not None:
      mismatch = checksums_lib.first_mismatch(
          checksums_lib.of_tree(restored), info.checksums)
      if mismatch:
        raise self._damaged(step, f'array {mismatch[0]} {mismatch[1]}',
                            'checksum-mismatch')
    for key in path:
      restored = restored[key]
    return _cast_like(restored, wanted)

  def restore_latest(self, abstract_state):
    """(state, step) from the newest intact step, or (None, None).

    Writing mode only: a step whose arrays cannot be read or fail their
    checksums is moved aside (see the module docstring) and the previous
    step is tried.
    """
    for step in reversed(self.all_steps()):
      try:
        return self.restore(abstract_state, step), step
      except DamagedCheckpointError as error:
        self._move_aside(step, error.reason, error.slug)
        self._manager.reload()
    return None, None

  def _checked_info(self, step):
    """The step's :class:`StepInfo`; DamagedCheckpointError if damaged."""
    info = inspect_step(self.directory / str(step))
    self._infos[step] = info
    if info.damage:
      raise self._damaged(step, *info.damage)
    return info

  def _damaged(self, step, reason, slug):
    """The error for a damaged step, with the newest intact-looking step."""
    intact = [other for other in self.all_steps() if other != step
              and not self._info(other).damage]
    hint = (f'; the newest step that looks intact is {intact[-1]} '
            f'(e.g. --step {intact[-1]})' if intact else '')
    return DamagedCheckpointError(self.directory, step, reason, slug, hint)

  def _unreadable(self, info):
    """(reason, slug) if the step's arrays cannot be read back as saved.

    Restores every leaf as numpy, as saved (no target, so a target that
    does not fit the checkpoint is not mistaken for damage), and checks the
    checksums.
    """
    item = info.path / ITEM
    try:
      tree = ocp.PyTreeCheckpointHandler().metadata(item).tree
      restore_args = jax.tree.map(
          lambda leaf: ocp.RestoreArgs(restore_type=np.ndarray)
          if isinstance(leaf, ocp.metadata.ArrayMetadata)
          else ocp.RestoreArgs(), tree)
      saved = self._reader.restore(item, args=ocp.args.PyTreeRestore(
          restore_args=restore_args))
    except Exception as error:  # pylint: disable=broad-except
      return (f'its arrays cannot be read ({_summary(error)})',
              'unreadable-arrays')
    if info.checksums is None:
      return None
    record = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]:
      leaf = np.asarray(leaf)
      record[checksums_lib.path_name(path)] = dict(
          checksums_lib.array_record(leaf, checksums_lib.host_folds(leaf)),
          scalar=leaf.item() if leaf.ndim == 0 else None)
    mismatch = checksums_lib.first_mismatch(record, info.checksums)
    if mismatch:
      return f'array {mismatch[0]} {mismatch[1]}', 'checksum-mismatch'
    return None

  def _existing_step(self, step):
    """``step``, or the latest one; FileNotFoundError if it is missing."""
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f'no checkpoint in {self.directory}')
    elif step not in self.all_steps():
      raise FileNotFoundError(
          f'no checkpoint of step {step} in {self.directory} '
          f'(steps: {self.all_steps()})')
    return step

  def wait(self):
    """Blocks until every pending asynchronous save is on disk."""
    if self._manager is not None:
      self._manager.wait_until_finished()
    self._in_flight = None

  def close(self):
    """Waits for pending saves and releases the manager."""
    if self._manager is not None:
      self._manager.close()
    self._reader.close()
    self._in_flight = None

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


def _summary(error):
  """The first line of an error, without tensorstore's spec dump."""
  text = (str(error).strip().splitlines() or [repr(error)])[0]
  return text.split(' [tensorstore_spec')[0][:300]


def _in_saved_dtypes(wanted, checksums, path, step):
  """``wanted`` with each array leaf in the dtype it was saved in.

  Raises ValueError when a leaf's shape is not the saved one.
  """
  def leaf(key_path, value):
    name = '/'.join([str(key) for key in path]
                    + [checksums_lib.path_name(key_path)]).strip('/')
    saved = checksums.get(name)
    if not isinstance(value, jax.ShapeDtypeStruct) or not saved or (
        'dtype' not in saved):
      return value
    if list(value.shape) != saved['shape']:
      raise ValueError(
          f'step {step}: {name} was saved with shape '
          f'{tuple(saved["shape"])}, the restore target has {value.shape}')
    if (str(value.dtype) == saved['dtype']
        or jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)):
      return value
    return jax.ShapeDtypeStruct(value.shape, jnp.dtype(saved['dtype']),
                                sharding=value.sharding)

  return jax.tree_util.tree_map_with_path(leaf, wanted)


def _cast_like(restored, wanted):
  """Restored leaves in the dtypes of ``wanted`` (sharding kept)."""
  def cast(value, target):
    if (checksums_lib.is_array(value) and hasattr(target, 'dtype')
        and value.dtype != target.dtype):
      return value.astype(target.dtype)
    return value
  return jax.tree.map(cast, restored, wanted)


def _finite_metrics(metrics):
  """The metrics as a JSON-ready dict of floats; ValueError if not finite.

  No metrics become ``{}``, which orbax writes as an empty JSON object (and
  ``BestN`` ranks last) instead of warning that metrics are missing.
  """
  if metrics is None:
    return {}
  floats = {str(name): float(np.asarray(value))
            for name, value in metrics.items()}
  bad = sorted(name for name, value in floats.items()
               if not math.isfinite(value))
  if bad:
    raise ValueError(
        'refusing to save a checkpoint with non-finite metrics: '
        + ', '.join(f'{name}={floats[name]}' for name in bad))
  return floats


def _abstract(tree):
  """Concrete ``jax.Array`` leaves as ``ShapeDtypeStruct``s, sharding kept."""
  def leaf(value):
    if isinstance(value, jax.Array):
      return jax.ShapeDtypeStruct(value.shape, value.dtype,
                                  sharding=value.sharding)
    return value
  return jax.tree.map(leaf, tree)
