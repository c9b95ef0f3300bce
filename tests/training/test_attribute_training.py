"""Attribute runs through the whole loop: schedules, resume, errors."""
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from facejax.data import attribute_sources
from facejax.data import celeba
from facejax.training import adaptive_weighting
from facejax.training import loop
from facejax.training import step as step_lib
from facejax.training.objectives import attributes as attribute_objectives
from tests.training.tiny import ADAPTIVE
from tests.training.tiny import NUM_ATTRIBUTES
from tests.training.tiny import attribute_config
from tests.training.tiny import leaves

def resumed_from_step_four(run, config, directory):
  """(state restored at step 4, the run resumed from there to step 5) of a
  copy of ``run``'s workdir without its last checkpoint."""
  shutil.copytree(run.workdir, directory)
  shutil.rmtree(os.path.join(directory, 'checkpoints', '5'))
  four = loop.train(config, directory, log=False, stop_at=4)  # no step
  return four, loop.train(config, directory, log=False)


def test_adaptive_weights_follow_the_validation_losses_and_resume(
    tmp_path, attribute_runs):
  whole = attribute_runs['adaptive']
  four, rest = resumed_from_step_four(whole, attribute_config(ADAPTIVE),
                                      str(tmp_path / 'copy'))
  assert int(four.state.step) == 4 and not four.history
  for a, b in zip(leaves(rest.state), leaves(whole.state)):
    np.testing.assert_array_equal(a, b)
  weighting = adaptive_weighting.State(**whole.state.extra['task_weighting'])
  assert int(weighting.count) == 5  # a record before each of the 5 steps
  weights = np.asarray(weighting.weights)
  assert weights.shape == (NUM_ATTRIBUTES,)
  np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-5)
  assert not np.allclose(weights, 1.0)  # updated from record 2 on
  # Window 1: record r sits in row (r - 1) % 2, so record 5 (cur) is row 0
  # and record 4 (pre) row 1; the weights are the paper's formula of them.
  history = np.asarray(weighting.history, np.float64)
  cur, pre = history[0], history[1]
  trend = np.abs(cur - pre) / cur
  raw = (trend / trend.mean()) * (cur / cur.mean())
  np.testing.assert_allclose(weights, raw / raw.mean(), rtol=1e-4)
  # Record 5 is the validation loss of the state after 4 steps.
  config = attribute_config(ADAPTIVE)
  validation = attribute_sources.open_split(config.data, 'val')
  with jax.set_mesh(four.mesh):
    losses = attribute_objectives.validation_task_losses(
        step_lib.make_embed(four.model, four.mesh), four.state, validation,
        four.mesh, config)
  np.testing.assert_allclose(cur, losses, rtol=1e-5)
  assert all('attribute_accuracy' in h for h in whole.history)


def test_lmle_attributes_recluster_each_attribute(attribute_runs):
  # (Resuming at a re-clustering step is tested with identities, in
  # test_loop.py: the same code path.)
  whole = attribute_runs['lmle']
  clusters = np.asarray(whole.state.extra['clusters'])
  attributes = whole.source.attributes
  assert clusters.shape == (NUM_ATTRIBUTES, 32)
  # Global ids class * 2 + {0, 1}: each attribute's classes split in two.
  np.testing.assert_array_equal(clusters // 2, attributes.T)
  for a in range(NUM_ATTRIBUTES):
    for value in (False, True):
      members = clusters[a][attributes[:, a] == value]
      assert len(set(members)) == min(2, len(members))
  assert all(0 <= h['valid_quintuplets'] <= 1 for h in whole.history)


def test_the_training_split_is_the_synthetic_attribute_set(attribute_runs):
  run = attribute_runs['adaptive']
  expected, names, _ = celeba.synthetic_attribute_labels(
      32, seed=0, num_attributes=NUM_ATTRIBUTES, first_identity=1_000_000)
  np.testing.assert_array_equal(run.source.attributes, expected)
  assert list(run.source.attribute_names) == names
  assert run.state.params['head']['attribute_weights'].shape == (
      8, NUM_ATTRIBUTES)


@pytest.mark.parametrize('change, message', [
    (dict(source='synthetic'), "trains on attributes but data.source="
     "'synthetic' has none"),
    (dict(loss='arcface'), 'is an attribute dataset: use loss.name'),
    (dict(weighting_every=0), 'loss.weighting_every must be >= 1'),
])
def test_config_errors_name_the_key(tmp_path, change, message):
  config = attribute_config(ADAPTIVE)
  if 'source' in change:
    config.data.source = change['source']
  if 'loss' in change:
    config.loss = ml_collections.ConfigDict(dict(name='arcface', scale=16.0,
                                                 margin=0.3))
  if 'weighting_every' in change:
    config.loss.weighting_every = 0
  with pytest.raises(loop.ConfigError, match=message):
    loop.train(config, str(tmp_path), log=False)


def test_init_from_starts_with_another_runs_backbone(tmp_path,
                                                   attribute_runs):
  first = attribute_runs['lmle']
  config = attribute_config(dict(name='attributes'), total_steps=1)
  config.init_from = first.workdir
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=0.0, weight_decay=1e-4, warmup_steps=0,
      schedule='constant'))
  tuned = loop.train(config, str(tmp_path / 'attributes'), log=False)
  # A zero learning rate: the backbone is still the identity run's.
  for a, b in zip(leaves(tuned.state.params['backbone']),
                  leaves(first.state.params['backbone'])):
    np.testing.assert_array_equal(a, b)
  config.model.kwargs.embedding_dim = 16
  with pytest.raises(loop.ConfigError, match='does not match config.model'):
    loop.train(config, str(tmp_path / 'other'), log=False)
