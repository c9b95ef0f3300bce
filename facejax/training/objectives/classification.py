"""Classification objectives: a class-weight matrix W (D, C), class-parallel.

W is split by columns over the mesh's ``'model'`` axis and the softmax is
computed class-parallel (:mod:`facejax.losses.class_parallel`):

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

A new margin softmax is its pure function (:mod:`facejax.losses.margin`),
its class-parallel target rule and function (:mod:`facejax.losses.
class_parallel`), and one :func:`class_parallel_softmax` entry in
``SPECS`` naming the ``loss.*`` keys it takes, in its argument order.
"""

import jax
import jax.numpy as jnp

from facejax.losses import center
from facejax.losses import class_parallel
from facejax.losses import sphereface
from facejax.training import config_rules
from facejax.training.objectives import common

SCALE = config_rules.number(0, low_open=True)
MARGIN = config_rules.number(0)


def init_class_weights(objective, key):
  """{'class_weights': (D, C')}, C' the class count rounded up to the
  class shards (the padding columns are left out of the softmax)."""
  return dict(class_weights=common.HEAD_INIT_STD * jax.random.normal(
      key, (objective.embedding_dim, objective.padded_classes), jnp.float32))


def _head_options(objective, inputs):
  """The real class count, and Partial FC (``loss.sample_rate`` < 1): a
  sampled softmax over the columns."""
  return dict(num_classes=objective.num_classes,
              sample_rate=objective.config.get('sample_rate', 1.0),
              key=inputs.rng)


def class_parallel_softmax(function, *rules):
  """The spec of ``function(embeddings, W, labels, mesh, *values,
  num_classes=, sample_rate=, key=)`` of :mod:`facejax.losses.
  class_parallel`, its ``values`` the ``loss.*`` keys of ``rules`` in
  order."""
  keys = tuple(key for key, _ in rules)

  def loss(objective, inputs):
    values = (objective.config[key] for key in keys)
    value = function(inputs.embeddings, inputs.head['class_weights'],
                     inputs.labels, inputs.mesh, *values,
                     **_head_options(objective, inputs))
    return value, inputs.extra, {}
  return common.Spec(loss=loss, rules=rules, init_head=init_class_weights,
                     class_weights=True)


def _sphereface_loss(objective, inputs):
  """A-Softmax with lambda annealed by the step (its value logged)."""
  c = objective.config
  lam = sphereface.sphereface_lambda(
      inputs.step, c.lambda_base, c.lambda_gamma, c.lambda_power,
      c.lambda_min)
  value = class_parallel.sphereface_loss(
      inputs.embeddings, inputs.head['class_weights'], inputs.labels,
      inputs.mesh, c.sphereface_m, lam, **_head_options(objective, inputs))
  return value, inputs.extra, dict(sphereface_lambda=lam)


def _center_loss(objective, inputs):
  """Softmax + center_weight x center loss; the centres move in the state."""
  c = objective.config
  softmax_value = class_parallel.softmax_loss(
      inputs.embeddings, inputs.head['class_weights'], inputs.labels,
      inputs.mesh, **_head_options(objective, inputs))
  inputs = common.replicated(inputs)
  center_value, centers = center.center_loss(
      inputs.embeddings, inputs.labels, inputs.extra['centers'],
      c.center_alpha)
  metrics = dict(softmax_loss=softmax_value, center_loss=center_value)
  return (softmax_value + c.center_weight * center_value,
          dict(inputs.extra, centers=centers), metrics)


def _init_centers(objective):
  """{'centers': (C, D)}, zeros."""
  return dict(centers=jnp.zeros((objective.num_classes,
                                 objective.embedding_dim), jnp.float32))


SPECS = {
    'softmax': class_parallel_softmax(class_parallel.softmax_loss),
    'arcface': class_parallel_softmax(
        class_parallel.arcface_loss, ('scale', SCALE), ('margin', MARGIN)),
    'cosface': class_parallel_softmax(
        class_parallel.cosface_loss, ('scale', SCALE), ('margin', MARGIN)),
    'combined': class_parallel_softmax(
        class_parallel.margin_softmax_loss, ('scale', SCALE),
        ('m1', config_rules.number(0, low_open=True)), ('m2', MARGIN),
        ('m3', MARGIN)),
    'sphereface': common.Spec(
        loss=_sphereface_loss, init_head=init_class_weights,
        class_weights=True,
        rules=(('sphereface_m', config_rules.integer(1)),
               ('lambda_base', config_rules.number(0)),
               ('lambda_gamma', config_rules.number(0)),
               ('lambda_power', config_rules.number(0)),
               ('lambda_min', config_rules.number(0)))),
    'center': common.Spec(
        loss=_center_loss, init_head=init_class_weights,
        init_extra=_init_centers, class_weights=True,
        rules=(('center_weight', config_rules.number(0)),
               ('center_alpha', config_rules.number(0, 1, low_open=True)))),
}
