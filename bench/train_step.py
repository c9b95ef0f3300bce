"""Train-step throughput and MFU of the engine, at 100k to 2M classes.

    python -m bench.train_step [--model iresnet50] [--batch 512]
                               [--classes 100000,2000000] [--dtype bfloat16]
                               [--image-size 112] [--steps 20] [--warmup 3]
                               [--windows 3] [--model-axis 1] [--tiny]
                               [--markdown] [--torch] [--torch-compile]

For each class count: the engine's train state and jitted step
(:mod:`facejax.training.state`, :mod:`facejax.training.step`) on every local
device (mesh ``data = devices / model``, ``model = --model-axis``), ArcFace
(s = 64, m = 0.5) and SGD (momentum 0.9, weight decay 5e-4), one synthetic
batch already on the devices (split by :func:`facejax.sharding.
batch_sharding`), ``--warmup`` steps (the first compiles), then
``--windows`` timed windows of ``--steps`` steps each, each window ended by
``jax.block_until_ready`` on the new state and the loss. The step time is
the median over the windows of (window time / steps).

Printed per class count: images/s, step time, and

    MFU = images/s x training FLOPs per image / (peak FLOP/s x devices)

with training FLOPs per image = 3 x 2 x (backbone forward MACs at this input
size, :func:`facejax.models.counting.count_macs`) + 3 x 2 x D x C for the
class head's cosine matrix product (forward, and the two products of its
backward; normalisation, margin, softmax and batch norm are not counted).
The peak is the device's dense bfloat16 rate for ``--dtype bfloat16`` and its
dense TF32 rate for ``--dtype float32`` (JAX's default precision computes
float32 products as TF32 on these GPUs), from NVIDIA's datasheets; "n/a" on
a CPU or an unknown device. The class head computes in float32 (TF32 on a
GPU) whatever ``--dtype`` is, so MFU against the bfloat16 peak understates
how busy the matrix units are when the head dominates.

Also printed: the ratio of the largest class count's step time to the
smallest's (the target: a 2M-class step within 20% of the 100k-class step,
a ratio <= 1.2, on an H100).

``--torch`` also times the PyTorch baseline (:mod:`bench.torch_reference`,
the same IResNet, ArcFace and SGD) in the same run, on the same batch size,
classes and dtype, on CUDA when available (else the CPU), its windows
interleaved with JAX's so the machine's drift hits both, and prints the
JAX / PyTorch throughput ratio. Without torch installed it prints a note and
times JAX alone. With ``--torch`` JAX does not preallocate GPU memory
(``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless set), so both fit on one GPU.
PyTorch runs on one device: with several JAX devices the ratio is not a
per-device one (set ``CUDA_VISIBLE_DEVICES=0`` to compare one GPU with one).

Quote ratios measured in one run rather than absolute times across runs:
the machines are shared and noisy.
"""
import argparse
import importlib
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bench import table
from facejax import inference
from facejax import models
from facejax import sharding
from facejax.models import counting
from facejax.training import objectives
from facejax.training import optim
from facejax.training import state as state_lib
from facejax.training import step as step_lib

ARCFACE = dict(name='arcface', scale=64.0, margin=0.5)
SGD = dict(name='sgd', learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
           warmup_steps=0, schedule='constant')
# An IResNet of a few channels: for tests and smoke runs.
TINY_IRESNET = dict(stage_units=(1, 1, 1, 1), stage_features=(4, 4, 8, 8),
                    stem_features=4, embedding_dim=8)
# Per-device dense peaks (no 2:4 sparsity), FLOP/s: (bfloat16, TF32), from
# NVIDIA's datasheets, matched in order against jax's device_kind (e.g.
# 'NVIDIA H100 80GB HBM3' for the SXM part). None: not known here.
PEAK_FLOPS = (
    ('H100 PCIe', (756e12, 378e12)),
    ('H100 NVL', None),
    ('H100', (989e12, 494.5e12)),
    ('H200', (989e12, 494.5e12)),
    ('A100', (312e12, 156e12)),
)
TARGET_RATIO = 1.2  # the largest class count's step / the smallest's


def peak_flops(device_kind, dtype):
  """(peak FLOP/s of one device, label) for ``dtype``; (None, 'n/a') if unknown.

  Args:
    device_kind: ``jax.devices()[0].device_kind``.
    dtype: 'bfloat16' (dense bf16 peak) or 'float32' (dense TF32 peak).
  """
  for pattern, peaks in PEAK_FLOPS:
    if pattern.lower() in device_kind.lower():
      if peaks is None:
        break
      bf16, tf32 = peaks
      if dtype == 'bfloat16':
        return bf16, f'{bf16 / 1e12:g} TFLOP/s dense bf16'
      return tf32, f'{tf32 / 1e12:g} TFLOP/s dense TF32'
  return None, 'n/a'


def training_flops_per_image(model, image_size, embedding_dim, num_classes):
  """(backbone, head) training FLOPs per image: 3 x 2 x MACs of each.

  Forward FLOPs are 2 per multiply-accumulate; the backward pass is counted
  as twice the forward (gradients of the inputs and of the weights). The
  head is the (1, D) x (D, C) cosine product of one image.

  Args:
    model: the backbone (flax module).
    image_size: the square input's side.
    embedding_dim: D.
    num_classes: C.
  """
  macs = counting.count_macs(model, (1, image_size, image_size, 3))
  return 6 * macs, 6 * embedding_dim * num_classes


def synthetic_batch(batch_size, image_size, num_classes, seed=0):
  """Host arrays: float32 images (B, H, W, 3), int32 labels in [0, C)."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(batch_size, image_size, image_size, 3))
  labels = rng.integers(0, num_classes, size=batch_size)
  return images.astype(np.float32), labels.astype(np.int32)


class JaxCase:
  """The engine's state and train step for one class count, ready to time."""

  def __init__(self, model, num_classes, dim, mesh, images, labels,
               compute_dtype):
    self.mesh = mesh
    loss_config = ml_collections.ConfigDict(ARCFACE)
    objective = objectives.Objective(loss_config, num_classes, dim)
    optimizer, _ = optim.build(ml_collections.ConfigDict(SGD), 1)
    with jax.set_mesh(mesh):
      self.state, shardings = state_lib.create(
          jax.random.key(0), model, objective, optimizer, images.shape[1:],
          mesh)
      self.step = step_lib.make_train_step(
          model, objective, optimizer, mesh, shardings,
          compute_dtype=compute_dtype)
      batch_sharding = sharding.batch_sharding(mesh)
      self.batch = dict(image=jax.device_put(images, batch_sharding),
                        label=jax.device_put(labels, batch_sharding))
    self.loss = None

  def run(self, steps):
    """Runs ``steps`` steps; returns their wall time in seconds."""
    with jax.set_mesh(self.mesh):
      start = time.perf_counter()
      for _ in range(steps):
        self.state, metrics = self.step(self.state, self.batch)
      jax.block_until_ready((self.state, metrics))
      seconds = time.perf_counter() - start
    self.loss = float(metrics['loss'])
    return seconds

  def close(self):
    """Drops the state and batch: their buffers go before the next case."""
    self.state = self.batch = None


def _load_torch_reference():
  """The module :mod:`bench.torch_reference`, or None without torch."""
  try:
    importlib.import_module('torch')
  except ImportError:
    print('note: torch is not installed: the PyTorch baseline is skipped')
    return None
  return importlib.import_module('bench.torch_reference')


def time_cases(cases, steps, warmup, windows):
  """Per case: (first call's seconds, median seconds per step).

  The first warm-up call (compilation included) is timed on its own; the
  windows run round-robin over the cases so that drift hits all alike.
  """
  first = []
  for case in cases:
    first.append(case.run(1))
    if warmup > 1:
      case.run(warmup - 1)
  per_step = [[] for _ in cases]
  for _ in range(windows):
    for case, times in zip(cases, per_step):
      times.append(case.run(steps) / steps)
  return first, [statistics.median(times) for times in per_step]


def _parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='iresnet50')
  parser.add_argument('--tiny', action='store_true',
                      help='an IResNet 4-8 channels wide (tests, smoke runs)')
  parser.add_argument('--batch', type=int, default=512,
                      help='the global batch')
  parser.add_argument('--classes', default='100000,2000000',
                      help='comma-separated class counts')
  parser.add_argument('--dtype', default='bfloat16',
                      choices=('bfloat16', 'float32'),
                      help="the backbone's compute dtype")
  parser.add_argument('--image-size', type=int, default=112)
  parser.add_argument('--steps', type=int, default=20,
                      help='steps per timed window')
  parser.add_argument('--warmup', type=int, default=3,
                      help='untimed steps first (the first compiles)')
  parser.add_argument('--windows', type=int, default=3,
                      help='timed windows; the median is reported')
  parser.add_argument('--model-axis', type=int, default=1,
                      help="devices on the mesh's class axis")
  parser.add_argument('--markdown', action='store_true')
  parser.add_argument('--torch', action='store_true',
                      help='also time the PyTorch baseline')
  parser.add_argument('--torch-compile', action='store_true',
                      help='torch.compile the baseline (with --torch)')
  args = parser.parse_args(argv)
  args.classes = [int(c) for c in args.classes.split(',')]
  if args.tiny and not args.model.startswith('iresnet'):
    parser.error('--tiny is for the iresnet models')
  if min(args.steps, args.warmup, args.windows) < 1:
    parser.error('--steps, --warmup and --windows must be >= 1')
  return args


def main(argv=None):
  """Times the train step; prints and returns one row per class count.

  Returns:
    A list of dicts: model, batch, classes, dtype, device, devices,
    images_per_s, step_ms, first_step_s, flops_per_image,
    backbone_flops_per_image, head_flops_per_image, mfu (a fraction, or
    'n/a'), loss, and torch_images_per_s, torch_step_ms, jax_over_torch
    (None where PyTorch was not timed).
  """
  args = _parse_args(argv)
  if args.torch:
    # Before JAX starts its GPU client: leave memory for PyTorch.
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  torch_reference = _load_torch_reference() if args.torch else None
  if torch_reference is not None and not args.model.startswith('iresnet'):
    print(f'note: the PyTorch baseline is an IResNet; skipped for '
          f'{args.model}')
    torch_reference = None

  devices = jax.devices()
  mesh = sharding.make_mesh(model=args.model_axis)
  kwargs = dict(TINY_IRESNET) if args.tiny else {}
  compute_dtype = jnp.dtype(args.dtype)
  model = models.get(args.model, dtype=compute_dtype, **kwargs)
  dim = inference.embedding_dim(model, (args.image_size,) * 2 + (3,))
  device_kind = devices[0].device_kind
  peak, peak_label = peak_flops(device_kind, args.dtype)
  model_label = args.model + (' (tiny)' if args.tiny else '')
  device_label = f'{len(devices)} x {device_kind}'
  print(f'{model_label}, batch {args.batch}, {args.image_size}x'
        f'{args.image_size}, {args.dtype}, embedding {dim}; mesh data='
        f'{mesh.shape[sharding.DATA]} x model={mesh.shape[sharding.MODEL]} '
        f'on {device_label}; median of {args.windows} windows of '
        f'{args.steps} steps after {args.warmup} warm-up')
  print(f'MFU peak: {peak_label}' + (f' x {len(devices)} devices'
                                     if peak else ''))

  rows = []
  for num_classes in args.classes:
    images, labels = synthetic_batch(args.batch, args.image_size,
                                     num_classes)
    backbone_flops, head_flops = training_flops_per_image(
        model, args.image_size, dim, num_classes)
    flops = backbone_flops + head_flops
    cases = [JaxCase(model, num_classes, dim, mesh, images, labels,
                     compute_dtype)]
    if torch_reference is not None:
      cases.append(torch_reference.TorchCase(
          model, num_classes, images, labels, args.dtype,
          compile_model=args.torch_compile))
    first, step_seconds = time_cases(cases, args.steps, args.warmup,
                                     args.windows)
    images_per_s = args.batch / step_seconds[0]
    mfu = (images_per_s * flops / (peak * len(devices)) if peak
           else 'n/a')
    row = dict(model=model_label, batch=args.batch, classes=num_classes,
               dtype=args.dtype, device=device_label, devices=len(devices),
               images_per_s=images_per_s, step_ms=1e3 * step_seconds[0],
               first_step_s=first[0], flops_per_image=flops,
               backbone_flops_per_image=backbone_flops,
               head_flops_per_image=head_flops, mfu=mfu,
               loss=cases[0].loss, torch_images_per_s=None,
               torch_step_ms=None, jax_over_torch=None, torch_device=None)
    if len(cases) > 1:
      torch_images_per_s = args.batch / step_seconds[1]
      row.update(torch_images_per_s=torch_images_per_s,
                 torch_step_ms=1e3 * step_seconds[1],
                 jax_over_torch=images_per_s / torch_images_per_s,
                 torch_device=cases[1].description)
    for case in cases:
      case.close()
    rows.append(row)
    print(f'classes {num_classes:,}: training GFLOPs per image '
          f'{flops / 1e9:.4g} = backbone 6 x MACs {backbone_flops / 1e9:.4g}'
          f' + head 6 x D x C {head_flops / 1e9:.4g}; first step (compile) '
          f'{first[0]:.1f} s; loss {row["loss"]:.3f}'
          + (f'; PyTorch on {row["torch_device"]}, first step '
             f'{first[1]:.1f} s, loss {cases[1].loss:.3f}' if len(cases) > 1
             else ''))
    if not math.isfinite(row['loss']):
      print(f'warning: non-finite loss at {num_classes} classes')
  if any(row['torch_images_per_s'] for row in rows) and len(devices) > 1:
    print(f'note: PyTorch ran on one device, JAX on {len(devices)}: the '
          'ratio is not per device')

  print_table(rows, args.markdown)
  if len(rows) > 1:
    smallest = min(rows, key=lambda row: row['classes'])
    largest = max(rows, key=lambda row: row['classes'])
    ratio = largest['step_ms'] / smallest['step_ms']
    print(f'step time at {largest["classes"]:,} classes / at '
          f'{smallest["classes"]:,}: {ratio:.3f} (target <= {TARGET_RATIO} '
          'for 2M / 100k on an H100)')
  return rows


def print_table(rows, markdown):
  """The rows as aligned text, or as a markdown table."""
  header = ('model', 'batch', 'classes', 'dtype', 'device', 'images/s (JAX)',
            'step ms', 'MFU', 'images/s (PyTorch)', 'JAX / PyTorch')
  lines = []
  for row in rows:
    mfu = row['mfu']
    lines.append((
        row['model'], str(row['batch']), f'{row["classes"]:,}', row['dtype'],
        row['device'], f'{row["images_per_s"]:.1f}', f'{row["step_ms"]:.1f}',
        mfu if isinstance(mfu, str) else f'{100 * mfu:.1f}%',
        table.optional(row['torch_images_per_s'], '.1f'),
        table.optional(row['jax_over_torch'], '.3f')))
  table.print_rows(header, lines, markdown)


if __name__ == '__main__':
  main()
