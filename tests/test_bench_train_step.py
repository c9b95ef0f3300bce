"""bench.train_step on a tiny IResNet, its FLOPs count and peak table.

The PyTorch baseline's tests run only where torch is installed; the bench
itself skips PyTorch without it (checked here with torch hidden).
"""
import importlib
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import train_step
from facejax import models
from facejax.losses import margin
from facejax.models import counting

TINY_ARGS = ['--model', 'iresnet18', '--tiny', '--batch', '16',
             '--image-size', '32', '--steps', '2', '--warmup', '1',
             '--windows', '2', '--dtype', 'float32']


def tiny_model():
  return models.get('iresnet18', **train_step.TINY_IRESNET)


def conv_macs(out_side, kernel, in_features, out_features):
  return out_side * out_side * kernel * kernel * in_features * out_features


def test_rows_on_cpu_and_torch_skipped_without_it(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, 'torch', None)  # import torch fails
  # --torch sets it unless set: keep it out of the other tests' processes.
  monkeypatch.setenv('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  rows = train_step.main(TINY_ARGS + ['--classes', '64,128', '--torch',
                                      '--markdown'])
  printed = capsys.readouterr().out
  assert 'torch is not installed' in printed
  assert 'step time at 128 classes / at 64' in printed
  assert [row['classes'] for row in rows] == [64, 128]
  for row in rows:
    assert row['images_per_s'] > 0 and row['step_ms'] > 0
    assert math.isclose(row['images_per_s'] * row['step_ms'], 16e3)
    assert row['mfu'] == 'n/a'  # a CPU has no peak in the table
    assert math.isfinite(row['loss'])
    assert row['torch_images_per_s'] is None
    assert row['jax_over_torch'] is None
    assert row['device'] == f'{jax.device_count()} x cpu'
    assert row['flops_per_image'] == (row['backbone_flops_per_image']
                                      + row['head_flops_per_image'])
  lines = printed.splitlines()
  header = lines.index('| model | batch | classes | dtype | device | '
                       'images/s (JAX) | step ms | MFU | images/s (PyTorch) '
                       '| JAX / PyTorch |')
  assert lines[header + 1] == '|' + '---|' * 10
  for row, line in zip(rows, lines[header + 2:header + 4]):
    cells = line.strip('| ').split(' | ')
    assert cells[:4] == ['iresnet18 (tiny)', '16', str(row['classes']),
                         'float32']
    assert float(cells[5]) == pytest.approx(row['images_per_s'], 0.01)
    assert cells[7:] == ['n/a', 'n/a', 'n/a']


def test_plain_table_is_aligned(capsys):
  row = dict(model='m', batch=8, classes=1000, dtype='float32',
             device='1 x cpu', images_per_s=12.5, step_ms=640.0,
             mfu=0.4321, torch_images_per_s=10.0, jax_over_torch=1.25)
  train_step.print_table([row], markdown=False)
  header, line = capsys.readouterr().out.splitlines()
  assert len(header) == len(line)
  assert line.split() == ['m', '8', '1,000', 'float32', '1', 'x', 'cpu',
                          '12.5', '640.0', '43.2%', '10.0', '1.250']


def test_training_flops_per_image_by_hand():
  # Tiny IResNet at 32x32: stem 3->4 at 32; stages 4, 4, 8, 8 wide, one
  # unit each (conv1 at the input's side, conv2 and the 1x1 shortcut with
  # stride 2); dense 2*2*8 -> 8.
  macs = (conv_macs(32, 3, 3, 4)
          + conv_macs(32, 3, 4, 4) + conv_macs(16, 3, 4, 4)
          + conv_macs(16, 1, 4, 4)
          + conv_macs(16, 3, 4, 4) + conv_macs(8, 3, 4, 4)
          + conv_macs(8, 1, 4, 4)
          + conv_macs(8, 3, 4, 8) + conv_macs(4, 3, 8, 8)
          + conv_macs(4, 1, 4, 8)
          + conv_macs(4, 3, 8, 8) + conv_macs(2, 3, 8, 8)
          + conv_macs(2, 1, 8, 8)
          + 2 * 2 * 8 * 8)
  backbone, head = train_step.training_flops_per_image(tiny_model(), 32, 8,
                                                       128)
  assert backbone == 6 * macs
  assert head == 6 * 8 * 128


def test_peak_flops_table():
  assert train_step.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16')[0] == (
      989e12)
  assert train_step.peak_flops('NVIDIA H100 80GB HBM3', 'float32')[0] == (
      494.5e12)
  assert train_step.peak_flops('NVIDIA H200', 'bfloat16')[0] == 989e12
  assert train_step.peak_flops('NVIDIA H100 PCIe', 'bfloat16')[0] == 756e12
  assert train_step.peak_flops('NVIDIA A100-SXM4-80GB', 'bfloat16')[0] == (
      312e12)
  assert train_step.peak_flops('cpu', 'bfloat16') == (None, 'n/a')
  assert train_step.peak_flops('NVIDIA H100 NVL', 'bfloat16') == (None,
                                                                  'n/a')


def _torch_reference():
  pytest.importorskip('torch')
  return importlib.import_module('bench.torch_reference')


def _trainable_parameters(torch_model):
  return sum(p.numel() for p in torch_model.parameters() if p.requires_grad)


@pytest.mark.parametrize('name,kwargs', [
    ('iresnet18', train_step.TINY_IRESNET), ('iresnet50', {})])
def test_torch_iresnet_has_the_flax_parameters(name, kwargs):
  torch_reference = _torch_reference()
  model = models.get(name, **kwargs)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 112, 112, 3))))
  torch_model = torch_reference.iresnet(
      model.stage_units, model.stage_features, model.stem_features,
      model.embedding_dim, 112)
  assert _trainable_parameters(torch_model) == counting.count_parameters(
      variables['params'])


def test_torch_arcface_matches_facejax():
  torch_reference = _torch_reference()
  torch = sys.modules['torch']
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(16, 8)).astype(np.float32)
  weights = rng.normal(size=(8, 32)).astype(np.float32)
  labels = rng.integers(0, 32, size=16).astype(np.int32)
  # Theta beyond pi - m for two examples: the fallback branch.
  embeddings[0] = -weights[:, labels[0]]
  embeddings[1] = -weights[:, labels[1]] + 0.1 * embeddings[1]
  expected = margin.arcface_loss(jnp.asarray(embeddings), jnp.asarray(weights),
                                 jnp.asarray(labels), 64.0, 0.5)
  actual = torch_reference.arcface_loss(
      torch.from_numpy(embeddings), torch.from_numpy(weights.T.copy()),
      torch.from_numpy(labels).long(), 64.0, 0.5)
  np.testing.assert_allclose(float(actual), float(expected), rtol=1e-5)


def test_torch_baseline_is_timed(monkeypatch):
  _torch_reference()
  monkeypatch.setenv('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  rows = train_step.main(TINY_ARGS + ['--classes', '64', '--torch'])
  assert rows[0]['torch_images_per_s'] > 0
  assert rows[0]['jax_over_torch'] == pytest.approx(
      rows[0]['images_per_s'] / rows[0]['torch_images_per_s'])
  assert 'cpu' in rows[0]['torch_device']
