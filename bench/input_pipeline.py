"""Input pipeline throughput: decoded and augmented images per second.

    python -m bench.input_pipeline [--images 2000] [--seconds 10]

Writes the same synthetic faces (:mod:`facejax.data.synthetic`, 112x112) in
every format a pipeline reads: an in-memory array, a PNG folder, a JPEG
folder, TFRecords converted from the JPEG folder and an insightface
``.rec``/``.idx`` (written by the tests' independent writer), then runs the
training pipeline (shuffle, decode, flip, normalise, batch 128) on each for
``--seconds`` after a warm-up, once with the default augmentation (flip) and
once with everything on (flip, crop/scale, colour jitter). Prints images/s
and images/s per core (``os.sched_getaffinity``), as a markdown table with
``--markdown``. The figures depend on the machine: quote them with the
machine's core count.
"""

import argparse
import os
import sys
import tempfile
import time

from facejax.data import augment
from facejax.data import convert
from facejax.data import pipeline
from facejax.data import sources
from facejax.data import synthetic

BATCH = 128
FULL = augment.Augmentation(flip=True, min_crop_scale=0.85, brightness=0.2,
                            contrast=0.2, saturation=0.2, hue=0.02)


def write_sources(directory, num_images, images_per_identity=20):
  """The same images in every format; returns {name: source}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  num_identities = -(-num_images // images_per_identity)
  images, labels = synthetic.generate(num_identities, images_per_identity,
                                      seed=0)
  made = {'in-memory arrays': sources.InMemory(images, labels)}
  encoded = {}
  for fmt in ('png', 'jpeg'):
    root = os.path.join(directory, fmt)
    encoded[fmt] = []
    for i, (image, label) in enumerate(zip(images, labels)):
      folder = os.path.join(root, f'{label:05d}')
      os.makedirs(folder, exist_ok=True)
      data = (tf.io.encode_png(image) if fmt == 'png'
              else tf.io.encode_jpeg(image, quality=95)).numpy()
      encoded[fmt].append(data)
      with open(os.path.join(folder, f'{i:06d}.{fmt}'), 'wb') as f:
        f.write(data)
    made[f'{fmt.upper()} folder'] = sources.ImageFolder(root)
  records = os.path.join(directory, 'tfrecords')
  convert.convert(made['JPEG folder'], records, 8, validate=False,
                  stream=open(os.devnull, 'w'))
  made['TFRecords (JPEG)'] = sources.TFRecords(records)
  sys.path.insert(0, os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  from tests.data import recordio_writer  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  rec, _, _ = recordio_writer.insightface_dataset(
      pathlib.Path(directory), labels.tolist(), encoded['jpeg'])
  made['insightface .rec (JPEG)'] = sources.RecordIO(rec)
  return made


def images_per_second(source, augmentation, seconds,
                      max_pixels=pipeline.DEFAULT_MAX_PIXELS):
  dataset = pipeline.train_dataset(
      source, BATCH, seed=0, augmentation=augmentation,
      process=pipeline.ProcessShard(), deterministic=False,
      max_pixels=max_pixels)
  iterator = iter(dataset)
  for _ in range(3):  # warm-up: tracing, thread pools, autotuning
    next(iterator)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += BATCH
  return count / (time.perf_counter() - start)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--images', type=int, default=2000)
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--markdown', action='store_true')
  args = parser.parse_args(argv)
  cores = len(os.sched_getaffinity(0))
  with tempfile.TemporaryDirectory() as directory:
    made = write_sources(directory, args.images)
    rows = []
    for name, source in made.items():
      flip = images_per_second(source, augment.Augmentation(), args.seconds)
      full = images_per_second(source, FULL, args.seconds)
      rows.append((name, flip, full))
      if not args.markdown:
        print(f'{name:26s} flip: {flip:8,.0f} img/s ({flip / cores:6,.0f} '
              f'per core)   all augmentations: {full:8,.0f} img/s '
              f'({full / cores:6,.0f} per core)', flush=True)
  if args.markdown:
    print(f'{cores} cores, 112x112 images, batch {BATCH}\n')
    print('| source | flip only (img/s) | per core | all augmentations '
          '(img/s) | per core |')
    print('|---|---:|---:|---:|---:|')
    for name, flip, full in rows:
      print(f'| {name} | {flip:,.0f} | {flip / cores:,.0f} | {full:,.0f} | '
            f'{full / cores:,.0f} |')


if __name__ == '__main__':
  main()
