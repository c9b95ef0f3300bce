"""Bad config values: a ConfigError naming the key, before data or compiling.

Each case is a config that used to end in a traceback (or train silently);
the train() call runs with traps on the next step (reading the data, or
building the mesh and compiling), so a check that came too late fails the
test instead of passing it.
"""
import os
import subprocess
import sys

import jax
import ml_collections
import pytest

from facejax import inference
from facejax import models
from facejax.training import config_checks
from facejax.training import loop
from facejax.training import objectives
from facejax.training import run_directory
from tests.training.tiny import ADAPTIVE
from tests.training.tiny import LMLE_ATTRIBUTES
from tests.training.tiny import attribute_config
from tests.training.tiny import tiny_config

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')
PK = {'data.identities_per_batch': 4, 'data.images_per_identity': 4}
EVAL_ON = {'eval.every': 2}
LMLE = dict(name='lmle', margins=(0.1, 0.1, 0.1), clusters_per_class=2,
            cluster_every=2)


class Reached(Exception):
  """A trapped step of train() ran: the check did not stop it before."""


def trap(name):
  def reached(*args, **kwargs):
    raise Reached(name)
  return reached


def make_config(overrides):
  """The tiny config (on the attribute set for attribute losses) with
  ``overrides`` (dotted keys; ``loss``: the whole loss config)."""
  overrides = dict(overrides)
  loss = overrides.pop('loss', None)
  if loss and loss['name'] in objectives.ATTRIBUTES:
    config = attribute_config(loss)
  else:
    config = tiny_config()
    if loss:
      config.loss = ml_collections.ConfigDict(loss)
  for key, value in overrides.items():
    *parents, last = key.split('.')
    node = config
    for name in parents:
      node = node[name]
    if last in node:  # a value of another type, as a config file may set
      del node[last]
    node[last] = value
  return config


def config_traps(monkeypatch):
  """Traps on reading (or rendering) the training data."""
  monkeypatch.setattr(loop, 'training_source', trap('training_source'))


def compile_traps(monkeypatch):
  """Traps on what follows check_source: the mesh, and any jax.jit."""
  monkeypatch.setattr(loop.sharding, 'make_mesh', trap('make_mesh'))
  monkeypatch.setattr(jax, 'jit', trap('jax.jit'))


# (overrides, the key the error names): checked from the config alone.
CONFIG_CASES = [
    # The findings of issue 14: tracebacks...
    ({'checkpoint_every': 0}, 'checkpoint_every'),
    ({'eval.batch_size': 0}, 'eval.batch_size'),
    ({'eval.pairs': 0, **EVAL_ON}, 'eval.pairs'),
    ({'log_every': 0}, 'log_every'),
    ({'micro_batches': 0}, 'micro_batches'),
    ({'batch_size': 0}, 'batch_size'),
    ({'batch_size': -16}, 'batch_size'),
    ({'keep_last': 0}, 'keep_last'),
    ({'optimizer.name': 'adamx'}, 'optimizer.name'),
    ({'optimizer.schedule': 'cosin'}, 'optimizer.schedule'),
    ({'data.image_size': 0}, 'data.image_size'),
    ({'data.augmentation.min_crop_scale': 2.0},
     'data.augmentation.min_crop_scale'),
    ({'data.identities_per_batch': 4}, 'data.images_per_identity'),
    ({'data.identities_per_batch': 4, 'loss': dict(
        name='triplet_batch_hard', margin=0.2)}, 'data.images_per_identity'),
    ({'data.synthetic.num_identities': 0}, 'data.synthetic.num_identities'),
    ({'data.source': '/nonexistent/faces'}, 'data.source'),
    ({'init_from': '/nonexistent/run'}, 'init_from'),
    ({'compute_dtype': 'float31'}, 'compute_dtype'),
    # ... and values accepted silently.
    ({'checkpoint_every': -1}, 'checkpoint_every'),
    ({'eval.every': -1}, 'eval.every'),
    ({'optimizer.warmup_steps': -5}, 'optimizer.warmup_steps'),
    ({'loss.margin': -0.5}, 'loss.margin'),
    ({'optimizer.learning_rate': -1.0}, 'optimizer.learning_rate'),
    ({'data.image_size': 3}, 'data.image_size'),
    # The other keys a user sets.
    ({'total_steps': 0}, 'total_steps'),
    ({'seed': -1}, 'seed'),
    ({'num_classes': -1}, 'num_classes'),
    ({'batch_size': 1.5}, 'batch_size'),
    ({'mesh.model': 0}, 'mesh.model'),
    ({'mesh.shard_backbone': 'yes'}, 'mesh.shard_backbone'),
    ({'eval.batch_size': 12}, 'eval.batch_size'),
    ({'eval.pairs': 19, **EVAL_ON}, 'eval.pairs'),
    ({'eval.seed': -1}, 'eval.seed'),
    ({'eval.bin': '/nonexistent/lfw.bin', **EVAL_ON}, 'eval.bin'),
    # config.evals: each entry, and the best checkpoint's metric.
    ({'evals': dict(lfw=dict(bin='/nonexistent/lfw.bin', every=2))},
     'evals.lfw.bin'),
    ({'evals': dict(held=dict(pairs=40))}, 'evals.held.every'),
    ({'evals': dict(held=dict(pairs=40, every=-2))}, 'evals.held.every'),
    ({'evals': dict(held=dict(pairs=40, every=2, type='retrieval'))},
     'evals.held.type'),
    ({'evals': dict(held=dict(pairs=40, every=2, metrics=('acc',)))},
     'evals.held.metrics'),
    ({'evals': dict(held=dict(pairs=40, every=2, pair=3))},
     'evals.held.pair'),
    ({'evals': dict(held=dict(pairs=40, every=2, batch_size=12))},
     'evals.held.batch_size'),
    ({'evals': dict(held=dict(pairs=19, every=2))}, 'evals.held.pairs'),
    ({'evals': dict(held=dict(every=2))}, 'evals.held'),
    ({'evals': dict(held=dict(every=2, pairs_file='pairs.txt'))},
     'evals.held'),
    ({'evals': dict(verification=dict(pairs=40, every=2)), **EVAL_ON},
     'evals.verification'),
    ({'evals': dict(held=3)}, 'evals.held'),
    ({'best_metric': 'lfw/accuracy'}, 'best_metric'),
    ({'best_metric': 'held/accuracy',
      'evals': dict(held=dict(pairs=40, every=0))}, 'best_metric'),
    ({'data.landmarks_file': '/nonexistent/landmarks.txt'},
     'data.landmarks_file'),
    ({'data.synthetic.images_per_identity': 0},
     'data.synthetic.images_per_identity'),
    ({'data.synthetic.num_identities': 100_001},
     'data.synthetic.num_identities'),
    ({'data.synthetic.seed': -1}, 'data.synthetic.seed'),
    ({'data.identities_per_batch': 4, 'data.images_per_identity': 2},
     'data.identities_per_batch x data.images_per_identity'),
    ({'data.augmentation.brightness': 1.5}, 'data.augmentation.brightness'),
    ({'data.augmentation.contrast': -0.1}, 'data.augmentation.contrast'),
    ({'data.augmentation.saturation': 1.0}, 'data.augmentation.saturation'),
    ({'data.augmentation.hue': 0.6}, 'data.augmentation.hue'),
    ({'data.augmentation.flip': 'no'}, 'data.augmentation.flip'),
    ({'model.name': 'sphereface20'}, 'model.kwargs'),  # IResNet's kwargs
    ({'model.kwargs.stage_units': (1,) * 5,  # 5 stride-2 stages: >= 32
      'model.kwargs.stage_features': (4,) * 5, 'data.image_size': 16},
     'data.image_size'),
    ({'optimizer.weight_decay': -5e-4}, 'optimizer.weight_decay'),
    ({'optimizer.momentum': 1.0}, 'optimizer.momentum'),
    ({'optimizer.clip_norm': -1.0}, 'optimizer.clip_norm'),
    ({'optimizer.end_learning_rate': -0.1}, 'optimizer.end_learning_rate'),
    ({'optimizer.end_learning_rate': 0.5}, 'optimizer.end_learning_rate'),
    ({'optimizer.learning_rate': float('nan')}, 'optimizer.learning_rate'),
    ({'loss.scale': 0.0}, 'loss.scale'),
    ({'loss.name': 'cosface', 'loss.margin': -0.1}, 'loss.margin'),
    ({'loss': dict(name='combined', scale=16.0, m1=0.0, m2=0.3, m3=0.2)},
     'loss.m1'),
    ({'loss': dict(name='combined', scale=16.0, m1=1.0, m2=0.3, m3=-0.2)},
     'loss.m3'),
    ({'loss.name': 'sphereface'}, 'loss.sphereface_m'),  # keys of arcface
    ({'loss': dict(name='sphereface', sphereface_m=0, lambda_base=1000.0,
                   lambda_gamma=0.12, lambda_power=1.0, lambda_min=5.0)},
     'loss.sphereface_m'),
    ({'loss': dict(name='sphereface', sphereface_m=4, lambda_base=1000.0,
                   lambda_gamma=0.12, lambda_power=1.0, lambda_min=-5.0)},
     'loss.lambda_min'),
    ({'loss': dict(name='center', center_weight=-0.01, center_alpha=0.5)},
     'loss.center_weight'),
    ({'loss': dict(name='center', center_weight=0.01, center_alpha=1.5)},
     'loss.center_alpha'),
    ({'loss.sample_rate': 0.0}, 'loss.sample_rate'),
    ({'loss': dict(name='triplet_soft'), **PK}, 'loss.margin'),
    ({'loss': dict(name='lifted', margin=-1.0), **PK}, 'loss.margin'),
    ({'loss': dict(name='contrastive', margin=1.0, normalise='yes'), **PK},
     'loss.normalise'),
    ({'loss': dict(LMLE, margins=(0.1, -0.1, 0.1)), **PK}, 'loss.margins'),
    ({'loss': dict(LMLE, margins=(0.1, 0.1)), **PK}, 'loss.margins'),
    ({'loss': dict(LMLE, clusters_per_class=0), **PK},
     'loss.clusters_per_class'),
    ({'loss': dict(LMLE, cluster_iterations=0), **PK},
     'loss.cluster_iterations'),
    ({'loss': dict(LMLE), 'data.identities_per_batch': 8,
      'data.images_per_identity': 2}, 'data.images_per_identity'),
    ({'loss': dict(ADAPTIVE, weighting='adaptve')}, 'loss.weighting'),
    ({'loss': dict(ADAPTIVE, weighting_window=0)}, 'loss.weighting_window'),
    ({'loss': dict(name='attributes', weighting='adaptive')},
     'loss.weighting_every'),
    ({'loss': dict(LMLE_ATTRIBUTES, attribute_dim=0)}, 'loss.attribute_dim'),
    ({'loss': ADAPTIVE, 'data.synthetic_attributes.num_attributes': 41},
     'data.synthetic_attributes.num_attributes'),
    ({'loss': ADAPTIVE, 'data.max_examples': dict(train=-1)},
     'data.max_examples.train'),
]
# Checked against the opened training data (16 identities x 4 images).
SOURCE_CASES = [
    ({'batch_size': 128}, 'batch_size'),
    ({'batch_size': 32, 'data.identities_per_batch': 16,
      'data.images_per_identity': 2, 'data.synthetic.num_identities': 8},
     'data.identities_per_batch'),
]


def case_id(case):
  overrides, _ = case
  return ','.join(f'{k}={v}' for k, v in overrides.items())[:60]


@pytest.mark.parametrize('case', CONFIG_CASES, ids=case_id)
def test_config_errors_name_the_key_before_the_data(case, tmp_path,
                                                    monkeypatch):
  overrides, key = case
  config = make_config(overrides)
  config_traps(monkeypatch)
  compile_traps(monkeypatch)
  with pytest.raises(loop.ConfigError) as error:
    loop.train(config, str(tmp_path), log=False)
  assert key in str(error.value)
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('case', SOURCE_CASES, ids=case_id)
def test_data_errors_name_the_key_before_compiling(case, tmp_path,
                                                  monkeypatch):
  overrides, key = case
  config = make_config(overrides)
  config_checks.check_config(config, len(jax.devices()))  # a config-only check passes
  compile_traps(monkeypatch)
  with pytest.raises(loop.ConfigError) as error:
    loop.train(config, str(tmp_path), log=False)
  assert key in str(error.value)


@pytest.mark.parametrize('traps, where', [(config_traps, 'training_source'),
                                          (compile_traps, 'make_mesh')])
def test_the_traps_catch_a_good_config(traps, where, tmp_path, monkeypatch):
  traps(monkeypatch)
  with pytest.raises(Reached, match=where):
    loop.train(tiny_config(), str(tmp_path), log=False)


def test_errors_name_the_value_and_what_is_allowed():
  config = tiny_config(**{'loss.margin': -0.5})
  with pytest.raises(loop.ConfigError,
                     match=r'^loss.margin must be >= 0, got -0.5$'):
    config_checks.check_config(config, 8)
  config = make_config({'batch_size': '64'})
  with pytest.raises(loop.ConfigError,
                     match=r"^batch_size must be an integer >= 1, got '64'$"):
    config_checks.check_config(config, 8)
  config = tiny_config(**{'loss.name': 'sphereface'})
  with pytest.raises(loop.ConfigError, match=(
      r"^loss.sphereface_m is missing: loss.name='sphereface' needs it "
      r'\(an integer >= 1\)$')):
    config_checks.check_config(config, 8)


def test_init_from_must_be_a_run_with_a_checkpoint(tmp_path):
  (tmp_path / run_directory.CONFIG_FILE).write_text('{}')
  config = tiny_config(init_from=str(tmp_path))
  with pytest.raises(loop.ConfigError, match='init_from=.*checkpoint'):
    config_checks.check_config(config, 8)
  (tmp_path / 'checkpoints' / '4').mkdir(parents=True)
  config_checks.check_config(config, 8)


def test_every_model_has_a_minimum_image_size():
  for name in models.names():
    assert config_checks.min_image_size(ml_collections.ConfigDict(
        dict(name=name))) >= 16
  assert config_checks.min_image_size(ml_collections.ConfigDict(dict(
      name='iresnet18', kwargs=dict(stage_units=(1, 1, 1))))) == 8


@pytest.mark.parametrize('name', ['iresnet18', 'mobilefacenet',
                                  'sphereface20', 'center_loss_cnn',
                                  'deepid2', 'vgg_face'])
def test_every_model_runs_at_its_minimum_image_size(name):
  config = tiny_config(**{'model.name': name, 'model.kwargs': {}})
  size = config_checks.min_image_size(config.model)
  config.data.image_size = size
  config_checks.check_config(config, 8)
  # Shapes only: the backbone's embedding at that size, no compute.
  assert inference.embedding_dim(inference.build_model(config),
                                 (size, size, 3)) > 0


@pytest.mark.parametrize('flag, message', [
    ('--config.foo=1', 'error: --config.foo: no such key in the config'),
    ('--config.optimizer.learning_rate=-1',
     'error: optimizer.learning_rate must be >= 0, got -1.0'),
])
def test_python_m_train_prints_one_error_line(flag, message, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'train', '--config',
       'train/configs/default.py', '--workdir', str(tmp_path / 'run'), flag],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert [line for line in result.stderr.splitlines()
          if line.startswith('error:')] == [message]
  assert not os.path.exists(tmp_path / 'run')


def test_python_m_train_names_a_damaged_data_file_in_one_line(tmp_path):
  records = tmp_path / 'records'
  records.mkdir()
  (records / 'dataset.json').write_text('{"shards": [')
  result = subprocess.run(
      [sys.executable, '-m', 'train', '--config',
       'train/configs/default.py', '--workdir', str(tmp_path / 'run'),
       f'--config.data.source={records}'],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  errors = [line for line in result.stderr.splitlines()
            if line.startswith('error:')]
  assert len(errors) == 1 and 'dataset.json' in errors[0], result.stderr
