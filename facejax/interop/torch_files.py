"""Reading a PyTorch ``.pt`` file without running code from it.

A ``.pt`` file is a pickle, and unpickling can call any function the file
names. ``read_state_dict`` loads with ``torch.load(weights_only=True)``,
PyTorch's restricted unpickler (tensors, containers and plain values
only), so a file that asks for anything else is refused before any of it
runs. PyTorch itself is needed only here, and only to read such a file.
"""

import os
import pickle

from facejax.interop.errors import ConversionError

# Where arcface_torch keeps the backbone in its resumable checkpoint
# (``checkpoint_gpu_{rank}.pt``), beside the PartialFC shards and the
# optimizer; a plain ``model.pt`` is the state dict itself.
BACKBONE_ENTRIES = ('state_dict_backbone', 'state_dict', 'model')


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConversionError(
        'reading a .pt file needs PyTorch (pip install torch, the CPU build '
        'is enough); facejax uses it for nothing else') from None
  return torch


def _is_state_dict(value, torch):
  return (isinstance(value, dict) and value
          and all(isinstance(v, torch.Tensor) for v in value.values()))


def read_state_dict(path):
  """The backbone state dict in the ``.pt`` file at ``path``.

  Accepts ``torch.save(backbone.state_dict())`` (with or without the
  ``module.`` prefix of a wrapped model) and arcface_torch's
  ``checkpoint_gpu_0.pt`` (its ``state_dict_backbone`` entry).

  Raises:
    FileNotFoundError: no such file.
    ConversionError: not a PyTorch file, truncated, unsafe (the pickle asks
      for something other than tensors and plain values: nothing of it is
      run), or no state dict in it; the message names the file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file')
  torch = _torch()
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    lines = [line.strip() for line in str(e).splitlines()]
    unsafe = next((line for line in lines if 'GLOBAL' in line), None)
    if unsafe is None:  # not a pickle PyTorch wrote: garbage or cut short
      raise ConversionError(f'{path}: not a readable PyTorch file '
                            f'({lines[-1] if lines else e})') from None
    raise ConversionError(
        f'{path}: refused: the pickle asks for more than tensors and plain '
        f'values ({unsafe}); facejax never runs code from a weights file. '
        'Save the weights with torch.save(model.state_dict())') from None
  except Exception as e:  # pylint: disable=broad-except
    # Truncated zips, legacy files cut short and non-PyTorch files raise
    # RuntimeError, EOFError, OSError or ValueError, depending on where.
    raise ConversionError(f'{path}: not a readable PyTorch file '
                          f'({type(e).__name__}: {e})') from None
  if _is_state_dict(loaded, torch):
    return loaded
  if isinstance(loaded, dict):
    for entry in BACKBONE_ENTRIES:
      if _is_state_dict(loaded.get(entry), torch):
        return loaded[entry]
    keys = ', '.join(repr(k) for k in list(loaded)[:8])
    raise ConversionError(
        f'{path}: no backbone state dict in it (keys: {keys}); expected a '
        f'state dict or one under {", ".join(BACKBONE_ENTRIES)}')
  raise ConversionError(f'{path}: holds a {type(loaded).__name__}, not a '
                        'state dict')
