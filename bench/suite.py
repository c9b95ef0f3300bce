"""The accelerator table: every headline figure in one command.

    python -m bench.suite [--smoke] [--time-limit 480] [--json PATH]
                          [--markdown]

An H100, H200 or TPU host is lent for minutes, so this runs, in one process
and within ``--time-limit`` seconds (compilation included: no compilation
cache is assumed), the figures that matter, most important first, so that a
limit reached early still leaves the top of the table:

1. IResNet-50 train step, 112x112, bfloat16, batch 512, 100k classes:
   images/s, step time, MFU (:func:`bench.train_step.main`);
2. the PyTorch reference step of the same model, timed in that same call
   (windows interleaved) and its ratio to JAX; skipped unless torch sees a
   GPU (a CPU step of IResNet-50 at batch 512 would take minutes);
3. IResNet-50 at 2M classes (class-parallel head: the mesh's model axis
   spans every device) and 4. its step time over the 100k step's;
5. IResNet-100 at 100k and 6. at 2M classes, and 7. their ratio;
8. MegaFace, 3,530 probes x 1M distractors, rank-1 searched on the device
   against faiss's exact index on the CPU (:func:`bench.megaface_search.
   main`);
9. the input pipeline's images/s per host core, insightface ``.rec`` of
   JPEGs, flip only and every augmentation (:mod:`bench.input_pipeline`);
10. the MTCNN detector's images/s (:func:`bench.detect.main`, imported only
   here: a note if it is missing or fails).

Before each item the time left is compared with the item's estimate (the
``estimate_s`` of :data:`ITEMS`, compilation included, guessed for one
H100: no accelerator has run this yet); an item that would not fit is listed
as 'not run (time limit)', and so is everything after it. An item that
fails is listed with its error and the rest still run. The JSON file is
rewritten after every item, so a run killed from outside keeps what it had.

``--smoke`` runs the same items at tiny sizes on whatever JAX finds (a CPU
in the tests): an IResNet of a few channels, tens of classes, a MegaFace of
2,000 distractors; its figures say nothing about performance.
"""

import argparse
import dataclasses
import importlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback

from bench import table

NOT_RUN = 'not run (time limit)'
DEFAULT_TIME_LIMIT = 480.0  # 8 minutes: what one lent accelerator allows
TARGET_IMAGES_PER_S = 8000  # IResNet-50, bf16, batch 512, one H100
TARGET_OVER_TORCH = 2.0
# The input pipeline's headline source: MS1MV3 and Glint360K ship as this.
PIPELINE_SOURCE = 'insightface .rec (JPEG)'


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What the items run at: the real headline sizes or the smoke ones."""
  model_args: tuple  # train_step flags choosing the backbone's width
  model_suffix: str
  batch: int
  image_size: int
  classes: int
  many_classes: int
  steps: int
  warmup: int
  windows: int
  megaface_args: tuple
  pipeline_images: int
  pipeline_seconds: float
  detect_args: tuple


FULL = Sizes(
    model_args=(), model_suffix='', batch=512, image_size=112,
    classes=100_000, many_classes=2_000_000, steps=10, warmup=2, windows=3,
    megaface_args=('--probes', '3530', '--distractors', '1000000'),
    pipeline_images=2000, pipeline_seconds=5.0,
    detect_args=('--rounds', '3'))
SMOKE = Sizes(
    model_args=('--tiny',), model_suffix=' (tiny)', batch=16, image_size=32,
    classes=64, many_classes=256, steps=2, warmup=1, windows=1,
    megaface_args=('--probes', '24', '--identities', '6', '--distractors',
                   '2000', '--dim', '128', '--chunk', '512'),
    pipeline_images=40, pipeline_seconds=0.3,
    detect_args=('--rounds', '1', '--sets', 'LFW-size'))


@dataclasses.dataclass
class Figure:
  """One cell of the table: a measured value and how to read it."""
  value: object  # a float, or None where nothing was measured
  unit: str
  note: str = ''
  spec: str = ',.1f'

  def text(self):
    return '—' if self.value is None else format(self.value, self.spec)


@dataclasses.dataclass
class Result:
  """What one item left: its figures, or why it has none."""
  item: str
  figures: list = dataclasses.field(default_factory=list)
  status: str = 'ok'  # ok, skipped, failed, not run
  note: str = ''
  seconds: float = 0.0
  rows: object = None  # the bench script's own rows, for the JSON


class Context:
  """What the items share: sizes, device facts and earlier results."""

  def __init__(self, sizes, smoke, torch_note):
    self.sizes = sizes
    self.smoke = smoke
    self.torch_note = torch_note  # None: torch runs with item 1
    self.train_rows = {}  # (model, classes) -> bench.train_step row


def _train_step(context, model, classes, torch_too=False):
  """One :func:`bench.train_step.main` call at ``classes``; its row."""
  from bench import train_step  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  sizes = context.sizes
  model_axis = jax.device_count() if classes == sizes.many_classes else 1
  argv = ['--model', model, *sizes.model_args, '--batch', str(sizes.batch),
          '--image-size', str(sizes.image_size), '--classes', str(classes),
          '--dtype', 'bfloat16', '--steps', str(sizes.steps), '--warmup',
          str(sizes.warmup), '--windows', str(sizes.windows),
          '--model-axis', str(model_axis), '--markdown']
  row, = train_step.main(argv + (['--torch'] if torch_too else []))
  row['model_axis'] = model_axis
  context.train_rows[model, classes] = row
  return row


def _step_figures(row, context):
  mfu = row['mfu']
  sizes = context.sizes
  setting = (f'{row["model"]}, {row["classes"]:,} classes, bf16, batch '
             f'{row["batch"]}, {sizes.image_size}x'
             f'{sizes.image_size}, {row["device"]}, model axis '
             f'{row["model_axis"]}')
  return [Figure(row['images_per_s'], 'images/s', setting),
          Figure(row['step_ms'], 'ms / step',
                 f'first step (compilation) {row["first_step_s"]:.1f} s'),
          Figure(None if isinstance(mfu, str) else 100 * mfu, '% MFU',
                 'no peak known for this device' if isinstance(mfu, str)
                 else f'{row["flops_per_image"] / 1e9:.2f} GFLOP / image')]


def _label(model, classes):
  return f'{model}, {classes:,} classes'


def train_item(model, many):
  """An item timing ``model`` at the smoke or full class count."""

  def run(context):
    classes = (context.sizes.many_classes if many
               else context.sizes.classes)
    torch_too = model == 'iresnet50' and not many
    torch_too = torch_too and context.torch_note is None
    try:
      row = _train_step(context, model, classes, torch_too)
    except Exception as error:  # pylint: disable=broad-except
      if not torch_too:
        raise
      # Keep the JAX figure, the most important one: again without torch.
      traceback.print_exc()
      context.torch_note = f'failed: {_one_line(error)}'
      row = _train_step(context, model, classes)
    figures = _step_figures(row, context)
    if model == 'iresnet50' and not many:
      figures[0].note += (f'; target >= {TARGET_IMAGES_PER_S:,} on one '
                          'H100')
    return figures, row

  return run


def torch_reference(context):
  """The PyTorch step timed with item 1; a note if it was not."""
  row = context.train_rows.get(('iresnet50', context.sizes.classes))
  if context.torch_note is not None:
    raise Skipped(context.torch_note)
  if row is None or row['torch_images_per_s'] is None:
    raise Skipped('the IResNet-50 step it is timed with did not run')
  return [Figure(row['torch_images_per_s'], 'images/s',
                 row['torch_device']),
          Figure(row['torch_step_ms'], 'ms / step', 'eager'),
          Figure(row['jax_over_torch'], 'x (JAX / PyTorch)',
                 f'same run, windows interleaved; target >= '
                 f'{TARGET_OVER_TORCH:g}', '.2f')], None


def class_ratio(model):
  """An item: the many-class step time over the 100k (smoke: few) one."""

  def run(context):
    sizes = context.sizes
    few = context.train_rows.get((model, sizes.classes))
    many = context.train_rows.get((model, sizes.many_classes))
    if few is None or many is None:
      raise Skipped('needs both class counts, and one did not run')
    return [Figure(many['step_ms'] / few['step_ms'], 'x (step time)',
                   f'{sizes.many_classes:,} / {sizes.classes:,} classes; '
                   'target <= 1.2', '.3f')], None

  return run


def megaface(context):
  """Rank-1 on the device against faiss on the CPU."""
  from bench import megaface_search  # pylint: disable=import-outside-toplevel
  rows = megaface_search.main(list(context.sizes.megaface_args)
                              + ['--markdown'])
  ours = rows[0]
  setting = (f'{ours["probes"]:,} x {ours["distractors"]:,}, dim '
             f'{ours["dim"]}, rank-1 {ours["rank1"]:.4f}')
  figures = [Figure(ours['seconds'], 's (facejax, device)', setting, '.2f')]
  if len(rows) > 1:
    faiss_row = rows[1]
    figures += [
        Figure(faiss_row['seconds'], 's (faiss, CPU)',
               f'search alone; {len(os.sched_getaffinity(0))} host cores, add '
               f'{faiss_row["add_seconds"]:.1f} s more', '.2f'),
        Figure(ours['faiss_over_facejax'], 'x (faiss / facejax)',
               f'rank-1 {ours["agreement"]}', '.2f')]
  else:
    figures.append(Figure(None, 's (faiss, CPU)',
                          'skipped: faiss is not installed'))
  return figures, rows


def input_pipeline(context):
  """Images/s per host core of the training pipeline on a ``.rec`` file."""
  # pylint: disable=import-outside-toplevel
  from bench import input_pipeline as pipeline_bench
  from facejax.data import augment
  # pylint: enable=import-outside-toplevel
  sizes = context.sizes
  cores = len(os.sched_getaffinity(0))
  with tempfile.TemporaryDirectory() as directory:
    source = pipeline_bench.write_sources(
        directory, sizes.pipeline_images)[PIPELINE_SOURCE]
    rates = {name: pipeline_bench.images_per_second(
        source, augmentation, sizes.pipeline_seconds)
             for name, augmentation in (
                 ('flip', augment.Augmentation()),
                 ('every augmentation', pipeline_bench.FULL))}
  return [Figure(rate / cores, 'images/s per core',
                 f'{name}; {rate:,.0f} images/s on {cores} cores, '
                 f'{PIPELINE_SOURCE}')
          for name, rate in rates.items()], dict(rates, cores=cores)


def detector(context):
  """facejax's MTCNN, batched, per photo set; a note without bench.detect."""
  try:
    detect = importlib.import_module('bench.detect')
    rows = detect.main(list(context.sizes.detect_args) + ['--markdown'])
  except Exception as error:  # pylint: disable=broad-except
    traceback.print_exc()
    raise Skipped(f'bench.detect missing or failing: {_one_line(error)}')
  return [Figure(row['images_per_second'], 'images/s',
                 f'{row["set"]} ({row["images"]} photos), '
                 f'{row["speedup"]:.2f}x the mtcnn package')
          for row in rows if row['method'] == 'facejax, batched'], rows


class Skipped(Exception):
  """An item that cannot run here; its message is the table's note."""


@dataclasses.dataclass(frozen=True)
class Item:
  """One line of the plan: the table's name, a guess of its cost, its run.

  ``run(context)`` returns ``(figures, rows)``; the rows go to the JSON.
  ``estimate_s`` is (full, smoke) seconds, compilation included.
  """
  name: str
  estimate_s: tuple
  run: object


ITEMS = (
    Item('IResNet-50, 100k classes', (120, 5), train_item('iresnet50', False)),
    Item('PyTorch reference, IResNet-50, 100k classes', (0, 0),
         torch_reference),
    Item('IResNet-50, 2M classes', (90, 5), train_item('iresnet50', True)),
    Item('IResNet-50, 2M / 100k classes', (0, 0), class_ratio('iresnet50')),
    Item('IResNet-100, 100k classes', (120, 5),
         train_item('iresnet100', False)),
    Item('IResNet-100, 2M classes', (120, 5), train_item('iresnet100', True)),
    Item('IResNet-100, 2M / 100k classes', (0, 0),
         class_ratio('iresnet100')),
    Item('MegaFace 3,530 x 1M rank-1 search', (90, 5), megaface),
    Item('input pipeline', (40, 5), input_pipeline),
    Item('MTCNN detector', (60, 10), detector),
)


def _one_line(error):
  text = f'{type(error).__name__}: {error}'.splitlines()[0]
  return text[:200]


def run_items(items, context, time_limit, on_result, clock=time.monotonic):
  """Runs ``items`` in order while each one's estimate fits the time left.

  Args:
    items: :class:`Item` s, most important first.
    context: passed to every item.
    time_limit: seconds for them all, from this call.
    on_result: called with the list of results after each item.
    clock: seconds (the tests pass a fake one).

  Returns:
    One :class:`Result` per item, in order.
  """
  start = clock()
  estimate = 1 if context.smoke else 0
  results = []
  out_of_time = False
  for item in items:
    result = Result(item.name)
    left = time_limit - (clock() - start)
    if out_of_time or left < item.estimate_s[estimate]:
      out_of_time = True
      result.status, result.note = 'not run', NOT_RUN
    else:
      began = clock()
      print(f'\n## {item.name}: {left:.0f} s left', flush=True)
      try:
        result.figures, result.rows = item.run(context)
      except Skipped as skipped:
        result.status, result.note = 'skipped', f'skipped: {skipped}'
      except (Exception, SystemExit) as error:  # pylint: disable=broad-except
        traceback.print_exc()
        result.status, result.note = 'failed', f'failed: {_one_line(error)}'
      result.seconds = clock() - began
    results.append(result)
    on_result(results)
  return results


def torch_status(smoke):
  """None when the PyTorch reference can run, else the note why not.

  A smoke run times it on the CPU (tiny sizes); a real run only on a GPU.
  """
  try:
    torch = importlib.import_module('torch')
  except ImportError:
    return 'skipped: torch is not installed'
  if smoke:
    return None
  if torch.version.cuda is None and getattr(torch.version, 'hip',
                                            None) is None:
    return 'skipped: torch has no CUDA build'
  if not torch.cuda.is_available():
    return 'skipped: torch sees no GPU'
  return None


def describe_device():
  """The machine, for the JSON and the table's heading."""
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  description = dict(
      devices=len(devices), device_kind=devices[0].device_kind,
      platform=devices[0].platform, jax=jax.__version__,
      host_cores=len(os.sched_getaffinity(0)), python=platform.python_version(),
      compilation_cache=jax.config.jax_compilation_cache_dir or None)
  try:
    torch = importlib.import_module('torch')
    description['torch'] = torch.__version__
    description['torch_cuda'] = torch.version.cuda
  except ImportError:
    description['torch'] = None
  return description


def to_json(results, device, args, elapsed):
  return dict(
      device=device, smoke=args.smoke, time_limit_s=args.time_limit,
      elapsed_s=elapsed,
      items=[dict(item=r.item, status=r.status, note=r.note,
                  seconds=r.seconds,
                  figures=[dataclasses.asdict(f) for f in r.figures],
                  rows=r.rows) for r in results])


def _write_json(path, data):
  """Writes through a temporary file: a kill mid-write keeps the last one."""
  temporary = path + '.tmp'
  with open(temporary, 'w') as f:
    json.dump(data, f, indent=1, default=str)
  os.replace(temporary, path)


def table_lines(results):
  """(item, figure, unit, note) cells: one line per figure, or the note."""
  lines = []
  for result in results:
    if not result.figures:
      lines.append((result.item, '—', '', result.note))
    for figure in result.figures:
      lines.append((result.item, figure.text(), figure.unit, figure.note))
  return lines


def _parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--smoke', action='store_true',
                      help='tiny sizes (tests, CPU): no performance figure')
  parser.add_argument('--time-limit', type=float,
                      default=DEFAULT_TIME_LIMIT,
                      help='seconds for every item, compilation included')
  parser.add_argument('--json', default='bench_suite.json',
                      help='where the figures and the device go')
  parser.add_argument('--markdown', action='store_true')
  return parser.parse_args(argv)


def main(argv=None):
  """Runs the items; prints the table, writes the JSON, returns its dict."""
  args = _parse_args(argv)
  start = time.monotonic()
  torch_note = torch_status(args.smoke)
  if torch_note is None:
    # Before JAX starts its GPU client: leave memory for PyTorch.
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  device = describe_device()
  print(f'{device["devices"]} x {device["device_kind"]}, jax '
        f'{device["jax"]}, {device["host_cores"]} host cores; time limit '
        f'{args.time_limit:g} s' + (' (smoke sizes)' if args.smoke else ''))
  if device['compilation_cache']:
    print(f'note: compilation cache {device["compilation_cache"]}: first '
          'steps may be faster than on a fresh machine')
  context = Context(SMOKE if args.smoke else FULL, args.smoke, torch_note)

  def save(results):
    _write_json(args.json, to_json(results, device, args,
                                   time.monotonic() - start))

  results = run_items(ITEMS, context, args.time_limit - (
      time.monotonic() - start), save)
  print(f'\n## bench.suite: {device["devices"]} x {device["device_kind"]}'
        + (', smoke sizes (not performance figures)' if args.smoke else '')
        + f', {time.monotonic() - start:.0f} s\n')
  table.print_rows(('item', 'figure', 'unit', 'note'), table_lines(results),
                   args.markdown)
  print(f'\nJSON: {args.json}')
  sys.stdout.flush()
  return to_json(results, device, args, time.monotonic() - start)


if __name__ == '__main__':
  main()
