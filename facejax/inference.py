"""Embeddings from a trained run: restore the backbone, embed, write features.

    embedder = inference.Embedder.from_workdir('runs/default')
    features = embedder.embed(source)          # (N, D) float32, L2-normalised
    inference.extract(embedder, paths, 'runs/default/features/lfw')

The backbone is restored alone (not the class weights or the optimizer
state) from the run's orbax checkpoint, replicated over every local device
(:func:`restore_backbone`; ``init_from`` fine-tuning starts from it too,
:func:`initialise_from`); batches are split over all devices, the last one
padded and masked, and with ``flip`` each embedding is the sum of the
image's and its mirror image's (insightface's flip test) before L2
normalisation (:func:`embed_source`, which the training loop's in-training
evaluation and LMLE's re-clustering use as well).
"""

import hashlib
import json
import os

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from facejax import models
from facejax import sharding
from facejax.data import device
from facejax.data import pipeline
from facejax.data import sources
from facejax.training import checkpoint
from facejax.training import config_rules
from facejax.training import observe
from facejax.training import run_directory
from facejax.training import step as step_lib

DEFAULT_BATCH_SIZE = 256
FEATURES_FILE = 'features.npy'
FILES_FILE = 'files.txt'
MANIFEST_FILE = 'extract.json'


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


def backbone_variables(state):
  """The backbone's ``{'params', 'batch_stats'}`` in a train state."""
  return dict(params=state.params['backbone'], batch_stats=state.batch_stats)


def initialise_from(state, workdir, mesh):
  """``state`` with the backbone (parameters and batch statistics) of the
  run in ``workdir``; the architectures must match."""
  _, variables = restore_backbone(run_directory.load_config(workdir),
                                  workdir, mesh=mesh)
  shapes = jax.tree.map(np.shape, (state.params['backbone'],
                                   state.batch_stats))
  if jax.tree.map(np.shape, (variables['params'],
                             variables['batch_stats'])) != shapes:
    raise config_rules.ConfigError(
        f'init_from={workdir!r}: its backbone does not match config.model '
        '(different architecture or sizes)')
  target = jax.tree.map(lambda leaf: leaf.sharding,
                        (state.params['backbone'], state.batch_stats))
  params, batch_stats = jax.device_put(
      (variables['params'], variables['batch_stats']), target)
  return state.replace(params=dict(state.params, backbone=params),
                       batch_stats=batch_stats)


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
  batches = pipeline.eval_batches(source, batch_size, image_size=image_size,
                                  flip=flip)
  batch_sharding = sharding.batch_sharding(mesh)
  params, batch_stats = variables['params'], variables['batch_stats']
  done = 0
  for batch in batches:
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


class Embedder:
  """A restored backbone and its jitted embedding function.

  Attributes:
    config: the run's training config.
    model, variables: the backbone and its ``{'params', 'batch_stats'}``.
    mesh: the devices it runs on.
    batch_size: images per global batch.
    step: the checkpoint step (when restored from a workdir).
    workdir: the run's directory (when restored from one).
  """

  def __init__(self, config, model, variables, mesh, batch_size=None,
               step=None, workdir=None):
    self.config, self.model, self.variables = config, model, variables
    self.mesh, self.step, self.workdir = mesh, step, workdir
    self.batch_size = batch_size or DEFAULT_BATCH_SIZE
    if self.batch_size % mesh.size:
      self.batch_size += mesh.size - self.batch_size % mesh.size
    self._embed = step_lib.make_embed(model, mesh, jnp.dtype(
        config.get('compute_dtype', 'float32')))

  @classmethod
  def from_workdir(cls, workdir, step=None, mesh=None, batch_size=None):
    """The backbone of the run in ``workdir`` (newest or given step).

    Raises:
      FileNotFoundError: no config, no checkpoint (or no checkpoint
        ``step``).
      checkpoint.DamagedCheckpointError: the step (by default the newest)
        is incomplete or damaged; the message names it, why, and the newest
        step that looks intact, to pass as ``step``.
    """
    config = run_directory.load_config(workdir)
    mesh = mesh or sharding.make_mesh()
    checkpoints = os.path.join(workdir, 'checkpoints')
    if step is None:
      steps = checkpoint.step_numbers(checkpoints)
      if not steps:
        raise FileNotFoundError(f'{checkpoints}: no checkpoint in it')
      step = steps[-1]
    model, variables = restore_backbone(config, workdir, step, mesh)
    return cls(config, model, variables, mesh, batch_size, step, workdir)

  @property
  def image_size(self):
    return self.config.data.image_size

  def embed(self, source, flip=True, progress=True, normalise=True):
    """(N, D) float32 L2-normalised embeddings of every image of ``source``.

    Args:
      source: a random-access source (:class:`facejax.data.sources.
        ImageFiles`, ``InMemory``, ...).
      flip: add the mirror image's embedding before normalising.
      progress: print a progress line (process 0 only).
      normalise: False: the raw embeddings (the mean of the two views with
        ``flip``), as a head trained on them takes them.
    """
    bar = observe.Progress(source.num_examples, 0, 1, unit='images',
                           enabled=progress and jax.process_index() == 0)
    with jax.set_mesh(self.mesh):
      return embed_source(
          self._embed, self.variables, source, self.mesh, self.batch_size,
          self.image_size, flip=flip,
          progress=lambda done: bar.update(done, {}), normalise=normalise)


def raw_pixel_features(source, image_size, batch_size=DEFAULT_BATCH_SIZE):
  """The raw-pixel baseline's features: (N, S * S * 3) float32.

  Each image at the model's input size, flattened, minus the mean image of
  the set, L2-normalised: cosine similarity of raw pixels, the baseline
  every learned embedding is compared with. Memory is N * S * S * 3 floats.
  """
  rows = np.zeros((source.num_examples, image_size * image_size * 3),
                  np.float32)
  batches = pipeline.eval_batches(source, batch_size, image_size=image_size,
                                  process=pipeline.ProcessShard(0, 1))
  for batch in batches:
    mask = batch['mask']
    rows[batch['index'][mask]] = batch['image'][mask].reshape(mask.sum(), -1)
  rows -= rows.mean(axis=0, dtype=np.float64).astype(np.float32)
  rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
  return rows


def _fingerprint(paths):
  digest = hashlib.sha256()
  for path in paths:
    digest.update(os.fspath(path).encode() + b'\n')
  return digest.hexdigest()


def extract(embedder, paths, out_dir, flip=True, block_size=10_000,
            progress=True, landmarks=None, normalise=True):
  """Embeds image files into ``out_dir``; resumable for large sets.

  Writes ``features.npy`` ((N, D) float32, row i the embedding of
  ``paths[i]``), ``files.txt`` (the paths, one per line) and
  ``extract.json`` (checkpoint, flip, count). Work goes in blocks of
  ``block_size`` images, each saved to ``blocks/NNNNNN.npy`` as it is
  done: a rerun after an interruption skips the finished blocks. A rerun
  with other paths, landmarks, checkpoint step, flip or normalise setting
  is refused rather than mixed.

  ``landmarks`` (N, 5, 2): align each image with its five points first
  (loose crops, as IJB's); ``normalise=False``: the raw embeddings (see
  :meth:`Embedder.embed`).

  Returns:
    The (N, D) features (a read-only memory map of ``features.npy``).
  """
  paths = [os.fspath(p) for p in paths]
  if not paths:
    raise ValueError('extract: no image paths given')
  sources.ImageFiles(paths)  # every file exists, or name the first missing
  os.makedirs(os.path.join(out_dir, 'blocks'), exist_ok=True)
  manifest = dict(files=len(paths), paths_sha256=_fingerprint(paths),
                  flip=bool(flip), step=embedder.step,
                  image_size=embedder.image_size, block_size=block_size)
  if landmarks is not None:
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.shape != (len(paths), 5, 2):
      raise ValueError(f'extract: landmarks {landmarks.shape}, expected '
                       f'({len(paths)}, 5, 2)')
    manifest['landmarks_sha256'] = hashlib.sha256(
        landmarks.tobytes()).hexdigest()
  if not normalise:
    manifest['normalise'] = False
  manifest_path = os.path.join(out_dir, MANIFEST_FILE)
  if os.path.exists(manifest_path):
    with open(manifest_path, encoding='utf-8') as f:
      previous = json.load(f)
    different = {k: (previous.get(k), v) for k, v in manifest.items()
                 if previous.get(k) != v}
    if different:
      raise ValueError(
          f'{manifest_path}: this directory holds features of another '
          f'extraction ({different}); use a new --out directory')
  with open(manifest_path, 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=2)
  blocks = range(0, len(paths), block_size)
  for number, start in enumerate(blocks):
    block_path = os.path.join(out_dir, 'blocks', f'{number:06d}.npy')
    if os.path.exists(block_path):
      continue
    if progress and jax.process_index() == 0 and len(blocks) > 1:
      print(f'block {number + 1}/{len(blocks)}', flush=True)
    features = embedder.embed(sources.ImageFiles(
        paths[start:start + block_size], check_exists=False,
        landmarks=None if landmarks is None
        else landmarks[start:start + block_size]), flip=flip,
                              progress=progress, normalise=normalise)
    if jax.process_index() == 0:
      np.save(block_path + '.tmp.npy', features, allow_pickle=False)
      os.replace(block_path + '.tmp.npy', block_path)
  features_path = os.path.join(out_dir, FEATURES_FILE)
  if jax.process_index() == 0:
    first = np.load(os.path.join(out_dir, 'blocks', '000000.npy'))
    merged = np.lib.format.open_memmap(
        features_path + '.tmp.npy', mode='w+', dtype=np.float32,
        shape=(len(paths), first.shape[1]))
    for number, start in enumerate(blocks):
      merged[start:start + block_size] = np.load(
          os.path.join(out_dir, 'blocks', f'{number:06d}.npy'),
          allow_pickle=False)
    merged.flush()
    del merged
    os.replace(features_path + '.tmp.npy', features_path)
    with open(os.path.join(out_dir, FILES_FILE), 'w', encoding='utf-8') as f:
      f.write(''.join(p + '\n' for p in paths))
  if jax.process_count() > 1:  # the others read what process 0 wrote
    multihost_utils.sync_global_devices('facejax.inference.extract')
  return np.load(features_path, mmap_mode='r', allow_pickle=False)


def load_features(out_dir):
  """(features, paths) written by :func:`extract`."""
  features = np.load(os.path.join(out_dir, FEATURES_FILE), mmap_mode='r',
                     allow_pickle=False)
  with open(os.path.join(out_dir, FILES_FILE), encoding='utf-8') as f:
    paths = f.read().splitlines()
  if len(paths) != len(features):
    raise ValueError(f'{out_dir}: {len(features)} features but '
                     f'{len(paths)} paths in {FILES_FILE}')
  return features, paths
