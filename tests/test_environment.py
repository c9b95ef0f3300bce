"""The test environment itself: simulated devices and a tensorflow-free core."""
import subprocess
import sys

import jax


def test_eight_simulated_devices():
  assert jax.device_count() == 8


def test_core_imports_do_not_import_tensorflow():
  # GPU hosts have no tensorflow: the library proper must not need it.
  code = '\n'.join([
      'import sys',
      'import facejax, facejax.losses, facejax.models, facejax.data',
      'from facejax.models import counting',
      'from facejax.data import alignment, augment, convert, device',
      'from facejax.data import insightface, pipeline, sources, synthetic',
      'from facejax.data import tfds_sources, celeba, attribute_sources',
      'from facejax.losses import attributes',
      'from facejax.training import adaptive_weighting, clusters',
      'from facejax import inference',
      'from facejax.metrics import attributes, identification, verification',
      'from eval import attributes, lfw, megaface, ytf',
      'from facejax import sharding',
      'from facejax.losses import class_parallel',
      'from facejax.training import checkpoint, loop, objectives, optim',
      'from facejax.training import observe, state, step, distributed',
      'import tensorboardX',
      'for name in facejax.models.names():',
      '  facejax.models.get(name)  # imports every backbone module',
      "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'",
  ])
  subprocess.run([sys.executable, '-c', code], check=True)


def test_interop_imports_no_optional_dependency():
  # onnx, onnxruntime and PyTorch are optional: each is imported by the
  # function that needs it, never by importing facejax.interop.
  code = '\n'.join([
      'import sys',
      'import facejax.interop',
      'from facejax.interop import arcface_torch, importers, onnx_export',
      'from facejax.interop import onnx_import, torch_files, workdir',
      'from facejax.interop import __main__',
      "for name in ('torch', 'onnx', 'onnxruntime', 'tensorflow'):",
      "  assert name not in sys.modules, f'{name} was imported'",
  ])
  subprocess.run([sys.executable, '-c', code], check=True)
