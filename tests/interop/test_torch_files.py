"""Reading .pt files: the layouts arcface_torch writes, and refusals that
never run code from the file."""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from facejax.interop import ConversionError  # noqa: E402
from facejax.interop import torch_files  # noqa: E402
from bench import arcface_torch_models as reference  # noqa: E402


@pytest.fixture(scope='module')
def state_dict():
  net = reference.IResNet((1, 1, 1, 1), (4, 4, 8, 8), 4, 8, 32)
  return reference.randomise(net, 0, 32).state_dict()


def same(a, b):
  assert list(a) == list(b)
  for key in a:
    np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_a_saved_state_dict_reads_back(tmp_path, state_dict):
  path = tmp_path / 'model.pt'
  torch.save(state_dict, path)
  same(torch_files.read_state_dict(path), state_dict)


def test_arcface_torch_checkpoint_gpu_0_gives_its_backbone(tmp_path,
                                                          state_dict):
  # As arcface_torch's resumable checkpoint: the wrapped backbone's keys
  # beside the PartialFC shard, the optimizer and counters.
  path = tmp_path / 'checkpoint_gpu_0.pt'
  torch.save(dict(
      epoch=3, global_step=1200,
      state_dict_backbone={f'module.{k}': v for k, v in state_dict.items()},
      state_dict_softmax_fc={'weight': torch.zeros(10, 8)},
      optimizer={'state': {}, 'param_groups': [{'lr': 0.1, 'params': [0]}]},
      lr_scheduler={'last_epoch': 3}), path)
  loaded = torch_files.read_state_dict(path)
  assert all(key.startswith('module.') for key in loaded)
  same({key[len('module.'):]: value for key, value in loaded.items()},
       state_dict)


def test_a_legacy_non_zip_file_reads(tmp_path, state_dict):
  path = tmp_path / 'legacy.pt'
  torch.save(state_dict, path, _use_new_zipfile_serialization=False)
  same(torch_files.read_state_dict(path), state_dict)


class _RunsCode:
  """Unpickling this calls os.system: what a malicious .pt does."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


@pytest.mark.parametrize('zip_format', [True, False])
def test_a_malicious_pickle_is_refused_without_running_it(tmp_path,
                                                          zip_format):
  marker = tmp_path / 'code_ran'
  path = tmp_path / 'evil.pt'
  torch.save({'conv1.weight': torch.zeros(1), 'payload': _RunsCode(marker)},
             path, _use_new_zipfile_serialization=zip_format)
  with pytest.raises(ConversionError, match=r'evil\.pt: refused: the pickle '
                     'asks for more than tensors'):
    torch_files.read_state_dict(path)
  assert not marker.exists()
  # The file is a real exploit: loaded as trusted, it runs.
  torch.load(path, weights_only=False)
  assert marker.exists()


def test_a_truncated_file_is_refused(tmp_path, state_dict):
  path = tmp_path / 'model.pt'
  torch.save(state_dict, path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(ConversionError, match=r'model\.pt: not a readable '
                     'PyTorch file'):
    torch_files.read_state_dict(path)


def test_a_file_that_is_not_pytorch_is_refused(tmp_path):
  path = tmp_path / 'weights.pt'
  path.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(ConversionError, match=r'weights\.pt: not a readable'):
    torch_files.read_state_dict(path)


def test_a_file_without_a_state_dict_is_refused(tmp_path):
  path = tmp_path / 'other.pt'
  torch.save({'epoch': 3, 'weights': [torch.zeros(2)]}, path)
  with pytest.raises(ConversionError, match="no backbone state dict in it "
                     r"\(keys: 'epoch', 'weights'\)"):
    torch_files.read_state_dict(path)
  torch.save(torch.zeros(3), path)
  with pytest.raises(ConversionError, match='holds a Tensor, not a state'):
    torch_files.read_state_dict(path)


def test_a_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='nothing.pt'):
    torch_files.read_state_dict(tmp_path / 'nothing.pt')


def test_without_pytorch_the_message_says_what_to_install(tmp_path,
                                                         monkeypatch):
  path = tmp_path / 'model.pt'
  path.write_bytes(b'x')
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(ConversionError, match='needs PyTorch'):
    torch_files.read_state_dict(path)

