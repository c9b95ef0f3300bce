"""The train state: one pytree, its initialisation and its shardings.

    TrainState(step, params={'backbone', 'head'}, batch_stats, opt_state,
               extra, rng)

``params['head']`` holds the class weights W (D, C) of a classification
loss, split over the mesh's ``'model'`` axis like its optimizer state;
``extra`` holds non-learned loss state (the center loss's centres); ``rng``
is a typed PRNG key for dropout. Everything else is replicated, except with
``shard_backbone``: then large backbone parameters and their optimizer
state are split over every device (FSDP, :func:`facejax.sharding.
fully_sharded_spec`). Parameters and optimizer state are float32 whatever
the compute dtype.

Initialisation follows big_vision: the abstract state first
(``jax.eval_shape``, no compute), then the shardings from it, then one
jitted init whose outputs land directly in those shardings.
"""

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from facejax import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: object
  extra: dict
  rng: jax.Array


def initial_state(key, model, objective, optimizer, image_shape):
  """A fresh TrainState (traceable: jit it with out_shardings)."""
  model_key, head_key, rng = jax.random.split(key, 3)
  variables = model.init(model_key, jnp.zeros((1,) + tuple(image_shape)))
  params = dict(backbone=variables['params'],
                head=objective.init_head(head_key))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=optimizer.init(params),
                    extra=objective.init_extra(), rng=rng)


def _path_names(path):
  return [getattr(entry, 'key', getattr(entry, 'name', None))
          for entry in path]


def state_shardings(abstract_state, objective, mesh, shard_backbone=False):
  """NamedShardings for every leaf of the (abstract) state.

  Class weights, and every optimizer-state leaf of the same shape found
  under a ``class_weights`` key (momentum, Adam moments), are split by
  columns over ``'model'``; with ``shard_backbone``, backbone parameters
  and the optimizer-state leaves under a ``backbone`` key are fully
  sharded; the rest is replicated.
  """
  replicated = NamedSharding(mesh, P())
  head = objective.head_shardings(mesh)
  weight_sharding = head.get('class_weights')

  def leaf_sharding(path, leaf):
    names = _path_names(path)
    if weight_sharding is not None and 'class_weights' in names and getattr(
        leaf, 'ndim', 0) == 2:
      return weight_sharding
    if shard_backbone and 'backbone' in names and getattr(leaf, 'ndim', 0):
      return NamedSharding(mesh, sharding.fully_sharded_spec(
          leaf.shape, mesh.size))
    return replicated
  shardings = jax.tree_util.tree_map_with_path(leaf_sharding, abstract_state)
  extra = objective.extra_shardings(mesh)
  return shardings.replace(extra={k: extra[k] for k in
                                  abstract_state.extra})


def _abstract_and_shardings(key, model, objective, optimizer, image_shape,
                            mesh, shard_backbone):
  def init(key):
    return initial_state(key, model, objective, optimizer, image_shape)
  abstract = jax.eval_shape(init, key)
  return init, abstract, state_shardings(abstract, objective, mesh,
                                         shard_backbone)


def create(key, model, objective, optimizer, image_shape, mesh,
           shard_backbone=False):
  """(state, shardings): the state initialised in place on the mesh."""
  init, _, shardings = _abstract_and_shardings(
      key, model, objective, optimizer, image_shape, mesh, shard_backbone)
  return jax.jit(init, out_shardings=shardings)(key), shardings


def abstract_state(key, model, objective, optimizer, image_shape, mesh,
                   shard_backbone=False):
  """The state's shapes, dtypes and shardings, with no compute (restore)."""
  _, abstract, shardings = _abstract_and_shardings(
      key, model, objective, optimizer, image_shape, mesh, shard_backbone)
  return jax.tree.map(
      lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                           sharding=s),
      abstract, shardings)
