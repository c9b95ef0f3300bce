"""Checkpoints of the train state, over orbax's ``CheckpointManager``.

What is saved: the whole train state as one pytree (a ``flax.struct``
dataclass or nested dicts of ``jax.Array``s, optax states, Python scalars),
one directory per step, ``<directory>/<step>/default`` (orbax's pytree
format, OCDBT + zarr3). Typed PRNG keys (``jax.random.key``) are saved as
they are: orbax 0.12.8's ``PyTreeCheckpointHandler`` writes their
``jax.random.key_data`` and wraps the data again on restore, with the key
implementation of the restore target. The metrics passed to ``save`` (a dict
of finite floats) are written by orbax as JSON in
``<directory>/<step>/metrics/metrics``, readable by a human, and read back by
the preservation policy after a restart.

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
copy the arrays off the devices; the write runs in a background thread, and
the next ``save`` (or ``wait``, ``close``, leaving the ``with`` block) waits
for it. Steps are saved at multiples of ``save_interval_steps`` (or on
preemption), any step with ``force=True``.

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
"""
import math
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

_preservation = ocp.checkpoint_managers
_BEST_MODES = ('max', 'min')


class Checkpointer:
  """Saves and restores the train state in one directory.

  Attributes:
    directory: the checkpoint directory (an ``etils.epath.Path``).
    best_metric: the metric ranking checkpoints for ``keep_best``, or None.
    best_mode: 'max' or 'min': which ``best_metric`` values are best.
  """

  def __init__(self, directory, keep_last=3, keep_best=1, best_metric=None,
               best_mode='max', save_interval_steps=1, async_save=True):
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

    Raises:
      ValueError: a bad ``keep_last``, ``keep_best``, ``best_mode`` or
        ``save_interval_steps``.
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
    self.best_metric = best_metric
    self.best_mode = best_mode
    policies = [_preservation.LatestN(n=keep_last)]
    if best_metric is not None and keep_best > 0:
      policies.append(_preservation.BestN(
          get_metric_fn=self._rank_value,
          # BestN keeps the last n after sorting; descending for 'min'.
          reverse=best_mode == 'min',
          n=keep_best,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=_preservation.AnyPreservationPolicy(policies),
        save_decision_policy=_preservation.AnySavePolicy([
            _preservation.FixedIntervalPolicy(save_interval_steps),
            _preservation.PreemptionCheckpointingPolicy(),
        ]),
        # Not used for preservation (the policy above overrides it): it only
        # makes orbax 0.12.8 write the metrics item and read it back.
        best_fn=self._rank_value,
        best_mode=best_mode,
        enable_async_checkpointing=async_save,
        create=True)
    # orbax's asynchronous save refuses relative paths (in its background
    # thread, after the step): resolve against the working directory here.
    self._manager = ocp.CheckpointManager(os.path.abspath(directory),
                                          options=options)
    self.directory = self._manager.directory
    self._saved_metrics = {}  # step -> metrics dict, or None if unsaved.

  def _rank_value(self, metrics):
    """``best_metric`` in ``metrics``; the worst value when it is absent."""
    value = (metrics or {}).get(self.best_metric)
    if value is None:
      return -math.inf if self.best_mode == 'max' else math.inf
    return float(value)

  def save(self, step, state, metrics=None, force=False):
    """Saves ``state`` as checkpoint ``step`` (asynchronously by default).

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
    saved = self._manager.save(
        step, args=ocp.args.PyTreeSave(state), metrics=metrics,
        force=force)
    if saved:
      self._saved_metrics[step] = metrics
    return saved

  def latest_step(self):
    """The newest complete step, or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self):
    """The complete steps kept on disk (or being saved), ascending."""
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
    for step in self._manager.all_steps():
      if step not in self._saved_metrics:
        # Saved by an earlier run: read <step>/metrics/metrics.
        self._saved_metrics[step] = self._manager.metrics(step)
    return {step: self._saved_metrics[step]
            for step in self._manager.all_steps()}

  def restore(self, abstract_state, step=None):
    """Restores a step into the layout of ``abstract_state``.

    Args:
      abstract_state: the structure to restore into: a pytree like the
        saved state whose leaves are ``jax.ShapeDtypeStruct``s with
        ``sharding`` set (e.g. ``jax.eval_shape`` plus shardings) or
        concrete arrays. Each array is restored with the leaf's dtype and
        sharding, on any mesh.
      step: the step to restore; the latest complete step if None.

    Returns:
      The state, with the structure of ``abstract_state``.

    Raises:
      FileNotFoundError: no checkpoint (or no checkpoint ``step``) in the
        directory.
    """
    step = self._existing_step(step)
    target = _abstract(abstract_state)
    return self._manager.restore(step, args=ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target)))

  def restore_subtree(self, abstract_subtree, path, step=None):
    """Restores only the subtree of the saved state at ``path``.

    For evaluation or fine-tuning: e.g. ``path=('params', 'backbone')``
    reads the backbone parameters and nothing else (no optimizer state, no
    class weights), with orbax's partial restore.

    Args:
      abstract_subtree: the layout of the subtree, as for ``restore``.
      path: the keys (dict keys or dataclass field names) from the root of
        the saved state to the subtree.
      step: the step to restore; the latest complete step if None.

    Returns:
      The subtree, with the structure of ``abstract_subtree``.

    Raises:
      FileNotFoundError: no checkpoint (or no checkpoint ``step``) in the
        directory.
    """
    path = tuple(path)
    if not path:
      return self.restore(abstract_subtree, step)
    step = self._existing_step(step)
    target = _abstract(abstract_subtree)
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    for key in reversed(path):
      target, restore_args = {key: target}, {key: restore_args}
    restored = self._manager.restore(step, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True))
    for key in path:
      restored = restored[key]
    return restored

  def _existing_step(self, step):
    """``step``, or the latest one; FileNotFoundError if it is missing."""
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f'no checkpoint in {self.directory}')
    elif step not in self._manager.all_steps():
      raise FileNotFoundError(
          f'no checkpoint of step {step} in {self.directory} '
          f'(steps: {self.all_steps()})')
    return step

  def wait(self):
    """Blocks until every pending asynchronous save is on disk."""
    self._manager.wait_until_finished()

  def close(self):
    """Waits for pending saves and releases the manager."""
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


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
