"""tf.data pipelines for training and evaluation, from any source.

    source (sources.py) -> order and process shard -> read -> decode, skipping
    corrupt images -> align or resize -> augment -> normalise -> batch

Training (:func:`train_dataset`) is an endless stream of process-local
batches ``{'image': float32 (B, S, S, 3) in [-1, 1], 'label': int32 (B,)}``
with ``B = global_batch_size / process_count``:

* **Order.** Random-access sources are shuffled per epoch by a stateless
  permutation of the example indices (``index_shuffle`` seeded by the run's
  seed and the epoch), so the order is a pure function of (seed, step): a
  run restarted with ``start_step=k`` continues exactly where step ``k``
  left off, and skipping costs no image reads. TFRecords are shuffled by
  file order per epoch and a seeded buffer.
* **Processes.** Every process computes the same permutation and keeps the
  positions ``process_index::process_count``, each epoch truncated to a
  multiple of ``process_count``, so the processes read disjoint shards that
  together cover the epoch and always have the same number of batches
  (``drop_remainder`` makes every local batch full).
* **P x K** (``identities_per_batch=P, images_per_identity=K``): every global
  batch holds P distinct identities with K images each, grouped (rows
  ``k*K .. k*K+K-1`` are one identity), for the triplet family and LMLE. The
  identities of an epoch are a stateless permutation of those with at least
  two images; an identity with fewer than K images is sampled with
  replacement. Process ``i`` gets the identities ``i*P/n .. (i+1)*P/n - 1``
  of each global batch.
* **Bad images.** Undecodable or truncated images, and images whose header
  declares more than ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`;
  checked before decoding, so a small file declaring a huge image costs
  nothing), are skipped and counted in a :class:`SkippedImages` report
  (distinct images, by reason, and the first paths), never fatal; in a
  P x K stream the whole batch holding one is skipped, so the structure
  holds. A missing file, a label outside the class range or a damaged
  TFRecord shard stops the pipeline with an error naming the file.
* **Augmentation** (:mod:`facejax.data.augment`) uses stateless ops seeded by
  (seed, epoch, example), deterministic whatever the parallelism.

Evaluation (:func:`eval_dataset`) reads every example exactly once, in order:
process ``i`` reads the contiguous block ``[i N / n, (i + 1) N / n)``, padded
to the same whole number of batches on every process; batches carry
``index`` (the example's position in the source, -1 for padding) and
``mask`` (False for padding and for an image that could not be decoded), so
no example is lost or counted twice.

:func:`eval_batches` gives the same batches as numpy dicts; for arrays that
are decoded already at the output size (an :class:`facejax.data.sources.
InMemory` source such as the synthetic identities) it batches them in numpy,
without tensorflow: no per-image graph, no import, the same values.

To put the batches on devices as sharded ``jax.Array``s see
:mod:`facejax.data.device`.
"""

import collections
import dataclasses
import threading

import numpy as np

from facejax.data import augment as augment_lib
from facejax.data import image_headers
from facejax.data import sources

AUTOTUNE = -1  # tf.data.AUTOTUNE
DEFAULT_IMAGE_SIZE = 112
DEFAULT_SHUFFLE_BUFFER = 16_384  # TFRecord sources only
_ORDER_STREAM, _AUGMENT_STREAM, _SAMPLE_STREAM = 0x0D, 0xA6, 0x5A
DEFAULT_MAX_PIXELS = image_headers.DEFAULT_MAX_PIXELS
UNDECODABLE = 'undecodable'  # SkippedImages reason


def too_large(max_pixels):
  """The SkippedImages reason for an image over ``max_pixels``."""
  return f'over {max_pixels:,} pixels'


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


class SkippedImages:
  """Counts the distinct images a pipeline skipped, and why; keeps a few keys.

  The pipeline calls :meth:`record` (from a tf.data thread) for each image
  it skips: one that cannot be decoded, or whose header declares more than
  the pipeline's ``max_pixels``. An image is counted once however many
  epochs meet it, so ``count`` is the number of bad images in the data, not
  of encounters. ``count``, ``by_reason`` and ``first_keys`` are read by the
  training loop, which logs them. Thread-safe.
  """

  def __init__(self, keep=10):
    self.keep = keep
    self.first_keys = []
    self.by_reason = collections.Counter()
    self._seen = set()  # keys: a few bad images in practice
    self._lock = threading.Lock()

  @property
  def count(self):
    """Distinct images skipped so far."""
    with self._lock:
      return len(self._seen)

  def record(self, key, reason=UNDECODABLE):
    with self._lock:
      if key in self._seen:
        return
      self._seen.add(key)
      self.by_reason[reason] += 1
      if len(self.first_keys) < self.keep:
        self.first_keys.append(key)

  def __str__(self):
    with self._lock:
      count = len(self._seen)
      reasons = ', '.join(f'{number} {reason}' for reason, number
                          in sorted(self.by_reason.items()))
      keys = list(self.first_keys)
    if not count:
      return 'no images skipped'
    more = ', ...' if count > len(keys) else ''
    return f'{count} image(s) skipped ({reasons}): {", ".join(keys)}{more}'


@dataclasses.dataclass(frozen=True)
class ProcessShard:
  """Which part of the data this process reads: ``index`` of ``count``."""
  index: int = 0
  count: int = 1

  def __post_init__(self):
    if not 0 <= self.index < self.count:
      raise ValueError(f'process index {self.index} not in [0, '
                       f'{self.count})')


def current_process():
  """``ProcessShard(jax.process_index(), jax.process_count())``."""
  import jax  # pylint: disable=g-import-not-at-top
  return ProcessShard(jax.process_index(), jax.process_count())


def local_batch_size(global_batch_size, process):
  if global_batch_size % process.count:
    raise ValueError(
        f'global batch size {global_batch_size} does not split evenly over '
        f'{process.count} processes')
  return global_batch_size // process.count


# ---------------------------------------------------------------------------
# Example order (random-access sources): streams of dicts
# {'index': int64, 'seed': int32 (2,)}, 'seed' keying the augmentation.


def _seed_pair(seed, *data):
  """A (2,) int32 stateless seed from the run's seed and integers."""
  tf = _tf()
  pair = tf.constant([seed % (1 << 31), 0x5eed], tf.int32)
  for value in data:
    pair = tf.random.experimental.stateless_fold_in(
        pair, tf.cast(value, tf.int64))
  return pair


def _shuffled_epochs(num_examples, seed, process):
  """Endless per-epoch permutations of ``range(num_examples)``, sharded."""
  tf = _tf()
  per_process = num_examples // process.count
  if per_process == 0:
    raise ValueError(f'{num_examples} examples cannot be shared by '
                     f'{process.count} processes')
  max_index = tf.constant(num_examples - 1, tf.int64)

  def one_epoch(epoch):
    order_seed = _seed_pair(seed, _ORDER_STREAM, epoch)
    positions = tf.data.Dataset.range(per_process * process.count)
    positions = positions.shard(process.count, process.index)
    return positions.map(lambda position: dict(
        index=tf.random.experimental.index_shuffle(
            position, order_seed, max_index),
        seed=_seed_pair(seed, _AUGMENT_STREAM, epoch, position)))

  return tf.data.Dataset.counter().flat_map(one_epoch)


def _identity_balanced(labels, seed, process, identities, images):
  """P x K index stream: ``identities`` x ``images`` per global batch."""
  tf = _tf()
  counts = np.bincount(labels)
  eligible = np.flatnonzero(counts >= 2)
  if len(eligible) < identities:
    raise ValueError(
        f'P x K batches need {identities} identities with at least 2 images '
        f'each, the source has {len(eligible)}')
  if identities % process.count:
    raise ValueError(f'{identities} identities per batch do not split over '
                     f'{process.count} processes')
  local = identities // process.count
  by_class = np.argsort(labels, kind='stable').astype(np.int64)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
  eligible_t = tf.constant(eligible, tf.int64)
  starts_t, counts_t = tf.constant(starts), tf.constant(counts, tf.int64)
  by_class_t = tf.constant(by_class)
  per_epoch = len(eligible) // identities * identities

  def identities_of_epoch(epoch):
    order_seed = _seed_pair(seed, _ORDER_STREAM, epoch)
    return tf.data.Dataset.range(per_epoch).map(
        lambda j: tf.gather(eligible_t, tf.random.experimental.index_shuffle(
            j, order_seed, len(eligible) - 1)))

  def sample(step, classes):
    rows = slice(process.index * local, (process.index + 1) * local)
    classes = classes[rows]
    count = tf.gather(counts_t, classes)[:, None]  # (local, 1)
    slot = tf.range(images, dtype=tf.int64)[None, :]  # (1, K)
    slot_seed = _seed_pair(seed, _SAMPLE_STREAM, step)
    flat_count = tf.reshape(tf.broadcast_to(count, [local, images]), [-1])
    flat_slot = tf.reshape(tf.broadcast_to(slot, [local, images]), [-1])
    # One permutation of each identity's images, keyed by three full-range
    # random words per row of the global batch (drawn from (seed, step)).
    # Not (step seed, class): RandomIndexShuffle's permutations are far from
    # uniform for such structured keys (with 4 images an identity, K = 2,
    # one identity's last two images were drawn 5 and 4 times in 200
    # batches, not about 100 times each). The raw op,
    # because tf.random.experimental.index_shuffle pads a batch of seeds
    # along the wrong axis in TF 2.21.
    row_keys = tf.random.stateless_uniform(
        [identities, 3], _seed_pair(seed, _SAMPLE_STREAM, step, 1),
        minval=None, maxval=None, dtype=tf.int64)[rows]
    seeds = tf.repeat(row_keys, images, axis=0)
    without = tf.raw_ops.RandomIndexShuffle(
        index=tf.minimum(flat_slot, flat_count - 1), seed=seeds,
        max_index=flat_count - 1, rounds=4)
    with_replacement = tf.cast(tf.floor(
        tf.random.stateless_uniform([local * images], slot_seed,
                                    dtype=tf.float64)
        * tf.cast(flat_count, tf.float64)), tf.int64)
    position = tf.where(flat_count >= images, without, with_replacement)
    first = tf.repeat(tf.gather(starts_t, classes), images)
    index = tf.gather(by_class_t, first + position)
    slots = tf.range(local * images, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((index, slots)).map(
        lambda index, slot: dict(index=index, seed=_seed_pair(
            seed, _AUGMENT_STREAM, step, process.index, slot)))

  batches = tf.data.Dataset.counter().flat_map(identities_of_epoch)
  batches = batches.batch(identities, drop_remainder=True).enumerate()
  return batches.flat_map(sample)


# ---------------------------------------------------------------------------
# Decoding and preprocessing


def _read(source, order):
  """Order stream -> examples: the source's fields plus the order's seed."""
  def read_one(element):
    example = source.read(element['index'])
    example.update(element)
    return example
  return order.map(read_one, num_parallel_calls=AUTOTUNE)


def _to_size(image, landmarks, image_size, align):
  """uint8 (H, W, 3) -> float32 (S, S, 3) in [0, 255]: align or resize."""
  tf = _tf()
  if align:
    from facejax.data import alignment  # pylint: disable=g-import-not-at-top
    image = alignment.align(image, landmarks, output_size=image_size)
    return tf.cast(image, tf.float32)
  image = tf.cast(image, tf.float32)
  same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [image_size,
                                                      image_size]))
  resized = tf.cond(
      same, lambda: image,
      lambda: tf.image.resize(image, [image_size, image_size],
                              antialias=True))
  return tf.reshape(resized, [image_size, image_size, 3])


def _outcome(example, image, ok, over=False):
  """``example`` with its ``image`` (S, S, 3), whether it is usable and, if
  not, whether it is because the image is ``over`` the pixel limit (else it
  is undecodable)."""
  tf = _tf()
  out = {k: v for k, v in example.items()
         if k not in ('encoded', 'image', 'declared')}
  out['image'] = image
  out['ok'] = tf.convert_to_tensor(ok)
  out['over'] = tf.convert_to_tensor(over)
  return out


def _decode(example, image_size, align, max_pixels):
  """Decodes and sizes one example; one declaring more than ``max_pixels``
  comes out flagged (``ok`` False) without being decoded."""
  tf = _tf()
  if 'image' in example:  # decoded already, when the source was made
    return _outcome(example, _to_size(example['image'], example['landmarks'],
                                      image_size, align), True)

  def decoded(encoded):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return _to_size(image, example['landmarks'], image_size, align)

  if max_pixels is None:
    return _outcome(example, decoded(example['encoded']), True)
  over = image_headers.declared_pixels(
      example['encoded'], example['declared']) > max_pixels
  # Over the limit, a black pixel is decoded instead: no tf.cond, whose
  # cost per image is more than the check's.
  image = decoded(tf.where(over, image_headers.STAND_IN_IMAGE,
                           example['encoded']))
  return _outcome(example, image, tf.logical_not(over), over)


def _blank(image_size):
  return _tf().zeros([image_size, image_size, 3], _tf().float32)


def _failed(example, image_size):
  return _outcome(example, _blank(image_size), False)


def _decoded(examples, image_size, align, max_pixels):
  """Decodes every example; one that fails comes out with ``ok`` False.

  TensorFlow cannot catch a kernel error inside a map function, so each
  encoded example is decoded in a one-element dataset whose errors are
  dropped (``ignore_errors``), followed by a flagged placeholder; the first
  element of the two is kept. The key and whether the image was over
  ``max_pixels`` travel with it, so the failure is reported by name and
  reason.
  """
  tf = _tf()
  if 'image' in examples.element_spec:  # decoded already: nothing can fail
    return examples.map(lambda e: _decode(e, image_size, align, max_pixels),
                        num_parallel_calls=AUTOTUNE)

  if max_pixels is not None:
    examples = image_headers.with_declared_pixels(examples)

  def decode_or_flag(example):
    one = tf.data.Dataset.from_tensors(example)
    good = one.map(lambda e: _decode(e, image_size, align, max_pixels))
    return good.ignore_errors().concatenate(
        one.map(lambda e: _failed(e, image_size))).take(1)

  return examples.interleave(decode_or_flag, cycle_length=AUTOTUNE,
                             num_parallel_calls=AUTOTUNE)


def _reporting(skipped, max_pixels):
  """A tf predicate: True for a decoded example; records a failed one, and
  why: undecodable, or ``over`` ``max_pixels``."""
  tf = _tf()

  def record(key, over):
    skipped.record(key.numpy().decode('utf-8', 'replace'),
                   too_large(max_pixels) if over else UNDECODABLE)
    return False

  def keep(ok, key, over):
    return tf.cond(ok, lambda: tf.constant(True),
                   lambda: tf.reshape(tf.py_function(
                       record, [key, over], tf.bool), []))
  return keep


def _options(dataset, deterministic):
  tf = _tf()
  options = tf.data.Options()
  options.deterministic = deterministic
  return dataset.with_options(options)


def _check_source(source, num_classes):
  if num_classes is not None and num_classes < source.num_classes:
    raise ValueError(f'{source}: has {source.num_classes} classes, more '
                     f'than the model\'s num_classes={num_classes}')


def _wants_alignment(source, align):
  if align and not source.has_landmarks:
    raise ValueError(f'{source}: align=True needs landmarks for every image '
                     '(ImageFolder(..., landmarks_file=...))')
  return source.has_landmarks if align is None else align


def train_dataset(source, global_batch_size, *, seed=0, image_size=None,
                  augmentation=augment_lib.Augmentation(), align=None,
                  identities_per_batch=None, images_per_identity=None,
                  process=None, start_step=0, skipped=None,
                  num_classes=None, deterministic=True,
                  shuffle_buffer=DEFAULT_SHUFFLE_BUFFER, with_index=False,
                  max_pixels=DEFAULT_MAX_PIXELS):
  """The endless training stream of process-local batches.

  Args:
    source: a source from :mod:`facejax.data.sources`.
    global_batch_size: images per step over all processes.
    seed: the run's seed; order and augmentation are functions of it.
    image_size: output side S (default 112).
    augmentation: an :class:`facejax.data.augment.Augmentation`.
    align: align with the source's landmarks (default: when it has them).
    identities_per_batch, images_per_identity: P and K for identity-balanced
      batches (then ``global_batch_size`` must be P * K); None for plain
      shuffled batches.
    process: a :class:`ProcessShard`; default :func:`current_process`.
    start_step: resume: the first batch is the one step ``start_step`` of an
      uninterrupted run gets (exact when no image is skipped before it).
    skipped: a :class:`SkippedImages` to report skipped images to.
    num_classes: the model's class count; a source with more is an error.
    deterministic: keep the order fixed (True) or let tf.data reorder for
      speed.
    shuffle_buffer: examples in the shuffle buffer (TFRecord sources).
    with_index: batches also carry ``index`` (int32 (B,)), each example's
      position in the source (LMLE looks its cluster up by it); not for
      TFRecord sources, which are read sequentially.
    max_pixels: skip (and report to ``skipped``) an image whose header
      declares more pixels than this, before decoding it; None: no limit.

  Returns:
    A ``tf.data.Dataset`` of dicts ``image`` (float32 (B, S, S, 3) in
    [-1, 1]) and ``label`` (int32 (B,)), ``B = global_batch_size /
    process_count``, ``index`` with ``with_index``, and ``attributes``
    (bool (B, A)) when the source has attributes.
  """
  tf = _tf()
  if with_index and isinstance(source, sources.TFRecords):
    raise ValueError(f'{source}: with_index needs random access to the '
                     'examples; use the image folder or .rec the TFRecords '
                     'were made from')
  process = process or current_process()
  image_size = image_size or DEFAULT_IMAGE_SIZE
  skipped = skipped if skipped is not None else SkippedImages()
  _check_source(source, num_classes)
  align = _wants_alignment(source, align)
  batch = local_batch_size(global_batch_size, process)
  balanced = identities_per_batch is not None
  if balanced:
    if identities_per_batch * (images_per_identity or 0) != global_batch_size:
      raise ValueError(
          f'P x K = {identities_per_batch} x {images_per_identity} is not '
          f'the global batch size {global_batch_size}')
    if isinstance(source, sources.TFRecords):
      raise ValueError(
          f'{source}: P x K batches need random access to the examples of '
          'each identity; use the image folder or .rec the TFRecords were '
          'made from')
    order = _identity_balanced(source.labels, seed, process,
                               identities_per_batch, images_per_identity)
    examples = _read(source, order)
  elif isinstance(source, sources.TFRecords):
    examples = _tfrecord_train_examples(source, seed, process, shuffle_buffer)
  else:
    examples = _read(source, _shuffled_epochs(source.num_examples, seed,
                                              process))
  decoded = _decoded(examples, image_size, align, max_pixels)
  keep = _reporting(skipped, max_pixels)

  def finish(example):
    image = augment_lib.augment(example['image'], example['seed'],
                                augmentation)
    out = dict(image=augment_lib.normalise(image), label=example['label'])
    if 'attributes' in example:
      out['attributes'] = example['attributes']
    if with_index:
      out['index'] = tf.cast(example['index'], tf.int32)
    return out

  if balanced:  # skip whole batches, so every batch stays P x K
    batches = decoded.batch(batch, drop_remainder=True)
    batches = batches.filter(lambda b: tf.reduce_all(tf.map_fn(
        lambda row: keep(*row), (b['ok'], b['key'], b['over']),
        fn_output_signature=tf.bool)))
    batches = batches.unbatch().map(finish, num_parallel_calls=AUTOTUNE)
    batches = batches.batch(batch, drop_remainder=True)
  else:
    kept = decoded.filter(lambda e: keep(e['ok'], e['key'], e['over']))
    kept = kept.map(finish, num_parallel_calls=AUTOTUNE)
    batches = kept.batch(batch, drop_remainder=True)
  batches = batches.skip(start_step)
  return _options(batches.prefetch(AUTOTUNE), deterministic)


def _tfrecord_train_examples(source, seed, process, shuffle_buffer):
  """TFRecords: files shuffled per epoch, sharded by file or by example."""
  tf = _tf()
  paths = tf.constant([shard.path for shard in source.shards])
  counts = tf.constant([shard.num_examples for shard in source.shards],
                       tf.int64)
  num_files = len(source.shards)
  by_file = num_files >= process.count

  def one_epoch(epoch):
    order_seed = _seed_pair(seed, _ORDER_STREAM, epoch)
    order = tf.random.experimental.index_shuffle(
        tf.range(num_files, dtype=tf.int64), order_seed, num_files - 1)
    files, sizes = tf.gather(paths, order), tf.gather(counts, order)
    if by_file:
      files = files[process.index::process.count]
      sizes = sizes[process.index::process.count]
    records = source.records(files, sizes, parallel_reads=min(num_files, 16))
    if not by_file:
      records = records.shard(process.count, process.index)
    buffer_seed = tf.cast(_seed_pair(seed, _ORDER_STREAM, epoch)[0],
                          tf.int64)
    records = records.shuffle(shuffle_buffer, seed=buffer_seed,
                              reshuffle_each_iteration=False)
    return records.enumerate().map(lambda position, example: dict(
        example, seed=_seed_pair(seed, _AUGMENT_STREAM, epoch, position)))

  return tf.data.Dataset.counter().flat_map(one_epoch)


def eval_dataset(source, global_batch_size, *, image_size=None, align=None,
                 process=None, skipped=None, flip=False,
                 max_pixels=DEFAULT_MAX_PIXELS):
  """Every example once, in order, in padded and masked batches.

  Args:
    source: a source from :mod:`facejax.data.sources`.
    global_batch_size: images per step over all processes.
    image_size: output side S (default 112).
    align: align with the source's landmarks (default: when it has them).
    process: a :class:`ProcessShard`; default :func:`current_process`.
    skipped: a :class:`SkippedImages`; undecodable images (and those over
      ``max_pixels``) are recorded there and come out with ``mask`` False.
    flip: add ``image_flipped`` (the mirror image) for flip test-time
      augmentation.
    max_pixels: an image whose header declares more pixels than this is
      not decoded: it is recorded in ``skipped`` and masked; None: no limit.

  Returns:
    A finite ``tf.data.Dataset`` of dicts ``image`` (float32 (B, S, S, 3)),
    ``label`` (int32), ``index`` (int64; -1 for padding), ``mask`` (bool)
    and ``attributes`` (bool (B, A)) when the source has them, the same
    number of batches on every process.
  """
  tf = _tf()
  process = process or current_process()
  image_size = image_size or DEFAULT_IMAGE_SIZE
  skipped = skipped if skipped is not None else SkippedImages()
  align = _wants_alignment(source, align)
  batch = local_batch_size(global_batch_size, process)
  start, stop, per_process = _eval_block(source.num_examples, batch, process)
  real = stop - start
  if isinstance(source, sources.TFRecords):
    examples = source.records(
        [s.path for s in source.shards],
        np.array([s.num_examples for s in source.shards], np.int64))
    examples = examples.skip(start).take(real)
    examples = examples.enumerate(start).map(
        lambda index, example: dict(example, index=index))
  else:
    order = tf.data.Dataset.range(start, start + real).map(
        lambda index: dict(index=index))
    examples = _read(source, order)
  decoded = _decoded(examples, image_size, align, max_pixels)
  keep = _reporting(skipped, max_pixels)

  def finish(example):
    mask = keep(example['ok'], example['key'], example['over'])
    out = dict(image=augment_lib.normalise(example['image']),
               label=example['label'], index=example['index'], mask=mask)
    if 'attributes' in example:
      out['attributes'] = example['attributes']
    if flip:
      out['image_flipped'] = tf.image.flip_left_right(out['image'])
    return out

  finished = decoded.map(finish, num_parallel_calls=AUTOTUNE)
  padding = per_process - real
  if padding:
    blank = {k: tf.zeros(spec.shape, spec.dtype)
             for k, spec in finished.element_spec.items()}
    blank['index'] = tf.constant(-1, tf.int64)
    finished = finished.concatenate(
        tf.data.Dataset.from_tensors(blank).repeat(padding))
  return _options(finished.batch(batch, drop_remainder=True).prefetch(
      AUTOTUNE), True)


def _eval_block(total, batch, process):
  """(start, stop, padded length) of this process's contiguous block of the
  ``total`` examples: balanced blocks, padded to the same whole number of
  ``batch``-sized batches on every process."""
  start = process.index * total // process.count
  stop = (process.index + 1) * total // process.count
  per_process = -(-(-(-total // process.count)) // batch) * batch
  return start, stop, per_process


def eval_batches(source, global_batch_size, *, image_size=None, align=None,
                 process=None, skipped=None, flip=False,
                 max_pixels=DEFAULT_MAX_PIXELS):
  """:func:`eval_dataset`'s batches, as an iterator of numpy dicts.

  Images held decoded at the output size (an ``InMemory`` source of
  ``image_size`` images, not aligned) need no decoding, resizing or error
  handling: they are sliced, normalised (``x / 127.5 - 1`` in float32, as
  :func:`facejax.data.augment.normalise`) and mirrored in numpy, in the
  same blocks, order, padding and masks, bit for bit what tf.data gives
  (the tests compare them) at a fraction of the cost, and tensorflow is not
  imported. Anything else is ``eval_dataset(...).as_numpy_iterator()``;
  the arguments are :func:`eval_dataset`'s.
  """
  process = process or current_process()
  size = image_size or DEFAULT_IMAGE_SIZE
  if (isinstance(source, sources.InMemory) and not align
      and source.images.shape[1:3] == (size, size)):
    return _array_batches(source, local_batch_size(global_batch_size,
                                                   process), process, flip)
  return eval_dataset(source, global_batch_size, image_size=image_size,
                      align=align, process=process, skipped=skipped,
                      flip=flip, max_pixels=max_pixels).as_numpy_iterator()


def _array_batches(source, batch, process, flip):
  """:func:`eval_batches` of an in-memory source at the output size."""
  start, stop, per_process = _eval_block(source.num_examples, batch, process)
  for first in range(start, start + per_process, batch):
    last = min(first + batch, stop)  # real examples: [first, last)
    real = max(last - first, 0)
    index = np.full(batch, -1, np.int64)
    index[:real] = np.arange(first, first + real)
    image = np.zeros((batch,) + source.images.shape[1:], np.float32)
    np.divide(source.images[first:first + real], np.float32(127.5),
              out=image[:real], dtype=np.float32)
    image[:real] -= np.float32(1)
    out = dict(image=image, label=np.zeros(batch, np.int32), index=index,
               mask=np.arange(batch) < real)
    out['label'][:real] = source.labels[first:first + real]
    if source.attributes is not None:
      out['attributes'] = np.zeros((batch,) + source.attributes.shape[1:],
                                   source.attributes.dtype)
      out['attributes'][:real] = source.attributes[first:first + real]
    if flip:
      out['image_flipped'] = np.ascontiguousarray(image[:, :, ::-1])
    yield out
