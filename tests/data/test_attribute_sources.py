"""Attributes in sources and pipelines, and the attribute datasets' splits.

Covers :func:`sources.check_attributes`, the ``attributes=`` of
:class:`sources.InMemory` and :class:`sources.ImageFiles`, their journey
through :func:`pipeline.train_dataset` and :func:`pipeline.eval_dataset`,
and :mod:`facejax.data.attribute_sources` (synthetic, a tiny published
CelebA from ``test_celeba``'s writers, and ``tfds:celeb_a`` with
:func:`celeba.load_tfds` replaced by a fake).
"""
import os
import re

import ml_collections
import numpy as np
import pytest

from facejax.data import attribute_sources
from facejax.data import augment
from facejax.data import celeba
from facejax.data import pipeline
from facejax.data import sources
from tests.data import image_fixtures
from tests.data import test_celeba

SIZE = image_fixtures.SIZE
NAMES = ('Smiling', 'Bald', 'Young', 'Male', 'Eyeglasses')

# A tiny CelebA in its published layout (7 images, split i % 3, empty
# JPEGs): test_celeba's fixture, shared.
root = test_celeba.root


def attribute_rows(n, num_attributes=len(NAMES)):
  """0/1 int (n, A), every row different for n <= 32: (7 i + 3) % 32."""
  codes = (7 * np.arange(n) + 3) % 32
  return (codes[:, None] >> np.arange(num_attributes)) & 1


def memory_source(n, attributes=True, labels=None):
  """n flat images (``image_fixtures``), with attributes (or without)."""
  images, _ = image_fixtures.in_memory_images([n])
  if labels is None:
    labels = np.zeros(n, np.int32)
  if not attributes:
    return sources.InMemory(images, labels, name='faces')
  return sources.InMemory(images, labels, name='faces',
                          attributes=attribute_rows(n),
                          attribute_names=NAMES)


def read_eagerly(source, index):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  example = source.read(tf.constant(index, tf.int64))
  return {k: v.numpy() for k, v in example.items()}


# ------------------------------------------------------- check_attributes.


def test_check_attributes_turns_0_1_integers_into_bool():
  attributes, names = sources.check_attributes(
      [[0, 1, 1], [1, 0, 0]], ['a', 'b', 'c'], 2, 'here')
  assert attributes.dtype == bool and attributes.shape == (2, 3)
  assert attributes.tolist() == [[False, True, True], [True, False, False]]
  assert names == ('a', 'b', 'c')


def test_check_attributes_keeps_bool_attributes():
  given = np.array([[True, False], [False, False], [True, True]])
  attributes, names = sources.check_attributes(given, ('x', 'y'), 3, 'here')
  assert attributes.dtype == bool
  np.testing.assert_array_equal(attributes, given)
  assert names == ('x', 'y')


@pytest.mark.parametrize('attributes, names, n, message', [
    (np.zeros(3, bool), ['a'], 3,
     r'here: attributes must be \(num_examples=3, num_attributes\), got '
     r'\(3,\)'),
    (np.zeros((3, 2, 1), bool), ['a', 'b'], 3, r'got \(3, 2, 1\)'),
    (np.zeros((2, 2), bool), ['a', 'b'], 3,
     r'here: .*num_examples=3.*got \(2, 2\)'),
    (np.zeros((3, 2), bool), ['a', 'b', 'c'], 3,
     'here: 2 attribute columns but 3 attribute names'),
    (np.zeros((3, 2), bool), None, 3,
     'here: 2 attribute columns but 0 attribute names'),
    ([[0, 1], [1, 2], [0, 0]], ['a', 'b'], 3,
     "here: attribute 'b' of example 1 is .*2.*, not 0 or 1"),
    # CelebA's raw -1 / 1 must be converted first.
    ([[1, 1], [1, -1], [-1, 1]], ['a', 'b'], 3,
     "here: attribute 'b' of example 1 is .*-1.*, not 0 or 1"),
    ([[0.0, 1.0], [1.0, 0.0], [0.0, 0.5]], ['a', 'b'], 3,
     "here: attribute 'b' of example 2 is .*0.5.*, not 0 or 1"),
    ([[0.0, 1.0], [np.nan, 0.0], [0.0, 1.0]], ['a', 'b'], 3,
     "here: attribute 'a' of example 1 is .*nan"),
])
def test_check_attributes_errors_name_the_source(attributes, names, n,
                                                 message):
  with pytest.raises(ValueError, match=message):
    sources.check_attributes(attributes, names, n, 'here')


# ------------------------------------------------- InMemory and ImageFiles.


def test_in_memory_with_attributes():
  source = memory_source(6)
  assert source.has_attributes
  assert source.attributes.dtype == bool
  assert source.attributes.shape == (6, len(NAMES))
  np.testing.assert_array_equal(source.attributes, attribute_rows(6) == 1)
  assert source.attribute_names == NAMES
  assert isinstance(source.attribute_names, tuple)
  for index in (0, 4):
    example = read_eagerly(source, index)
    assert example['attributes'].dtype == bool
    np.testing.assert_array_equal(example['attributes'],
                                  source.attributes[index])
    np.testing.assert_array_equal(example['image'], source.images[index])


def test_image_files_with_attributes(tmp_path):
  paths = []
  for i in range(3):
    paths.append(tmp_path / f'{i}.png')
    paths[-1].write_bytes(image_fixtures.encode(
        image_fixtures.flat_image(i, 0), 'png'))
  source = sources.ImageFiles(paths, attributes=attribute_rows(3),
                              attribute_names=list(NAMES))
  assert source.has_attributes
  assert source.attributes.dtype == bool
  np.testing.assert_array_equal(source.attributes, attribute_rows(3) == 1)
  assert source.attribute_names == NAMES
  example = read_eagerly(source, 2)
  np.testing.assert_array_equal(example['attributes'], source.attributes[2])
  assert example['key'].decode() == os.fspath(paths[2])


def test_sources_without_attributes_read_none():
  images, labels = image_fixtures.in_memory_images([2, 2])
  plain = [sources.InMemory(images, labels),
           sources.ImageFiles(['a.png', 'b.png'], check_exists=False)]
  for source in plain:
    assert not source.has_attributes
    assert source.attributes is None
    assert source.attribute_names == ()
  assert 'attributes' not in read_eagerly(plain[0], 1)


@pytest.mark.parametrize('kwargs, message', [
    (dict(attributes=np.zeros((4, 2), bool), attribute_names=['a', 'b']),
     r'^faces: attributes must be \(num_examples=3'),
    (dict(attributes=np.zeros((3, 2), bool), attribute_names=['a']),
     '^faces: 2 attribute columns but 1 attribute names'),
    (dict(attributes=[[0, 1], [1, 1], [3, 0]], attribute_names=['a', 'b']),
     "^faces: attribute 'a' of example 2 is .*3"),
])
def test_source_attribute_errors_name_the_source(kwargs, message):
  images, labels = image_fixtures.in_memory_images([3])
  with pytest.raises(ValueError, match=message):
    sources.InMemory(images, labels, name='faces', **kwargs)
  with pytest.raises(ValueError, match=message):
    sources.ImageFiles(['a.png', 'b.png', 'c.png'], check_exists=False,
                       name='faces', **kwargs)


# --------------------------------------------------------------- pipelines.


def test_train_batches_carry_the_attributes_of_their_examples():
  source = memory_source(12)
  got = list(pipeline.train_dataset(
      source, 4, seed=2, image_size=SIZE, process=pipeline.ProcessShard(),
      augmentation=augment.NO_AUGMENTATION,
      with_index=True).take(6).as_numpy_iterator())
  for batch in got:
    assert batch['attributes'].dtype == bool
    assert batch['attributes'].shape == (4, len(NAMES))
    np.testing.assert_array_equal(batch['attributes'],
                                  source.attributes[batch['index']])
    # The index is the image's own: attributes follow the image.
    np.testing.assert_array_equal(
        image_fixtures.identify(batch['image'])[0], batch['index'])
  indices = np.concatenate([b['index'] for b in got])
  assert sorted(indices[:12]) == list(range(12))  # one epoch, shuffled
  assert indices[:12].tolist() != list(range(12))


def test_identity_balanced_batches_carry_attributes():
  source = memory_source(8, labels=np.arange(8) // 2)
  got = list(pipeline.train_dataset(
      source, 4, seed=1, image_size=SIZE, process=pipeline.ProcessShard(),
      identities_per_batch=2, images_per_identity=2,
      augmentation=augment.NO_AUGMENTATION,
      with_index=True).take(3).as_numpy_iterator())
  for batch in got:
    np.testing.assert_array_equal(batch['attributes'],
                                  source.attributes[batch['index']])
    np.testing.assert_array_equal(batch['label'], batch['index'] // 2)


def test_batches_of_a_source_without_attributes_have_none():
  source = memory_source(4, attributes=False)
  train = pipeline.train_dataset(source, 2, image_size=SIZE,
                                 process=pipeline.ProcessShard())
  evaluation = pipeline.eval_dataset(source, 2, image_size=SIZE,
                                     process=pipeline.ProcessShard())
  assert 'attributes' not in train.element_spec
  assert 'attributes' not in evaluation.element_spec


def eval_rows(source, global_batch_size, process):
  """The eval batches of ``process``, concatenated, and the batch count."""
  got = list(pipeline.eval_dataset(
      source, global_batch_size, image_size=SIZE,
      process=process).as_numpy_iterator())
  rows = {k: np.concatenate([b[k] for b in got]) for k in got[0]}
  return rows, len(got)


def check_eval_rows(rows, source):
  mask = rows['mask']
  assert rows['attributes'].dtype == bool
  np.testing.assert_array_equal(rows['attributes'][mask],
                                source.attributes[rows['index'][mask]])
  np.testing.assert_array_equal(
      image_fixtures.identify(rows['image'][mask])[0], rows['index'][mask])
  assert (rows['index'][~mask] == -1).all()
  assert not rows['attributes'][~mask].any()


def test_eval_batches_carry_attributes_and_every_example_once():
  source = memory_source(10)
  rows, count = eval_rows(source, 4, pipeline.ProcessShard())
  assert count == 3
  assert rows['attributes'].shape == (12, len(NAMES))
  assert rows['index'].tolist() == list(range(10)) + [-1, -1]
  assert rows['mask'].tolist() == [True] * 10 + [False] * 2
  check_eval_rows(rows, source)


def test_eval_attributes_over_two_processes():
  source = memory_source(10)
  seen = []
  for index in range(2):
    rows, count = eval_rows(source, 4, pipeline.ProcessShard(index, 2))
    assert count == 3
    check_eval_rows(rows, source)
    seen.extend(rows['index'][rows['mask']].tolist())
  assert sorted(seen) == list(range(10))


def test_eval_of_image_files_carries_attributes(tmp_path):
  paths = []
  for i in range(5):
    fmt = 'png' if i % 2 else 'jpeg'
    paths.append(tmp_path / f'{i}.{"png" if fmt == "png" else "jpg"}')
    paths[-1].write_bytes(image_fixtures.encode(
        image_fixtures.flat_image(i, 0), fmt))
  source = sources.ImageFiles(paths, attributes=attribute_rows(5),
                              attribute_names=NAMES)
  rows, count = eval_rows(source, 4, pipeline.ProcessShard())
  assert count == 2
  assert rows['index'].tolist() == [0, 1, 2, 3, 4, -1, -1, -1]
  assert rows['mask'].tolist() == [True] * 5 + [False] * 3
  check_eval_rows(rows, source)


# ------------------------------------------------------- attribute_sources.


@pytest.mark.parametrize('spec, expected', [
    ('synthetic_attributes', True),
    ('tfds:celeb_a', True),
    ('celeba:/data/celeba', True),
    ('synthetic', False),
    ('/data/celeba', False),
    ('celeba', False),
    ('tfds:lfw', False),
    ('/data/faces.rec', False),
])
def test_is_attribute_dataset(spec, expected):
  assert attribute_sources.is_attribute_dataset(spec) is expected


SYNTHETIC_SIZES = dict(train=6, val=4, test=3)


def synthetic_config():
  return ml_collections.ConfigDict(dict(
      source='synthetic_attributes',
      synthetic_attributes=dict(num_attributes=5, seed=3, image_size=16,
                                **SYNTHETIC_SIZES)))


def test_synthetic_splits():
  config = synthetic_config()
  images = {}
  for split, n in SYNTHETIC_SIZES.items():
    source = attribute_sources.open_split(config, split)
    assert isinstance(source, sources.InMemory)
    assert source.num_examples == n
    assert split in source.name
    assert source.images.dtype == np.uint8
    assert source.images.shape == (n, 16, 16, 3)
    np.testing.assert_array_equal(source.labels, np.zeros(n))
    first = attribute_sources.SYNTHETIC_FIRST_IDENTITY[split]
    expected, names, _ = celeba.synthetic_attribute_labels(
        n, seed=3, num_attributes=5, first_identity=first)
    assert source.has_attributes and source.attributes.dtype == bool
    np.testing.assert_array_equal(source.attributes, expected)
    assert source.attribute_names == tuple(names)
    assert len(names) == 5
    np.testing.assert_array_equal(source.images, celeba.synthetic_attributes(
        n, seed=3, num_attributes=5, image_size=16,
        first_identity=first).images)
    images[split] = source.images
  for a, b in [('train', 'val'), ('train', 'test'), ('val', 'test')]:
    for image in images[a]:
      assert not (image[None] == images[b]).all(axis=(1, 2, 3)).any(), (a, b)


def test_synthetic_seed_changes_the_images():
  config = synthetic_config()
  first = attribute_sources.open_split(config, 'test')
  config.synthetic_attributes.seed = 4
  other = attribute_sources.open_split(config, 'test')
  assert not np.array_equal(first.images, other.images)


def celeba_config(root_dir, **max_examples):
  config = ml_collections.ConfigDict(dict(source=f'celeba:{root_dir}'))
  if max_examples:
    config.max_examples = dict(dict(train=0, val=0, test=0), **max_examples)
  return config


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_celeba_split_is_the_published_split(root, split):
  source = attribute_sources.open_split(
      celeba_config(root, train=0, val=0, test=0), split)
  paths, attributes = celeba.load_split(str(root), split)
  assert isinstance(source, sources.ImageFiles)
  assert source.paths.tolist() == paths
  assert source.num_examples == len(paths) > 0
  np.testing.assert_array_equal(source.attributes, attributes)
  assert source.attributes.dtype == bool
  assert source.attribute_names == celeba.ATTRIBUTE_NAMES
  np.testing.assert_array_equal(source.labels, np.zeros(len(paths)))
  assert source.name == f'celeba:{root} {split}'
  # Image i is in split i % 3 with attribute a where (i + a) % 3 == 0.
  number = celeba.SPLITS[split]
  rows = range(number, test_celeba.NUM_IMAGES, 3)
  assert [os.path.basename(p) for p in paths] == [
      test_celeba.file_name(i) for i in rows]
  assert source.attributes.tolist() == [
      [test_celeba.present(i, a) for a in range(40)] for i in rows]


def test_celeba_without_max_examples_reads_all(root):
  source = attribute_sources.open_split(celeba_config(root), 'train')
  assert source.num_examples == 3


@pytest.mark.parametrize('split, limit, expected', [
    ('train', 1, 1), ('train', 2, 2), ('train', 3, 3), ('train', 50, 3),
    ('val', 1, 1), ('test', 0, 2),
])
def test_celeba_max_examples_keeps_the_first(root, split, limit, expected):
  source = attribute_sources.open_split(
      celeba_config(root, **{split: limit}), split)
  paths, attributes = celeba.load_split(str(root), split)
  assert source.num_examples == expected
  assert source.paths.tolist() == paths[:expected]
  np.testing.assert_array_equal(source.attributes, attributes[:expected])


def test_celeba_negative_max_examples_is_an_error(root):
  with pytest.raises(ValueError, match='data.max_examples.val must be >= 0, '
                     'got -1'):
    attribute_sources.open_split(celeba_config(root, val=-1), 'val')


def tfds_arrays(n):
  """What the fake load_tfds returns for n examples: (images, attributes)."""
  images, _ = image_fixtures.in_memory_images([n], size=8)
  return images, np.random.default_rng(n).random((n, 40)) < 0.5


@pytest.fixture
def fake_load_tfds(monkeypatch):
  """Replaces celeba.load_tfds; returns the list of its calls' arguments."""
  calls = []

  def load_tfds(split, data_dir=None, manual_dir=None, max_examples=None):
    calls.append(dict(split=split, data_dir=data_dir, manual_dir=manual_dir,
                      max_examples=max_examples))
    return tfds_arrays(max_examples or 3)

  monkeypatch.setattr(celeba, 'load_tfds', load_tfds)
  return calls


@pytest.mark.parametrize('settings, split, expected', [
    (dict(tfds_data_dir='/d', tfds_manual_dir='/m',
          max_examples=dict(train=2, val=0, test=0)), 'train',
     dict(split='train', data_dir='/d', manual_dir='/m', max_examples=2)),
    (dict(tfds_data_dir='/d', tfds_manual_dir='/m',
          max_examples=dict(train=2, val=0, test=0)), 'val',
     dict(split='val', data_dir='/d', manual_dir='/m', max_examples=None)),
    (dict(tfds_data_dir='', tfds_manual_dir='',
          max_examples=dict(train=0, val=0, test=1)), 'test',
     dict(split='test', data_dir=None, manual_dir=None, max_examples=1)),
    (dict(), 'train',
     dict(split='train', data_dir=None, manual_dir=None, max_examples=None)),
])
def test_tfds_split(fake_load_tfds, settings, split, expected):
  config = ml_collections.ConfigDict(dict(source='tfds:celeb_a', **settings))
  source = attribute_sources.open_split(config, split)
  assert fake_load_tfds == [expected]
  n = expected['max_examples'] or 3
  images, attributes = tfds_arrays(n)
  assert isinstance(source, sources.InMemory)
  assert source.num_examples == n
  np.testing.assert_array_equal(source.images, images)
  np.testing.assert_array_equal(source.labels, np.zeros(n))
  np.testing.assert_array_equal(source.attributes, attributes)
  assert source.attribute_names == celeba.ATTRIBUTE_NAMES
  assert source.name == f'tfds:celeb_a {split}'


@pytest.mark.parametrize('split', ['validation', 'Train', 'all', ''])
def test_unknown_split_is_named(split):
  config = ml_collections.ConfigDict(dict(source='celeba:/nowhere'))
  with pytest.raises(ValueError, match=re.escape(repr(split))):
    attribute_sources.open_split(config, split)
  with pytest.raises(ValueError, match=r"split must be one of \('train', "
                     r"'val', 'test'\)"):
    attribute_sources.open_split(synthetic_config(), split)


@pytest.mark.parametrize('spec', ['synthetic', '/data/faces', 'tfds:lfw',
                                  'celeba'])
def test_unknown_source_is_named(spec):
  config = ml_collections.ConfigDict(dict(source=spec))
  with pytest.raises(ValueError, match=re.escape(
      f'data.source={spec!r} is not an attribute dataset')):
    attribute_sources.open_split(config, 'train')


# Names may come as any sequence: a numpy array, a pandas Index (the columns
# of a CelebA csv), not only a list.
def test_check_attributes_takes_names_from_an_array():
  attributes, names = sources.check_attributes(
      np.array([[0, 1], [1, 1]]), np.array(['a', 'b']), 2, 'here')
  assert attributes.tolist() == [[False, True], [True, True]]
  assert names == ('a', 'b')
