"""Metric-learning objectives: losses of the whole P x K global batch.

They need identity-balanced P x K batches (the data config's
``identities_per_batch``, ``images_per_identity``) and compute on the
whole, replicated batch:

  ``triplet_batch_hard``  hardest positive and negative, hinge (margin)
  ``triplet_soft``        the same with the soft margin log(1 + e^x)
  ``triplet_batch_all``   every valid triplet, mean over the non-zero ones
  ``lifted``              generalised lifted structure (margin)
  ``contrastive``         DeepID2's verification loss over every pair of
                          the batch (margin)
  ``lmle``                LMLE's triple-header hinge on quintuplets
                          (Huang et al. 2016; margins (g1, g2, g3)): each
                          example's cluster (k-means within its class,
                          ``clusters_per_class``) is carried in the train
                          state and refreshed between steps every
                          ``cluster_every`` steps with the model being
                          trained (:func:`recluster`,
                          :mod:`facejax.training.clusters`)

They see L2-normalised embeddings (FaceNet's ||f|| = 1;
``loss.normalise=False`` turns that off).
"""

import functools

import jax
import jax.numpy as jnp

from facejax import inference
from facejax import sharding
from facejax.losses import contrastive
from facejax.losses import distances
from facejax.losses import lmle
from facejax.losses import triplet
from facejax.training import clusters as clusters_lib
from facejax.training import config_rules
from facejax.training.objectives import common

MARGIN = config_rules.number(0)
# LMLE's keys, for identities and for attributes alike.
LMLE_RULES = (('margins', config_rules.MARGINS),
              ('clusters_per_class', config_rules.integer(1)),
              ('cluster_every', config_rules.integer(1)))
LMLE_MIN_IMAGES_PER_IDENTITY = 4  # two clusters of two images per identity
DEFAULT_CLUSTER_ITERATIONS = 20


def _normalised(objective, inputs):
  """FaceNet's ||f|| = 1, unless ``loss.normalise`` is False."""
  if not objective.config.get('normalise', True):
    return inputs
  return inputs._replace(embeddings=distances.l2_normalize(inputs.embeddings))


def batch_loss(function, *rules):
  """The spec of ``function(embeddings, labels, *values)`` on the whole,
  replicated and normalised P x K batch, its ``values`` the ``loss.*`` keys
  of ``rules`` in order."""
  keys = tuple(key for key, _ in rules)

  def loss(objective, inputs):
    inputs = _normalised(objective, common.replicated(inputs))
    values = (objective.config[key] for key in keys)
    value = function(inputs.embeddings, inputs.labels, *values)
    return value, inputs.extra, {}
  return common.Spec(loss=loss, rules=rules, identity_balanced=True)


def all_pairs_contrastive_loss(embeddings, labels, margin):
  """DeepID2's contrastive loss over every pair (i < j) of the batch."""
  first, second = jnp.triu_indices(embeddings.shape[0], k=1)
  return contrastive.contrastive_loss(
      embeddings[first], embeddings[second], labels[first] == labels[second],
      margin)


def _lmle_loss(objective, inputs):
  """The triple-header hinge on each anchor's quintuplet, drawn from the
  clusters of the state."""
  inputs = _normalised(objective, common.replicated(inputs))
  indices = common.example_indices(inputs, 'lmle')
  embeddings = inputs.embeddings
  quintuplets = lmle.quintuplet_indices(
      embeddings, inputs.labels, inputs.extra['clusters'][indices])
  value = lmle.triple_header_hinge_loss(
      embeddings, *(embeddings[i] for i in quintuplets[:4]),
      margins=tuple(objective.config.margins), valid=quintuplets.valid)
  return value, inputs.extra, dict(valid_quintuplets=jnp.mean(
      quintuplets.valid.astype(jnp.float32)))


def _init_clusters(objective):
  """{'clusters': (N,) int32}: one cluster per class until the first
  clustering."""
  return dict(clusters=jnp.zeros((objective.num_examples,), jnp.int32))


def _check_lmle(config):
  k = config.data.get('images_per_identity', 0)
  if k < LMLE_MIN_IMAGES_PER_IDENTITY:
    raise config_rules.ConfigError(
        f'loss.name=lmle needs data.images_per_identity >= '
        f'{LMLE_MIN_IMAGES_PER_IDENTITY} (two clusters with two images '
        f'each per identity), got {k}')


def with_clusters(state, assignments, mesh):
  """``state`` with LMLE's cluster table replaced (replicated)."""
  assignments = jax.device_put(assignments, sharding.replicated(mesh))
  return state.replace(extra=dict(state.extra, clusters=assignments))


def recluster(embed, state, source, mesh, config, step):
  """LMLE's alternation: the state with every example's cluster refreshed.

  k-means within each class (``loss.clusters_per_class``) on the current
  model's embeddings of the whole training source; the draw is seeded by
  (seed, step), so a resumed run re-clusters exactly as an uninterrupted
  one.
  """
  features = inference.embed_source(
      embed, inference.backbone_variables(state), source, mesh,
      config.eval.batch_size, config.data.image_size)
  assignments = clusters_lib.within_class_kmeans(
      features, source.labels, config.loss.clusters_per_class,
      num_classes=source.num_classes,
      iterations=config.loss.get('cluster_iterations',
                                 DEFAULT_CLUSTER_ITERATIONS),
      seed=(config.seed, step)).assignments
  return with_clusters(state, assignments, mesh)


def recluster_every(recluster_fn):
  """LMLE's schedule as hooks: ``recluster_fn(embed, state, source, mesh,
  config, step)`` before every ``loss.cluster_every``-th step."""
  def hooks(embed, source, mesh, config):
    def run(state, step):
      return recluster_fn(embed, state, source, mesh, config, step)
    return [common.StepHook(config.loss.cluster_every, run)]
  return hooks


SPECS = {
    'triplet_batch_hard': batch_loss(triplet.batch_hard_triplet_loss,
                                     ('margin', MARGIN)),
    'triplet_soft': batch_loss(  # the margin is read, then ignored
        functools.partial(triplet.batch_hard_triplet_loss, soft=True),
        ('margin', MARGIN)),
    'triplet_batch_all': batch_loss(triplet.batch_all_triplet_loss,
                                    ('margin', MARGIN)),
    'lifted': batch_loss(triplet.lifted_structure_loss, ('margin', MARGIN)),
    'contrastive': batch_loss(all_pairs_contrastive_loss,
                              ('margin', MARGIN)),
    'lmle': common.Spec(
        loss=_lmle_loss, rules=LMLE_RULES, init_extra=_init_clusters,
        identity_balanced=True, example_index=True, check=_check_lmle,
        hooks=recluster_every(recluster)),
}
