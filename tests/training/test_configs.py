"""Every config in train/configs loads, checks and builds (shapes only)."""
import importlib
import os

import jax
import pytest

from facejax.data import attribute_sources
from facejax.training import loop
from facejax.training import objectives
from train.configs import attributes
from train.configs import sweep

CONFIGS = sorted(
    name[:-3] for name in os.listdir(os.path.join(
        os.path.dirname(__file__), '..', '..', 'train', 'configs'))
    if name.endswith('.py') and name != '__init__.py')


@pytest.mark.parametrize('name', CONFIGS)
def test_config_checks_and_builds(name):
  config = importlib.import_module(f'train.configs.{name}').get_config()
  classes = 85_742 if 'ms1mv2' in name else 10_572  # MS1MV2 or CASIA
  with_attributes = attribute_sources.is_attribute_dataset(
      config.data.source)
  loop.check_config(config, num_devices=8, num_classes=classes,
                    has_attributes=with_attributes)
  model = loop.build_model(config)
  size = config.data.image_size
  dim = loop.embedding_dim(model, (size, size, 3))
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
  loop.check_config(config, num_devices=8, num_classes=1,
                    has_attributes=True)
  assert config.model == attributes.get_config('adaptive').model
  assert config.optimizer == attributes.get_config('adaptive').optimizer
  assert config.total_steps == attributes.get_config('adaptive').total_steps
  with pytest.raises(ValueError, match='unknown variant'):
    attributes.get_config('lmle_knn')


@pytest.mark.parametrize('loss', sorted(sweep.LOSSES))
def test_every_sweep_config_checks(loss):
  config = sweep.get_config(loss)
  loop.check_config(config, num_devices=8, num_classes=300)
  assert config.loss.name == loss
  assert config.model == sweep.get_config('arcface').model  # same backbone
  assert config.total_steps == sweep.get_config('arcface').total_steps


def test_default_config_is_the_synthetic_dataset():
  config = importlib.import_module('train.configs.default').get_config()
  assert config.data.source == 'synthetic'
