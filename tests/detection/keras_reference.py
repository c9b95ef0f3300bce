"""The mtcnn package's own Keras networks with its weights (needs TF).

The reference every test of facejax.detection compares against; imported
only by the tests that need it (importing mtcnn imports tensorflow).
"""
import functools

import pytest


@functools.lru_cache(maxsize=None)
def keras_net(name):
  """The package's built Keras model ('pnet', 'rnet' or 'onet')."""
  pytest.importorskip('tensorflow')
  network = pytest.importorskip(f'mtcnn.network.{name}')
  from mtcnn.utils.tensorflow import load_weights  # pylint: disable=g-import-not-at-top
  model = getattr(network, name[0].upper() + 'Net')()  # PNet, RNet, ONet
  model.build()
  model.set_weights(load_weights(f'{name}.lz4'))
  return model


@functools.lru_cache(maxsize=None)
def package_detector():
  """The package's detector, ``mtcnn.MTCNN()``."""
  mtcnn = pytest.importorskip('mtcnn')
  return mtcnn.MTCNN()
