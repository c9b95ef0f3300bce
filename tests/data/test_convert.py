"""The TFRecord converter and the TFRecords source."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from facejax.data import convert
from facejax.data import pipeline
from facejax.data import sources
from tests.data import image_fixtures
from tests.data.image_fixtures import SIZE, identify

COUNTS = [3, 4, 2, 3, 5]


def one(index=0, count=1):
  return pipeline.ProcessShard(index, count)


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  root = tmp_path_factory.mktemp('faces')
  numbers = image_fixtures.write_folder(root, COUNTS, fmt='png')
  broken = image_fixtures.corrupt_files(root / 'id_002')
  destination = tmp_path_factory.mktemp('records')
  assert convert.main([str(root), str(destination), '--shards', '3']) == 0
  return root, destination, numbers, broken


def read_records(path):
  examples = []
  for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
    examples.append(tf.train.Example.FromString(record))
  return examples


def test_manifest_label_map_and_records(converted):
  root, destination, numbers, broken = converted
  manifest = json.loads((destination / 'dataset.json').read_text())
  assert manifest['complete'] and manifest['num_classes'] == len(COUNTS)
  assert manifest['num_examples'] == len(numbers)
  assert manifest['skipped_count'] == len(broken)
  assert sorted(os.path.basename(k) for k in manifest['skipped']) == broken
  assert json.loads((destination / 'labels.json').read_text()) == [
      f'id_{c:03d}' for c in range(len(COUNTS))]
  keys = []
  for shard in manifest['shards']:
    examples = read_records(destination / shard['file'])
    assert len(examples) == shard['num_examples']
    for example in examples:
      features = example.features.feature
      key = features['image/key'].bytes_list.value[0].decode()
      label = features['image/label'].int64_list.value[0]
      encoded = features['image/encoded'].bytes_list.value[0]
      assert encoded == (root / key).read_bytes()  # not re-encoded
      assert key.startswith(f'id_{label:03d}/')
      keys.append(key)
  assert sorted(keys) == sorted(numbers)
  sizes = [s['num_examples'] + s['skipped'] for s in manifest['shards']]
  assert max(sizes) - min(sizes) <= 1


def test_tfrecords_source_eval_and_train(converted):
  _, destination, numbers, _ = converted
  source = sources.open_source(destination)
  assert isinstance(source, sources.TFRecords)
  assert source.num_examples == len(numbers)
  seen = []
  for index in range(2):
    for b in pipeline.eval_dataset(source, 4, image_size=SIZE,
                                   process=one(index, 2)).as_numpy_iterator():
      found, labels = identify(b['image'])
      real = b['mask']
      np.testing.assert_array_equal(b['label'][real], labels[real])
      seen.extend(found[real])
  assert sorted(seen) == sorted(numbers.values())
  train = pipeline.train_dataset(source, 4, seed=1, image_size=SIZE,
                                 process=one())
  got = list(train.take(2 * len(numbers) // 4).as_numpy_iterator())
  found = np.concatenate([identify(b['image'])[0] for b in got])
  assert sorted(found[:len(numbers)]) == sorted(numbers.values())
  again = pipeline.train_dataset(source, 4, seed=1, image_size=SIZE,
                                 process=one())
  first = next(again.as_numpy_iterator())
  np.testing.assert_array_equal(first['image'], got[0]['image'])
  with pytest.raises(ValueError, match='P x K batches need random access'):
    pipeline.train_dataset(source, 4, process=one(), identities_per_batch=2,
                           images_per_identity=2)


def test_tfrecords_have_no_example_index(converted):
  source = sources.open_source(str(converted[1]))
  with pytest.raises(ValueError, match='with_index needs random access'):
    pipeline.train_dataset(source, 4, with_index=True)


def test_tfrecords_sharded_over_processes(converted):
  _, destination, numbers, _ = converted
  source = sources.TFRecords(destination)
  for count in (2, 5):  # by file (3 files >= 2), by example (5 > 3 files)
    parts = []
    for index in range(count):
      dataset = pipeline.train_dataset(source, count, seed=2,
                                       image_size=SIZE,
                                       process=one(index, count))
      per_process = len(numbers) // count if count > 3 else 1
      got = list(dataset.take(per_process).as_numpy_iterator())
      parts.append(np.concatenate([identify(b['image'])[0] for b in got]))
    together = np.concatenate(parts)
    assert len(set(together)) == len(together)


def test_resume_after_interruption_gives_the_same_files(tmp_path,
                                                        monkeypatch):
  root = tmp_path / 'faces'
  image_fixtures.write_folder(root, COUNTS)
  source = sources.ImageFolder(root)
  whole = tmp_path / 'whole'
  convert.convert(source, whole, 4, seed=3)

  real_reader = convert._reader
  calls = {'n': 0}

  def failing_reader(src):
    read = real_reader(src)

    def read_or_die(index):
      calls['n'] += 1
      if calls['n'] > 10:
        raise KeyboardInterrupt
      return read(index)
    return read_or_die

  part = tmp_path / 'part'
  monkeypatch.setattr(convert, '_reader', failing_reader)
  with pytest.raises(KeyboardInterrupt):
    convert.convert(source, part, 4, seed=3)
  manifest = json.loads((part / 'dataset.json').read_text())
  assert not manifest['complete'] and len(manifest['shards']) == 2
  assert any(name.endswith('.tmp') for name in os.listdir(part))
  with pytest.raises(ValueError, match='has not finished'):
    sources.TFRecords(part)
  done_mtime = os.path.getmtime(part / manifest['shards'][0]['file'])
  monkeypatch.setattr(convert, '_reader', real_reader)
  convert.convert(source, part, 4, seed=3)
  assert os.path.getmtime(part / manifest['shards'][0]['file']) == done_mtime
  for name in sorted(os.listdir(whole)):
    if name.endswith('.tfrecord'):
      assert (part / name).read_bytes() == (whole / name).read_bytes()
  with pytest.raises(ValueError, match='different conversion'):
    convert.convert(source, part, 4, seed=4)
  assert convert.convert(source, part, 4, seed=4,
                         overwrite=True)['seed'] == 4


def test_label_outside_the_class_range_names_the_record(tmp_path):
  image = image_fixtures.encode(image_fixtures.flat_image(0, 0), 'png')
  path = tmp_path / 'shard-00000-of-00001.tfrecord'
  with tf.io.TFRecordWriter(str(path)) as writer:
    for label, key in ((0, 'good.png'), (7, 'bad.png')):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          'image/encoded': tf.train.Feature(
              bytes_list=tf.train.BytesList(value=[image])),
          'image/label': tf.train.Feature(
              int64_list=tf.train.Int64List(value=[label])),
          'image/key': tf.train.Feature(
              bytes_list=tf.train.BytesList(value=[key.encode()])),
      })).SerializeToString())
  (tmp_path / 'labels.json').write_text('["a", "b"]')
  (tmp_path / 'dataset.json').write_text(json.dumps(dict(
      complete=True, num_classes=2, shards=[dict(file=path.name,
                                                 num_examples=2)])))
  source = sources.TFRecords(tmp_path)
  dataset = pipeline.eval_dataset(source, 2, image_size=SIZE, process=one())
  with pytest.raises(tf.errors.InvalidArgumentError, match='bad.png'):
    list(dataset.as_numpy_iterator())


def test_cli_errors(tmp_path, capsys):
  assert convert.main([str(tmp_path / 'nowhere'), str(tmp_path / 'out'),
                       '--shards', '2']) == 1
  assert 'nowhere: image folder not found' in capsys.readouterr().err
  image_fixtures.write_folder(tmp_path / 'few', [1, 1])
  assert convert.main([str(tmp_path / 'few'), str(tmp_path / 'out'),
                       '--shards', '3']) == 1
  assert '3 shards for 2 examples' in capsys.readouterr().err
  with pytest.raises(FileNotFoundError, match='manifest not found'):
    sources.TFRecords(tmp_path / 'few')
