"""A tiny training config for the engine's tests: seconds, not minutes."""
import os

import jax
import ml_collections
import numpy as np

from train.configs import default


def tiny_config(**overrides):
  """The default config shrunk: 16 identities, a 4-8-wide IResNet, 32x32."""
  c = default.get_config()
  c.total_steps = 4
  c.batch_size = 16
  c.data.synthetic = dict(num_identities=16, images_per_identity=4, seed=0)
  c.data.image_size = 32
  c.model.kwargs = dict(stage_units=(1, 1, 1, 1), stage_features=(4, 4, 8, 8),
                        stem_features=4, embedding_dim=8)
  c.loss.scale = 16.0
  c.optimizer.warmup_steps = 1
  c.eval.every = 0
  c.eval.pairs = 40
  c.eval.batch_size = 16
  c.log_every = 1
  c.checkpoint_every = 2
  for key, value in overrides.items():
    node = c
    *parents, last = key.split('.')
    for name in parents:
      node = node[name]
    node[last] = value
  return c


def leaves(tree):
  """Every leaf as numpy (PRNG keys as their key data)."""
  def plain(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.asarray(jax.device_get(x))
  return [plain(x) for x in jax.tree.leaves(tree)]


def saved_steps(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


NUM_ATTRIBUTES = 6
ADAPTIVE = dict(name='attributes', weighting='adaptive', weighting_every=1,
                weighting_window=1)
LMLE_ATTRIBUTES = dict(name='lmle_attributes', attribute_dim=3,
                       margins=(0.1, 0.1, 0.2), clusters_per_class=2,
                       cluster_every=2)


def attribute_config(loss, **overrides):
  """The tiny config on a tiny synthetic attribute set (32 faces, 5 steps)."""
  config = tiny_config(**dict(dict(total_steps=5), **overrides))
  config.data.source = 'synthetic_attributes'
  config.data.synthetic_attributes = dict(
      train=32, val=16, test=16, num_attributes=NUM_ATTRIBUTES, seed=0,
      image_size=32)
  config.loss = ml_collections.ConfigDict(loss)
  return config
