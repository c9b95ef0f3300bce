"""Released face models in, trained ones out.

    model, variables = facejax.interop.from_arcface_torch(state_dict)
    model, variables = facejax.interop.from_onnx('w600k_r50.onnx')
    facejax.interop.to_onnx(model, variables, 'model.onnx', image_size=112)

and from the command line (``python -m facejax.interop --help``):
``import-torch`` / ``import-onnx`` write a released backbone as a run
workdir that every evaluation job takes; ``export-onnx`` writes a run's
backbone as an ONNX file in insightface's conventions. See
``docs/interop.md``.

Nothing here imports PyTorch or onnx until a function needs it: both are
optional (``pip install 'facejax[onnx]'``; PyTorch only to read ``.pt``).
"""

from facejax.interop.errors import ConversionError

__all__ = ['ConversionError', 'from_arcface_torch', 'from_onnx', 'to_onnx']


def from_arcface_torch(state_dict, arch=None):
  """(model, variables) of an arcface_torch backbone state dict (numpy or
  torch arrays); ``arch``: a :mod:`facejax.models` name, else inferred.
  See :mod:`facejax.interop.arcface_torch`."""
  from facejax.interop import arcface_torch  # pylint: disable=import-outside-toplevel
  return arcface_torch.from_arcface_torch(state_dict, arch)


def from_onnx(path, arch=None):
  """(model, variables) of an insightface zoo recognition ``.onnx`` file.
  See :mod:`facejax.interop.onnx_import`."""
  from facejax import models  # pylint: disable=import-outside-toplevel
  from facejax.interop import importers  # pylint: disable=import-outside-toplevel
  conversion = importers.onnx_file(path, arch)
  return (models.get(conversion.name, **conversion.kwargs),
          conversion.variables)


def to_onnx(model, variables, path, image_size, **kwargs):
  """Writes the backbone as ONNX: input ``data`` [N, 3, H, W] normalised
  as (x - 127.5) / 127.5, output the embedding before L2 normalisation.
  See :mod:`facejax.interop.onnx_export`."""
  from facejax.interop import onnx_export  # pylint: disable=import-outside-toplevel
  return onnx_export.to_onnx(model, variables, path, image_size, **kwargs)
