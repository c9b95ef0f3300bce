"""Config checks: every bad value is a :class:`ConfigError` naming its key.

Each error names the key, the bad value and what the key allows.
:func:`check_config` looks at the config alone (and at the paths it names)
and runs before any data is read or rendered; :func:`check_source` checks it
against the opened training source. Both run before anything is compiled,
so a mistake costs seconds, not a compilation and a training step.

The rules are tables of (key, what it allows): ``CONFIG_RULES`` for the
keys every config has, ``SYNTHETIC_RULES`` and the attribute tables for the
data sources; each loss's spec (:mod:`facejax.training.objectives`) carries
the rules of the ``loss.*`` keys it reads and its own checks. The checks
that relate several keys (batches over devices and processes, P x K, the
smallest image a backbone takes, paths) are functions beside them.
"""

import os

import jax
import numpy as np

from facejax import evaluators
from facejax import models
from facejax.data import attribute_sources
from facejax.data import augment
from facejax.data import celeba
from facejax.data import sources
from facejax.data import synthetic
from facejax.evaluators import verification
from facejax.training import config_rules
from facejax.training import objectives
from facejax.training import optim
from facejax.training import run_directory

# The rule vocabulary of :mod:`facejax.training.config_rules`, by the short
# names the tables below use.
ConfigError = config_rules.ConfigError
integer, number, one_of = (config_rules.integer, config_rules.number,
                           config_rules.one_of)
INTEGER, NUMBER = config_rules.INTEGER, config_rules.NUMBER
STRING, BOOLEAN = config_rules.STRING, config_rules.BOOLEAN


def model_axis_size(config, num_devices):
  """``config.mesh.model``, with -1 meaning every device."""
  size = config.get('mesh', {}).get('model', 1)
  return num_devices if size == -1 else size


COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')

# Keys every config may set (a key left out takes the code's default).
# Choices checked by the code that uses them (model, loss, optimizer and
# schedule names; the augmentation ranges) are only typed here.
CONFIG_RULES = (
    ('total_steps', integer(1)),
    ('batch_size', integer(1)),
    ('micro_batches', integer(1)),
    ('seed', integer(0)),
    ('compute_dtype', one_of(*COMPUTE_DTYPES)),
    ('num_classes', integer(0)),
    ('init_from', STRING),
    ('mesh.model', INTEGER),
    ('mesh.shard_backbone', BOOLEAN),
    ('data.source', STRING),
    ('data.landmarks_file', STRING),
    ('data.image_size', INTEGER),  # >= the model's minimum: _check_model
    ('data.identities_per_batch', integer(0)),
    ('data.max_pixels', integer(0)),  # 0: no limit
    ('data.images_per_identity', integer(0)),
    ('data.augmentation.flip', BOOLEAN),
    ('data.augmentation.min_crop_scale', NUMBER),
    ('data.augmentation.brightness', NUMBER),
    ('data.augmentation.contrast', NUMBER),
    ('data.augmentation.saturation', NUMBER),
    ('data.augmentation.hue', NUMBER),
    ('model.name', STRING),
    ('loss.name', STRING),
    ('optimizer.name', STRING),
    ('optimizer.schedule', STRING),
    ('optimizer.learning_rate', number(0)),
    ('optimizer.warmup_steps', integer(0)),
    ('optimizer.end_learning_rate', number(0)),
    ('optimizer.power', number(0, low_open=True)),
    ('optimizer.momentum', number(0, 1, high_open=True)),
    ('optimizer.nesterov', BOOLEAN),
    ('optimizer.b1', number(0, 1, high_open=True)),
    ('optimizer.b2', number(0, 1, high_open=True)),
    ('optimizer.weight_decay', number(0)),
    ('optimizer.clip_norm', number(0)),  # 0: off
    ('eval.every', integer(0)),  # 0: off
    ('eval.bin', STRING),
    ('eval.seed', integer(0)),
    ('eval.batch_size', integer(1)),
    ('best_metric', STRING),
    ('log_every', integer(1)),
    ('checkpoint_every', integer(1)),
    ('keep_last', integer(1)),
)
# The embedded synthetic identities: training ones stay below the held-out
# identities of the verification pairs.
SYNTHETIC_RULES = (
    ('data.synthetic.num_identities',
     integer(1, synthetic.EVAL_FIRST_IDENTITY)),
    ('data.synthetic.images_per_identity', integer(1)),
    ('data.synthetic.seed', integer(0)),
)
SYNTHETIC_ATTRIBUTE_RULES = (
    ('data.synthetic_attributes.train', integer(1)),
    ('data.synthetic_attributes.val', integer(0)),
    ('data.synthetic_attributes.test', integer(0)),
    ('data.synthetic_attributes.num_attributes',
     integer(1, len(celeba.SYNTHETIC_ATTRIBUTES))),
    ('data.synthetic_attributes.seed', integer(0)),
    ('data.synthetic_attributes.image_size', integer(1)),
)
ATTRIBUTE_DATA_RULES = (
    ('data.max_examples.train', integer(0)),  # 0: all
    ('data.max_examples.val', integer(0)),
    ('data.max_examples.test', integer(0)),
)
# Optional loss keys any loss may set (defaults in the objectives' family
# modules), checked where set; each loss's own keys are in its spec.
OPTIONAL_LOSS_RULES = (('sample_rate', number(0, 1, low_open=True)),
                       ('normalise', BOOLEAN),
                       ('cluster_iterations', integer(1)))
# The smallest image side of each backbone: its total stride (four stride-2
# stages: 16 gives 1x1 maps; SAME-padded, IResNet, SphereFace and
# MobileFaceNet still run below it, on maps of padding), or what its
# unpadded layers need (DeepID2's conv4, VGG-Face's five poolings).
MIN_IMAGE_SIZE = dict(center_loss_cnn=16, deepid2=31, mobilefacenet=16,
                      mobilefacenet_mbf=16, sphereface20=16, vgg_face=32)


def min_image_size(model_config):
  """The smallest ``data.image_size`` the backbone takes (MIN_IMAGE_SIZE;
  IResNet: 2 ** its number of stride-2 stages)."""
  if model_config.name.startswith('iresnet'):
    kwargs = model_config.get('kwargs', {})
    return 2 ** min(len(kwargs.get('stage_units', (1,) * 4)),
                    len(kwargs.get('stage_features', (1,) * 4)))
  return MIN_IMAGE_SIZE[model_config.name]


def _check_model(config):
  name = config.model.name
  if name not in models.names():
    raise ConfigError(f'model.name: unknown {name!r}; choose one of '
                      f'{", ".join(models.names())}')
  try:
    models.get(name, **dict(config.model.get('kwargs', {})))
  except TypeError as e:  # an argument the backbone does not take
    raise ConfigError(f'model.kwargs: {e}') from None
  minimum = min_image_size(config.model)
  if config.data.image_size < minimum:
    raise ConfigError(f'data.image_size must be >= {minimum} for '
                      f'model.name={name!r}, got {config.data.image_size}')


def _check_batches(config, num_devices):
  """Batches that split over the devices and processes; P x K batches."""
  batch_size = config.batch_size
  if batch_size % num_devices:
    raise ConfigError(f'batch_size={batch_size} does not split over the '
                      f'{num_devices} devices')
  micro = config.get('micro_batches', 1)
  if batch_size % micro or (batch_size // micro) % num_devices:
    raise ConfigError(f'micro_batches={micro}: batch_size {batch_size} / '
                      f'{micro} must split over the {num_devices} devices')
  eval_batch_size = config.eval.get('batch_size', num_devices)
  if eval_batch_size % num_devices:
    raise ConfigError(f'eval.batch_size={eval_batch_size} does not split '
                      f'over the {num_devices} devices')
  p = config.data.get('identities_per_batch', 0)
  k = config.data.get('images_per_identity', 0)
  if not p and not k:
    return
  if not p or not k:
    unset, other = (('data.identities_per_batch', 'data.images_per_identity')
                    if not p else ('data.images_per_identity',
                                   'data.identities_per_batch'))
    raise ConfigError(f'{unset} must be >= 1 with {other}={p or k} (P x K '
                      'batches), got 0')
  if p * k != batch_size:
    raise ConfigError(f'data.identities_per_batch x data.images_per_identity '
                      f'= {p} x {k} must be batch_size ({batch_size})')
  if p % jax.process_count():
    raise ConfigError(f'data.identities_per_batch={p} does not split over '
                      f'the {jax.process_count()} processes')


def _check_paths(config):
  """Files and folders the config names exist (not read here)."""
  spec = config.data.source
  if spec == 'synthetic' or spec in (attribute_sources.SYNTHETIC,
                                     attribute_sources.TFDS):
    paths = []
  elif spec.startswith(attribute_sources.CELEBA_PREFIX):
    paths = [('data.source', spec[len(attribute_sources.CELEBA_PREFIX):])]
  elif spec.endswith('.rec'):
    paths = [('data.source', spec), ('data.source', spec[:-4] + '.idx')]
  else:
    paths = [('data.source', spec)]
  for key in ('data.landmarks_file', 'eval.bin'):
    if config_rules.lookup(config, key) not in (config_rules.MISSING, ''):
      paths.append((key, config_rules.lookup(config, key)))
  for key, path in paths:
    if not os.path.exists(path):
      kinds = (f' (synthetic, {attribute_sources.SYNTHETIC}, '
               f'{attribute_sources.CELEBA_PREFIX}<root>, '
               f'{attribute_sources.TFDS}, an image folder, a .rec or a '
               'TFRecords folder)') if key == 'data.source' else ''
      value = config_rules.lookup(config, key)
      where = f'{key}={value!r}' + (f': {path}' if path != value else '')
      raise ConfigError(f'{where} does not exist{kinds}')


def _check_init_from(config):
  workdir = config.get('init_from')
  if not workdir:
    return
  checkpoints = os.path.join(workdir, 'checkpoints')
  names = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
  if not (os.path.isfile(os.path.join(workdir, run_directory.CONFIG_FILE))
          and any(name.isdigit() for name in names)):
    raise ConfigError(f'init_from={workdir!r}: not the workdir of a run '
                      f'with a checkpoint (no {run_directory.CONFIG_FILE} and '
                      'checkpoints/<step> in it)')


def _check_data(config):
  spec = config.data.source
  if spec == 'synthetic':
    config_rules.check_rules(config, SYNTHETIC_RULES)
  if spec == attribute_sources.SYNTHETIC:
    config_rules.check_rules(config, SYNTHETIC_ATTRIBUTE_RULES)
  if attribute_sources.is_attribute_dataset(spec):
    config_rules.check_rules(config, ATTRIBUTE_DATA_RULES)
  _check_paths(config)
  try:
    augment.Augmentation(**config.data.augmentation)
  except TypeError as e:  # a key it does not have
    raise ConfigError(f'data.augmentation: {e}') from None
  except ValueError as e:  # its messages start with the field's name
    raise ConfigError(f'data.augmentation.{e}') from None


def _check_loss(config):
  """The loss's own keys, and what it needs of the data."""
  loss = config.loss
  spec = objectives.get(loss.name)
  spec.check_choices(loss)
  config_rules.check_rules(loss, spec.rules, prefix='loss.',
                           needed_by=f'loss.name={loss.name!r}')
  config_rules.check_rules(loss, OPTIONAL_LOSS_RULES, prefix='loss.')
  if spec.identity_balanced and not config.data.get(
      'identities_per_batch', 0):
    raise ConfigError(
        f'loss.name={loss.name!r} needs P x K batches: set '
        'data.identities_per_batch (P) and data.images_per_identity (K) '
        f'with P * K = batch_size ({config.batch_size})')
  spec.check(config)
  has_attributes = attribute_sources.is_attribute_dataset(config.data.source)
  attribute_loss = spec.attributes
  if attribute_loss and not has_attributes:
    raise ConfigError(f'loss.name={loss.name!r} trains on attributes '
                      f'but data.source={config.data.source!r} has none; use '
                      'an attribute dataset (facejax.data.attribute_sources)')
  if has_attributes and not attribute_loss:
    raise ConfigError(f'data.source={config.data.source!r} is an attribute '
                      f'dataset: use loss.name in {objectives.ATTRIBUTES}')


def _check_optimizer(config):
  """The optimizer builds (optim.build checks its names); the schedule
  decays."""
  try:
    optim.build(config.optimizer, config.total_steps)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  c = config.optimizer
  if (c.get('schedule', 'cosine') != 'constant'
      and c.get('end_learning_rate', 0.0) > c.learning_rate):
    raise ConfigError(f'optimizer.end_learning_rate must be <= '
                      f'optimizer.learning_rate ({c.learning_rate}), got '
                      f'{c.end_learning_rate}')


# What every config.evals entry takes besides its evaluator's arguments.
EVAL_ENTRY_RULES = (('every', integer(0)),  # 0: off
                    ('type', one_of(*evaluators.EVALUATORS)),
                    ('prefix', STRING),
                    ('batch_size', integer(1)))


def _check_evals(config, num_devices):
  """config.eval's verification, each config.evals entry (its type, its
  period, its evaluator's arguments), and a best_metric some evaluator
  records."""
  if config.eval.get('every') and not config.eval.get('bin'):
    config_rules.check_rules(
        config, (('eval.pairs', integer(verification.MIN_PAIRS)),),
        needed_by='eval.every > 0 without eval.bin')
  evals = config.get('evals', {})
  if not hasattr(evals, 'items'):
    raise ConfigError(f'evals must be a dict of name: evaluator, got '
                      f'{evals!r}')
  for name, entry in evals.items():
    key = f'evals.{name}'
    if not hasattr(entry, 'keys'):
      raise ConfigError(f'{key} must be a dict (type, every, the '
                        f'evaluator\'s arguments), got {entry!r}')
    if name == evaluators.LEGACY_NAME and config.eval.get('every'):
      raise ConfigError(f'{key}: {name!r} names config.eval\'s evaluator; '
                        'give this one another name')
    config_rules.check_rules(entry, EVAL_ENTRY_RULES[:1], prefix=f'{key}.',
                             needed_by=key)
    config_rules.check_rules(entry, EVAL_ENTRY_RULES[1:], prefix=f'{key}.')
    kind = evaluators.EVALUATORS[entry.get('type', evaluators.DEFAULT_TYPE)]
    allowed = [k for k, _ in EVAL_ENTRY_RULES + kind.RULES]
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
      raise ConfigError(f'{key}.{unknown[0]}: not a key of this evaluator; '
                        f'it takes {", ".join(allowed)}')
    config_rules.check_rules(entry, kind.RULES, prefix=f'{key}.')
    if entry.get('batch_size', num_devices) % num_devices:
      raise ConfigError(f'{key}.batch_size={entry.batch_size} does not '
                        f'split over the {num_devices} devices')
    kind.check_config(entry, key)
  best = config.get('best_metric', evaluators.DEFAULT_BEST_METRIC)
  if (best != evaluators.DEFAULT_BEST_METRIC
      and evaluators.best_metric(config) is None):
    recorded = ', '.join(evaluators.metric_modes(config)) or 'nothing'
    raise ConfigError(f'best_metric={best!r}: no evaluator of the config '
                      f'records it (they record {recorded})')


def _check_mesh(config, num_devices):
  model_axis = model_axis_size(config, num_devices)
  if model_axis < 1 or num_devices % model_axis:
    raise ConfigError(f'mesh.model={model_axis} does not divide the '
                      f'{num_devices} devices')


def check_config(config, num_devices):
  """Raises :class:`ConfigError` naming the key of the first bad value.

  Checks the config alone (and that the paths it names exist), before any
  data is read; :func:`check_source` checks it against the data.
  """
  config_rules.check_rules(config, CONFIG_RULES)
  _check_batches(config, num_devices)
  _check_mesh(config, num_devices)
  _check_model(config)
  _check_data(config)
  _check_loss(config)
  _check_optimizer(config)
  _check_evals(config, num_devices)
  _check_init_from(config)


def check_source(config, source):
  """Raises :class:`ConfigError` where the config does not fit the opened
  training ``source``: its classes, its size, its identities for P x K
  batches, random access where the loss needs it."""
  wanted = config.get('num_classes', 0)
  if wanted and wanted != source.num_classes:
    raise ConfigError(f'num_classes={wanted} but the data has '
                      f'{source.num_classes} classes')
  sequential = isinstance(source, sources.TFRecords)
  p = config.data.get('identities_per_batch', 0)
  if p and sequential:
    raise ConfigError(f'data.identities_per_batch={p}: P x K batches need '
                      f'random access to each identity\'s examples, which '
                      f'{source} has not; use the image folder or .rec the '
                      'TFRecords were made from')
  if p:
    eligible = int(np.sum(np.bincount(source.labels) >= 2))
    if eligible < p:
      raise ConfigError(f'data.identities_per_batch={p}: P x K batches need '
                        f'{p} identities with >= 2 images, {source} has '
                        f'{eligible}')
  elif config.batch_size > source.num_examples:
    raise ConfigError(f'batch_size={config.batch_size} is larger than the '
                      f'{source.num_examples} examples of {source}')
  if objectives.get(config.loss.name).example_index and sequential:
    raise ConfigError(f'loss.name={config.loss.name!r} looks every '
                      f'example\'s cluster up by its index, which {source} '
                      'has not; use the image folder or .rec the TFRecords '
                      'were made from')
