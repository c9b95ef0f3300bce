"""A run's directory (``--workdir``): its config, its lock, its checkpoints.

    workdir/config.json      the training config (what evaluation jobs,
                             ``init_from`` and importers rebuild from)
    workdir/.lock            the live trainer (:mod:`facejax.training.
                             workdir_lock`)
    workdir/checkpoints/     orbax steps (:mod:`facejax.training.checkpoint`)
    workdir/metrics.jsonl,
    workdir/tensorboard/     the metrics (:mod:`facejax.training.observe`)

Everything that reads or writes a run directory as a whole goes through
here, so that the training loop, the evaluation jobs and the importers
agree on the layout.
"""

import contextlib
import json
import os
import sys

import jax
import ml_collections

from facejax.training import checkpoint
from facejax.training import config_rules
from facejax.training import workdir_lock

# The file a run saves its config in: ``init_from`` and every evaluation
# job need it.
CONFIG_FILE = 'config.json'


class WorkdirInUseError(config_rules.ConfigError):
  """Another live trainer holds ``--workdir`` (the message names its pid,
  host and start time); ``python -m train`` prints it without a traceback,
  as every :class:`ConfigError`."""


def save_config(config, workdir):
  """Writes ``config`` as ``workdir/config.json`` (atomically)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(path + '.tmp', path)


def load_config(workdir):
  """The config a run saved in ``workdir`` (:func:`save_config`)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path}: no training config here; pass the --workdir of a '
        '`python -m train` run')
  with open(path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(json.load(f))


def note(message):
  """Prints what the run did to its workdir (process 0 only)."""
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def hold_workdir(workdir, enabled=True):
  """Holds ``workdir``'s lock (:mod:`facejax.training.workdir_lock`) inside
  the ``with`` block; process 0 of a run takes it, the others pass
  ``enabled=False``.

  Raises:
    WorkdirInUseError: another live trainer holds it.
  """
  if not enabled:
    yield None
    return
  lock = workdir_lock.WorkdirLock(workdir)
  try:
    lock.acquire()
  except workdir_lock.LockHeldError as e:
    raise WorkdirInUseError(
        f'--workdir {workdir} is in use by another trainer: {e.holder} '
        f'holds {e.path}; wait for it to end or stop it (the lock of a '
        'trainer that was killed is taken over by the next one)') from None
  if lock.previous:
    note(f'workdir: took over {lock.path} from '
         f'{workdir_lock.describe(lock.previous)}, which is no longer '
         'running (killed or crashed)')
  try:
    yield lock
  finally:
    lock.release()


def open_checkpoints(config, workdir, best_metric=None):
  """The run's :class:`checkpoint.Checkpointer` (damaged steps moved aside).

  Keeps the last ``keep_last`` steps and, with ``best_metric`` ((name,
  'max' or 'min'), :func:`facejax.evaluators.best_metric`), the best step
  by that metric. An asynchronous save may run in the background during at
  most half a checkpoint interval of steps (at least 1): a crash at any
  moment loses at most ``checkpoint_every + max(1, checkpoint_every // 2)``
  steps.
  """
  name, mode = best_metric or (None, 'max')
  return checkpoint.Checkpointer(
      os.path.join(workdir, 'checkpoints'),
      keep_last=config.get('keep_last', 2),
      keep_best=1 if best_metric else 0, best_metric=name, best_mode=mode,
      max_lag_steps=max(1, config.checkpoint_every // 2))
