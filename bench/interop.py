"""How exactly released models cross into facejax and back, at full size.

    python -m bench.interop [--models iresnet50,mobilefacenet_mbf] [--markdown]
    python -m bench.interop --smoke          # tiny widths, seconds

For each model, a PyTorch network in arcface_torch's layout with random
weights (batch-norm affine terms and PReLU slopes randomised, statistics
calibrated on random images: ``bench.arcface_torch_models.randomise``) goes
through the three paths of :mod:`facejax.interop`, and each result is
compared with what the other framework computes on the same images
(uniform in [-1, 1], i.e. normalised pixels):

* ``import-torch``: the state dict -> facejax, against PyTorch;
* ``import-onnx``: ``torch.onnx.export`` as arcface_torch's ``torch2onnx.py``
  runs it (opset 11, batch norms fused, anonymous names) -> facejax by
  topology, against onnxruntime on that file;
* ``export-onnx``: the imported facejax model -> ONNX, onnxruntime against
  facejax.

Prints the largest absolute difference of each path, the largest
embedding magnitude (for scale) and each conversion's seconds, in float32
on the CPU.
"""

import argparse
import os
import tempfile
import time

import jax
import numpy as np

from bench import table

# name -> (arcface_torch constructor arguments, input side); --smoke uses
# tiny widths of the same layouts.
MODELS = {
    'iresnet50': (dict(kind='iresnet', stage_units=(3, 4, 14, 3)), 112),
    'iresnet100': (dict(kind='iresnet', stage_units=(3, 13, 30, 3)), 112),
    'mobilefacenet_mbf': (dict(kind='mobilefacenet'), 112),
}
SMOKE = {
    'iresnet': (dict(kind='iresnet', stage_units=(1, 2, 1, 1),
                     stage_features=(8, 8, 16, 16), stem_features=8,
                     embedding_dim=16), 32),
    'mobilefacenet': (dict(kind='mobilefacenet', embedding_dim=16,
                           blocks=(1, 2, 2, 1), divisor=8), 32),
}


def torch_net(kind, size, seed=0, **kwargs):
  from bench import arcface_torch_models as reference  # pylint: disable=import-outside-toplevel
  build = (reference.IResNet if kind == 'iresnet'
           else reference.MobileFaceNet)
  return reference.randomise(build(image_size=size, **kwargs), seed, size,
                             calibration_batches=1)


def measure(name, arguments, size, images=4):
  """One row: the three paths' max abs differences and seconds."""
  import onnxruntime  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from bench import arcface_torch_models as reference  # pylint: disable=import-outside-toplevel
  from facejax import interop  # pylint: disable=import-outside-toplevel
  net = torch_net(size=size, **arguments)
  x = np.random.default_rng(1).uniform(
      -1, 1, (images, size, size, 3)).astype(np.float32)
  nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
  expected = reference.embed(net, x)
  row = dict(model=name, magnitude=float(np.abs(expected).max()))

  start = time.perf_counter()
  model, variables = interop.from_arcface_torch(net.state_dict())
  row['torch_seconds'] = time.perf_counter() - start
  apply = jax.jit(model.apply)
  ours = np.asarray(apply(variables, x))
  row['torch_difference'] = float(np.abs(ours - expected).max())

  with tempfile.TemporaryDirectory() as directory:
    zoo_file = os.path.join(directory, 'zoo.onnx')
    with torch.no_grad():
      torch.onnx.export(net, torch.from_numpy(nchw), zoo_file,
                        input_names=['data'], output_names=['fc1'],
                        keep_initializers_as_inputs=False, opset_version=11,
                        dynamo=False, dynamic_axes={'data': {0: 'None'}})
    session = onnxruntime.InferenceSession(
        zoo_file, providers=['CPUExecutionProvider'])
    runtime = session.run(None, {'data': nchw})[0]
    start = time.perf_counter()
    zoo_model, zoo_variables = interop.from_onnx(zoo_file)
    row['onnx_seconds'] = time.perf_counter() - start
    row['onnx_difference'] = float(np.abs(
        np.asarray(jax.jit(zoo_model.apply)(zoo_variables, x))
        - runtime).max())

    exported = os.path.join(directory, 'facejax.onnx')
    start = time.perf_counter()
    interop.to_onnx(model, variables, exported, size)
    row['export_seconds'] = time.perf_counter() - start
    session = onnxruntime.InferenceSession(
        exported, providers=['CPUExecutionProvider'])
    row['export_difference'] = float(np.abs(
        session.run(None, {'data': nchw})[0] - ours).max())
    row['export_megabytes'] = os.path.getsize(exported) / 2**20
  return row


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='iresnet50,mobilefacenet_mbf',
                      help=f'comma-separated, of {", ".join(MODELS)}')
  parser.add_argument('--smoke', action='store_true',
                      help='tiny widths of both layouts instead')
  parser.add_argument('--markdown', action='store_true')
  args = parser.parse_args(argv)
  chosen = SMOKE if args.smoke else {
      name: MODELS[name] for name in args.models.split(',')}
  rows = [measure(name, arguments, size)
          for name, (arguments, size) in chosen.items()]
  header = ('model', 'max abs embedding', 'import-torch vs PyTorch',
            'import-onnx vs onnxruntime', 'export-onnx: onnxruntime vs '
            'facejax', 'seconds (torch / onnx / export)', 'exported MB')
  table.print_rows(header, [(
      r['model'], f'{r["magnitude"]:.2f}',
      f'{r["torch_difference"]:.1e}', f'{r["onnx_difference"]:.1e}',
      f'{r["export_difference"]:.1e}',
      f'{r["torch_seconds"]:.2f} / {r["onnx_seconds"]:.2f} / '
      f'{r["export_seconds"]:.2f}', f'{r["export_megabytes"]:.1f}')
                            for r in rows], args.markdown)
  return rows


if __name__ == '__main__':
  main()
