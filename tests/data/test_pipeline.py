"""The tf.data pipelines: order, sharding, P x K, bad images, evaluation."""
import collections
import os

import numpy as np
import pytest

from facejax.data import augment
from facejax.data import pipeline
from facejax.data import sources
from tests.data import image_fixtures
from tests.data.image_fixtures import SIZE, identify

NO_FLIP = augment.NO_AUGMENTATION


def one(index=0, count=1):
  return pipeline.ProcessShard(index, count)


def batches(dataset, count):
  return list(dataset.take(count).as_numpy_iterator())


def numbers_of(batch_list):
  return [identify(b['image']) for b in batch_list]


@pytest.fixture(scope='module')
def memory_source():
  images, labels = image_fixtures.in_memory_images([5, 3, 4, 6, 2, 4])
  return sources.InMemory(images, labels)


# ------------------------------------------------------------ training.


def test_one_epoch_reads_every_example_once_with_its_label(memory_source):
  n = memory_source.num_examples  # 24
  got = batches(pipeline.train_dataset(
      memory_source, 6, seed=3, image_size=SIZE, process=one()), n // 6)
  numbers, labels = map(np.concatenate, zip(*numbers_of(got)))
  assert sorted(numbers) == list(range(n))
  np.testing.assert_array_equal(labels, memory_source.labels[numbers])
  for b in got:
    np.testing.assert_array_equal(b['label'], identify(b['image'])[1])
    assert b['image'].shape == (6, SIZE, SIZE, 3)
    assert b['image'].dtype == np.float32 and b['label'].dtype == np.int32
    assert -1 <= b['image'].min() and b['image'].max() <= 1


def test_epochs_are_shuffled_differently(memory_source):
  got = batches(pipeline.train_dataset(
      memory_source, 8, seed=3, image_size=SIZE, process=one()), 6)
  numbers = np.concatenate([n for n, _ in numbers_of(got)])
  first, second = numbers[:24], numbers[24:]
  assert sorted(first) == sorted(second) == list(range(24))
  assert list(first) != list(second)
  assert list(first) != list(range(24))


@pytest.mark.parametrize('count', [2, 3, 5])
def test_processes_read_disjoint_shards_covering_each_epoch(
    memory_source, count):
  n = memory_source.num_examples
  per_epoch = n // count  # each process, every epoch
  local = 2
  streams = []
  for index in range(count):
    got = batches(pipeline.train_dataset(
        memory_source, local * count, seed=5, image_size=SIZE,
        process=one(index, count)), per_epoch // local * 2)
    streams.append(np.concatenate([n for n, _ in numbers_of(got)]))
  used = per_epoch // local * local
  first_epoch = np.concatenate([s[:used] for s in streams])
  assert len(set(first_epoch)) == len(first_epoch)  # disjoint
  if used == per_epoch:
    # Together one epoch of the shared permutation, minus at most count - 1.
    assert len(first_epoch) == n // count * count


def test_same_seed_same_stream_and_resume_is_exact(memory_source):
  def stream(seed, start_step=0, count=5):
    return numbers_of(batches(pipeline.train_dataset(
        memory_source, 4, seed=seed, image_size=SIZE, process=one(),
        start_step=start_step, augmentation=augment.Augmentation(
            flip=True, min_crop_scale=0.8, brightness=0.1)), count))
  full = stream(7, count=9)
  assert [n.tolist() for n, _ in stream(7)] == [
      n.tolist() for n, _ in full[:5]]
  resumed = stream(7, start_step=6, count=3)
  assert [n.tolist() for n, _ in resumed] == [n.tolist() for n, _ in full[6:]]
  other = stream(8)
  assert [n.tolist() for n, _ in other] != [n.tolist() for n, _ in full[:5]]


def test_augmentation_is_reproducible_and_per_example():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
  source = sources.InMemory(images, np.arange(8) % 2)
  config = augment.Augmentation(flip=True, min_crop_scale=0.7,
                                brightness=0.2, contrast=0.2,
                                saturation=0.2, hue=0.05)

  def run(deterministic):
    return batches(pipeline.train_dataset(
        source, 8, seed=1, image_size=SIZE, process=one(),
        augmentation=config, deterministic=deterministic), 2)
  first, again = run(True), run(True)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  plain = batches(pipeline.train_dataset(
      source, 8, seed=1, image_size=SIZE, process=one(),
      augmentation=NO_FLIP), 1)[0]
  changed = np.abs(first[0]['image'] - plain['image']).max(axis=(1, 2, 3))
  assert (changed > 0.05).all()
  assert -1 <= first[0]['image'].min() and first[0]['image'].max() <= 1


def test_flip_mirrors_the_image():
  image = np.zeros((1, SIZE, SIZE, 3), np.uint8)
  image[0, :, :SIZE // 2] = 200
  source = sources.InMemory(np.repeat(image, 16, 0), np.arange(16) % 2)
  got = batches(pipeline.train_dataset(
      source, 16, seed=0, image_size=SIZE, process=one(),
      augmentation=augment.Augmentation(flip=True)), 1)[0]['image']
  left = got[:, 0, 0, 0] > 0
  assert 0 < left.sum() < 16  # some flipped, some not
  np.testing.assert_array_equal(got[~left], got[left][:1, :, ::-1]
                                .repeat((~left).sum(), 0))


# ------------------------------------------------------------------ P x K.


def test_identity_balanced_batches(memory_source):
  # Identity 4 has 2 images (< K = 3): sampled with replacement.
  got = batches(pipeline.train_dataset(
      memory_source, 9, seed=2, image_size=SIZE, process=one(),
      identities_per_batch=3, images_per_identity=3), 8)
  seen = collections.Counter()
  for b in got:
    numbers, labels = identify(b['image'])
    groups = labels.reshape(3, 3)
    assert (groups == groups[:, :1]).all()
    assert len(set(groups[:, 0])) == 3
    np.testing.assert_array_equal(b['label'], labels)
    for row, label in zip(numbers.reshape(3, 3), groups[:, 0]):
      if memory_source.labels.tolist().count(label) >= 3:
        assert len(set(row)) == 3  # without replacement
      seen[label] += 1
  assert set(seen) == set(range(6))  # every identity comes up


@pytest.mark.parametrize('balanced', [False, True])
def test_with_index_gives_each_example_position(memory_source, balanced):
  pk = dict(identities_per_batch=3, images_per_identity=2) if balanced else {}
  got = batches(pipeline.train_dataset(
      memory_source, 6, seed=5, image_size=SIZE, process=one(),
      with_index=True, **pk), 4)
  for b in got:
    assert b['index'].dtype == np.int32
    np.testing.assert_array_equal(b['index'], identify(b['image'])[0])


def test_identity_balanced_batches_split_over_processes(memory_source):
  parts = [batches(pipeline.train_dataset(
      memory_source, 8, seed=4, image_size=SIZE, process=one(i, 2),
      identities_per_batch=4, images_per_identity=2), 3) for i in range(2)]
  for step in range(3):
    labels = np.concatenate([identify(p[step]['image'])[1] for p in parts])
    assert len(set(labels)) == 4
    assert (labels.reshape(4, 2) == labels.reshape(4, 2)[:, :1]).all()


@pytest.mark.parametrize('process', [one(), one(1, 2)])
def test_identity_balanced_draws_each_image_equally_often(process):
  # Two identities of four images, P = 2, K = 2: every batch holds both
  # identities, two images of each drawn without replacement, so each image
  # is drawn in half the batches (400 +- 40 at four standard deviations
  # over 800 batches; with the old keys one identity's last two images came
  # up 5 and 4 times in 200 batches).
  labels = np.repeat(np.arange(2), 4)
  drawn = collections.Counter()
  stream = pipeline._identity_balanced(labels, 1, process, 2, 2)
  for example in stream.take(800 * 4 // process.count).as_numpy_iterator():
    drawn[int(example['index'])] += 1
  expected = 400 // process.count
  assert all(abs(drawn[i] - expected) <= 40
             for i in range(8)), sorted(drawn.items())


def test_identity_balanced_needs_enough_identities():
  images, labels = image_fixtures.in_memory_images([3, 1, 2])
  source = sources.InMemory(images, labels)
  with pytest.raises(ValueError, match='3 identities with at least 2'):
    pipeline.train_dataset(source, 6, process=one(),
                           identities_per_batch=3, images_per_identity=2)
  with pytest.raises(ValueError, match='not the global batch size'):
    pipeline.train_dataset(source, 6, process=one(),
                           identities_per_batch=2, images_per_identity=2)


# ------------------------------------------------------ image folders.


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('faces')
  numbers = image_fixtures.write_folder(root, [3, 4, 2, 3], fmt='png')
  broken = image_fixtures.corrupt_files(root / 'id_001')
  return root, numbers, broken


def test_image_folder_listing(folder):
  root, numbers, broken = folder
  (root / 'id_000' / 'notes.txt').write_text('ignored')
  source = sources.ImageFolder(root)
  assert source.class_names == ('id_000', 'id_001', 'id_002', 'id_003')
  assert source.num_examples == len(numbers) + len(broken)
  for path, label in zip(source.relative_paths, source.labels):
    assert path.startswith(f'id_{label:03d}/')


def test_corrupt_images_are_skipped_counted_once_and_named(folder):
  root, numbers, broken = folder
  source = sources.ImageFolder(root)
  skipped = pipeline.SkippedImages()
  epoch = len(numbers)  # images that decode: 12, 3 batches
  got = batches(pipeline.train_dataset(
      source, 4, seed=0, image_size=SIZE, process=one(), skipped=skipped,
      augmentation=NO_FLIP), 2 * epoch // 4 + 1)  # into the third epoch
  numbers_seen = np.concatenate([n for n, _ in numbers_of(got)])
  assert sorted(numbers_seen[:epoch]) == sorted(numbers.values())
  # Each bad image was met (at least) twice, and is counted once.
  assert skipped.count == len(broken)
  assert sorted(os.path.basename(k) for k in skipped.first_keys) == broken
  assert dict(skipped.by_reason) == {pipeline.UNDECODABLE: len(broken)}
  assert str(skipped).startswith('4 image(s) skipped (4 undecodable): ')


def test_jpeg_folder_round_trip(tmp_path):
  numbers = image_fixtures.write_folder(tmp_path, [2, 3], fmt='jpeg')
  source = sources.ImageFolder(tmp_path)
  got = batches(pipeline.eval_dataset(source, 5, image_size=SIZE,
                                      process=one()), 1)[0]
  assert got['mask'].all()
  found, labels = identify(got['image'])  # JPEG: colours within 2 levels
  np.testing.assert_allclose(found, sorted(numbers.values()), atol=2)
  np.testing.assert_allclose(labels, got['label'], atol=2)
  np.testing.assert_array_equal(got['label'], [0, 0, 1, 1, 1])


def test_images_of_another_size_are_resized(tmp_path):
  image_fixtures.write_folder(tmp_path, [2, 2], fmt='png', size=40)
  got = batches(pipeline.eval_dataset(sources.ImageFolder(tmp_path), 4,
                                      image_size=SIZE, process=one()), 1)[0]
  assert got['image'].shape == (4, SIZE, SIZE, 3)
  np.testing.assert_array_equal(identify(got['image'])[0], range(4))


def test_missing_file_is_a_clear_error(tmp_path):
  image_fixtures.write_folder(tmp_path, [2, 2])
  source = sources.ImageFolder(tmp_path)
  os.remove(tmp_path / 'id_001' / '000.png')
  dataset = pipeline.eval_dataset(source, 4, image_size=SIZE, process=one())
  with pytest.raises(Exception, match='id_001/000.png'):
    batches(dataset, 1)


def test_empty_identity_folder_and_missing_root(tmp_path):
  image_fixtures.write_folder(tmp_path, [2])
  (tmp_path / 'id_zzz').mkdir()
  (tmp_path / 'id_zzz' / 'readme.txt').write_text('no images')
  with pytest.raises(ValueError, match='id_zzz: identity folder has no'):
    sources.ImageFolder(tmp_path)
  with pytest.raises(FileNotFoundError, match='nowhere'):
    sources.ImageFolder(tmp_path / 'nowhere')
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match='no identity sub-folders'):
    sources.ImageFolder(empty)


def test_labels_out_of_range_are_refused():
  images, _ = image_fixtures.in_memory_images([2, 2])
  with pytest.raises(ValueError, match=r'outside \[0, 2\).*3 for x\[3\]'):
    sources.InMemory(images, [0, 1, 1, 3], class_names=['a', 'b'], name='x')
  with pytest.raises(ValueError, match='-1'):
    sources.InMemory(images, [0, -1, 1, 1])
  source = sources.InMemory(images, [0, 1, 1, 0])
  with pytest.raises(ValueError, match="num_classes=1"):
    pipeline.train_dataset(source, 2, process=one(), num_classes=1)


# ------------------------------------------------------------- evaluation.


@pytest.mark.parametrize('count,batch', [(1, 5), (2, 6), (3, 3), (4, 8)])
def test_eval_covers_every_example_once(memory_source, count, batch):
  n = memory_source.num_examples
  seen, lengths = [], set()
  for index in range(count):
    got = list(pipeline.eval_dataset(
        memory_source, batch, image_size=SIZE,
        process=one(index, count)).as_numpy_iterator())
    lengths.add(len(got))
    for b in got:
      assert b['image'].shape[0] == batch // count
      numbers, labels = identify(b['image'])
      real = b['mask']
      np.testing.assert_array_equal(b['index'][real], numbers[real])
      np.testing.assert_array_equal(b['label'][real], labels[real])
      assert (b['index'][~real] == -1).all()
      seen.extend(b['index'][real])
  assert len(lengths) == 1  # same number of batches everywhere
  assert sorted(seen) == list(range(n))


@pytest.mark.parametrize('count,batch,flip,attributes', [
    (1, 5, True, False), (1, 24, False, True), (2, 6, True, True),
    (3, 9, False, False)])
def test_eval_batches_of_arrays_are_the_tf_data_batches(count, batch, flip,
                                                         attributes):
  """eval_batches' numpy path for in-memory arrays at the output size:
  the same keys, dtypes, values (bit for bit), padding and masks as
  eval_dataset, on every process."""
  rng = np.random.default_rng(count)
  images = rng.integers(0, 256, (23, SIZE, SIZE, 3), np.uint8)
  labels = rng.integers(0, 4, 23)
  extra = {}
  if attributes:
    extra = dict(attributes=rng.integers(0, 2, (23, 3)).astype(bool),
                 attribute_names=['a', 'b', 'c'])
  source = sources.InMemory(images, labels, **extra)
  for index in range(count):
    expected = list(pipeline.eval_dataset(
        source, batch, image_size=SIZE, process=one(index, count),
        flip=flip).as_numpy_iterator())
    got = list(pipeline.eval_batches(source, batch, image_size=SIZE,
                                     process=one(index, count), flip=flip))
    assert not hasattr(pipeline.eval_batches(
        source, batch, image_size=SIZE, process=one(index, count)),
                       'element_spec')  # not a tf.data.Dataset
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
      assert sorted(mine) == sorted(theirs)
      for key in theirs:
        assert mine[key].dtype == theirs[key].dtype, key
        np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)


def test_eval_batches_of_other_sizes_go_through_tf_data(memory_source):
  """Arrays of another size are resized by tf.data, as eval_dataset does."""
  got = list(pipeline.eval_batches(memory_source, 8, image_size=SIZE + 4,
                                   process=one()))
  expected = list(pipeline.eval_dataset(memory_source, 8,
                                        image_size=SIZE + 4,
                                        process=one()).as_numpy_iterator())
  assert got[0]['image'].shape[1:3] == (SIZE + 4, SIZE + 4)
  for mine, theirs in zip(got, expected):
    np.testing.assert_array_equal(mine['image'], theirs['image'])


def test_eval_masks_corrupt_images(folder):
  root, numbers, broken = folder
  source = sources.ImageFolder(root)
  skipped = pipeline.SkippedImages()
  got = list(pipeline.eval_dataset(source, 8, image_size=SIZE,
                                   process=one(), skipped=skipped,
                                   flip=True).as_numpy_iterator())
  index = np.concatenate([b['index'] for b in got])
  mask = np.concatenate([b['mask'] for b in got])
  bad = [i for i in range(source.num_examples)
         if os.path.basename(source.paths[i]) in broken]
  assert sorted(index[(index >= 0) & ~mask]) == bad
  assert skipped.count == len(broken)
  flipped = got[0]['image_flipped']
  np.testing.assert_array_equal(flipped, got[0]['image'][:, :, ::-1])


# -------------------------------------------------------------- RecordIO.


def test_recordio_source(tmp_path):
  from tests.data.recordio_writer import insightface_dataset
  labels = [0, 0, 1, 2, 2]
  encoded = [image_fixtures.encode(image_fixtures.flat_image(i, label),
                                   'png') for i, label in enumerate(labels)]
  rec, _, _ = insightface_dataset(tmp_path, labels, encoded)
  source = sources.open_source(rec)
  assert isinstance(source, sources.RecordIO)
  assert source.num_classes == 3
  got = batches(pipeline.eval_dataset(source, 5, image_size=SIZE,
                                      process=one()), 1)[0]
  np.testing.assert_array_equal(identify(got['image'])[0], range(5))
  np.testing.assert_array_equal(got['label'], labels)
  train = batches(pipeline.train_dataset(source, 4, image_size=SIZE,
                                         process=one(), seed=1,
                                         identities_per_batch=2,
                                         images_per_identity=2), 2)
  for b in train:
    assert len(set(b['label'])) == 2


# ------------------------------------------------------------- alignment.


def test_landmarks_file_aligns_to_the_template(tmp_path):
  from facejax.data import alignment
  image_fixtures.write_folder(tmp_path / 'faces', [1, 1], size=112)
  rng = np.random.default_rng(0)
  picture = rng.integers(0, 256, (112, 112, 3), np.uint8)
  for path in (tmp_path / 'faces').glob('*/*.png'):
    path.write_bytes(image_fixtures.encode(picture, 'png'))
  template = alignment.ARCFACE_TEMPLATE
  lines = [f'{p} ' + ' '.join(map(str, template.reshape(-1)))
           for p in ('id_000/000.png', 'id_001/000.png')]
  (tmp_path / 'landmarks.txt').write_text('# points\n' + '\n'.join(lines))
  source = sources.ImageFolder(tmp_path / 'faces',
                               landmarks_file=tmp_path / 'landmarks.txt')
  assert source.has_landmarks
  got = batches(pipeline.eval_dataset(source, 2, process=one()), 1)[0]
  np.testing.assert_allclose((got['image'] + 1) * 127.5,
                             np.stack([picture] * 2), atol=1e-3)
  (tmp_path / 'short.txt').write_text(lines[0] + '\nid_001/000.png 1 2\n')
  with pytest.raises(ValueError, match='short.txt:2: expected a path'):
    sources.ImageFolder(tmp_path / 'faces',
                        landmarks_file=tmp_path / 'short.txt')
  (tmp_path / 'one.txt').write_text(lines[0])
  with pytest.raises(ValueError, match='no landmarks for 1 image.*id_001'):
    sources.ImageFolder(tmp_path / 'faces',
                        landmarks_file=tmp_path / 'one.txt')
  with pytest.raises(ValueError, match='needs landmarks'):
    pipeline.eval_dataset(sources.ImageFolder(tmp_path / 'faces'), 2,
                          process=one(), align=True)


def test_recordio_with_a_bad_magic_number_names_the_file(tmp_path):
  from tests.data.recordio_writer import write_rec
  rec, _, _ = write_rec(tmp_path, [b'x' * 40, b'y' * 40],
                        raw=b'\x00' * 96)
  with pytest.raises(ValueError, match=f'{rec}: bad magic number'):
    sources.RecordIO(rec)


def test_verification_bin_decodes_pairs(tmp_path):
  import pickle
  images = [image_fixtures.encode(image_fixtures.flat_image(i, 0), 'png')
            for i in range(6)]
  path = tmp_path / 'tiny.bin'
  path.write_bytes(pickle.dumps((images, [True, False, True]), protocol=4))
  source, first, second, issame = sources.verification_bin(path)
  np.testing.assert_array_equal(first, [0, 2, 4])
  np.testing.assert_array_equal(second, [1, 3, 5])
  np.testing.assert_array_equal(issame, [True, False, True])
  got = batches(pipeline.eval_dataset(source, 6, image_size=SIZE,
                                      process=one()), 1)[0]
  np.testing.assert_array_equal(identify(got['image'])[0], range(6))
  images[3] = b'broken'
  path.write_bytes(pickle.dumps((images, [True, False, True]), protocol=4))
  with pytest.raises(ValueError, match='tiny.bin: image 3 cannot be decoded'):
    sources.verification_bin(path)
