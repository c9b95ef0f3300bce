"""The training loop: config -> data, model, objective, state -> steps.

Read top to bottom, as big_vision's train.py:

1. check the config (every error names its key, the value and what is
   allowed): the config alone before any data is read, then against the
   opened data, both before anything compiles;
2. the mesh, the data source, the model and the objective;
3. the workdir's lock (one trainer per workdir), the abstract state, its
   shardings, and the state: restored from the workdir's newest intact
   checkpoint when there is one (onto this mesh, whatever mesh wrote it;
   damaged steps are moved aside, see :mod:`facejax.training.checkpoint`),
   else freshly initialised in place; what an interrupted run logged after
   the restored step is dropped, as the steps are redone;
4. the input pipeline from the restored step (same seed, same order: a
   resumed run sees exactly the batches an uninterrupted one would);
5. steps, with a progress line and metrics every ``log_every`` steps, a
   verification accuracy on held-out pairs every ``eval_every`` steps, and a
   checkpoint every ``checkpoint_every`` steps and at the end; between
   steps, LMLE's re-clustering and the adaptive task weights' validation
   records, on their schedules (both in the state, so a resumed run
   repeats them exactly).

``init_from`` (a workdir) starts a fresh run from another run's backbone
(e.g. attributes fine-tuned from an identity model), as LMLE initialises
its clusters from a pretrained model's features.

A non-finite loss stops the run with :class:`NonFiniteLossError` before
anything is saved: losses are checked before every checkpoint.
"""

import contextlib
import dataclasses
import json
import math
import os
import sys
from typing import Any, Callable, NamedTuple

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax import models
from facejax import sharding
from facejax.data import attribute_sources
from facejax.data import augment
from facejax.data import celeba
from facejax.data import device
from facejax.data import pipeline
from facejax.data import sources
from facejax.data import synthetic
from facejax.losses import attributes as attribute_losses
from facejax.training import adaptive_weighting
from facejax.training import checkpoint
from facejax.training import clusters as clusters_lib
from facejax.training import objectives
from facejax.training import observe
from facejax.training import optim
from facejax.training import state as state_lib
from facejax.training import step as step_lib
from facejax.training import workdir_lock


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite; no checkpoint was written after it."""


class ConfigError(ValueError):
  """A config value that cannot work, named by its key."""


class WorkdirInUseError(ConfigError):
  """Another live trainer holds ``--workdir`` (the message names its pid,
  host and start time); ``python -m train`` prints it without a traceback,
  as every :class:`ConfigError`."""


@dataclasses.dataclass
class Run:
  """What :func:`train` built and ended with (for tests and eval jobs)."""
  state: object
  mesh: object
  model: object
  objective: object
  source: object
  history: list
  workdir: str


def training_source(data_config):
  """The training source of ``config.data``: synthetic, an attribute
  dataset's train split (:mod:`facejax.data.attribute_sources`), or a
  path."""
  if attribute_sources.is_attribute_dataset(data_config.source):
    return attribute_sources.open_split(data_config, 'train')
  if data_config.source == 'synthetic':
    s = data_config.synthetic
    return sources.synthetic_source(s.num_identities, s.images_per_identity,
                                    seed=s.seed)
  return sources.open_source(data_config.source,
                             landmarks_file=data_config.get('landmarks_file')
                             or None)


def model_axis_size(config, num_devices):
  """``config.mesh.model``, with -1 meaning every device."""
  size = config.get('mesh', {}).get('model', 1)
  return num_devices if size == -1 else size


# ---------------------------------------------------------------------------
# The config check. Every error names its key, the bad value and what the key
# allows; check_config runs before any data is read or rendered,
# check_source on the opened data, both before anything is compiled.


def _is_integer(value):
  return (isinstance(value, (int, np.integer))
          and not isinstance(value, (bool, np.bool_)))


def _is_number(value):
  return ((_is_integer(value) or isinstance(value, (float, np.floating)))
          and math.isfinite(value))


def _is_three_numbers(value):
  return (isinstance(value, (tuple, list)) and len(value) == 3
          and all(_is_number(v) for v in value))


class Allowed(NamedTuple):
  """What a config key accepts: a kind of value and a range of it.

  Attributes:
    kind: the kind in words ('an integer', "one of 'sgd', 'adamw'", ...).
    is_kind: the test of the kind.
    description: the range in words ('>= 1', 'in (0, 1]'), '' for any.
    in_range: the test of the range, for a value of the right kind.
  """
  kind: str
  is_kind: Callable[[Any], bool]
  description: str = ''
  in_range: Callable[[Any], bool] = lambda value: True

  def error(self, key, value):
    """The message for ``key=value``, or None when the value is allowed."""
    if not self.is_kind(value):
      allowed = ' '.join(filter(None, (self.kind, self.description)))
      return f'{key} must be {allowed}, got {value!r}'
    if not self.in_range(value):
      return f'{key} must be {self.description}, got {value!r}'
    return None


def _interval(low, high=None, low_open=False, high_open=False):
  """(description, test) of the interval from ``low`` to ``high`` (None: no
  upper end); the ends are included unless open."""
  def test(value):
    above = value > low if low_open else value >= low
    below = high is None or (value < high if high_open else value <= high)
    return above and below
  if high is None:
    return f'{">" if low_open else ">="} {low}', test
  return (f'in {"(" if low_open else "["}{low}, {high}'
          f'{")" if high_open else "]"}'), test


def integer(low, high=None):
  """An integer >= ``low`` (and <= ``high``)."""
  return Allowed('an integer', _is_integer, *_interval(low, high))


def number(low, high=None, low_open=False, high_open=False):
  """A finite number from ``low`` to ``high`` (None: no upper end)."""
  return Allowed('a finite number', _is_number,
                 *_interval(low, high, low_open, high_open))


def one_of(*choices):
  """One of the strings ``choices``."""
  return Allowed(f'one of {", ".join(map(repr, choices))}',
                 lambda value: isinstance(value, str) and value in choices)


INTEGER = Allowed('an integer', _is_integer)
NUMBER = Allowed('a finite number', _is_number)
STRING = Allowed('a string', lambda value: isinstance(value, str))
BOOLEAN = Allowed('True or False',
                  lambda value: isinstance(value, (bool, np.bool_)))
MARGINS = Allowed('three finite numbers (g1, g2, g3)', _is_three_numbers,
                  '>= 0', lambda value: min(value) >= 0)
COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')
# LFW's protocol: 10 folds, each with a same and a different pair.
MIN_EVAL_PAIRS = 20

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
# The keys each loss reads, all required (a loss switched on the command
# line finds the keys of the config's old loss only).
_SCALE = number(0, low_open=True)
_MARGIN = number(0)
_LMLE_RULES = (('margins', MARGINS), ('clusters_per_class', integer(1)),
               ('cluster_every', integer(1)))
LOSS_RULES = {
    'softmax': (),
    'arcface': (('scale', _SCALE), ('margin', _MARGIN)),
    'cosface': (('scale', _SCALE), ('margin', _MARGIN)),
    'combined': (('scale', _SCALE), ('m1', number(0, low_open=True)),
                 ('m2', _MARGIN), ('m3', _MARGIN)),
    'sphereface': (('sphereface_m', integer(1)), ('lambda_base', number(0)),
                   ('lambda_gamma', number(0)), ('lambda_power', number(0)),
                   ('lambda_min', number(0))),
    'center': (('center_weight', number(0)),
               ('center_alpha', number(0, 1, low_open=True))),
    'triplet_batch_hard': (('margin', _MARGIN),),
    'triplet_soft': (('margin', _MARGIN),),  # read, then ignored
    'triplet_batch_all': (('margin', _MARGIN),),
    'lifted': (('margin', _MARGIN),),
    'contrastive': (('margin', _MARGIN),),
    'lmle': _LMLE_RULES,
    'attributes': (),
    'lmle_attributes': (('attribute_dim', integer(1)),) + _LMLE_RULES,
}
ADAPTIVE_WEIGHTING_RULES = (('weighting_every', integer(1)),
                            ('weighting_window', integer(1)))
# Optional loss keys (defaults in objectives.py), checked where set.
OPTIONAL_LOSS_RULES = (('sample_rate', number(0, 1, low_open=True)),
                       ('normalise', BOOLEAN),
                       ('cluster_iterations', integer(1)))
# The smallest image side of each backbone: its total stride (four stride-2
# stages: 16 gives 1x1 maps; SAME-padded, IResNet, SphereFace and
# MobileFaceNet still run below it, on maps of padding), or what its
# unpadded layers need (DeepID2's conv4, VGG-Face's five poolings).
MIN_IMAGE_SIZE = dict(center_loss_cnn=16, deepid2=31, mobilefacenet=16,
                      sphereface20=16, vgg_face=32)
_MISSING = object()


def _lookup(config, key):
  """``config``'s value at the dotted ``key``, or ``_MISSING``."""
  node = config
  for name in key.split('.'):
    if not hasattr(node, 'keys') or name not in node:
      return _MISSING
    node = node[name]
  return node


def _check_rules(config, rules, prefix='', needed_by=None):
  """Every ``(key, Allowed)`` rule on ``config[key]`` (named ``prefix +
  key`` in errors); a missing key is skipped, or an error naming what needs
  it (``needed_by``)."""
  for key, allowed in rules:
    value = _lookup(config, key)
    if value is _MISSING and needed_by:
      wanted = ' '.join(filter(None, (allowed.kind, allowed.description)))
      raise ConfigError(f'{prefix}{key} is missing: {needed_by} needs it '
                        f'({wanted})')
    if value is _MISSING:
      continue
    message = allowed.error(prefix + key, value)
    if message:
      raise ConfigError(message)


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
    build_model(config)
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
    if _lookup(config, key) not in (_MISSING, ''):
      paths.append((key, _lookup(config, key)))
  for key, path in paths:
    if not os.path.exists(path):
      kinds = (f' (synthetic, {attribute_sources.SYNTHETIC}, '
               f'{attribute_sources.CELEBA_PREFIX}<root>, '
               f'{attribute_sources.TFDS}, an image folder, a .rec or a '
               'TFRecords folder)') if key == 'data.source' else ''
      value = _lookup(config, key)
      where = f'{key}={value!r}' + (f': {path}' if path != value else '')
      raise ConfigError(f'{where} does not exist{kinds}')


def _check_init_from(config):
  workdir = config.get('init_from')
  if not workdir:
    return
  checkpoints = os.path.join(workdir, 'checkpoints')
  names = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
  if not (os.path.isfile(os.path.join(workdir, CONFIG_FILE))
          and any(name.isdigit() for name in names)):
    raise ConfigError(f'init_from={workdir!r}: not the workdir of a run '
                      f'with a checkpoint (no {CONFIG_FILE} and '
                      'checkpoints/<step> in it)')


def _check_data(config):
  spec = config.data.source
  if spec == 'synthetic':
    _check_rules(config, SYNTHETIC_RULES)
  if spec == attribute_sources.SYNTHETIC:
    _check_rules(config, SYNTHETIC_ATTRIBUTE_RULES)
  if attribute_sources.is_attribute_dataset(spec):
    _check_rules(config, ATTRIBUTE_DATA_RULES)
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
  try:
    objectives.check_choices(loss)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _check_rules(loss, LOSS_RULES[loss.name], prefix='loss.',
               needed_by=f'loss.name={loss.name!r}')
  _check_rules(loss, OPTIONAL_LOSS_RULES, prefix='loss.')
  if loss.name == 'attributes' and loss.get('weighting') == 'adaptive':
    _check_rules(loss, ADAPTIVE_WEIGHTING_RULES, prefix='loss.',
                 needed_by="loss.weighting='adaptive'")
  if loss.name in objectives.METRIC_LEARNING and not config.data.get(
      'identities_per_batch', 0):
    raise ConfigError(
        f'loss.name={loss.name!r} needs P x K batches: set '
        'data.identities_per_batch (P) and data.images_per_identity (K) '
        f'with P * K = batch_size ({config.batch_size})')
  k = config.data.get('images_per_identity', 0)
  if loss.name == 'lmle' and k < 4:
    raise ConfigError('loss.name=lmle needs data.images_per_identity >= 4 '
                      f'(two clusters with two images each per identity), '
                      f'got {k}')
  has_attributes = attribute_sources.is_attribute_dataset(config.data.source)
  attribute_loss = loss.name in objectives.ATTRIBUTES
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


def _check_eval(config):
  if config.eval.get('every') and not config.eval.get('bin'):
    _check_rules(config, (('eval.pairs', integer(MIN_EVAL_PAIRS)),),
                 needed_by='eval.every > 0 without eval.bin')


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
  _check_rules(config, CONFIG_RULES)
  _check_batches(config, num_devices)
  _check_mesh(config, num_devices)
  _check_model(config)
  _check_data(config)
  _check_loss(config)
  _check_optimizer(config)
  _check_eval(config)
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
  if config.loss.name in ('lmle', 'lmle_attributes') and sequential:
    raise ConfigError(f'loss.name={config.loss.name!r} looks every '
                      f'example\'s cluster up by its index, which {source} '
                      'has not; use the image folder or .rec the TFRecords '
                      'were made from')


def build_model(config):
  """The backbone of ``config.model``, computing in ``compute_dtype``."""
  kwargs = dict(config.model.get('kwargs', {}))
  kwargs['dtype'] = jnp.dtype(config.get('compute_dtype', 'float32'))
  return models.get(config.model.name, **kwargs)


def embedding_dim(model, image_shape):
  """The model's embedding size, from shapes alone (no compute)."""
  def embed_one(key):
    images = jnp.zeros((1,) + tuple(image_shape))
    return model.apply(model.init(key, images), images)
  return jax.eval_shape(embed_one, jax.random.key(0)).shape[-1]


def verification_set(eval_config):
  """The in-training pair set: (source, first, second, issame).

  ``eval.bin``: an insightface ``.bin`` (lfw.bin, cfp_fp.bin, ...); else
  ``eval.pairs`` pairs of held-out synthetic identities.
  """
  if eval_config.get('bin'):
    return sources.verification_bin(eval_config.bin)
  pairs = eval_config.pairs
  images_a, images_b, issame = synthetic.verification_pairs(
      pairs, seed=eval_config.get('seed', 0))
  source = sources.InMemory(np.concatenate([images_a, images_b]),
                            np.zeros(2 * pairs, np.int32),
                            name='held-out synthetic pairs')
  return source, np.arange(pairs), np.arange(pairs, 2 * pairs), issame


def embed_source(embed, variables, source, mesh, batch_size, image_size,
                 flip=True, progress=None, normalise=True):
  """L2-normalised embeddings of every image of ``source``, (N, D) float32.

  Args:
    embed: :func:`facejax.training.step.make_embed`'s function.
    variables: ``{'params', 'batch_stats'}`` of the backbone.
    source: a random-access source (:mod:`facejax.data.sources`).
    mesh: the device mesh; batches are split over all of its devices, the
      last one padded and the padding masked out.
    batch_size: images per global batch.
    image_size: the model's input side.
    flip: test-time augmentation: the sum of the embeddings of the image and
      its mirror image (insightface's flip test).
    progress: optional callable ``progress(images_done)``.
    normalise: False: the raw embeddings instead (with ``flip``, the mean
      of the two views), e.g. for a head trained on them.
  """
  features = None
  batches = pipeline.eval_dataset(source, batch_size, image_size=image_size,
                                  flip=flip)
  batch_sharding = sharding.batch_sharding(mesh)
  params, batch_stats = variables['params'], variables['batch_stats']
  done = 0
  for batch in batches.as_numpy_iterator():
    views = dict(image=batch['image'])
    if flip:
      views['flipped'] = batch['image_flipped']
    views = device.to_global(views, batch_sharding)
    summed = sum(embed(params, batch_stats, view) for view in views.values())
    index, mask = batch['index'], batch['mask']
    if jax.process_count() > 1:  # every process gets the whole batch
      summed = multihost_utils.process_allgather(summed, tiled=True)
      index = multihost_utils.process_allgather(index, tiled=True)
      mask = multihost_utils.process_allgather(mask, tiled=True)
    summed = np.asarray(jax.device_get(summed))
    if features is None:
      features = np.zeros((source.num_examples, summed.shape[1]), np.float32)
    features[index[mask]] = summed[mask]
    done += int(mask.sum())
    if progress:
      progress(done)
  if not normalise:
    return features / len(views)
  return features / np.maximum(
      np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def backbone_variables(state):
  """The backbone's ``{'params', 'batch_stats'}`` in a train state."""
  return dict(params=state.params['backbone'], batch_stats=state.batch_stats)


def verification_accuracy(embed, state, verification, mesh, batch_size,
                          image_size):
  """LFW-protocol 10-fold accuracy of the current model on the pairs."""
  source, first, second, issame = verification
  features = embed_source(embed, backbone_variables(state), source, mesh,
                          batch_size, image_size)
  scores = np.sum(features[first] * features[second], axis=1)
  return synthetic.ten_fold_accuracy(scores, issame)[0]


CONFIG_FILE = 'config.json'


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


def restore_backbone(config, workdir, step=None, mesh=None):
  """(model, variables) of a run's checkpoint, for evaluation or fine-tuning.

  Restores only the backbone's parameters and batch statistics (not the
  class weights or the optimizer state), replicated over ``mesh`` (default:
  every device), from the latest or the given step, verified against the
  step's checksums; changes nothing in ``workdir`` (another trainer may be
  writing it).

  Raises:
    FileNotFoundError: no checkpoint (or no checkpoint ``step``).
    checkpoint.DamagedCheckpointError: the step is incomplete or damaged
      (the message names it, why, and the newest step that looks intact).
  """
  mesh = mesh or sharding.make_mesh()
  model = build_model(config)
  size = config.data.image_size
  images = jnp.zeros((1, size, size, 3))
  abstract = jax.eval_shape(model.init, jax.random.key(0), images)
  replicated = sharding.replicated(mesh)
  abstract = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                        sharding=replicated), abstract)
  checkpoints = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                        read_only=True)
  try:
    params = checkpoints.restore_subtree(abstract['params'],
                                         ('params', 'backbone'), step)
    batch_stats = checkpoints.restore_subtree(
        abstract.get('batch_stats', {}), ('batch_stats',), step)
  finally:
    checkpoints.close()
  return model, dict(params=params, batch_stats=batch_stats)


def _note(message):
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
    _note(f'workdir: took over {lock.path} from '
          f'{workdir_lock.describe(lock.previous)}, which is no longer '
          'running (killed or crashed)')
  try:
    yield lock
  finally:
    lock.release()


def open_checkpoints(config, workdir):
  """The run's :class:`checkpoint.Checkpointer` (damaged steps moved aside).

  An asynchronous save may run in the background during at most half a
  checkpoint interval of steps (at least 1): a crash at any moment loses at
  most ``checkpoint_every + max(1, checkpoint_every // 2)`` steps.
  """
  return checkpoint.Checkpointer(
      os.path.join(workdir, 'checkpoints'),
      keep_last=config.get('keep_last', 2),
      keep_best=1 if config.eval.get('every') else 0,
      best_metric='verification_accuracy',
      max_lag_steps=max(1, config.checkpoint_every // 2),
      report=lambda message: _note(f'checkpoints: {message}'))


def local_copy(tree):
  """Numpy copies of replicated arrays (this process's first shard: with
  several processes the global arrays are not fully addressable)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def attribute_features(features, projection):
  """(A, N, d) numpy: every attribute's LMLE embedding of ``features``."""
  return np.asarray(jax.device_get(attribute_losses.attribute_embeddings(
      jnp.asarray(features), jnp.asarray(projection))))


def recluster(embed, state, source, mesh, config, step):
  """LMLE's alternation: the state with every example's cluster refreshed.

  k-means within each class (``loss.clusters_per_class``) on the current
  model's embeddings of the whole training source (for
  ``lmle_attributes``: within each attribute's two classes, in each
  attribute's own embedding); the draw is seeded by (seed, step), so a
  resumed run re-clusters exactly as an uninterrupted one.
  """
  k = config.loss.clusters_per_class
  iterations = config.loss.get('cluster_iterations', 20)
  if config.loss.name == 'lmle_attributes':
    features = embed_source(embed, backbone_variables(state), source, mesh,
                            config.eval.batch_size, config.data.image_size,
                            flip=False, normalise=False)
    per_attribute = attribute_features(
        features, local_copy(state.params['head']['attribute_projection']))
    assignments = np.stack([clusters_lib.within_class_kmeans(
        per_attribute[a], source.attributes[:, a].astype(np.int32), k,
        num_classes=2, iterations=iterations,
        seed=(config.seed, step, a)).assignments
                            for a in range(len(per_attribute))])
  else:
    features = embed_source(embed, backbone_variables(state), source, mesh,
                            config.eval.batch_size, config.data.image_size)
    assignments = clusters_lib.within_class_kmeans(
        features, source.labels, k, num_classes=source.num_classes,
        iterations=iterations, seed=(config.seed, step)).assignments
  assignments = jax.device_put(assignments, sharding.replicated(mesh))
  return state.replace(extra=dict(state.extra, clusters=assignments))


def validation_task_losses(embed, state, source, mesh, config):
  """(A,) float32: each attribute's sigmoid cross-entropy on ``source``."""
  features = embed_source(embed, backbone_variables(state), source, mesh,
                          config.eval.batch_size, config.data.image_size,
                          flip=False, normalise=False)
  head = local_copy(state.params['head'])
  logits = attribute_losses.attribute_logits(
      jnp.asarray(features), jnp.asarray(head['attribute_weights']),
      jnp.asarray(head['attribute_bias']))
  return np.asarray(attribute_losses.per_task_sigmoid_cross_entropy(
      logits, jnp.asarray(source.attributes)))


def record_validation(embed, state, source, mesh, config):
  """The state with one validation record added to the adaptive task
  weighting (He et al. 2017), which updates the weights on its schedule."""
  losses = validation_task_losses(embed, state, source, mesh, config)
  weighting = adaptive_weighting.record(
      adaptive_weighting.State(**state.extra['task_weighting']),
      jax.device_put(losses, sharding.replicated(mesh)))
  return state.replace(extra=dict(state.extra,
                                  task_weighting=weighting._asdict()))


def initialise_from(state, workdir, mesh):
  """``state`` with the backbone (parameters and batch statistics) of the
  run in ``workdir``; the architectures must match."""
  _, variables = restore_backbone(load_config(workdir), workdir, mesh=mesh)
  shapes = jax.tree.map(np.shape, (state.params['backbone'],
                                   state.batch_stats))
  if jax.tree.map(np.shape, (variables['params'],
                             variables['batch_stats'])) != shapes:
    raise ConfigError(f'init_from={workdir!r}: its backbone does not match '
                      'config.model (different architecture or sizes)')
  target = jax.tree.map(lambda leaf: leaf.sharding,
                        (state.params['backbone'], state.batch_stats))
  params, batch_stats = jax.device_put(
      (variables['params'], variables['batch_stats']), target)
  return state.replace(params=dict(state.params, backbone=params),
                       batch_stats=batch_stats)


def _check_finite(pending, step):
  losses = np.asarray(jax.device_get([m['loss'] for m in pending]))
  if not np.isfinite(losses).all():
    first = int(np.flatnonzero(~np.isfinite(losses))[0])
    raise NonFiniteLossError(
        f'the loss became {losses[first]} at step '
        f'{step - len(pending) + first + 1}; stopped without saving a '
        'checkpoint after it (lower the learning rate, or check the data)')


def train(config, workdir, mesh=None, log=True, stop_at=None):
  """Trains ``config`` in ``workdir`` (resuming from it); returns a Run.

  Args:
    config: the training config (see ``train/configs/default.py``).
    workdir: checkpoints, ``metrics.jsonl`` and TensorBoard events.
    mesh: default :func:`facejax.sharding.make_mesh` with ``config.mesh``.
    log: print progress (process 0 only in any case).
    stop_at: stop after this step, with a checkpoint, as if interrupted
      (the schedule still runs to ``config.total_steps``).

  Raises:
    ConfigError: a config value that cannot work, named by its key.
    WorkdirInUseError: another trainer holds ``workdir`` (a ConfigError).
    NonFiniteLossError: the loss became NaN or infinite.
  """
  devices = jax.devices()
  check_config(config, len(devices))  # before any data is read
  source = training_source(config.data)
  check_source(config, source)  # before anything compiles
  num_classes = source.num_classes
  mesh = mesh or sharding.make_mesh(model=model_axis_size(config,
                                                         len(devices)))
  model = build_model(config)
  image_shape = (config.data.image_size, config.data.image_size, 3)
  key = jax.random.key(config.seed)
  objective = objectives.Objective(config.loss, num_classes,
                                   embedding_dim(model, image_shape),
                                   class_shards=mesh.shape[sharding.MODEL],
                                   num_examples=source.num_examples,
                                   num_attributes=len(getattr(
                                       source, 'attribute_names', ())))
  optimizer, learning_rate = optim.build(config.optimizer, config.total_steps)
  first = jax.process_index() == 0  # the only process that writes
  with hold_workdir(workdir, enabled=first), jax.set_mesh(mesh):
    if first:  # what evaluation jobs rebuild the model from
      save_config(config, workdir)
    shard_backbone = config.get('mesh', {}).get('shard_backbone', False)
    abstract = state_lib.abstract_state(key, model, objective, optimizer,
                                        image_shape, mesh, shard_backbone)
    checkpoints = open_checkpoints(config, workdir)
    state, resumed = checkpoints.restore_latest(abstract)
    if state is not None:
      shardings = jax.tree.map(lambda leaf: leaf.sharding, abstract)
      if first and log:
        print(f'resuming from step {resumed} '
              f'({checkpoints.directory / str(resumed)})', file=sys.stderr,
              flush=True)
    else:
      state, shardings = state_lib.create(key, model, objective, optimizer,
                                          image_shape, mesh, shard_backbone)
      if config.get('init_from'):
        state = initialise_from(state, config.init_from, mesh)
    start = int(jax.device_get(state.step))
    train_step = step_lib.make_train_step(
        model, objective, optimizer, mesh, shardings,
        compute_dtype=jnp.dtype(config.get('compute_dtype', 'float32')),
        micro_batches=config.get('micro_batches', 1))
    embed = step_lib.make_embed(model, mesh, jnp.dtype(
        config.get('compute_dtype', 'float32')))
    verification = (verification_set(config.eval)
                    if config.eval.get('every') else None)
    validation = (attribute_sources.open_split(config.data, 'val')
                  if objective.adapts_task_weights else None)
    skipped = pipeline.SkippedImages()
    balanced = config.data.get('identities_per_batch', 0) or None
    dataset = pipeline.train_dataset(
        source, config.batch_size, seed=config.seed,
        image_size=config.data.image_size,
        augmentation=augment.Augmentation(**config.data.augmentation),
        identities_per_batch=balanced,
        images_per_identity=(config.data.images_per_identity
                             if balanced else None),
        start_step=start, skipped=skipped, num_classes=num_classes,
        with_index=objective.needs_example_index)
    end = min(config.total_steps, stop_at or config.total_steps)
    batches = device.device_batches(
        dataset.take(max(end - start, 0)).as_numpy_iterator(),
        sharding.batch_sharding(mesh))
    progress = observe.Progress(config.total_steps, start,
                                config.batch_size, enabled=first and log)
    writer = observe.MetricWriter(workdir, enabled=first, resume_step=start)
    if writer.dropped:
      _note(f'{observe.METRICS_FILE}: dropped {writer.dropped} records '
            f'after step {start} (the interrupted run logged them; they are '
            'redone now)')
    history, pending = [], []
    step = start
    try:
      for batch in batches:
        checkpoints.wait_if_behind(step)  # bounds the work a crash loses
        if objective.reclusters and step % config.loss.cluster_every == 0:
          state = recluster(embed, state, source, mesh, config, step)
        if (objective.adapts_task_weights
            and step % config.loss.weighting_every == 0):
          state = record_validation(embed, state, validation, mesh, config)
        state, metrics = train_step(state, batch)
        step += 1
        pending.append(metrics)
        last = step == end
        if step % config.log_every == 0 or last:
          _check_finite(pending, step)
          values = {k: float(v) for k, v in jax.device_get(
              pending[-1]).items()}
          values['learning_rate'] = float(learning_rate(step - 1))
          values['images_per_second'] = progress.update(
              step, dict(loss=values['loss'],
                         lr=values['learning_rate']))
          values['skipped_images'] = skipped.count
          pending = []
          if config.eval.get('every') and (
              step % config.eval.every == 0 or last):
            values['verification_accuracy'] = verification_accuracy(
                embed, state, verification, mesh, config.eval.batch_size,
                config.data.image_size)
          writer.write(step, values)
          history.append(dict(values, step=step))
        if step % config.checkpoint_every == 0 or last:
          if pending:
            _check_finite(pending, step)
          saved = {k: v for k, v in (history[-1] if history else {}).items()
                   if k == 'verification_accuracy'}
          checkpoints.save(step, state, metrics=saved or None, force=last)
          writer.flush()  # a crash keeps the events of every saved step
    finally:
      checkpoints.wait()
      checkpoints.close()
      writer.close()
    if skipped.count and first and log:
      print(f'input: {skipped}', flush=True)
  return Run(state=state, mesh=mesh, model=model, objective=objective,
             source=source, history=history, workdir=workdir)
