"""The scale plan: the real train step compiled for pods we do not have.

    python -m bench.scale_plan [--markdown] [--smoke] [--json PATH]
                               [--point KEY=VALUE,...]... [--devices 8,64]
                               [--models iresnet100] [--classes 1000000]

We cannot run 256 accelerators here, but XLA can compile for them. For each
point of a grid (backbone, class count, Partial FC rate, device count, mesh
layout ``data x model``, FSDP on or off) a fresh process is started with
``--xla_force_host_platform_device_count=N`` (the flag is read once, when
jax starts its CPU client, hence one process per device count) and the
engine's own step is lowered and compiled ahead of time on abstract inputs:

    state = facejax.training.state.abstract_state(...)   # shapes, dtypes,
    batch = {image, label} ShapeDtypeStructs             # shardings only
    step  = facejax.training.step.make_train_step(...)   # the real step
    compiled = step.lower(state, batch).compile()        # nothing allocated

(ArcFace s = 64, m = 0.5 with ``loss.sample_rate`` for Partial FC; SGD with
momentum 0.9 and weight decay 5e-4, insightface's recipe: one float32
momentum buffer per parameter.) Reported per device (SPMD: every device
runs the same program on its shard, so one device's figures are all
devices'):

* from the state's abstract shardings (``sharding.shard_shape``): the
  backbone's parameter bytes, the class-weight shard W[:, C/M] (``M`` the
  model axis; C padded up to a multiple of M as the engine pads it), the
  optimizer state (momentum of everything, the class weights' included),
  and the rest of the state (batch-norm statistics, step, PRNG key);
* from ``compiled.memory_analysis()``: arguments (state + batch), outputs,
  the bytes of outputs aliased to donated arguments (the new state reuses
  the old one's buffers), and temporaries (activations kept for the
  backward pass, gradients, logits and every other intermediate buffer);
  the peak is ``arguments + outputs - aliased + temporaries``;
* collectives, parsed from the compiled, SPMD-partitioned HLO
  (``compiled.as_text()``, one device's program): for every ``all-reduce``,
  ``all-gather``, ``reduce-scatter``, ``all-to-all`` and
  ``collective-permute`` instruction (and its ``-start`` form; ``-done``
  is not counted again), the bytes of its operands as this device holds
  them (from the shapes of the instructions that define them; a tuple
  operand counts all its arrays), and the bytes a device sends for it with
  a bandwidth-optimal (ring) algorithm over its replica group of g devices:
  all-reduce 2 (g - 1) / g x operand, all-gather (g - 1) x operand (the
  local shard goes to every other device), reduce-scatter and all-to-all
  (g - 1) / g x operand, collective-permute 1 x operand. Each instruction
  is counted once: the step at ``micro_batches=1`` runs no collective
  inside a loop (the one ``while`` left is the PRNG's), and any collective
  found directly in a while body is counted in ``collectives['in_loops']``
  (its bytes would then be per iteration);
* whether the peak fits an NVIDIA H100 (80 GB: 79.6 GiB) and a TPU v5p
  chip (95 GiB allocatable), with 10% of the chip left for the runtime,
  the input pipeline and the difference between backends (below).

Limits (also in ``docs/benchmarks.md``): the memory analysis is the XLA
CPU compiler's. Buffer assignment, fusion and layouts differ by backend;
the CPU compiler runs bfloat16 convolutions in float32, so its activation
figure is close to a float32 run's (it errs high for a GPU's or TPU's
bfloat16 activations, stored in half the bytes). The GPU's cuDNN
workspaces, NCCL buffers and the TPU runtime's reservations and tiled
layouts are not in it. Collective bytes are what the
partitioned program asks for, not what a particular network does with it.

The children add ``--xla_backend_optimization_level=0`` to ``XLA_FLAGS``
unless it is set: it lowers LLVM's effort on the CPU machine code, which
is never run here, and changes no buffer (same memory analysis, about three
times faster to compile), and they turn the persistent compilation cache
off (compile times are reported; no multi-gigabyte entries are written).
"""

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections

from bench import table
from bench.train_step import ARCFACE
from bench.train_step import SGD
from bench.train_step import TINY_IRESNET
from facejax import inference
from facejax import models
from facejax import sharding
from facejax.training import objectives
from facejax.training import optim
from facejax.training import state as state_lib
from facejax.training import step as step_lib

GiB = 2 ** 30
# (name, bytes a program may use): NVIDIA's H100 SXM 80 GB has 81,559 MiB
# (nvidia-smi); Google lists 95 GiB of a v5p chip's 96 GiB HBM as
# allocatable (the rest is the runtime's).
CHIPS = (('H100 80GB', 81_559 * 2 ** 20), ('TPU v5p', 95 * GiB))
USABLE_FRACTION = 0.9  # of a chip's memory, for a point to "fit"
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all',
               'collective-permute')
RECORD_PREFIX = 'scale-plan-record '


@dataclasses.dataclass
class Point:
  """One configuration to compile.

  Attributes:
    model: a :func:`facejax.models.get` name ('iresnet50', 'iresnet100').
    num_classes: C, identities in the class head.
    devices: the device count (the mesh is ``devices / model_axis`` x
      ``model_axis``).
    model_axis: devices on the mesh's class axis (W's columns split M ways).
    shard_backbone: FSDP (``mesh.shard_backbone``).
    sample_rate: Partial FC's ``loss.sample_rate`` (1: every class).
    batch_per_device: images per device per step (the global batch is this
      times ``devices``).
    image_size: the square input's side.
    compute_dtype: the backbone's compute dtype.
    model_kwargs: extra :func:`facejax.models.get` arguments (tiny widths
      for tests).
  """
  model: str
  num_classes: int
  devices: int
  model_axis: int
  shard_backbone: bool = False
  sample_rate: float = 1.0
  batch_per_device: int = 128
  image_size: int = 112
  compute_dtype: str = 'bfloat16'
  model_kwargs: dict = dataclasses.field(default_factory=dict)

  @property
  def data_axis(self):
    return self.devices // self.model_axis

  @property
  def global_batch(self):
    return self.batch_per_device * self.devices

  @property
  def label(self):
    return self.model + (' (custom widths)' if self.model_kwargs else '')


def _full_grid():
  """The points that answer the plan's questions (22 compiles).

  At every device count: IResNet-50 and -100 at 1M classes, -100 at 10M,
  and 100M with Partial FC at 0.1 with FSDP off and on, all with W split
  over every device (arcface_torch's layout); at 64 and 256 devices 10M
  classes split over 8 devices only (data = N / 8: one host's class
  shards); at 8 devices plain data parallelism (W replicated) at 1M and
  10M; 100M with Partial FC at 16 and 32 devices (where it starts to fit);
  at 256 devices 100M classes without Partial FC (the logits alone: 128 x C
  floats per device, whatever the split).
  """
  points = []
  for devices in (8, 64, 256):
    points += [
        Point('iresnet50', 1_000_000, devices, devices),
        Point('iresnet100', 1_000_000, devices, devices),
        Point('iresnet100', 10_000_000, devices, devices),
        Point('iresnet100', 100_000_000, devices, devices, sample_rate=0.1),
        Point('iresnet100', 100_000_000, devices, devices, True, 0.1),
    ]
    if devices > 8:
      points.append(Point('iresnet100', 10_000_000, devices, 8))
  points += [Point('iresnet100', 1_000_000, 8, 1),
             Point('iresnet100', 10_000_000, 8, 1),
             Point('iresnet100', 100_000_000, 16, 16, sample_rate=0.1),
             Point('iresnet100', 100_000_000, 32, 32, sample_rate=0.1),
             Point('iresnet100', 100_000_000, 256, 256)]
  return points


def smoke_grid():
  """Two tiny points on 8 devices, one of them FSDP with Partial FC: the
  tests' and ``--smoke``'s (the 512-wide embedding gives the dense layer
  16,384 weights, the smallest FSDP shards)."""
  tiny = dict(model='iresnet18', devices=8, batch_per_device=4,
              image_size=32, model_kwargs=dict(TINY_IRESNET))
  return [
      Point(num_classes=4_000, model_axis=8, compute_dtype='float32', **tiny),
      Point(num_classes=3_000, model_axis=4, shard_backbone=True,
            sample_rate=0.25, **dict(tiny, model_kwargs=dict(
                TINY_IRESNET, embedding_dim=512))),
  ]


def parse_point(text):
  """A Point from ``key=value,...`` (Point's field names; ``classes`` for
  num_classes, ``fsdp`` for shard_backbone, ``rate`` for sample_rate)."""
  aliases = dict(classes='num_classes', fsdp='shard_backbone',
                 rate='sample_rate', batch='batch_per_device')
  fields = {field.name: field.type for field in dataclasses.fields(Point)
            if field.name != 'model_kwargs'}
  choices = set(fields) | set(aliases)
  values = {}
  for item in text.split(','):
    key, _, value = item.partition('=')
    key = aliases.get(key.strip(), key.strip())
    if key not in fields:
      raise ValueError(f'--point: unknown key {key!r} in {text!r} (choose '
                       f'from {", ".join(sorted(choices))})')
    kind = fields[key]
    if kind is bool:
      values[key] = value.strip().lower() in ('1', 'true', 'on', 'yes')
    elif kind is int:
      values[key] = int(float(value))  # 1e7 allowed
    else:
      values[key] = kind(value.strip())
  values.setdefault('model_axis', values.get('devices'))
  missing = {'model', 'num_classes', 'devices'} - set(values)
  if missing:
    raise ValueError(f'--point {text!r} needs {", ".join(sorted(missing))}')
  return Point(**values)


def build(point, mesh):
  """(model, objective, optimizer, compute dtype) of a point, as
  ``bench.train_step`` builds them (ArcFace, SGD) and as the training loop
  pads the class head (C up to a multiple of the model axis)."""
  compute_dtype = jnp.dtype(point.compute_dtype)
  model = models.get(point.model, dtype=compute_dtype, **point.model_kwargs)
  image_shape = (point.image_size, point.image_size, 3)
  loss = ml_collections.ConfigDict(dict(ARCFACE,
                                        sample_rate=point.sample_rate))
  objective = objectives.Objective(
      loss, point.num_classes, inference.embedding_dim(model, image_shape),
      class_shards=mesh.shape[sharding.MODEL])
  optimizer, _ = optim.build(ml_collections.ConfigDict(SGD), 1)
  return model, objective, optimizer, compute_dtype


def abstract_batch(point, mesh):
  """The batch as the input pipeline delivers it: float32 images and int32
  labels, split over every device."""
  batch_sharding = sharding.batch_sharding(mesh)
  size = point.image_size
  return dict(
      image=jax.ShapeDtypeStruct((point.global_batch, size, size, 3),
                                 jnp.float32, sharding=batch_sharding),
      label=jax.ShapeDtypeStruct((point.global_batch,), jnp.int32,
                                 sharding=batch_sharding))


def shard_bytes(tree):
  """Bytes one device holds of ``tree``'s leaves (arrays, or abstract
  arrays with a sharding): the first device's shard of each."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      total += leaf.addressable_shards[0].data.nbytes
    else:
      total += math.prod(leaf.sharding.shard_shape(leaf.shape)) * (
          leaf.dtype.itemsize)
  return total


def state_bytes(state):
  """Per-device bytes of the train state, by part (see the module doc)."""
  head = dict(state.params['head'])
  class_weights = head.pop('class_weights', None)
  parts = dict(backbone_param_bytes=state.params['backbone'],
               class_weight_bytes=class_weights,
               optimizer_bytes=state.opt_state,
               other_state_bytes=(head, state.batch_stats, state.extra,
                                  state.step, state.rng))
  return {name: shard_bytes(part) for name, part in parts.items()}


# One HLO instruction: `%name = TYPE opcode(operands), attributes`.
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT\s+)?%([^\s=]+) = (.*?) ([a-z][a-z0-9-]*)\((.*)$')
_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%([^\s(]+)\s*\(')
_ARRAY = re.compile(r'\b([a-z][a-z0-9]*)\[([^\]]*)\]')


def _dtype_bytes(name):
  if name in ('pred', 'token'):
    return 1 if name == 'pred' else 0
  if name.startswith('f8'):
    return 1
  bits = re.fullmatch(r'[a-z]+(\d+)', name)
  if not bits:
    raise ValueError(f'unknown HLO element type {name!r}')
  return int(bits.group(1)) / 8


def type_bytes(hlo_type):
  """Bytes of an HLO type: ``f32[1024,512]{1,0}``, or a tuple of them."""
  total = 0
  for dtype, dims in _ARRAY.findall(hlo_type):
    extents = [int(d.lstrip('<=')) for d in dims.split(',') if d]
    total += math.prod(extents) * _dtype_bytes(dtype)
  return int(total)


def _operands(rest):
  """The operand names of an instruction (the text after its opcode's
  opening parenthesis) and the attribute text after them."""
  depth = 0
  for index, char in enumerate(rest):
    if char in '({':
      depth += 1
    elif char in ')}':
      if depth == 0:
        return re.findall(r'%([^\s,)]+)', rest[:index]), rest[index + 1:]
      depth -= 1
  raise ValueError(f'unbalanced HLO operands: {rest[:200]!r}')


def group_size(attributes, num_devices):
  """The replica group size of a collective, from its attributes: the
  list form ``{{0,1},{2,3}}``, the iota form ``[2,4]<=[8]``, the mesh form
  ``mesh['axis_0'=8,'axis_1'=1] {'axis_0'}`` (with or without a
  ``device_ids=...`` permutation before the braces; a sub-axis ``'a':(1)2``
  has its own size) or ``{}`` (every device)."""
  if 'replica_groups=' not in attributes:
    return num_devices
  groups = re.search(r'replica_groups=\{\{([^}]*)\}', attributes)
  if groups:
    return len(groups.group(1).split(','))
  if re.search(r'replica_groups=\{\}', attributes):
    return num_devices
  iota = re.search(r'replica_groups=\[([\d,]+)\]<=', attributes)
  if iota:
    return int(iota.group(1).split(',')[-1])
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}",
                   attributes)
  if mesh:
    sizes = dict((name, int(size)) for name, size in
                 re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
    size = 1
    for name, sub_size in re.findall(r"'([^']+)'(?::\(\d+\)(\d+))?",
                                     mesh.group(2)):
      size *= int(sub_size) if sub_size else sizes[name]
    return size
  raise ValueError(f'unparsed replica groups in {attributes[:300]!r}')


def _sent_bytes(kind, operand_bytes, group):
  """Bytes one device sends for one collective, with a ring algorithm."""
  if kind == 'collective-permute':
    return operand_bytes
  if group <= 1:
    return 0
  if kind == 'all-reduce':
    return 2 * (group - 1) * operand_bytes / group
  if kind == 'all-gather':
    return (group - 1) * operand_bytes
  return (group - 1) * operand_bytes / group  # reduce-scatter, all-to-all


def collective_bytes(hlo_text, num_devices):
  """Collectives of a compiled (partitioned) HLO module, per device.

  Args:
    hlo_text: ``compiled.as_text()``.
    num_devices: the devices of the program (a ``{}`` replica group).

  Returns:
    {kind: {'count', 'operand_bytes', 'sent_bytes'}} for the five kinds of
    ``COLLECTIVES``, plus 'in_loops': the collectives found inside a while
    loop's body (counted once here, though they run once per iteration).
  """
  types, found, loop_bodies = {}, [], set()
  computation = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      computation = header.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, hlo_type, opcode, rest = match.groups()
    types[name] = hlo_type
    if opcode == 'while':
      loop_bodies.update(re.findall(r'body=%([^\s,]+)', rest))
    kind = opcode[:-len('-start')] if opcode.endswith('-start') else opcode
    if kind in COLLECTIVES:
      found.append((kind, computation, *_operands(rest)))
  result = {kind: dict(count=0, operand_bytes=0, sent_bytes=0)
            for kind in COLLECTIVES}
  in_loops = 0
  for kind, computation, operands, attributes in found:
    operand_bytes = sum(type_bytes(types[name]) for name in operands)
    entry = result[kind]
    entry['count'] += 1
    entry['operand_bytes'] += operand_bytes
    entry['sent_bytes'] += _sent_bytes(
        kind, operand_bytes, group_size(attributes, num_devices))
    in_loops += computation in loop_bodies
  for entry in result.values():
    entry['sent_bytes'] = int(round(entry['sent_bytes']))
  result['in_loops'] = in_loops
  return result


def memory_bytes(compiled):
  """``compiled.memory_analysis()`` as a dict, with the peak (see the
  module doc)."""
  stats = compiled.memory_analysis()
  memory = dict(argument_bytes=stats.argument_size_in_bytes,
                output_bytes=stats.output_size_in_bytes,
                alias_bytes=stats.alias_size_in_bytes,
                temp_bytes=stats.temp_size_in_bytes)
  memory['peak_bytes'] = (memory['argument_bytes'] + memory['output_bytes']
                          - memory['alias_bytes'] + memory['temp_bytes'])
  return memory


def compiled_figures(compiled, num_devices):
  """What the plan reads from one compiled step: its memory analysis and
  its collectives (the same for an abstract and a real lowering)."""
  return dict(memory_bytes(compiled),
              collectives=collective_bytes(compiled.as_text(), num_devices))


def abstract_step(point, mesh):
  """(jitted step, abstract state, abstract batch) of a point: the engine's
  step and state, nothing allocated."""
  model, objective, optimizer, compute_dtype = build(point, mesh)
  image_shape = (point.image_size, point.image_size, 3)
  with jax.set_mesh(mesh):
    state = state_lib.abstract_state(
        jax.random.key(0), model, objective, optimizer, image_shape, mesh,
        point.shard_backbone)
    shardings = jax.tree.map(lambda leaf: leaf.sharding, state)
    step = step_lib.make_train_step(model, objective, optimizer, mesh,
                                    shardings, compute_dtype=compute_dtype)
  return step, state, abstract_batch(point, mesh)


def make_point_mesh(point):
  """The point's ``data x model`` mesh over this process's devices."""
  if jax.device_count() != point.devices:
    raise ValueError(f'point needs {point.devices} devices, this process has '
                     f'{jax.device_count()}')
  return sharding.make_mesh(model=point.model_axis)


def compile_point(point):
  """Lowers and compiles one point on this process's devices; its record."""
  mesh = make_point_mesh(point)
  start = time.perf_counter()
  step, state, batch = abstract_step(point, mesh)
  with jax.set_mesh(mesh):
    lowered = step.lower(state, batch)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
  record = dict(dataclasses.asdict(point), label=point.label,
                data_axis=point.data_axis,
                global_batch=point.global_batch,
                padded_classes=state.params['head']['class_weights'].shape[1],
                lower_s=lowered_at - start,
                compile_s=time.perf_counter() - lowered_at)
  record.update(state_bytes(state), batch_bytes=shard_bytes(batch))
  record.update(compiled_figures(compiled, point.devices))
  record['fits'] = {chip: record['peak_bytes'] <= USABLE_FRACTION * capacity
                    for chip, capacity in CHIPS}
  return record


def _child_environment(devices):
  """The environment of a child with ``devices`` simulated CPU devices."""
  kept = [flag for flag in os.environ.get('XLA_FLAGS', '').split()
          if not flag.startswith('--xla_force_host_platform_device_count')]
  if not any(flag.startswith('--xla_backend_optimization_level')
             for flag in kept):
    kept.append('--xla_backend_optimization_level=0')
  return dict(os.environ, JAX_PLATFORMS='cpu',
              JAX_ENABLE_COMPILATION_CACHE='false',
              XLA_FLAGS=' '.join(
                  kept + [f'--xla_force_host_platform_device_count={devices}']))


def _run_child(points):
  """Compiles ``points`` here, printing one JSON record line per point
  (an ``error`` record when a point does not compile)."""
  for point in points:
    try:
      record = compile_point(point)
    except Exception as error:  # pylint: disable=broad-except
      record = dict(dataclasses.asdict(point), label=point.label,
                    error=f'{type(error).__name__}: {error}'[:2000])
    print(RECORD_PREFIX + json.dumps(record), flush=True)


def run_points(points, on_record=None):
  """Compiles every point, one child process per device count; returns the
  records in the points' order (``on_record`` sees each as it arrives)."""
  by_devices = {}
  for index, point in enumerate(points):
    by_devices.setdefault(point.devices, []).append(index)
  records = [None] * len(points)
  for devices, indices in by_devices.items():
    command = [sys.executable, '-m', 'bench.scale_plan', '--child',
               json.dumps([dataclasses.asdict(points[i]) for i in indices])]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                          env=_child_environment(devices)) as child:
      pending = iter(indices)
      for line in child.stdout:
        if not line.startswith(RECORD_PREFIX):
          print(line, end='', file=sys.stderr)
          continue
        record = json.loads(line[len(RECORD_PREFIX):])
        records[next(pending)] = record
        if on_record:
          on_record(record)
    if child.returncode:
      raise RuntimeError(f'the {devices}-device child exited with '
                         f'{child.returncode}')
  return records


def format_bytes(count):
  """'1.23 GiB', '45.6 MiB', '7.0 KiB' or '12 B'."""
  for unit, size in (('GiB', GiB), ('MiB', 2 ** 20), ('KiB', 2 ** 10)):
    if count >= size:
      return f'{count / size:.{2 if unit == "GiB" else 1}f} {unit}'
  return f'{count} B'


def _fit(record, chip, capacity):
  share = record['peak_bytes'] / capacity
  return f'{"yes" if record["fits"][chip] else "no"} ({100 * share:.0f}%)'


def collective_sent(record):
  """Bytes one device sends per step, all collectives."""
  return sum(record['collectives'][kind]['sent_bytes']
             for kind in COLLECTIVES)


def print_table(records, markdown):
  """One row per point: the per-device figures and the two verdicts."""
  header = ('backbone', 'classes', 'PFC rate', 'devices', 'data x model',
            'FSDP', 'params', 'W shard', 'optimizer', 'temporaries', 'peak',
            'collectives sent', *(f'fits {chip}' for chip, _ in CHIPS))
  lines = []
  for record in records:
    layout = (record['label'], f'{record["num_classes"]:,}',
              f'{record["sample_rate"]:g}', str(record['devices']),
              f'{record["devices"] // record["model_axis"]} x '
              f'{record["model_axis"]}',
              'on' if record['shard_backbone'] else 'off')
    if 'error' in record:
      lines.append(layout + ('error: ' + record['error'][:60],)
                   + ('',) * (len(header) - len(layout) - 1))
      continue
    lines.append(layout + tuple(format_bytes(record[key]) for key in (
        'backbone_param_bytes', 'class_weight_bytes', 'optimizer_bytes',
        'temp_bytes', 'peak_bytes')) + (
            format_bytes(collective_sent(record)),) + tuple(
                _fit(record, chip, capacity) for chip, capacity in CHIPS))
  table.print_rows(header, lines, markdown)


def plan(records):
  """Per (backbone, classes) and chip: the fewest devices, and at that count
  the layout sending the fewest collective bytes, among the points that
  fit; lines of text."""
  lines = []
  sizes = {}
  for record in records:
    if 'error' not in record:
      sizes.setdefault((record['label'], record['num_classes']), []).append(
          record)
  for (model, classes), group in sizes.items():
    for chip, _ in CHIPS:
      fitting = [r for r in group if r['fits'][chip]]
      if not fitting:
        lines.append(f'{model}, {classes:,} classes, {chip}: no point of '
                     'the grid fits')
        continue
      best = min(fitting, key=lambda r: (r['devices'], collective_sent(r)))
      lines.append(
          f'{model}, {classes:,} classes, {chip}: {best["devices"]} devices, '
          f'data {best["devices"] // best["model_axis"]} x model '
          f'{best["model_axis"]}, FSDP '
          f'{"on" if best["shard_backbone"] else "off"}, Partial FC rate '
          f'{best["sample_rate"]:g} (peak {format_bytes(best["peak_bytes"])})')
  return lines


def _point_argument(text):
  try:
    return parse_point(text)
  except ValueError as error:
    raise argparse.ArgumentTypeError(str(error)) from error


def _parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--markdown', action='store_true')
  parser.add_argument('--smoke', action='store_true',
                      help='two tiny points on 8 devices (tests)')
  parser.add_argument('--point', action='append', type=_point_argument,
                      help='a point instead of the grid, e.g. model='
                      'iresnet100,classes=1e7,devices=64,model_axis=8,'
                      'fsdp=1,rate=0.1 (repeatable)')
  parser.add_argument('--devices', help='keep these device counts (8,64)')
  parser.add_argument('--models', help='keep these backbones')
  parser.add_argument('--classes', help='keep these class counts')
  parser.add_argument('--json', help='also write the records here')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def _selected(args):
  points = args.point or (smoke_grid() if args.smoke else _full_grid())
  keep = dict(devices=args.devices, model=args.models,
              num_classes=args.classes)
  for field, values in keep.items():
    if values:
      allowed = {str(int(float(v))) if field != 'model' else v
                 for v in values.split(',')}
      points = [p for p in points if str(getattr(p, field)) in allowed]
  return points


def main(argv=None):
  """Compiles the grid; prints the table and the plan; returns the records."""
  args = _parse_args(argv)
  if args.child:
    _run_child([Point(**fields) for fields in json.loads(args.child)])
    return None
  points = _selected(args)
  print(f'{len(points)} points; per device, peak = arguments + outputs - '
        f'aliased + temporaries; fits: peak <= {USABLE_FRACTION:.0%} of the '
        'chip', flush=True)
  start = time.perf_counter()

  def progress(record):
    what = (f'{record["model"]} {record["num_classes"]:,} classes rate '
            f'{record["sample_rate"]:g} on {record["devices"]} '
            f'({record["devices"] // record["model_axis"]} x '
            f'{record["model_axis"]}, FSDP {record["shard_backbone"]})')
    if 'error' in record:
      print(f'{what}: {record["error"]}', flush=True)
    else:
      print(f'{what}: peak {format_bytes(record["peak_bytes"])}, compiled in '
            f'{record["lower_s"] + record["compile_s"]:.0f} s', flush=True)
  records = run_points(points, progress)
  print(f'{len(records)} points in {time.perf_counter() - start:.0f} s')
  print_table(records, args.markdown)
  for line in plan(records):
    print(line)
  if args.json:
    with open(args.json, 'w') as file:
      json.dump(records, file, indent=1)
  return records


if __name__ == '__main__':
  main()
