"""Every config in train/configs loads, checks and builds (shapes only)."""
import importlib
import os
import types

import jax
import numpy as np
import pytest

from facejax import inference
from facejax.data import attribute_sources
from facejax.training import config_checks
from facejax.training import objectives
from train.configs import attributes
from train.configs import sweep

CONFIGS = sorted(
    name[:-3] for name in os.listdir(os.path.join(
        os.path.dirname(__file__), '..', '..', 'train', 'configs'))
    if name.endswith('.py') and name != '__init__.py')


def source_of(num_classes, images_per_class=20):
  """What check_source reads of a training source, without its images."""
  labels = np.repeat(np.arange(num_classes), images_per_class)
  return types.SimpleNamespace(num_classes=num_classes, labels=labels,
                               num_examples=len(labels))


def config_on_disk(name, tmp_path):
  """The config ``name``; a dataset path it names is made (empty) under
  ``tmp_path``: the check only sees that it exists."""
  module = importlib.import_module(f'train.configs.{name}')
  config = module.get_config()
  source = config.data.source
  if source == 'synthetic' or attribute_sources.is_attribute_dataset(source):
    return config
  path = tmp_path / os.path.basename(source)
  if source.endswith('.rec'):
    path.touch()
    path.with_suffix('.idx').touch()
  else:
    path.mkdir()
  return module.get_config(str(path))


@pytest.mark.parametrize('name', CONFIGS)
def test_config_checks_and_builds(name, tmp_path):
  config = config_on_disk(name, tmp_path)
  classes = 85_742 if 'ms1mv2' in name else 10_572  # MS1MV2 or CASIA
  with_attributes = attribute_sources.is_attribute_dataset(
      config.data.source)
  config_checks.check_config(config, num_devices=8)
  config_checks.check_source(config, source_of(1, images_per_class=8000)
                    if with_attributes else source_of(classes))
  model = inference.build_model(config)
  size = config.data.image_size
  dim = inference.embedding_dim(model, (size, size, 3))
  objective = objectives.Objective(config.loss, classes, dim,
                                   num_examples=20 * classes,
                                   num_attributes=40 if with_attributes
                                   else None)
  head = jax.eval_shape(objective.init_head, jax.random.key(0))
  if objective.has_class_weights:
    assert head['class_weights'].shape == (dim, classes)
  assert config.total_steps > 0


@pytest.mark.parametrize('variant', sorted(attributes.VARIANTS))
def test_every_attribute_variant_checks(variant):
  config = attributes.get_config(variant)
  config_checks.check_config(config, num_devices=8)
  config_checks.check_source(config, source_of(1, images_per_class=8000))
  assert config.model == attributes.get_config('adaptive').model
  assert config.optimizer == attributes.get_config('adaptive').optimizer
  assert config.total_steps == attributes.get_config('adaptive').total_steps
  with pytest.raises(ValueError, match='unknown variant'):
    attributes.get_config('lmle_knn')


@pytest.mark.parametrize('loss', sorted(sweep.LOSSES))
def test_every_sweep_config_checks(loss):
  config = sweep.get_config(loss)
  config_checks.check_config(config, num_devices=8)
  config_checks.check_source(config, source_of(300))
  assert config.loss.name == loss
  assert config.model == sweep.get_config('arcface').model  # same backbone
  assert config.total_steps == sweep.get_config('arcface').total_steps


def test_default_config_is_the_synthetic_dataset():
  config = importlib.import_module('train.configs.default').get_config()
  assert config.data.source == 'synthetic'
