"""Where ``make demo``'s time went, and what each fix saves, in one run.

    python -m bench.demo_costs [--steps 20] [--markdown] [--json FILE]

Three costs of the demo's jobs on a CPU host, each measured before and
after its fix on the same machine in the same run, and reported as a ratio:

1. **The train step** of ``train/configs/default.py`` (batch 64, 56x56
   images, the default IResNet and ArcFace) under three XLA CPU settings.
   Each runs in a fresh process, because XLA reads its flags and the
   loader reads ``LD_PRELOAD`` only when the process starts:
   - XLA's default: one device whose ops split over a thread pool;
   - one device per core with single-threaded Eigen
     (:mod:`facejax.cpu_host`);
   - the same with tcmalloc preloaded, when the system has it.
   Reported: milliseconds a step, images/s, and page faults and kernel
   CPU time a step.
2. **Drawing the synthetic faces** of the training set (6,000 images). The
   old way drew them at 112x112 and resized each in tf.data. Now they are
   drawn at the model's 56x56.
3. **Evaluation batches** of those 6,000 in-memory images with the flip
   view. ``pipeline.eval_dataset`` uses tf.data (the graph is built, then
   iterated). ``pipeline.eval_batches`` slices in numpy and gives the same
   values bit for bit. The tf.data figure includes the graph build but not
   the tensorflow import, which the numpy path does not need at all.

``--smoke``: tiny sizes, for the tests.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from bench import table
from facejax import cpu_host

IMAGES = 6_000
IMAGES_PER_IDENTITY = 20


def _child_step(steps, image_size, batch):
  """Runs in a fresh process: the default config's train step; prints JSON."""
  import jax  # pylint: disable=g-import-not-at-top
  from facejax import inference  # pylint: disable=g-import-not-at-top
  from facejax import sharding  # pylint: disable=g-import-not-at-top
  from facejax.training import objectives  # pylint: disable=g-import-not-at-top
  from facejax.training import optim  # pylint: disable=g-import-not-at-top
  from facejax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from facejax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  from train.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.data.image_size, config.batch_size = image_size, batch
  classes = config.data.synthetic.num_identities
  mesh = sharding.make_mesh(model=1)
  model = inference.build_model(config)
  shape = (image_size, image_size, 3)
  objective = objectives.Objective(
      config.loss, classes, inference.embedding_dim(model, shape),
      class_shards=1, num_examples=IMAGES, num_attributes=0)
  optimizer, _ = optim.build(config.optimizer, config.total_steps)
  rng = np.random.default_rng(0)
  with jax.set_mesh(mesh):
    state, shardings = state_lib.create(jax.random.key(0), model, objective,
                                        optimizer, shape, mesh, False)
    train_step = step_lib.make_train_step(model, objective, optimizer, mesh,
                                          shardings)
    batch_data = jax.device_put(dict(
        image=rng.uniform(-1, 1, (batch,) + shape).astype(np.float32),
        label=rng.integers(0, classes, batch).astype(np.int32)),
                                sharding.batch_sharding(mesh))
    for _ in range(2):  # compile, warm up
      state, metrics = train_step(state, batch_data)
    jax.block_until_ready(metrics)
    before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    for _ in range(steps):
      state, metrics = train_step(state, batch_data)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
  print(json.dumps(dict(
      devices=jax.device_count(), step_ms=1000 * seconds / steps,
      images_per_second=batch * steps / seconds,
      page_faults_per_step=(after.ru_minflt - before.ru_minflt) / steps,
      kernel_ms_per_step=1000 * (after.ru_stime - before.ru_stime) / steps,
      user_ms_per_step=1000 * (after.ru_utime - before.ru_utime) / steps)))


def step_settings(cores):
  """(name, environment changes) of the step's cases on ``cores``."""
  base = {'XLA_FLAGS': '', 'LD_PRELOAD': ''}
  with_devices = cpu_host.environment(dict(base, LD_PRELOAD='-'), cores)
  cases = [('XLA default (1 device, threaded ops)', base)]
  if with_devices:
    cases.append((f'{cpu_host.device_count(cores)} devices, 1 thread each',
                  dict(base, **with_devices)))
  everything = cpu_host.environment(base, cores)
  if 'LD_PRELOAD' in everything:
    cases.append(('... and tcmalloc', dict(base, **everything)))
  return cases


def measure_steps(steps, image_size, batch, cores):
  """[(case, result dict)] of each setting, each in a fresh process."""
  rows = []
  for name, changes in step_settings(cores):
    environ = dict(os.environ)
    environ.update({k: v for k, v in changes.items() if v})
    for key in [k for k, v in changes.items() if not v]:
      environ.pop(key, None)
    out = subprocess.run(
        [sys.executable, '-m', 'bench.demo_costs', '--child-step',
         str(steps), '--image-size', str(image_size), '--batch',
         str(batch)], env=environ, check=True, capture_output=True,
        text=True).stdout
    rows.append((name, json.loads(out.strip().splitlines()[-1])))
  return rows


def measure_rendering(num_images, image_size):
  """Seconds to draw the training set at 112 and at ``image_size``."""
  from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
  identities = num_images // IMAGES_PER_IDENTITY
  seconds = {}
  for size in (synthetic.IMAGE_SIZE, image_size):
    began = time.perf_counter()
    synthetic.generate(identities, IMAGES_PER_IDENTITY, image_size=size)
    seconds[size] = time.perf_counter() - began
  return seconds


def measure_eval_batches(num_images, image_size, batch):
  """Seconds for every evaluation batch (with the flip view) of
  ``num_images`` in-memory images: tf.data, then numpy."""
  from facejax.data import pipeline  # pylint: disable=g-import-not-at-top
  from facejax.data import sources  # pylint: disable=g-import-not-at-top
  images = np.random.default_rng(0).integers(
      0, 256, (num_images, image_size, image_size, 3), np.uint8)
  source = sources.InMemory(images, np.zeros(num_images, np.int32))
  one = pipeline.ProcessShard(0, 1)
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  seconds = {}
  for name, batches in (
      ('tf.data (eval_dataset)', lambda: pipeline.eval_dataset(
          source, batch, image_size=image_size, process=one,
          flip=True).as_numpy_iterator()),
      ('numpy (eval_batches)', lambda: pipeline.eval_batches(
          source, batch, image_size=image_size, process=one, flip=True))):
    began = time.perf_counter()
    count = sum(int(b['mask'].sum()) for b in batches())
    seconds[name] = time.perf_counter() - began
    assert count == num_images, (name, count)
  return seconds


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m bench.demo_costs',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--images', type=int, default=IMAGES)
  parser.add_argument('--image-size', type=int, default=56)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--markdown', action='store_true')
  parser.add_argument('--json', help='also write the figures here')
  parser.add_argument('--smoke', action='store_true',
                      help='tiny sizes (the tests)')
  parser.add_argument('--child-step', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child_step:
    _child_step(args.child_step, args.image_size, args.batch)
    return 0
  if args.smoke:
    args.steps, args.images, args.image_size, args.batch = 2, 200, 24, 16
  cores = cpu_host.usable_cores()
  steps = measure_steps(args.steps, args.image_size, args.batch, cores)
  rendering = measure_rendering(args.images, args.image_size)
  batches = measure_eval_batches(args.images, args.image_size, 256)
  first = steps[0][1]['step_ms']
  step_rows = [[name, str(r['devices']), f"{r['step_ms']:.0f}",
                f"{r['images_per_second']:.0f}",
                f"{r['page_faults_per_step']:,.0f}",
                f"{r['kernel_ms_per_step']:.0f}",
                f"{first / r['step_ms']:.2f}x"] for name, r in steps]
  print(f'{cores} cores; train step of train/configs/default.py, batch '
        f'{args.batch}, {args.image_size}x{args.image_size}, '
        f'{args.steps} steps after warm-up, each setting in a fresh process')
  table.print_rows(['setting', 'devices', 'ms/step', 'images/s',
                    'page faults/step', 'kernel ms/step', 'speed-up'],
                   step_rows, args.markdown)
  sizes = sorted(rendering, reverse=True)
  print(f'\ndrawing {args.images:,} synthetic training faces: '
        f'{sizes[0]}x{sizes[0]} {rendering[sizes[0]]:.1f} s, '
        f'{sizes[-1]}x{sizes[-1]} {rendering[sizes[-1]]:.1f} s '
        f'({rendering[sizes[0]] / rendering[sizes[-1]]:.1f}x)')
  slow, fast = batches.values()
  print(f'evaluation batches of {args.images:,} in-memory images with the '
        'flip view: ' + ', '.join(
            f'{name} {value:.2f} s ({args.images / value:,.0f} img/s)'
            for name, value in batches.items()) + f' ({slow / fast:.0f}x)')
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(dict(cores=cores, steps=dict(steps),
                     rendering_seconds={str(k): v
                                        for k, v in rendering.items()},
                     eval_batches_seconds=batches), f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
