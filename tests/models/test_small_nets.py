"""The early face nets: center-loss CNN, DeepID2 and VGG-Face.

What every backbone must do is in test_zoo.py; here are what is particular
to these three: VGG-Face's classifier, the papers' defaults, and the
published layer shapes and sizes by ``jax.eval_shape`` (no compute).
"""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax import models
from facejax.models import counting
from facejax.models import locally_connected
from tests.models import zoo


def test_vgg_face_classifier_returns_embedding_and_logits():
  plain, shape, dim = zoo.build('vgg_face')
  model, _, _ = zoo.build('vgg_face', num_classes=10)
  variables = zoo.init(plain, shape)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))
  assert set(shapes['params']) == set(variables['params']) | {'fc8'}
  chex.assert_shape([shapes['params']['fc8']['kernel'],
                     shapes['params']['fc8']['bias']], [(dim, 10), (10,)])
  rng = np.random.default_rng(0)
  fc8 = {'kernel': rng.standard_normal((dim, 10)).astype(np.float32),
         'bias': np.zeros(10, np.float32)}
  variables = {'params': {**variables['params'], 'fc8': fc8}}
  x = zoo.images(shape)
  embedding, logits = zoo.apply(model, variables, x)
  chex.assert_shape([embedding, logits], [(2, dim), (2, 10)])
  chex.assert_type([embedding, logits], jnp.float32)
  np.testing.assert_allclose(logits, embedding @ fc8['kernel'], rtol=1e-5,
                             atol=1e-5)
  chex.assert_trees_all_close(embedding,
                              zoo.apply(plain, zoo.init(plain, shape), x))
  train_embedding, train_logits = zoo.apply(model, variables, x, train=True,
                                            rngs={'dropout': zoo.key(3)})
  chex.assert_tree_all_finite([train_embedding, train_logits])
  # Dropout on fc7 acts on the logits' path only.
  assert not np.allclose(train_logits, train_embedding @ fc8['kernel'])


def test_registry_defaults_are_the_papers():
  center = models.get('center_loss_cnn')
  assert (center.embedding_dim, tuple(center.local_sharing)) == (512, (4, 2, 1))
  assert models.get('deepid2').embedding_dim == 160
  vgg = models.get('vgg_face')
  assert (vgg.embedding_dim, vgg.num_classes, vgg.dropout_rate) == (
      4096, None, 0.5)
  assert models.get('vgg_face', num_classes=2622).num_classes == 2622


@pytest.mark.parametrize('name, shape, size', [
    ('center_loss_cnn', (1, 112, 112, 3), 512),
    ('deepid2', (1, 112, 112, 3), 160),
    ('vgg_face', (1, 112, 112, 3), 4096),
])
def test_full_width_models_accept_112x112_faces(name, shape, size):
  model = models.get(name)
  out = jax.eval_shape(lambda: model.init_with_output(
      jax.random.PRNGKey(0), jnp.zeros(shape))[0])
  assert out.shape == (1, size) and out.dtype == jnp.float32


# --- Full sizes, by eval_shape ---------------------------------------------


def test_vgg_face_has_the_published_size_and_macs():
  # VGG-16 with a 2622-way classifier: 145,002,878 parameters.
  model = models.get('vgg_face', num_classes=2622)
  assert counting.count_parameters(
      zoo.abstract_params(model, (1, 224, 224, 3))) == 145_002_878
  macs = counting.count_macs(models.get('vgg_face'), (1, 224, 224, 3))
  # The classifier adds fc8 (4096 x 2622) and counts through its tuple output.
  assert counting.count_macs(model, (1, 224, 224, 3)) == macs + 4096 * 2622
  assert abs(macs / 15.5e9 - 1) < 0.01
  widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
  sides = [224] * 2 + [112] * 2 + [56] * 3 + [28] * 3 + [14] * 3
  expected = sum(side * side * 9 * c_in * c_out for side, c_in, c_out in zip(
      sides, [3] + widths[:-1], widths))
  expected += 7 * 7 * 512 * 4096 + 4096 * 4096
  assert macs == expected


def test_deepid2_layers_match_the_papers_figure():
  model = models.get('deepid2')
  shape = (1, 55, 47, 3)
  shapes = zoo.record_shapes(model, shape, (nn.Conv, nn.Dense,
                                        locally_connected.LocallyConnected2D))
  assert {name: out for name, (_, out) in shapes.items()} == {
      'conv1': (52, 44, 20), 'conv2': (24, 20, 40), 'conv3': (10, 8, 60),
      'conv4': (4, 3, 80), 'deepid2': (160,)}
  # The DeepID2 layer sees pool3 (5x4x60) and conv4 (4x3x80).
  assert shapes['deepid2'][0] == (5 * 4 * 60 + 4 * 3 * 80,)
  params = zoo.abstract_params(model, shape)
  assert params['conv4']['kernel'].shape == (4, 3, 2, 2, 60, 80)
  expected_params = ((4 * 4 * 3 + 1) * 20 + (9 * 20 + 1) * 40
                     + (9 * 40 + 1) * 60 + 4 * 3 * (2 * 2 * 60 + 1) * 80
                     + (1200 + 960 + 1) * 160)
  assert counting.count_parameters(params) == expected_params == 607_000
  expected_macs = (52 * 44 * 16 * 3 * 20 + 24 * 20 * 9 * 20 * 40
                   + 10 * 8 * 9 * 40 * 60 + 4 * 3 * 4 * 60 * 80 + 2160 * 160)
  assert counting.count_macs(model, shape) == expected_macs


def test_center_loss_cnn_layers_match_the_reconstruction():
  model = models.get('center_loss_cnn')
  shape = (1, 112, 96, 3)
  shapes = zoo.record_shapes(model, shape, (nn.Conv, nn.Dense,
                                        locally_connected.LocallyConnected2D))
  assert {name: out for name, (_, out) in shapes.items()} == {
      'conv1_1': (112, 96, 128), 'conv1_2': (112, 96, 128),
      'conv2_1': (56, 48, 128), 'conv2_2': (56, 48, 128),
      'local1': (28, 24, 256), 'local2': (14, 12, 256),
      'local3': (7, 6, 256), 'fc5': (512,)}
  # fc5 sees pool4 (7x6x256) next to local3 (7x6x256).
  assert shapes['fc5'][0] == (7 * 6 * 512,)
  params = zoo.abstract_params(model, shape)
  # 4x4, 2x2 and 1x1 sharing regions: 7x6 distinct filters in every layer.
  assert params['local1']['kernel'].shape == (7, 6, 3, 3, 128, 256)
  assert params['local2']['kernel'].shape == (7, 6, 3, 3, 256, 256)
  assert params['local3']['kernel'].shape == (7, 6, 3, 3, 256, 256)
  conv = (9 * 3 + 1) * 128 + 3 * (9 * 128 + 1) * 128 + 4 * 128  # + PReLU
  local = 7 * 6 * ((9 * 128 + 1) * 256 + 2 * (9 * 256 + 1) * 256) + 3 * 256
  fc = (7 * 6 * 512 + 1) * 512
  assert counting.count_parameters(params) == conv + local + fc
  expected_macs = (112 * 96 * 9 * (3 + 128) * 128 + 56 * 48 * 9 * 2 * 128 * 128
                   + 28 * 24 * 9 * 128 * 256 + (14 * 12 + 7 * 6) * 9 * 256 * 256
                   + 7 * 6 * 512 * 512)
  assert counting.count_macs(model, shape) == expected_macs
