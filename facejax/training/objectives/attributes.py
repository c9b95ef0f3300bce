"""Attribute objectives: binary attributes instead of identities.

They need a source with binary attributes (batches carry ``attributes``,
bool (N, A); :mod:`facejax.data.attribute_sources`) and train on them
(:mod:`facejax.losses.attributes`):

  ``attributes``       the multi-task network: one logit per attribute
                       (head W (D, A), b (A,)), sum_a lambda_a L_a of the
                       per-attribute sigmoid cross-entropies; with
                       ``weighting='adaptive'`` the lambdas are He et al.'s
                       (ACM MM 2017) adaptive weights, recomputed between
                       steps from the validation losses every
                       ``weighting_every`` steps (window
                       ``weighting_window``, :func:`record_validation`) and
                       carried in the state (``extra['task_weighting']``);
                       ``'uniform'``: all 1
  ``lmle_attributes``  LMLE per attribute: each attribute's own embedding
                       (a projection (D, A, d), d = ``attribute_dim``),
                       its classes split into ``clusters_per_class``
                       clusters (``extra['clusters']`` (A, N), refreshed
                       every ``cluster_every`` steps,
                       :func:`recluster_attributes`), the mean over
                       attributes of the triple-header hinge (``margins``)
"""

import jax
import jax.numpy as jnp
import numpy as np

from facejax import inference
from facejax import sharding
from facejax.data import attribute_sources
from facejax.losses import attributes as attribute_losses
from facejax.training import adaptive_weighting
from facejax.training import clusters as clusters_lib
from facejax.training import config_rules
from facejax.training.objectives import common
from facejax.training.objectives import metric_learning

WEIGHTINGS = ('uniform', 'adaptive')
ADAPTIVE_WEIGHTING_RULES = (('weighting_every', config_rules.integer(1)),
                            ('weighting_window', config_rules.integer(1)))


def weighting(loss_config):
  """``loss.weighting`` of the multi-task loss (default 'uniform').

  Raises:
    ConfigError: a weighting that is not one of ``WEIGHTINGS``.
  """
  name = loss_config.get('weighting', 'uniform')
  if name not in WEIGHTINGS:
    raise config_rules.ConfigError(
        f'loss.weighting: unknown {name!r}; choose one of '
        f'{", ".join(WEIGHTINGS)}')
  return name


def _check_weighting(config):
  if weighting(config.loss) == 'adaptive':
    config_rules.check_rules(config.loss, ADAPTIVE_WEIGHTING_RULES,
                             prefix='loss.',
                             needed_by="loss.weighting='adaptive'")


def _init_multitask_head(objective, key):
  """{'attribute_weights': (D, A), 'attribute_bias': (A,)}."""
  return dict(attribute_weights=common.HEAD_INIT_STD * jax.random.normal(
      key, (objective.embedding_dim, objective.num_attributes), jnp.float32),
              attribute_bias=jnp.zeros((objective.num_attributes,),
                                       jnp.float32))


def _init_task_weighting(objective):
  """The adaptive weighting's state {'task_weighting': {'history',
  'count', 'weights'}} (:class:`facejax.training.adaptive_weighting.State`
  as a dict), or {} for uniform weights."""
  if weighting(objective.config) != 'adaptive':
    return {}
  return dict(task_weighting=adaptive_weighting.init(
      objective.num_attributes, objective.config.weighting_window)._asdict())


def task_weights(objective, extra):
  """The multi-task lambdas (A,): adaptive from the state, or ones."""
  if 'task_weighting' in extra:
    return extra['task_weighting']['weights']
  return jnp.ones((objective.num_attributes,), jnp.float32)


def _multitask_loss(objective, inputs):
  """sum_a lambda_a L_a; the mean task loss and the accuracy logged."""
  logits = attribute_losses.attribute_logits(
      inputs.embeddings, inputs.head['attribute_weights'],
      inputs.head['attribute_bias'])
  per_task = attribute_losses.per_task_sigmoid_cross_entropy(
      logits, inputs.labels)
  value = adaptive_weighting.weighted_loss(
      per_task, task_weights(objective, inputs.extra))
  metrics = dict(mean_task_loss=jnp.mean(per_task),
                 attribute_accuracy=jnp.mean(
                     ((logits > 0) == inputs.labels).astype(jnp.float32)))
  return value, inputs.extra, metrics


def local_copy(tree):
  """Numpy copies of replicated arrays (this process's first shard: with
  several processes the global arrays are not fully addressable)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def _raw_features(embed, state, source, mesh, config):
  """The raw (un-normalised, un-flipped) embeddings a head is trained on."""
  return inference.embed_source(
      embed, inference.backbone_variables(state), source, mesh,
      config.eval.batch_size, config.data.image_size, flip=False,
      normalise=False)


def validation_task_losses(embed, state, source, mesh, config):
  """(A,) float32: each attribute's sigmoid cross-entropy on ``source``."""
  features = _raw_features(embed, state, source, mesh, config)
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
  record = adaptive_weighting.record(
      adaptive_weighting.State(**state.extra['task_weighting']),
      jax.device_put(losses, sharding.replicated(mesh)))
  return state.replace(extra=dict(state.extra,
                                  task_weighting=record._asdict()))


def _adaptive_hooks(embed, source, mesh, config):
  """With adaptive weights: a validation record every
  ``loss.weighting_every`` steps, on the attribute set's val split."""
  del source  # the training split; the records are the val split's
  if weighting(config.loss) != 'adaptive':
    return []
  validation = attribute_sources.open_split(config.data, 'val')

  def run(state, step):
    del step
    return record_validation(embed, state, validation, mesh, config)
  return [common.StepHook(config.loss.weighting_every, run)]


def _init_attribute_projection(objective, key):
  """{'attribute_projection': (D, A, d)}, normal / sqrt(D)."""
  dim = objective.embedding_dim
  shape = (dim, objective.num_attributes, objective.config.attribute_dim)
  return dict(attribute_projection=jax.random.normal(
      key, shape, jnp.float32) / jnp.sqrt(dim))


def _init_attribute_clusters(objective):
  """{'clusters': (A, N) int32}, every example in cluster 0 of its class."""
  return dict(clusters=jnp.zeros(
      (objective.num_attributes, objective.num_examples), jnp.int32))


def _lmle_attributes_loss(objective, inputs):
  """The mean over attributes of LMLE's hinge, in each one's embedding."""
  inputs = common.replicated(inputs)
  indices = common.example_indices(inputs, 'lmle_attributes')
  features = attribute_losses.attribute_embeddings(
      inputs.embeddings, inputs.head['attribute_projection'])
  losses, valid = attribute_losses.lmle_attribute_losses(
      features, inputs.labels, inputs.extra['clusters'][:, indices],
      margins=tuple(objective.config.margins))
  return jnp.mean(losses), inputs.extra, dict(
      valid_quintuplets=jnp.mean(valid))


def attribute_features(features, projection):
  """(A, N, d) numpy: every attribute's LMLE embedding of ``features``."""
  return np.asarray(jax.device_get(attribute_losses.attribute_embeddings(
      jnp.asarray(features), jnp.asarray(projection))))


def recluster_attributes(embed, state, source, mesh, config, step):
  """LMLE's alternation per attribute: k-means within each attribute's two
  classes, in each attribute's own embedding of the whole training source;
  seeded by (seed, step, attribute), so a resumed run re-clusters exactly
  as an uninterrupted one."""
  features = _raw_features(embed, state, source, mesh, config)
  per_attribute = attribute_features(
      features, local_copy(state.params['head']['attribute_projection']))
  iterations = config.loss.get('cluster_iterations',
                               metric_learning.DEFAULT_CLUSTER_ITERATIONS)
  assignments = np.stack([clusters_lib.within_class_kmeans(
      per_attribute[a], source.attributes[:, a].astype(np.int32),
      config.loss.clusters_per_class, num_classes=2, iterations=iterations,
      seed=(config.seed, step, a)).assignments
                          for a in range(len(per_attribute))])
  return metric_learning.with_clusters(state, assignments, mesh)


SPECS = {
    'attributes': common.Spec(
        loss=_multitask_loss, init_head=_init_multitask_head,
        init_extra=_init_task_weighting, attributes=True,
        check_choices=weighting, check=_check_weighting,
        hooks=_adaptive_hooks),
    'lmle_attributes': common.Spec(
        loss=_lmle_attributes_loss,
        rules=(('attribute_dim', config_rules.integer(1)),)
        + metric_learning.LMLE_RULES,
        init_head=_init_attribute_projection,
        init_extra=_init_attribute_clusters, example_index=True,
        attributes=True, hooks=metric_learning.recluster_every(
            recluster_attributes)),
}
