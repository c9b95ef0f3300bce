"""An imported backbone as an ordinary run workdir.

``config.json`` plus an orbax checkpoint holding the backbone's parameters
and batch statistics where a training run keeps them (``params/backbone``
and ``batch_stats``), with their checksums: every evaluation job,
``eval.extract``, ``Embedder.from_workdir`` and ``init_from`` take the
directory as they take a run's. Only the backbone is there (no class
weights, no optimizer state): to fine-tune, start a run with
``init_from`` set to this directory.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax import inference
from facejax import sharding
from facejax.data import files
from facejax.interop.errors import ConversionError
from facejax.training import checkpoint
from facejax.training import run_directory

IMPORT_STEP = 0


def config_of(conversion, source, source_format, compute_dtype='float32'):
  """The run config of an imported backbone (what the eval jobs read)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype = compute_dtype
  config.model = dict(name=conversion.name, kwargs=conversion.kwargs)
  config.data = dict(source='', image_size=conversion.image_size)
  config.loss = dict(name='imported')  # trained elsewhere: no objective
  config.imported = dict(
      format=source_format, file=os.path.abspath(source),
      sha256=files.sha256_of_file(source), notes=list(conversion.notes))
  return config


def write(workdir, conversion, source, source_format,
          compute_dtype='float32'):
  """Writes ``conversion`` into the new run directory ``workdir``.

  Reads the checkpoint back (restore with checksums, as an evaluation job
  does) and checks that it holds exactly the converted arrays.

  Raises:
    ConversionError: ``workdir`` already holds a run (nothing is changed).
  """
  for existing in (run_directory.CONFIG_FILE, 'checkpoints'):
    if os.path.exists(os.path.join(workdir, existing)):
      raise ConversionError(
          f'{workdir}: already holds a run ({existing}); import into a new '
          'directory')
  config = config_of(conversion, source, source_format, compute_dtype)
  state = dict(params=dict(backbone=conversion.variables['params']),
               batch_stats=conversion.variables.get('batch_stats', {}))
  with checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                               keep_last=1, keep_best=0,
                               async_save=False) as checkpoints:
    checkpoints.save(IMPORT_STEP, state, force=True)
  run_directory.save_config(config, workdir)
  _, restored = inference.restore_backbone(config, workdir, IMPORT_STEP,
                                      sharding.make_mesh())
  saved = jax.tree.map(np.asarray, conversion.variables)
  back = jax.tree.map(np.asarray, restored)
  if jax.tree.structure(saved) != jax.tree.structure(back) or not all(
      np.array_equal(a, b) for a, b in zip(jax.tree.leaves(saved),
                                           jax.tree.leaves(back))):
    raise ConversionError(f'{workdir}: the checkpoint does not read back '
                          'as written')
  return config


def float32_copy(config):
  """``config`` computing in float32 (what an exported graph computes)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.compute_dtype = jnp.dtype(jnp.float32).name
  return config
