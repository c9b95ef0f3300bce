"""Peak memory of an input-pipeline epoch with and without decompression bombs.

    python -m bench.decompression_bombs [--side 10000] [--bombs 3]

Writes an image folder of small synthetic faces (PNG) and, beside them,
``--bombs`` valid PNGs of ``--side`` x ``--side`` black pixels (a few hundred
KB each, 300 MB each once decoded), then runs one epoch of the training
pipeline over the folder in a fresh process for each case: without the
bombs, with them under the default pixel limit
(``pipeline.DEFAULT_MAX_PIXELS``: skipped before decoding), and with them
and no limit (decoded in full, as before the limit existed). Prints each
case's peak resident memory (``ru_maxrss``) and how many images were
skipped, as a markdown table with ``--markdown``.

Then the cost of the limit (reading every header before decoding): the
training pipeline's images/s over the clean folder (112x112 PNGs), with the
default limit and with none, alternated ``--rounds`` times for
``--seconds`` each in this one process, and their ratio; and the host-side
check the converter and ``.bin`` sets use (``image_headers.pixels`` over
the folder's files as one batch) in microseconds per image, next to an
eager decode of the same files.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile

from bench import input_pipeline

CASES = (('no bombs', 'clean', 'default'),
         ('bombs, default limit', 'bombs', 'default'),
         ('bombs, no limit', 'bombs', 'none'))


def write_folder(root, bombs, side, identities=8, images=16):
  """``root/clean`` (synthetic faces only) and ``root/bombs`` (the same
  faces plus the bombs); returns one bomb's size in bytes."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
  black = tf.io.encode_png(np.zeros((side, side, 3), np.uint8)).numpy()
  for name, count in (('clean', 0), ('bombs', bombs)):
    folder = os.path.join(root, name)
    synthetic.export_image_folder(folder, identities, images, seed=0)
    first = os.path.join(folder, sorted(os.listdir(folder))[0])
    for index in range(count):
      with open(os.path.join(first, f'bomb_{index}.png'), 'wb') as f:
        f.write(black)
  return len(black)


def header_check_cost(folder, seconds, rounds):
  """images/s with the default limit and with none, alternated."""
  from facejax.data import augment  # pylint: disable=g-import-not-at-top
  from facejax.data import pipeline  # pylint: disable=g-import-not-at-top
  from facejax.data import sources  # pylint: disable=g-import-not-at-top
  source = sources.ImageFolder(folder)
  rates = {'limit': [], 'none': []}
  for _ in range(rounds):
    for name, max_pixels in (('limit', pipeline.DEFAULT_MAX_PIXELS),
                             ('none', None)):
      rates[name].append(round(input_pipeline.images_per_second(
          source, augment.Augmentation(), seconds, max_pixels=max_pixels)))
  return rates


def host_header_cost(folder, repeats=5):
  """(us per image of image_headers.pixels on a batch, of an eager decode)."""
  import time  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from facejax.data import image_headers  # pylint: disable=g-import-not-at-top
  encoded = []
  for identity in sorted(os.listdir(folder)):
    for name in sorted(os.listdir(os.path.join(folder, identity))):
      with open(os.path.join(folder, identity, name), 'rb') as f:
        encoded.append(f.read())
  image_headers.pixels(encoded)  # traced once
  start = time.perf_counter()
  for _ in range(repeats):
    image_headers.pixels(encoded)
  headers = (time.perf_counter() - start) / (repeats * len(encoded))
  start = time.perf_counter()
  for _ in range(repeats):
    for data in encoded:
      tf.io.decode_image(data, channels=3, expand_animations=False)
  decode = (time.perf_counter() - start) / (repeats * len(encoded))
  return headers * 1e6, decode * 1e6


def one_epoch(folder, limit):
  """Child process: one epoch of the training pipeline; prints the result."""
  from facejax.data import pipeline  # pylint: disable=g-import-not-at-top
  from facejax.data import sources  # pylint: disable=g-import-not-at-top
  source = sources.ImageFolder(folder)
  skipped = pipeline.SkippedImages()
  max_pixels = pipeline.DEFAULT_MAX_PIXELS if limit == 'default' else None
  dataset = pipeline.train_dataset(
      source, 16, seed=0, image_size=112, skipped=skipped,
      max_pixels=max_pixels, process=pipeline.ProcessShard())
  for _ in dataset.take(source.num_examples // 16).as_numpy_iterator():
    pass
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f'{peak_mib:.0f} {skipped.count}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--side', type=int, default=10_000)
  parser.add_argument('--bombs', type=int, default=3)
  parser.add_argument('--markdown', action='store_true')
  parser.add_argument('--seconds', type=float, default=6.0)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    one_epoch(*args.child)
    return 0
  with tempfile.TemporaryDirectory() as root:
    size = write_folder(root, args.bombs, args.side)
    rows = []
    for name, folder, limit in CASES:
      out = subprocess.run(
          [sys.executable, '-m', 'bench.decompression_bombs', '--child',
           os.path.join(root, folder), limit], check=True,
          capture_output=True, text=True).stdout.split()
      rows.append((name, out[-2], out[-1]))
    rates = header_check_cost(os.path.join(root, 'clean'), args.seconds,
                              args.rounds)
    host = host_header_cost(os.path.join(root, 'clean'))
  print(f'{args.bombs} PNGs of {args.side} x {args.side} ({size / 1e3:.0f} KB '
        'each) among 128 faces; one epoch of the training pipeline, batch 16')
  if args.markdown:
    print('| case | peak memory (MiB) | images skipped |\n|---|---|---|')
    for row in rows:
      print(f'| {row[0]} | {row[1]} | {row[2]} |')
  else:
    for row in rows:
      print(f'{row[0]:24s} peak {row[1]:>6s} MiB, {row[2]} skipped')
  limit, none = (sum(rates[k]) / len(rates[k]) for k in ('limit', 'none'))
  print(f'\nclean PNG folder, batch {input_pipeline.BATCH}: {limit:,.0f} img/s '
        f'with the default limit, {none:,.0f} without; ratio '
        f'{limit / none:.3f} (rounds: {rates})')
  print(f'host-side header check (image_headers.pixels, one batch): '
        f'{host[0]:.1f} us an image; eager decode: {host[1]:.1f} us')
  return 0


if __name__ == '__main__':
  sys.exit(main())
