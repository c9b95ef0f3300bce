"""The sharded train step with the attribute objectives, against loops."""
import math

import jax
import ml_collections
import numpy as np
import pytest

from facejax import sharding
from facejax.training import objectives
from facejax.training import optim
from facejax.training import state as state_lib
from facejax.training import step as step_lib
from tests.losses.test_attributes import quintuplet_loss_by_loops
from tests.training.test_step import IMAGE_SHAPE
from tests.training.test_step import SGD
from tests.training.test_step import TINY_IRESNET
from tests.training.test_step import tiny_model

NUM_ATTRIBUTES = 5
BATCH = 16
MULTITASK = dict(name='attributes', weighting='adaptive', weighting_every=1,
                 weighting_window=2)
LMLE = dict(name='lmle_attributes', attribute_dim=3, margins=(0.1, 0.1, 0.2))


def attribute_batch(seed=0):
  """Images whose attributes are the signs of fixed image directions."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(BATCH,) + IMAGE_SHAPE).astype(np.float32)
  directions = np.random.default_rng(99).normal(
      size=(NUM_ATTRIBUTES,) + IMAGE_SHAPE)
  scores = np.einsum('nhwc,ahwc->na', images, directions)
  attributes = scores > np.quantile(scores, 0.7, axis=0)  # 30% positive
  return dict(image=images, label=np.zeros(BATCH, np.int32),
              attributes=attributes, index=np.arange(BATCH, dtype=np.int32))


def engine(loss, mesh):
  model = tiny_model()
  objective = objectives.Objective(
      ml_collections.ConfigDict(loss), 1, TINY_IRESNET['embedding_dim'],
      num_examples=BATCH, num_attributes=NUM_ATTRIBUTES)
  tx, _ = optim.build(ml_collections.ConfigDict(SGD), 100)
  state, shardings = state_lib.create(jax.random.key(0), model, objective,
                                      tx, IMAGE_SHAPE, mesh)
  step = step_lib.make_train_step(model, objective, tx, mesh, shardings)
  return model, state, step


def plain_embeddings(model, state, images):
  params, stats = jax.device_get((state.params, state.batch_stats))
  embeddings, _ = model.apply(dict(params=params['backbone'],
                                   batch_stats=stats), images, train=True,
                              mutable=['batch_stats'])
  return np.asarray(embeddings, np.float64), params['head']


def test_multitask_step_is_the_weighted_sum_of_task_losses():
  mesh = sharding.make_mesh(4, 2)
  batch = attribute_batch()
  weights = np.array([0.5, 2.0, 1.0, 0.25, 1.25], np.float32)
  with jax.set_mesh(mesh):
    model, state, step = engine(MULTITASK, mesh)
    weighting = dict(state.extra['task_weighting'])
    weighting['weights'] = jax.device_put(weights,
                                          weighting['weights'].sharding)
    state = state.replace(extra=dict(task_weighting=weighting))
    embeddings, head = plain_embeddings(model, state, batch['image'])
    _, metrics = step(state, batch)
  logits = embeddings @ head['attribute_weights'] + head['attribute_bias']
  expected = 0.0
  for t in range(NUM_ATTRIBUTES):
    task = 0.0
    for n in range(BATCH):
      s = 1 / (1 + math.exp(-logits[n, t]))
      task -= math.log(s if batch['attributes'][n, t] else 1 - s)
    expected += weights[t] * task / BATCH
  np.testing.assert_allclose(float(metrics['loss']), expected, rtol=1e-5)
  np.testing.assert_allclose(
      float(metrics['attribute_accuracy']),
      np.mean((logits > 0) == batch['attributes']))


def test_multitask_training_fits_the_attributes():
  mesh = sharding.make_mesh(8, 1)
  batch = attribute_batch(3)
  with jax.set_mesh(mesh):
    _, state, step = engine(dict(name='attributes'), mesh)  # uniform
    assert state.extra == {}
    history = []
    for _ in range(8):
      state, metrics = step(state, batch)
      history.append(float(metrics['loss']))
  assert np.isfinite(history).all() and history[-1] < history[0], history


def test_lmle_attributes_step_matches_a_loop_per_attribute():
  mesh = sharding.make_mesh(4, 2)
  batch = attribute_batch(1)
  rng = np.random.default_rng(5)
  # Clusters numbered globally as class * 2 + {0, 1}, as the loop's are.
  clusters = (batch['attributes'].T * 2
              + rng.integers(0, 2, (NUM_ATTRIBUTES, BATCH))).astype(np.int32)
  with jax.set_mesh(mesh):
    model, state, step = engine(LMLE, mesh)
    assert state.extra['clusters'].shape == (NUM_ATTRIBUTES, BATCH)
    state = state.replace(extra=dict(clusters=jax.device_put(
        clusters, state.extra['clusters'].sharding)))
    embeddings, head = plain_embeddings(model, state, batch['image'])
    _, metrics = step(state, batch)
  projection = np.asarray(head['attribute_projection'], np.float64)
  losses, valid = [], []
  for a in range(NUM_ATTRIBUTES):
    features = embeddings @ projection[:, a, :]
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    loss, fraction = quintuplet_loss_by_loops(
        features, batch['attributes'][:, a], clusters[a], LMLE['margins'])
    losses.append(loss)
    valid.append(fraction)
  np.testing.assert_allclose(float(metrics['loss']), np.mean(losses),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(metrics['valid_quintuplets']),
                             np.mean(valid), rtol=1e-6)


@pytest.mark.parametrize('loss, message', [
    (dict(name='attributes', weighting='sometimes'), 'loss.weighting'),
])
def test_objective_errors_name_the_key(loss, message):
  with pytest.raises(ValueError, match=message):
    objectives.Objective(ml_collections.ConfigDict(loss), 1, 8,
                         num_attributes=3)


def test_attribute_objectives_need_attributes():
  with pytest.raises(ValueError, match='num_attributes'):
    objectives.Objective(ml_collections.ConfigDict(dict(name='attributes')),
                         1, 8)
