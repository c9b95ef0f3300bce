"""Evaluators by name, built from config (big_vision's ``evaluators``).

An evaluator is built once from its arguments (it reads or draws its data
then), takes an embedding function ``embed(source) -> (N, D) features``
and yields ``(name, value)`` metrics from :meth:`run`. The training loop
runs every evaluator of the config on the current model, each with its
own period, and records ``prefix + name``; the evaluation jobs build the
same classes on a restored checkpoint (``eval.lfw``).

The config names them, as insightface validates on lfw, cfp_fp and
agedb_30 while it trains::

    config.evals = dict(
        lfw=dict(type='verification', bin='lfw.bin', every=2000),
        cfp_fp=dict(type='verification', bin='cfp_fp.bin', every=2000),
        agedb_30=dict(type='verification', bin='agedb_30.bin', every=2000))

records ``lfw/accuracy``, ``lfw/val_at_far``, ``lfw/eer``, ``lfw/auc``,
``lfw/accuracy_std``, ``cfp_fp/accuracy``, ... Each entry takes ``type``
(a key of ``EVALUATORS``; default 'verification'), ``every`` (steps; 0:
off), optionally ``prefix`` (default ``'<name>/'``) and ``batch_size``
(default ``eval.batch_size``), and the evaluator's own arguments (its
``RULES``). The older ``config.eval`` (``every``, ``pairs`` or ``bin``,
``seed``) is one more verification evaluator, named ``verification``,
that records its accuracy alone as ``verification_accuracy``, as it
always has. ``config.best_metric`` (default ``verification_accuracy``)
names the metric by which the best checkpoint is kept.
"""

from typing import NamedTuple

from facejax.evaluators import ijb
from facejax.evaluators import verification

EVALUATORS = {'verification': verification.Evaluator, 'ijb': ijb.Evaluator}
DEFAULT_TYPE = 'verification'
DEFAULT_BEST_METRIC = 'verification_accuracy'
# config.eval's single evaluator: its name and what it records.
LEGACY_NAME = 'verification'


class Entry(NamedTuple):
  """One configured evaluator, before it is built.

  Attributes:
    name: its key in ``config.evals`` (``LEGACY_NAME`` for config.eval).
    type: a key of ``EVALUATORS``.
    every: its period in steps (0: off).
    prefix: what its metric names are recorded behind.
    batch_size: images per embedding batch.
    arguments: the evaluator's keyword arguments.
  """
  name: str
  type: str
  every: int
  prefix: str
  batch_size: int
  arguments: dict


def entries(config):
  """Every :class:`Entry` of ``config``, in order: config.eval's
  verification (when ``eval.every`` > 0), then ``config.evals``'s.

  Synthetic pairs are drawn at the model's input side
  (``config.data.image_size``) unless the entry gives ``image_size``.
  Reads nothing: the config checks call it before any data is read.
  """
  old = config.get('eval', {})
  image_size = config.get('data', {}).get('image_size')
  found = []
  if old.get('every'):
    arguments = (dict(bin=old.bin) if old.get('bin')
                 else dict(pairs=old.pairs, seed=old.get('seed', 0)))
    if arguments.get('pairs') and image_size:
      arguments['image_size'] = image_size
    found.append(Entry(LEGACY_NAME, DEFAULT_TYPE, old.every, 'verification_',
                       old.get('batch_size'),
                       dict(arguments, metrics=('accuracy',))))
  for name, entry in config.get('evals', {}).items():
    arguments = dict(entry)
    if (arguments.get('type', DEFAULT_TYPE) == 'verification'
        and arguments.get('pairs') and image_size):
      arguments.setdefault('image_size', image_size)
    found.append(Entry(
        name, arguments.pop('type', DEFAULT_TYPE), arguments.pop('every', 0),
        arguments.pop('prefix', f'{name}/'),
        arguments.pop('batch_size', old.get('batch_size')), arguments))
  return found


def from_config(config):
  """``[(entry, evaluator)]``: the config's evaluators that run (``every``
  > 0), built (their data read or drawn now)."""
  return [(entry, EVALUATORS[entry.type](**entry.arguments))
          for entry in entries(config) if entry.every]


def metric_modes(config):
  """{recorded name: 'max' or 'min'} of every metric the config's running
  evaluators record."""
  modes = {}
  for entry in entries(config):
    if entry.every:
      modes.update({entry.prefix + name: mode for name, mode in
                    EVALUATORS[entry.type].metric_modes(
                        entry.arguments).items()})
  return modes


def best_metric(config):
  """(name, mode) of ``config.best_metric`` when an evaluator of the
  config records it, else None (no best checkpoint is kept)."""
  name = config.get('best_metric', DEFAULT_BEST_METRIC)
  modes = metric_modes(config)
  return (name, modes[name]) if name in modes else None
