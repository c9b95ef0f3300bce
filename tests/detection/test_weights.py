"""The released weights: found without importing mtcnn, converted, cached."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from facejax.detection import weights

pytest.importorskip('mtcnn')


def test_importing_detection_imports_neither_tensorflow_nor_mtcnn():
  # GPU hosts have no tensorflow, and importing mtcnn imports it; building
  # a detector reads the package's files without importing it either.
  code = '\n'.join([
      'import sys',
      'import facejax.detection',
      'from facejax.detection import boxes, cascade, crops, joblib_arrays',
      'from facejax.detection import mtcnn, nets, nms, pyramid, weights',
      'weights.load_params(cache=False)',
      "for name in ('tensorflow', 'mtcnn', 'joblib'):",
      "  assert name not in sys.modules, f'{name} was imported'",
  ])
  subprocess.run([sys.executable, '-c', code], check=True)


def test_converts_every_array_and_caches_by_content(tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  fresh = weights.load_params(cache=True)
  cached = list((tmp_path / 'facejax').glob('mtcnn-*.npz'))
  assert len(cached) == 1 and len(cached[0].stem) == len('mtcnn-') + 64
  again = weights.load_params(cache=True)  # from the .npz
  uncached = weights.load_params(cache=False)
  for net in weights.NETS:
    flat_fresh = weights._flatten(fresh[net])  # pylint: disable=protected-access
    flat_again = weights._flatten(again[net])  # pylint: disable=protected-access
    flat_plain = weights._flatten(uncached[net])  # pylint: disable=protected-access
    assert set(flat_fresh) == set(flat_again) == set(flat_plain)
    assert len(flat_fresh) == len(weights.KERAS_LAYOUT[net])
    for key, value in flat_fresh.items():
      assert value.dtype == np.float32
      np.testing.assert_array_equal(value, flat_again[key])
      np.testing.assert_array_equal(value, flat_plain[key])
  counts = {net: sum(v.size for v in weights._flatten(fresh[net]).values())  # pylint: disable=protected-access
            for net in weights.NETS}
  # The published parameter counts of the three networks.
  assert counts == {'pnet': 6632, 'rnet': 100178, 'onet': 389040}


def test_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  weights.load_params()
  (path,) = (tmp_path / 'facejax').glob('mtcnn-*.npz')
  path.write_bytes(b'garbage')
  variables = weights.load_params()
  assert variables['pnet']['params']['conv1']['kernel'].shape == (3, 3, 3,
                                                                   10)
  assert path.stat().st_size > 1000  # rewritten


def test_missing_package_says_pip_install(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'mtcnn'
                      else real(name, *a))
  with pytest.raises(weights.WeightsError, match='pip install mtcnn'):
    weights.load_params()


def test_a_wrong_layout_names_the_array(tmp_path):
  joblib = pytest.importorskip('joblib')
  files = weights.package_weight_files()
  arrays = [np.zeros((3, 3, 3, 10), np.float32)] * 13
  bad = tmp_path / 'pnet.lz4'
  joblib.dump(arrays, bad, compress='lz4')
  with pytest.raises(weights.WeightsError,
                     match=r'array 1 \(pnet conv1/bias\) has shape '
                           r'\(3, 3, 3, 10\), expected \(10,\)'):
    weights.load_params(dict(files, pnet=str(bad)), cache=False)
  joblib.dump(arrays[:5], bad, compress='lz4')
  with pytest.raises(weights.WeightsError, match='5 arrays, but pnet has 13'):
    weights.load_params(dict(files, pnet=str(bad)), cache=False)
  assert os.path.exists(files['pnet'])
