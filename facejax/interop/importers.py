"""The importers, by format: a model file -> an ``arcface_torch.Conversion``.

One table (``IMPORTERS``); each entry reads one kind of file. Both go
through arcface_torch's key names: the ONNX importer recovers them from the
graph's topology (:mod:`facejax.interop.onnx_import`), so the mapping onto
facejax's layout lives in one place (:mod:`facejax.interop.arcface_torch`).
"""

from facejax.interop import arcface_torch
from facejax.interop import torch_files
from facejax.interop.errors import ConversionError


def torch_file(path, arch=None):
  """An arcface_torch ``.pt`` (state dict or ``checkpoint_gpu_0.pt``)."""
  return arcface_torch.convert(torch_files.read_state_dict(path), arch)


def onnx_file(path, arch=None):
  """An insightface zoo recognition ``.onnx`` (arcface_torch export)."""
  from facejax.interop import onnx_import  # pylint: disable=import-outside-toplevel
  state_dict, info = onnx_import.state_dict_from_onnx(path)
  try:
    conversion = arcface_torch.convert(state_dict, arch)
  except ConversionError as e:
    raise ConversionError(f'{path}: {e}') from None
  height, width = info['input_shape'][2:4]
  if (height, width) != (conversion.image_size,) * 2:
    raise ConversionError(
        f'{path}: input {info["input_name"]!r} is {height}x{width} but the '
        f'network\'s embedding layer implies {conversion.image_size}x'
        f'{conversion.image_size}')
  notes = list(conversion.notes) + list(info.get('folded', []))
  if info.get('fused_batch_norms'):
    notes.append(
        f'{info["fused_batch_norms"]} batch norms were fused into their '
        'convolutions by the export: imported as scale 1, bias b, '
        'statistics (0, 1); exact for inference, but fine-tuning in train '
        'mode re-normalises with batch statistics (see docs/interop.md)')
  return conversion._replace(notes=notes)


IMPORTERS = {'torch': torch_file, 'onnx': onnx_file}
