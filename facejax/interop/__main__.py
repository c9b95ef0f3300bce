"""Import released face models as run workdirs; export runs as ONNX.

    python -m facejax.interop import-torch model.pt --workdir runs/r50
    python -m facejax.interop import-onnx w600k_r50.onnx --workdir runs/r50
    python -m facejax.interop export-onnx --checkpoint runs/r50 --out r50.onnx

An imported workdir is an ordinary run directory: evaluate it with
``python -m eval.lfw --checkpoint runs/r50 --bin lfw.bin --out ...``,
fine-tune from it with ``init_from``. Model-zoo weights keep their own
licence (insightface's are for non-commercial research): bring your own
files; none ships with facejax.
"""

import argparse
import os
import sys

import numpy as np

from facejax import command_line
from facejax.interop.errors import ConversionError

_FORMATS = {'import-torch': ('torch', 'an arcface_torch .pt (a backbone '
                             'state dict or checkpoint_gpu_0.pt)'),
            'import-onnx': ('onnx', 'an insightface zoo recognition .onnx')}


def _import(command, args):
  from facejax import models  # pylint: disable=import-outside-toplevel
  from facejax.models import counting  # pylint: disable=import-outside-toplevel
  from facejax.interop import importers  # pylint: disable=import-outside-toplevel
  from facejax.interop import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  source_format = _FORMATS[command][0]
  if not os.path.isfile(args.model):
    raise FileNotFoundError(f'{args.model}: no such file')
  print(f'reading {args.model} ...', flush=True)
  conversion = importers.IMPORTERS[source_format](args.model, args.arch)
  workdir_lib.write(args.workdir, conversion, args.model, source_format,
                    args.compute_dtype)
  model = models.get(conversion.name, **conversion.kwargs)
  print(f'{type(model).__name__} ({conversion.name}, '
        f'{counting.count_parameters(conversion.variables["params"]):,} '
        'parameters, '
        f'{conversion.image_size}x{conversion.image_size} input, '
        f'{conversion.kwargs.get("embedding_dim")}-d embedding) written to '
        f'{args.workdir} (step {workdir_lib.IMPORT_STEP}), read back '
        'and verified')
  for note in conversion.notes:
    print(f'note: {note}')
  print(f'next: python -m eval.lfw --checkpoint {args.workdir} '
        f'--bin lfw.bin --out {os.path.join(args.workdir, "eval")}')
  return 0


def _check_with_onnxruntime(path, model, variables, image_size):
  """Max abs difference between onnxruntime and facejax on random images,
  or None when onnxruntime is not installed."""
  try:
    import onnxruntime  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  images = np.random.default_rng(0).uniform(
      -1, 1, (2, image_size, image_size, 3)).astype(np.float32)
  session = onnxruntime.InferenceSession(
      path, providers=['CPUExecutionProvider'])
  ours = np.asarray(model.apply(variables, images, train=False))
  theirs = session.run(None, {session.get_inputs()[0].name:
                              images.transpose(0, 3, 1, 2)})[0]
  return float(np.abs(ours - theirs).max())


def _export(args):
  import jax  # pylint: disable=import-outside-toplevel
  from facejax import interop  # pylint: disable=import-outside-toplevel
  from facejax.interop import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from facejax.training import checkpoint  # pylint: disable=import-outside-toplevel
  from facejax import inference  # pylint: disable=import-outside-toplevel
  from facejax.training import run_directory  # pylint: disable=import-outside-toplevel
  config = workdir_lib.float32_copy(
      run_directory.load_config(args.checkpoint))
  step = args.step
  if step is None:
    steps = checkpoint.step_numbers(os.path.join(args.checkpoint,
                                                 'checkpoints'))
    if not steps:
      raise FileNotFoundError(f'{args.checkpoint}/checkpoints: no checkpoint')
    step = steps[-1]
  model, variables = inference.restore_backbone(config, args.checkpoint,
                                               step)
  variables = jax.tree.map(np.asarray, variables)
  size = config.data.image_size
  interop.to_onnx(model, variables, args.out, size)
  print(f'{config.model.name} of {args.checkpoint} (step {step}) written to '
        f'{args.out}: input "data" [N, 3, {size}, {size}] float32 '
        'normalised as (x - 127.5) / 127.5, RGB; output the embedding '
        'before L2 normalisation')
  difference = _check_with_onnxruntime(args.out, model, variables, size)
  if difference is None:
    print('not checked: onnxruntime is not installed '
          "(pip install 'facejax[onnx]')")
  else:
    print(f'checked with onnxruntime: max abs difference {difference:.2e} '
          'from facejax on 2 random images')
  return 0


@command_line.reports_errors(ConversionError, OSError, ValueError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m facejax.interop',
                                   description=__doc__.split('\n')[0])
  commands = parser.add_subparsers(dest='command', required=True)
  for command, (_, what) in _FORMATS.items():
    sub = commands.add_parser(command, help=f'import {what}')
    sub.add_argument('model', help=what)
    sub.add_argument('--workdir', required=True,
                     help='the new run directory to write')
    sub.add_argument('--arch', help='a facejax.models name (iresnet50, '
                     'mobilefacenet, ...); inferred from the weights if '
                     'not given')
    sub.add_argument('--compute-dtype', default='float32',
                     choices=('float32', 'bfloat16'),
                     help='what the imported run computes in (float32 '
                     'reproduces the original exactly)')
  export = commands.add_parser(
      'export-onnx', help="a run's backbone as ONNX (insightface's layout)")
  export.add_argument('--checkpoint', required=True, help='the run workdir')
  export.add_argument('--out', required=True, help='the .onnx file to write')
  export.add_argument('--step', type=int, help='checkpoint step (default: '
                      'the newest)')
  args = parser.parse_args(argv)
  if args.command == 'export-onnx':
    return _export(args)
  return _import(args.command, args)


if __name__ == '__main__':
  sys.exit(main())
