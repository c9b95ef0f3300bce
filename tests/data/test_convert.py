"""The TFRecord converter and the TFRecords source."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from facejax.data import convert
from facejax.data import files
from facejax.data import pipeline
from facejax.data import sources
from tests.data import image_fixtures
from tests.data.image_fixtures import SIZE, identify
from tests.mutations import check_outcome, mutants

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


# ------------------------------------------ the manifest and the shards.


@pytest.fixture
def folder(converted, tmp_path):
  """A copy of the converted folder, to damage."""
  copy = tmp_path / 'records'
  shutil.copytree(converted[1], copy)
  return copy


def edit_json(path, change):
  """Rewrites the JSON file at ``path`` as ``change(document)``."""
  path.write_text(json.dumps(change(json.loads(path.read_text()))))
  return path


def put(dotted, value):
  """A change that sets ``a.0.b`` (keys and list positions) to ``value``."""
  def change(document):
    *parents, last = [int(k) if k.isdigit() else k for k in dotted.split('.')]
    node = document
    for key in parents:
      node = node[key]
    if value is DROP:
      del node[last]
    else:
      node[last] = value(document) if callable(value) else value
    return document
  return change


DROP = object()


@pytest.mark.parametrize('change, message', [
    (lambda m: [m], 'dataset.json: the manifest is a list, expected an'),
    (put('complete', 'yes'), "dataset.json, complete: 'yes' is not a bool"),
    (put('shards', DROP), 'dataset.json, shards: None is not a list'),
    (put('num_classes', '5'), "dataset.json, num_classes: '5' is not a count"),
    (put('num_classes', 5.0), 'dataset.json, num_classes: 5.0 is not a count'),
    (put('shards.1', 7), r'dataset.json, shards\[1\]: 7 is not an object'),
    (put('shards.1.num_examples', -1),
     r'dataset.json, shards\[1\].num_examples: -1 is not a count'),
    (put('shards.1.num_examples', True),
     r'dataset.json, shards\[1\].num_examples: True is not a count'),
    (put('shards.0.file', 3), r'dataset.json, shards\[0\].file: 3 is not a '
     'str'),
    (put('shards.0.file', DROP),
     r'dataset.json, shards\[0\].file: None is not a str'),
    (put('shards.2.file', lambda m: m['shards'][0]['file']),
     r'dataset.json, shards\[2\].file: .* is listed twice'),
    (put('shards', []), 'dataset.json, shards: a finished conversion lists '
     'no shard'),
    (put('num_examples', 99), 'dataset.json, num_examples: 99 is not the sum'),
    (put('format', 'other-2'), "dataset.json, format: 'other-2' is not"),
    (put('skipped', [3]), r'dataset.json, skipped\[0\]: 3 is not a str'),
    (put('has_landmarks', 'no'), "dataset.json, has_landmarks: 'no' is not"),
])
def test_manifest_keys_and_types_are_checked(folder, change, message):
  edit_json(folder / 'dataset.json', change)
  with pytest.raises(files.DataFileError, match=f'{folder}/{message}'):
    sources.TFRecords(folder)


@pytest.mark.parametrize('text, message', [
    (b'{"complete": true,\n "num_classes": NaN}', r': not valid JSON \(NaN'),
    (b'{"complete": true,\n "num_classes": 5', ', line 2: not valid JSON'),
    (b'{"complete": true,\n "shards": "\xff"}', ', line 2: not UTF-8 text'),
])
def test_manifest_that_is_not_json(folder, text, message):
  (folder / 'dataset.json').write_bytes(text)
  with pytest.raises(files.DataFileError,
                     match=f'{folder}/dataset.json{message}'):
    sources.TFRecords(folder)


@pytest.mark.parametrize('entry, problem', [
    ('../x.tfrecord', 'leaves the root'),
    ('a/../../x.tfrecord', 'leaves the root'),
    ('/etc/passwd', 'is absolute'),
    ('', 'is empty'),
])
def test_shard_names_are_confined_to_the_folder(folder, entry, problem):
  edit_json(folder / 'dataset.json', put('shards.1.file', entry))
  with pytest.raises(files.UnsafePathError,
                     match=rf'dataset.json, shards\[1\].file: the path .* '
                     f'{problem}'):
    sources.TFRecords(folder)


def shard_sizes(folder):
  manifest = json.loads((folder / 'dataset.json').read_text())
  return [(shard['file'], shard['num_examples'])
          for shard in manifest['shards']]


@pytest.mark.parametrize('claim', [-2, 2, 10**12])
def test_shard_counts_are_checked_against_the_shards(folder, claim):
  name, real = shard_sizes(folder)[1]
  claim = real + claim if claim < 10 else claim
  manifest = edit_json(folder / 'dataset.json',
                       put('shards.1.num_examples', claim))
  edit_json(manifest, put('num_examples', lambda m: sum(
      s['num_examples'] for s in m['shards'])))
  with pytest.raises(files.DataFileError,
                     match=rf'dataset.json, shards\[1\].num_examples: says '
                     f'{claim} records, but {folder}/{name} holds {real}'):
    sources.TFRecords(folder)


def test_missing_shard_names_the_manifest(folder):
  name = shard_sizes(folder)[2][0]
  (folder / name).unlink()
  with pytest.raises(FileNotFoundError,
                     match=f'{name}: shard listed in .*dataset.json '
                     r'\(shards\[2\].file\) is missing'):
    sources.TFRecords(folder)


@pytest.mark.parametrize('change, message', [
    (lambda names: dict(a=1), 'the label map is a dict'),
    (lambda names: [1] + names[1:], r'labels.json, \[0\]: 1 is not a class'),
    (lambda names: names[:1] * len(names),
     "labels.json: the class name 'id_000' is listed twice"),
    (lambda names: names[:-1], 'labels.json names 4 classes, dataset.json '
     'says 5'),
])
def test_label_map_is_checked(folder, change, message):
  edit_json(folder / 'labels.json', change)
  with pytest.raises(files.DataFileError, match=message):
    sources.TFRecords(folder)


def test_count_tfrecords_walks_tensorflows_framing(tmp_path):
  path = tmp_path / 'sizes.tfrecord'
  sizes = [0, 1, 3, 255, 70_000, 12]
  with tf.io.TFRecordWriter(str(path)) as writer:
    for size in sizes:
      writer.write(b'\x01' * size)
  assert sources.count_tfrecords(path) == len(sizes)
  (tmp_path / 'empty.tfrecord').write_bytes(b'')
  assert sources.count_tfrecords(tmp_path / 'empty.tfrecord') == 0


def test_truncated_shard_is_refused_when_opened(folder):
  name = shard_sizes(folder)[1][0]
  data = (folder / name).read_bytes()
  for cut in (3, 12, 40):  # in the length, its CRC, the last record's data
    (folder / name).write_bytes(data[:len(data) - cut])
    with pytest.raises(files.DataFileError,
                       match=f'{folder}/{name}: truncated shard: record '):
      sources.TFRecords(folder)


def test_damaged_length_is_refused_when_opened(folder):
  name = shard_sizes(folder)[0][0]
  data = bytearray((folder / name).read_bytes())
  data[1] ^= 0x10  # the first record's length
  (folder / name).write_bytes(bytes(data))
  with pytest.raises(files.DataFileError,
                     match=f'{folder}/{name}: record 0 at byte offset 0: its '
                     'length field is damaged'):
    sources.TFRecords(folder)


def test_resume_refuses_a_damaged_manifest_unless_overwrite(tmp_path):
  root = tmp_path / 'faces'
  image_fixtures.write_folder(root, [2, 2])
  source = sources.ImageFolder(root)
  out = tmp_path / 'out'
  convert.convert(source, out, 2)
  (out / 'dataset.json').write_text('{"complete": true, "shards": 3}')
  with pytest.raises(files.DataFileError,
                     match=f'{out}/dataset.json, num_classes: .*; pass '
                     '--overwrite'):
    convert.convert(source, out, 2)
  assert convert.convert(source, out, 2, overwrite=True)['complete']
  assert sources.TFRecords(out).num_examples == 4


def test_resume_writes_again_a_done_shard_that_is_not_whole(tmp_path):
  root = tmp_path / 'faces'
  image_fixtures.write_folder(root, COUNTS)
  source = sources.ImageFolder(root)
  whole, part = tmp_path / 'whole', tmp_path / 'part'
  convert.convert(source, whole, 3, seed=5)
  convert.convert(source, part, 3, seed=5)
  names = [name for name, _ in shard_sizes(part)]
  for finished in (False, True):  # interrupted, or damaged since
    edit_json(part / 'dataset.json', put('complete', finished))
    data = (part / names[0]).read_bytes()
    (part / names[0]).write_bytes(data[:len(data) // 2])
    (part / names[2]).unlink()
    (part / 'labels.json').unlink()
    assert convert.convert(source, part, 3, seed=5)['complete']
    for name in names + ['labels.json']:
      assert (part / name).read_bytes() == (whole / name).read_bytes()
    assert shard_sizes(part) == shard_sizes(whole)


def test_fuzz_manifest(folder):
  shards = [(str(folder / name), count) for name, count in shard_sizes(folder)]
  manifest = folder / 'dataset.json'
  text = manifest.read_bytes()

  def check(source):
    assert [(s.path, s.num_examples) for s in source.shards] == shards
    assert source.num_examples == sum(count for _, count in shards)
    assert source.num_classes == len(COUNTS) and not source.has_landmarks

  outcomes = []
  for mutant in mutants(text, 250, seed=3):
    manifest.write_bytes(mutant)
    outcomes.append(check_outcome(lambda: sources.TFRecords(folder), manifest,
                                  (files.DataFileError, FileNotFoundError),
                                  check))
  assert 10 < outcomes.count('ok') < 240, outcomes.count('ok')
