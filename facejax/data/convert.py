"""Convert an image folder or an insightface ``.rec`` into TFRecord shards.

    python -m facejax.data.convert SRC DST --shards N [--landmarks FILE]

SRC is an image folder (one sub-folder per identity) or a ``.rec`` file
(with its ``.idx`` beside it). DST receives:

* ``shard-00000-of-0000N.tfrecord`` ...: the examples, shuffled once (by
  ``--seed``) so every shard mixes identities; each is a ``tf.train.Example``
  with ``image/encoded`` (the original file's bytes, not re-encoded),
  ``image/label`` (int64), ``image/key`` (its path relative to SRC, or
  ``#index`` for a ``.rec``) and, with landmarks, ``image/landmarks`` (10
  floats);
* ``labels.json``: the class names in label order (the label map);
* ``dataset.json``: the manifest read by
  :class:`facejax.data.sources.TFRecords`: shards and their example counts,
  the class count, the skipped images, and ``complete``.

Conversion is resumable: each shard is written under a temporary name and
renamed when whole, and the manifest records the shards done, so running
the same command again after an interruption skips them; a shard that is
missing, or whose records no longer add up to its count, is written again,
even after the conversion finished. A different SRC, shard count or seed
for the same DST is refused, and so is a damaged manifest (``--overwrite``
starts again). Every image is decoded once as it is converted
(``--no-validate`` skips that): an undecodable image, or one whose header
declares more than 40 megapixels (a decompression bomb, not decoded), is
left out, counted, and its path listed in the manifest and the final report.
Progress goes to stderr.
"""

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

from facejax import command_line
from facejax.data import files
from facejax.data import image_headers
from facejax.data import sources

SKIPPED_KEPT = 100  # skipped image paths listed in the manifest
PROGRESS_SECONDS = 5.0


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def shard_name(shard, num_shards):
  return f'shard-{shard:05d}-of-{num_shards:05d}.tfrecord'


def _write_json(path, value):
  """Writes JSON atomically: a temporary file, then a rename."""
  temporary = path + '.tmp'
  with open(temporary, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1)
    f.write('\n')
  os.replace(temporary, path)


def _fingerprint(source, num_shards, seed):
  digest = hashlib.sha256()
  digest.update(repr(source).encode())
  digest.update(np.ascontiguousarray(source.labels).tobytes())
  for key in _keys(source):
    digest.update(key.encode() + b'\0')
  digest.update(f'{num_shards}/{seed}'.encode())
  return digest.hexdigest()


def _keys(source):
  if isinstance(source, sources.ImageFolder):
    return list(source.relative_paths)
  return [f'#{i}' for i in range(source.num_examples)]


def _reader(source):
  """index -> the encoded image bytes, for each kind of source."""
  if isinstance(source, sources.ImageFolder):
    def read_file(index):
      with open(source.paths[index], 'rb') as f:
        return f.read()
    return read_file
  if isinstance(source, sources.RecordIO):
    return lambda index: source.reader[index][1]
  if isinstance(source, sources.InMemory):
    tf = _tf()
    return lambda index: tf.io.encode_png(source.images[index]).numpy()
  raise TypeError(f'cannot convert {source!r}: not a random-access source')


# Images whose headers are read together (image_headers.pixels is per batch).
_HEADER_CHUNK = 256


def _decodes(tf, encoded, declared, max_pixels):
  """Whether ``encoded`` decodes, its header (``declared`` pixels, see
  :func:`image_headers.pixels`) read first: an image declaring more than
  ``max_pixels`` (a decompression bomb) is not decoded."""
  if declared == image_headers.UNREADABLE or (
      max_pixels and declared > max_pixels):
    return False
  try:
    tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return True
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError,
          ValueError):
    return False


class _Progress:
  """Prints ``done/total``, the rate and the time left, now and then."""

  def __init__(self, total, done, stream):
    self.total, self.done, self.stream = total, done, stream
    self.start_done, self.start = done, time.monotonic()
    self.last = self.start

  def advance(self, count=1, force=False):
    self.done += count
    now = time.monotonic()
    if not force and now - self.last < PROGRESS_SECONDS:
      return
    self.last = now
    rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
    left = (self.total - self.done) / rate if rate else float('inf')
    print(f'converted {self.done:,}/{self.total:,} images '
          f'({rate:,.0f} images/s, {left:,.0f} s left)', file=self.stream,
          flush=True)


def convert(source, destination, num_shards, seed=0, validate=True,
            overwrite=False, stream=sys.stderr,
            max_pixels=image_headers.DEFAULT_MAX_PIXELS):
  """Writes ``source`` as TFRecord shards in ``destination``.

  Args:
    source: a random-access source (:class:`~facejax.data.sources.ImageFolder`,
      :class:`~facejax.data.sources.RecordIO` or
      :class:`~facejax.data.sources.InMemory`, encoded as PNG).
    destination: output folder (created).
    num_shards: how many TFRecord files.
    seed: the seed of the one-time shuffle.
    validate: decode every image and leave out those that fail, and those
      whose header declares more than ``max_pixels`` (None: no limit).
    overwrite: discard an earlier, different conversion in ``destination``.
    stream: where progress goes.

  Returns:
    The manifest (as written to ``dataset.json``).
  """
  tf = _tf()
  if num_shards < 1:
    raise ValueError(f'--shards must be at least 1, got {num_shards}')
  if num_shards > max(source.num_examples, 1):
    raise ValueError(f'{num_shards} shards for {source.num_examples} '
                     'examples: some would be empty')
  os.makedirs(destination, exist_ok=True)
  manifest_path = os.path.join(destination, sources.MANIFEST)
  fingerprint = _fingerprint(source, num_shards, seed)
  manifest = _earlier_manifest(destination, fingerprint, overwrite)
  if manifest is None:
    manifest = dict(
        format=sources.MANIFEST_FORMAT, source=repr(source),
        fingerprint=fingerprint, seed=seed, num_classes=source.num_classes,
        has_landmarks=bool(source.has_landmarks), complete=False,
        shards=[], skipped_count=0, skipped=[])
  done = _shards_done(destination, manifest,
                      {shard_name(shard, num_shards)
                       for shard in range(num_shards)})
  if manifest['complete'] and len(done) == num_shards:
    print(f'{destination}: already converted', file=stream)
    return manifest
  manifest['complete'] = False
  _write_json(os.path.join(destination, sources.LABEL_MAP),
              list(source.class_names))
  _write_json(manifest_path, manifest)

  order = np.random.default_rng(seed).permutation(source.num_examples)
  parts = np.array_split(order, num_shards)
  read, keys = _reader(source), _keys(source)
  progress = _Progress(source.num_examples,
                       sum(s['num_examples'] + s.get('skipped', 0)
                           for s in manifest['shards']), stream)
  for shard, indices in enumerate(parts):
    name = shard_name(shard, num_shards)
    if name in done:
      continue
    path = os.path.join(destination, name)
    written, skipped = 0, []
    with tf.io.TFRecordWriter(path + '.tmp') as writer:
      for chunk in np.array_split(
          indices, max(1, -(-len(indices) // _HEADER_CHUNK))):
        encoded_chunk = [read(int(index)) for index in chunk]
        declared = (image_headers.pixels(encoded_chunk) if validate
                    else [None] * len(chunk))
        for index, encoded, pixels in zip(chunk, encoded_chunk, declared):
          if validate and not _decodes(tf, encoded, pixels, max_pixels):
            skipped.append(keys[index])
            progress.advance()
            continue
          writer.write(_example(tf, encoded, source, int(index),
                                keys[index]).SerializeToString())
          written += 1
          progress.advance()
    os.replace(path + '.tmp', path)
    manifest['shards'].append(dict(file=name, num_examples=written,
                                   skipped=len(skipped)))
    manifest['skipped_count'] += len(skipped)
    # A shard written again may list its skipped images a second time.
    manifest['skipped'] = list(dict.fromkeys(
        manifest['skipped'] + skipped))[:SKIPPED_KEPT]
    _write_json(manifest_path, manifest)
  manifest['shards'].sort(key=lambda s: s['file'])
  manifest['num_examples'] = sum(s['num_examples']
                                 for s in manifest['shards'])
  manifest['complete'] = True
  _write_json(manifest_path, manifest)
  progress.advance(0, force=True)
  if manifest['skipped_count']:
    print(f'{manifest["skipped_count"]} undecodable image(s) left out, e.g. '
          f'{", ".join(manifest["skipped"][:5])}', file=stream)
  return manifest


def _earlier_manifest(destination, fingerprint, overwrite):
  """The manifest of the conversion to resume in ``destination``, or None.

  Raises:
    files.DataFileError: a damaged manifest, unless ``overwrite``.
    ValueError: a manifest of another conversion, unless ``overwrite``.
  """
  if not os.path.exists(os.path.join(destination, sources.MANIFEST)):
    return None
  try:
    manifest = sources.read_manifest(destination, require_complete=False)
  except files.DataFileError as e:
    if overwrite:
      return None
    raise files.DataFileError(f'{e}; pass --overwrite to convert again into '
                              f'{destination}') from None
  if manifest.get('fingerprint') == fingerprint:
    manifest.setdefault('skipped_count', 0)
    manifest.setdefault('skipped', [])
    return manifest
  if overwrite:
    return None
  raise ValueError(
      f'{destination} holds a different conversion (another source, shard '
      'count or seed); choose a new destination or pass --overwrite')


def _shards_done(destination, manifest, names):
  """The names of the manifest's shards that are whole; drops the others.

  A shard counts as done when it is one of this conversion's ``names``, its
  file exists and its framing holds its ``num_examples`` records
  (:func:`sources.count_tfrecords`); any other entry is removed from the
  manifest (with its skipped count), so that the shard is written again.
  """
  kept = []
  for shard in manifest['shards']:
    path = os.path.join(destination, shard['file'])
    try:
      whole = (shard['file'] in names and os.path.isfile(path) and
               sources.count_tfrecords(path) == shard['num_examples'])
    except files.DataFileError:  # truncated or damaged: write it again
      whole = False
    if whole:
      kept.append(shard)
    else:
      manifest['skipped_count'] = max(
          0, manifest['skipped_count'] - shard.get('skipped', 0))
  manifest['shards'] = kept
  return {shard['file'] for shard in kept}


def _example(tf, encoded, source, index, key):
  feature = {
      sources.FEATURE_IMAGE: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[encoded])),
      sources.FEATURE_LABEL: tf.train.Feature(
          int64_list=tf.train.Int64List(value=[int(source.labels[index])])),
      sources.FEATURE_KEY: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[key.encode('utf-8')])),
  }
  if source.has_landmarks:
    feature[sources.FEATURE_LANDMARKS] = tf.train.Feature(
        float_list=tf.train.FloatList(
            value=source.landmarks[index].reshape(-1).tolist()))
  return tf.train.Example(features=tf.train.Features(feature=feature))


@command_line.reports_errors(OSError, ValueError)
def main(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m facejax.data.convert', description=__doc__.split(
          '\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('src', help='image folder, or a .rec file')
  parser.add_argument('dst', help='output folder')
  parser.add_argument('--shards', type=int, required=True,
                      help='number of TFRecord files')
  parser.add_argument('--landmarks', help='landmarks file for an image '
                      'folder (lines: relative/path x1 y1 ... x5 y5)')
  parser.add_argument('--seed', type=int, default=0,
                      help='seed of the one-time shuffle (default 0)')
  parser.add_argument('--no-validate', action='store_true',
                      help='do not decode images to check them')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace a different conversion in DST')
  args = parser.parse_args(argv)
  if args.src.endswith('.rec'):
    if args.landmarks:
      parser.error('--landmarks applies to image folders only')
    source = sources.RecordIO(args.src)
  else:
    source = sources.ImageFolder(args.src, landmarks_file=args.landmarks)
  print(f'converting {source} into {args.shards} shards in {args.dst}',
        file=sys.stderr)
  manifest = convert(source, args.dst, args.shards, seed=args.seed,
                     validate=not args.no_validate,
                     overwrite=args.overwrite)
  print(f'{args.dst}: {manifest["num_examples"]} examples of '
        f'{manifest["num_classes"]} classes in {len(manifest["shards"])} '
        'shards')
  return 0


if __name__ == '__main__':
  sys.exit(main())
