"""The training objective, chosen by ``config.loss.name`` from one table.

Every loss is one :class:`common.Spec` in ``SPECS``, written in its
family's module, with the loss table of each in its docstring:

  :mod:`.classification`   softmax, arcface, cosface, combined, sphereface,
                           center: a class-weight matrix, class-parallel
  :mod:`.metric_learning`  triplet_batch_hard, triplet_soft,
                           triplet_batch_all, lifted, contrastive, lmle:
                           P x K batches
  :mod:`.attributes`       attributes, lmle_attributes: binary attributes

The spec says everything the engine needs of a loss: the step calls its
loss, the state holds its head and its extra state, the pipeline gives its
batches what they must carry, the config checks read its keys' rules and
checks, and the loop runs its hooks between steps (LMLE's re-clustering,
the adaptive task weights' validation records). Adding a loss is its pure
function (:mod:`facejax.losses`), one entry in its family's ``SPECS``, and
its tests; nothing else dispatches on loss names.

Every loss takes float32 embeddings (the backbone may compute in bfloat16).
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from facejax import sharding
from facejax.training import config_rules
from facejax.training.objectives import attributes
from facejax.training.objectives import classification
from facejax.training.objectives import common
from facejax.training.objectives import metric_learning

SPECS = {**classification.SPECS, **metric_learning.SPECS,
         **attributes.SPECS}
NAMES = tuple(SPECS)
ATTRIBUTES = tuple(name for name, spec in SPECS.items() if spec.attributes)


def get(name):
  """The :class:`common.Spec` of loss ``name``.

  Raises:
    ConfigError: ``name`` is not in the table (the message lists it).
  """
  if name not in SPECS:
    raise config_rules.ConfigError(
        f'loss.name: unknown {name!r}; choose one of {", ".join(NAMES)}')
  return SPECS[name]


class Objective:
  """The loss of one config, bound to the run's sizes.

  Attributes:
    name: the loss name (a key of ``SPECS``).
    spec: its :class:`common.Spec`.
    config: ``config.loss``.
    num_classes, embedding_dim: the head's shape.
    padded_classes: C rounded up to a multiple of the class shards.
    num_examples: N, the training examples (losses with a value per
      example).
    num_attributes: A, for the attribute losses.
    needs_identity_balanced_batches: P x K batches (metric learning).
    needs_example_index: batches carry ``index``, the examples' positions.
    uses_attributes: the targets are the batch's ``attributes``, not its
      labels.
    has_class_weights: the head is a class-weight matrix W (D, C).
  """

  def __init__(self, loss_config, num_classes, embedding_dim, class_shards=1,
               num_examples=None, num_attributes=None):
    self.spec = get(loss_config.name)
    self.spec.check_choices(loss_config)
    self.config = loss_config
    self.name = loss_config.name
    self.num_classes = num_classes
    self.embedding_dim = embedding_dim
    # W gets C rounded up to a multiple of the class shards; the padding
    # columns are left out of the softmax (num_classes).
    self.padded_classes = -(-num_classes // class_shards) * class_shards
    self.num_examples = num_examples
    if self.spec.example_index and not num_examples:
      raise ValueError(f'loss.name={self.name} keeps a cluster per training '
                       'example: pass num_examples')
    self.num_attributes = num_attributes
    if self.spec.attributes and not num_attributes:
      raise ValueError(f'loss.name={self.name} trains on attributes: pass '
                       'num_attributes (the data has none)')
    # What the pipeline, the step and the state ask of it (the spec's).
    self.needs_identity_balanced_batches = self.spec.identity_balanced
    self.needs_example_index = self.spec.example_index
    self.uses_attributes = self.spec.attributes
    self.has_class_weights = self.spec.class_weights

  def init_head(self, key):
    """Learned head parameters (e.g. {'class_weights': (D, C)}), or {}."""
    return self.spec.init_head(self, key)

  def init_extra(self):
    """Non-learned state carried in the train state (e.g. the centres, the
    clusters, the task weighting), or {}."""
    return self.spec.init_extra(self)

  def head_shardings(self, mesh):
    if not self.has_class_weights:
      return {}
    return dict(class_weights=sharding.class_weight_sharding(mesh))

  def extra_shardings(self, mesh):
    return jax.tree.map(lambda _: NamedSharding(mesh, P()),
                        jax.eval_shape(self.init_extra))

  def hooks(self, embed, source, mesh, config):
    """The loop's work between steps, ``[common.StepHook]``: ``embed`` is
    :func:`facejax.training.step.make_embed`'s function, ``source`` the
    training source."""
    return self.spec.hooks(embed, source, mesh, config)

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
    return self.spec.loss(self, common.Inputs(
        embeddings, labels, head, extra, step, mesh, rng, indices))
