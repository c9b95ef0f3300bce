"""The training objective, chosen by ``config.loss.name``.

Classification losses learn a class-weight matrix W (D, C), split over the
mesh's ``'model'`` axis and computed class-parallel
(:mod:`facejax.losses.class_parallel`):

  ``softmax``     plain softmax of x W
  ``arcface``     s cos(theta + m)                    (scale, margin)
  ``cosface``     s (cos theta - m)                   (scale, margin)
  ``combined``    s (cos(m1 theta + m2) - m3)         (scale, m1, m2, m3)
  ``sphereface``  ||x|| psi(theta), lambda annealed   (sphereface_m,
                  lambda_base, lambda_gamma, lambda_power, lambda_min)
  (any of these with ``sample_rate`` < 1: Partial FC, a softmax over the
  batch's classes and a random sample of the others)
  ``center``      softmax + center_weight * center loss, the centres
                  (C, D) carried in the train state and moved by
                  center_alpha (Wen et al. 2016)

Metric-learning losses need identity-balanced P x K batches (the data
config's ``identities_per_batch``, ``images_per_identity``) and use the
whole global batch:

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
                          state and refreshed by the loop every
                          ``cluster_every`` steps with the model being
                          trained (:mod:`facejax.training.clusters`)

Attribute losses need a source with binary attributes (batches carry
``attributes``, bool (N, A); :mod:`facejax.data.attribute_sources`) and
train on them instead of identities (:mod:`facejax.losses.attributes`):

  ``attributes``       the multi-task network: one logit per attribute
                       (head W (D, A), b (A,)), sum_a lambda_a L_a of the
                       per-attribute sigmoid cross-entropies; with
                       ``weighting='adaptive'`` the lambdas are He et al.'s
                       (ACM MM 2017) adaptive weights, recomputed by the
                       loop from the validation losses every
                       ``weighting_every`` steps (window
                       ``weighting_window``) and carried in the state
                       (``extra['task_weighting']``); ``'uniform'``: all 1
  ``lmle_attributes``  LMLE per attribute: each attribute's own embedding
                       (a projection (D, A, d), d = ``attribute_dim``),
                       its classes split into ``clusters_per_class``
                       clusters (``extra['clusters']`` (A, N), refreshed
                       every ``cluster_every`` steps), the mean over
                       attributes of the triple-header hinge (``margins``)

Metric-learning losses see L2-normalised embeddings (FaceNet's ||f|| = 1;
``loss.normalise=False`` turns that off). Every loss takes float32
embeddings (the backbone may compute in bfloat16).
"""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from facejax import sharding
from facejax.losses import attributes as attribute_losses
from facejax.losses import center
from facejax.losses import class_parallel
from facejax.losses import contrastive
from facejax.losses import distances
from facejax.losses import lmle
from facejax.losses import sphereface
from facejax.losses import triplet
from facejax.training import adaptive_weighting

CLASSIFICATION = ('softmax', 'arcface', 'cosface', 'combined', 'sphereface',
                  'center')
METRIC_LEARNING = ('triplet_batch_hard', 'triplet_soft', 'triplet_batch_all',
                   'lifted', 'contrastive', 'lmle')
ATTRIBUTES = ('attributes', 'lmle_attributes')
NAMES = CLASSIFICATION + METRIC_LEARNING + ATTRIBUTES
CLASS_WEIGHT_INIT_STD = 0.01  # insightface's normal(0, 0.01)
WEIGHTINGS = ('uniform', 'adaptive')


def check_choices(loss_config):
  """Raises ValueError naming the key when ``loss.name`` (or, for the
  multi-task loss, ``loss.weighting``) is not one of this module's (for
  :class:`Objective` and the training loop's config check)."""
  name = loss_config.name
  if name not in NAMES:
    raise ValueError(f'loss.name: unknown {name!r}; choose one of '
                     f'{", ".join(NAMES)}')
  weighting = loss_config.get('weighting', 'uniform')
  if name == 'attributes' and weighting not in WEIGHTINGS:
    raise ValueError(f'loss.weighting: unknown {weighting!r}; choose one of '
                     f'{", ".join(WEIGHTINGS)}')


class Objective:
  """The loss of one config, its parameters and its state.

  Attributes:
    name: the loss name (one of ``NAMES``).
    num_classes, embedding_dim: the head's shape.
    num_attributes: A, for the attribute losses.
    needs_identity_balanced_batches: True for the metric-learning losses.
  """

  def __init__(self, loss_config, num_classes, embedding_dim, class_shards=1,
               num_examples=None, num_attributes=None):
    check_choices(loss_config)
    self.config = loss_config
    self.name = loss_config.name
    self.num_classes = num_classes
    self.embedding_dim = embedding_dim
    self.needs_identity_balanced_batches = self.name in METRIC_LEARNING
    # W gets C rounded up to a multiple of the class shards; the padding
    # columns are left out of the softmax (num_classes below).
    self.padded_classes = -(-num_classes // class_shards) * class_shards
    self.num_examples = num_examples
    if self.name in ('lmle', 'lmle_attributes') and not num_examples:
      raise ValueError(f'loss.name={self.name} keeps a cluster per training '
                       'example: pass num_examples')
    self.num_attributes = num_attributes
    if self.uses_attributes and not num_attributes:
      raise ValueError(f'loss.name={self.name} trains on attributes: pass '
                       'num_attributes (the data has none)')

  @property
  def needs_example_index(self):
    """True when batches must carry ``index`` (the examples' positions)."""
    return self.name in ('lmle', 'lmle_attributes')

  @property
  def uses_attributes(self):
    """True when the targets are the batch's ``attributes``, not labels."""
    return self.name in ATTRIBUTES

  @property
  def reclusters(self):
    """True when the loop must refresh ``extra['clusters']`` (LMLE)."""
    return self.name in ('lmle', 'lmle_attributes')

  @property
  def weighting(self):
    return self.config.get('weighting', 'uniform')

  @property
  def adapts_task_weights(self):
    """True when the loop must record validation losses (adaptive)."""
    return self.name == 'attributes' and self.weighting == 'adaptive'

  @property
  def has_class_weights(self):
    return self.name in CLASSIFICATION

  def init_head(self, key):
    """Learned head parameters: {'class_weights': (D, C)};
    {'attribute_weights': (D, A), 'attribute_bias': (A,)} (multi-task);
    {'attribute_projection': (D, A, d)} (LMLE on attributes); or {}."""
    dim = self.embedding_dim
    if self.name == 'attributes':
      return dict(attribute_weights=CLASS_WEIGHT_INIT_STD * jax.random.normal(
          key, (dim, self.num_attributes), jnp.float32),
                  attribute_bias=jnp.zeros((self.num_attributes,),
                                           jnp.float32))
    if self.name == 'lmle_attributes':
      shape = (dim, self.num_attributes, self.config.attribute_dim)
      return dict(attribute_projection=jax.random.normal(
          key, shape, jnp.float32) / jnp.sqrt(dim))
    if not self.has_class_weights:
      return {}
    return dict(class_weights=CLASS_WEIGHT_INIT_STD * jax.random.normal(
        key, (dim, self.padded_classes), jnp.float32))

  def init_extra(self):
    """Non-learned state: {'centers': (C, D)} for center loss, {'clusters':
    (N,) int32} (one cluster per class until the first clustering) for
    LMLE, {'clusters': (A, N)} for LMLE on attributes, the adaptive task
    weighting's state {'task_weighting': {'history', 'count', 'weights'}}
    (:class:`facejax.training.adaptive_weighting.State` as a dict), else
    {}."""
    if self.name == 'center':
      return dict(centers=jnp.zeros((self.num_classes, self.embedding_dim),
                                    jnp.float32))
    if self.name == 'lmle':
      return dict(clusters=jnp.zeros((self.num_examples,), jnp.int32))
    if self.name == 'lmle_attributes':
      return dict(clusters=jnp.zeros(
          (self.num_attributes, self.num_examples), jnp.int32))
    if self.adapts_task_weights:
      return dict(task_weighting=adaptive_weighting.init(
          self.num_attributes, self.config.weighting_window)._asdict())
    return {}

  def task_weights(self, extra):
    """The multi-task lambdas (A,): adaptive from the state, or ones."""
    if 'task_weighting' in extra:
      return extra['task_weighting']['weights']
    return jnp.ones((self.num_attributes,), jnp.float32)

  def head_shardings(self, mesh):
    if not self.has_class_weights:
      return {}
    return dict(class_weights=sharding.class_weight_sharding(mesh))

  def extra_shardings(self, mesh):
    return jax.tree.map(lambda _: NamedSharding(mesh, P()),
                        jax.eval_shape(self.init_extra))

  def __call__(self, embeddings, labels, head, extra, step, mesh, rng=None,
               indices=None):
    """(loss, new extra state, metrics) for one global batch.

    Args:
      embeddings: (N, D) float32, batch-sharded.
      labels: (N,) int32 identities, or (N, A) bool attributes for the
        attribute losses.
      head: the head parameters (:meth:`init_head`).
      extra: the extra state (:meth:`init_extra`).
      step: the optimizer step (for annealed schedules).
      mesh: the device mesh.
      rng: PRNG key for Partial FC's column sampling.
      indices: (N,) the examples' positions in the training source (LMLE).
    """
    c = self.config
    name = self.name
    metrics = {}
    # Partial FC (loss.sample_rate < 1): a sampled softmax over the columns.
    head_options = dict(num_classes=self.num_classes,
                        sample_rate=c.get('sample_rate', 1.0), key=rng)
    if name in ('softmax', 'center'):
      loss = class_parallel.softmax_loss(embeddings, head['class_weights'],
                                         labels, mesh, **head_options)
    elif name == 'arcface':
      loss = class_parallel.arcface_loss(
          embeddings, head['class_weights'], labels, mesh, c.scale, c.margin,
          **head_options)
    elif name == 'cosface':
      loss = class_parallel.cosface_loss(
          embeddings, head['class_weights'], labels, mesh, c.scale, c.margin,
          **head_options)
    elif name == 'combined':
      loss = class_parallel.margin_softmax_loss(
          embeddings, head['class_weights'], labels, mesh, c.scale, c.m1,
          c.m2, c.m3, **head_options)
    elif name == 'sphereface':
      lam = sphereface.sphereface_lambda(
          step, c.lambda_base, c.lambda_gamma, c.lambda_power, c.lambda_min)
      metrics['sphereface_lambda'] = lam
      loss = class_parallel.sphereface_loss(
          embeddings, head['class_weights'], labels, mesh, c.sphereface_m,
          lam, **head_options)
    else:
      loss = None
    if name == 'attributes':
      logits = attribute_losses.attribute_logits(
          embeddings, head['attribute_weights'], head['attribute_bias'])
      per_task = attribute_losses.per_task_sigmoid_cross_entropy(
          logits, labels)
      loss = adaptive_weighting.weighted_loss(per_task,
                                              self.task_weights(extra))
      metrics['mean_task_loss'] = jnp.mean(per_task)
      metrics['attribute_accuracy'] = jnp.mean(
          ((logits > 0) == labels).astype(jnp.float32))
    if name in ('center', 'lmle_attributes') or name in METRIC_LEARNING:
      # Small (N, D) and (N, N) problems: on the whole, replicated batch.
      everywhere = NamedSharding(mesh, P())
      embeddings = jax.reshard(embeddings, everywhere)
      labels = jax.reshard(labels, everywhere)
      if indices is not None:
        indices = jax.reshard(indices, everywhere)
    if name in METRIC_LEARNING and c.get('normalise', True):
      embeddings = distances.l2_normalize(embeddings)  # FaceNet's ||f|| = 1
    if name == 'center':
      metrics['softmax_loss'] = loss
      center_value, centers = center.center_loss(
          embeddings, labels, extra['centers'], c.center_alpha)
      metrics['center_loss'] = center_value
      loss = loss + c.center_weight * center_value
      extra = dict(extra, centers=centers)
    elif name == 'triplet_batch_hard':
      loss = triplet.batch_hard_triplet_loss(embeddings, labels, c.margin)
    elif name == 'triplet_soft':
      loss = triplet.batch_hard_triplet_loss(embeddings, labels, c.margin,
                                             soft=True)
    elif name == 'triplet_batch_all':
      loss = triplet.batch_all_triplet_loss(embeddings, labels, c.margin)
    elif name == 'lifted':
      loss = triplet.lifted_structure_loss(embeddings, labels, c.margin)
    elif name == 'contrastive':
      first, second = jnp.triu_indices(embeddings.shape[0], k=1)
      loss = contrastive.contrastive_loss(
          embeddings[first], embeddings[second],
          labels[first] == labels[second], c.margin)
    elif name == 'lmle':
      if indices is None:
        raise ValueError('loss.name=lmle needs batches with the examples\' '
                         'index (train_dataset(with_index=True))')
      quintuplets = lmle.quintuplet_indices(
          embeddings, labels, extra['clusters'][indices])
      loss = lmle.triple_header_hinge_loss(
          embeddings, *(embeddings[i] for i in quintuplets[:4]),
          margins=tuple(c.margins), valid=quintuplets.valid)
      metrics['valid_quintuplets'] = jnp.mean(
          quintuplets.valid.astype(jnp.float32))
    elif name == 'lmle_attributes':
      if indices is None:
        raise ValueError('loss.name=lmle_attributes needs batches with the '
                         'examples\' index (train_dataset(with_index=True))')
      features = attribute_losses.attribute_embeddings(
          embeddings, head['attribute_projection'])
      losses, valid = attribute_losses.lmle_attribute_losses(
          features, labels, extra['clusters'][:, indices],
          margins=tuple(c.margins))
      loss = jnp.mean(losses)
      metrics['valid_quintuplets'] = jnp.mean(valid)
    return loss, extra, metrics
