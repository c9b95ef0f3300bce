"""tensorflow-datasets' lfw and celeb_a, prepared offline from local files.

The fixtures are tiny copies of the original downloads in their published
layout: ``lfw.tgz`` holding ``lfw/<Name>/<Name>_0001.jpg`` (250x250 JPEGs),
and CelebA's ``img_align_celeba.zip`` (``img_align_celeba/000001.jpg``, ...,
218x178 JPEGs) with its four text lists. The real builders of
tensorflow-datasets prepare them; every test runs with the socket functions
patched to record and refuse any connection or name lookup, and checks that
none was tried.
"""
import collections
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest

from facejax.data import tfds_sources

LFW_PEOPLE = {'Ada_Lovelace': 2, 'Alan_Turing': 1, 'Grace_Hopper': 3}
LFW_SHAPE = (250, 250, 3)

CELEB_A_SHAPE = (218, 178, 3)
# File number -> partition (0 train, 1 validation, 2 test).
CELEB_A_PARTITIONS = {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 2}
CELEB_A_ATTRIBUTES = (
    '5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs '
    'Big_Lips Big_Nose Black_Hair Blond_Hair Blurry Brown_Hair '
    'Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair '
    'Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache '
    'Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline '
    'Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings '
    'Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young'
).split()
CELEB_A_LANDMARKS = (
    'lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x '
    'leftmouth_y rightmouth_x rightmouth_y').split()
CELEB_A_FILES = ('identity_CelebA.txt', 'img_align_celeba.zip',
                 'list_attr_celeba.txt', 'list_eval_partition.txt',
                 'list_landmarks_align_celeba.txt')


# ------------------------------------------------------------ no network.


@pytest.fixture(autouse=True)
def network_attempts(monkeypatch):
  """Refuses and records every connection and name lookup of the test."""
  attempts = []

  def refuse(what):
    def refused(*args, **kwargs):
      attempts.append((what, args[1:] if what.startswith('socket.') else
                       args))
      raise OSError(f'network access attempted in a test: {what}{args}')
    return refused

  monkeypatch.setattr(socket.socket, 'connect', refuse('socket.connect'))
  monkeypatch.setattr(socket.socket, 'connect_ex', refuse('socket.connect_ex'))
  monkeypatch.setattr(socket, 'create_connection', refuse('create_connection'))
  monkeypatch.setattr(socket, 'getaddrinfo', refuse('getaddrinfo'))
  yield attempts
  assert attempts == [], f'the test tried the network: {attempts}'


# ------------------------------------------------------------ fixtures.


def smooth_image(shape, seed):
  """A smooth uint8 image, which JPEG keeps within a few levels."""
  height, width, _ = shape
  rows, cols = np.meshgrid(np.linspace(0.0, 1.0, height),
                           np.linspace(0.0, 1.0, width), indexing='ij')
  phase = seed * 0.7
  channels = [
      96 + 80 * np.sin(2 * np.pi * rows + phase),
      128 + 100 * cols * np.cos(phase),
      64 + 120 * (rows + cols) / 2,
  ]
  return np.clip(np.stack(channels, axis=-1), 0, 255).round().astype(np.uint8)


def encode_jpeg(image):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.encode_jpeg(image, quality=95).numpy()


def decode_jpeg(data):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.decode_jpeg(data, channels=3).numpy()


def add_file(archive, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  info.mode = 0o644
  archive.addfile(info, io.BytesIO(data))


def add_dir(archive, name):
  info = tarfile.TarInfo(name)
  info.type = tarfile.DIRTYPE
  info.mode = 0o755
  archive.addfile(info)


def write_lfw(manual_dir):
  """Writes ``lfw.tgz``; returns ``{(name, file name): image array}``."""
  os.makedirs(manual_dir, exist_ok=True)
  images = {}
  with tarfile.open(os.path.join(manual_dir, 'lfw.tgz'), 'w:gz') as archive:
    add_dir(archive, 'lfw')
    for person, (name, count) in enumerate(sorted(LFW_PEOPLE.items())):
      add_dir(archive, f'lfw/{name}')
      for number in range(1, count + 1):
        file_name = f'{name}_{number:04d}.jpg'
        image = smooth_image(LFW_SHAPE, seed=10 * person + number)
        add_file(archive, f'lfw/{name}/{file_name}', encode_jpeg(image))
        images[name, file_name] = image
  return images


def write_celeb_a(manual_dir):
  """Writes CelebA's five files; returns ``{identity: expected record}``."""
  os.makedirs(manual_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  records = {}
  attr_lines = [f'{len(CELEB_A_PARTITIONS)}',
                ' '.join(CELEB_A_ATTRIBUTES) + ' ']
  landmark_lines = [f'{len(CELEB_A_PARTITIONS)}',
                    ' '.join(CELEB_A_LANDMARKS)]
  partition_lines, identity_lines = [], []
  zip_path = os.path.join(manual_dir, 'img_align_celeba.zip')
  with zipfile.ZipFile(zip_path, 'w') as archive:
    archive.writestr('img_align_celeba/', b'')
    for number, partition in CELEB_A_PARTITIONS.items():
      file_name = f'{number:06d}.jpg'
      image = smooth_image(CELEB_A_SHAPE, seed=number)
      jpeg = encode_jpeg(image)
      archive.writestr(f'img_align_celeba/{file_name}', jpeg)
      attributes = rng.choice([-1, 1], size=len(CELEB_A_ATTRIBUTES))
      landmarks = rng.integers(0, 178, size=len(CELEB_A_LANDMARKS))
      identity = 1000 + 37 * number
      attr_lines.append(
          file_name + ' ' + ' '.join(f'{v:2d}' for v in attributes))
      landmark_lines.append(
          file_name + ' ' + ' '.join(f'{v:4d}' for v in landmarks))
      partition_lines.append(f'{file_name} {partition}')
      identity_lines.append(f'{file_name} {identity}')
      records[identity] = dict(
          partition=partition, image=image, jpeg=jpeg,
          attributes={name: bool(v > 0)
                      for name, v in zip(CELEB_A_ATTRIBUTES, attributes)},
          landmarks={name: int(v)
                     for name, v in zip(CELEB_A_LANDMARKS, landmarks)})
  for file_name, lines in [
      ('list_attr_celeba.txt', attr_lines),
      ('list_landmarks_align_celeba.txt', landmark_lines),
      ('list_eval_partition.txt', partition_lines),
      ('identity_CelebA.txt', identity_lines)]:
    with open(os.path.join(manual_dir, file_name), 'w') as f:
      f.write('\n'.join(lines) + '\n')
  return records


def as_numpy_list(dataset):
  return list(dataset.as_numpy_iterator())


def check_image(actual, original, jpeg):
  """The stored JPEG decodes as the fixture's, close to the encoded array."""
  np.testing.assert_array_equal(actual, decode_jpeg(jpeg))
  difference = np.abs(actual.astype(int) - original.astype(int))
  assert difference.mean() < 1.5 and difference.max() <= 16


def sha256_of(path):
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


# ------------------------------------------------------------ tests.


def test_importing_the_module_imports_no_tensorflow():
  code = ('import sys\n'
          'import facejax.data.tfds_sources\n'
          'loaded = [m for m in ("tensorflow", "tensorflow_datasets")\n'
          '          if m in sys.modules]\n'
          'assert not loaded, loaded\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('call', [
    lambda: tfds_sources.load('vggface2', 'train'),
    lambda: tfds_sources.prepare('mnist'),
    lambda: tfds_sources.builder_info('lfw_deep'),
    lambda: tfds_sources.source_files('celeba'),
])
def test_unsupported_names_raise(call):
  with pytest.raises(ValueError, match=r"unsupported.*'lfw', 'celeb_a'"):
    call()


def test_source_files_are_the_builders_downloads():
  lfw, = tfds_sources.source_files('lfw')
  assert lfw.filename == 'lfw.tgz'
  assert lfw.url.startswith('https://')
  assert len(lfw.sha256) == 64 and lfw.size > 10**8
  celeb_a = tfds_sources.source_files('celeb_a')
  assert tuple(source.filename for source in celeb_a) == CELEB_A_FILES


def test_lfw_prepares_from_manual_dir_then_loads_from_data_dir(
    tmp_path, monkeypatch):
  manual_dir = tmp_path / 'manual'
  data_dir = tmp_path / 'tfds'
  images = write_lfw(manual_dir)
  jpegs = {key: encode_jpeg(image) for key, image in images.items()}

  builder = tfds_sources.prepare('lfw', data_dir=data_dir,
                                 manual_dir=manual_dir,
                                 verify_checksums=False)
  assert builder.is_prepared()
  assert '_make_download_manager' not in vars(builder)
  assert not [name for name in os.listdir(data_dir / 'downloads')
              if name.startswith('extracted')]
  examples = as_numpy_list(tfds_sources.load(
      'lfw', 'train', data_dir=data_dir, manual_dir=manual_dir))
  labels = collections.Counter(ex['label'].decode() for ex in examples)
  assert labels == LFW_PEOPLE
  # The examples carry no file name: match each image with the fixture's.
  unmatched = dict(images)
  for example in examples:
    assert example['image'].shape == LFW_SHAPE
    key = min(
        (key for key in unmatched if key[0] == example['label'].decode()),
        key=lambda key: np.abs(unmatched[key].astype(int) -
                               example['image'].astype(int)).mean())
    check_image(example['image'], unmatched.pop(key), jpegs[key])
  info = tfds_sources.builder_info('lfw', data_dir=data_dir)
  assert info.splits['train'].num_examples == sum(LFW_PEOPLE.values())

  # Again with only the data directory, from $TFDS_DATA_DIR: no manual files.
  shutil.rmtree(manual_dir)
  monkeypatch.setenv('TFDS_DATA_DIR', os.fspath(data_dir))
  again = as_numpy_list(tfds_sources.load('lfw', 'train'))
  assert sorted((ex['label'], ex['image'].tobytes()) for ex in again) == (
      sorted((ex['label'], ex['image'].tobytes()) for ex in examples))


def test_celeb_a_prepares_from_manual_dir_then_loads_from_data_dir(tmp_path):
  manual_dir = tmp_path / 'manual'
  data_dir = tmp_path / 'tfds'
  records = write_celeb_a(manual_dir)

  splits = {'train': 0, 'validation': 1, 'test': 2}
  loaded = {}
  for split, partition in splits.items():
    examples = as_numpy_list(tfds_sources.load(
        'celeb_a', split, data_dir=data_dir, manual_dir=manual_dir,
        verify_checksums=False))
    identities = [ex['identity']['Identity_No'] for ex in examples]
    assert sorted(identities) == sorted(
        identity for identity, record in records.items()
        if record['partition'] == partition)
    for identity, example in zip(identities, examples):
      record = records[identity]
      assert example['attributes'] == record['attributes']
      assert example['landmarks'] == record['landmarks']
      assert example['image'].shape == CELEB_A_SHAPE
      check_image(example['image'], record['image'], record['jpeg'])
      loaded[identity] = example['image']
  assert sorted(loaded) == sorted(records)
  info = tfds_sources.builder_info('celeb_a', data_dir=data_dir)
  assert {split: info.splits[split].num_examples for split in splits} == {
      'train': 3, 'validation': 2, 'test': 1}

  shutil.rmtree(manual_dir)
  again = as_numpy_list(tfds_sources.load('celeb_a', 'validation',
                                          data_dir=data_dir))
  assert len(again) == 2
  for example in again:
    np.testing.assert_array_equal(
        example['image'], loaded[example['identity']['Identity_No']])


def test_missing_lfw_archive_names_files_and_directories(tmp_path):
  data_dir = tmp_path / 'tfds'
  manual_dir = tmp_path / 'empty'
  manual_dir.mkdir()
  with pytest.raises(tfds_sources.SourceFilesNotFoundError) as raised:
    tfds_sources.load('lfw', 'train', data_dir=data_dir,
                      manual_dir=manual_dir)
  error = raised.value
  assert isinstance(error, FileNotFoundError)
  message = str(error)
  lfw, = tfds_sources.source_files('lfw')
  for text in ['lfw.tgz', lfw.url, lfw.sha256, os.fspath(manual_dir),
               os.fspath(data_dir), 'allow_download=True']:
    assert text in message
  assert error.missing == [lfw]
  assert error.manual_dir == os.fspath(manual_dir)
  assert not (data_dir / 'lfw').exists()

  # No manual_dir: tensorflow-datasets' <data_dir>/downloads/manual.
  with pytest.raises(tfds_sources.SourceFilesNotFoundError,
                     match=r'lfw\.tgz') as raised:
    tfds_sources.load('lfw', 'train', data_dir=data_dir)
  default_manual_dir = os.path.join(data_dir, 'downloads', 'manual')
  assert raised.value.manual_dir == default_manual_dir
  assert default_manual_dir in str(raised.value)


def test_missing_celeb_a_list_is_named(tmp_path):
  manual_dir = tmp_path / 'manual'
  write_celeb_a(manual_dir)
  os.remove(manual_dir / 'identity_CelebA.txt')
  with pytest.raises(tfds_sources.SourceFilesNotFoundError) as raised:
    tfds_sources.load('celeb_a', 'train', data_dir=tmp_path / 'tfds',
                      manual_dir=manual_dir, verify_checksums=False)
  assert [source.filename for source in raised.value.missing] == [
      'identity_CelebA.txt']
  message = str(raised.value)
  assert 'identity_CelebA.txt  (missing)' in message
  assert 'img_align_celeba.zip  (found)' in message
  assert not (tmp_path / 'tfds' / 'celeb_a').exists()


def test_checksum_mismatch_names_file_and_both_sha256(tmp_path):
  manual_dir = tmp_path / 'manual'
  data_dir = tmp_path / 'tfds'
  write_lfw(manual_dir)
  path = os.fspath(manual_dir / 'lfw.tgz')
  with pytest.raises(tfds_sources.ChecksumMismatchError) as raised:
    tfds_sources.load('lfw', 'train', data_dir=data_dir,
                      manual_dir=manual_dir)
  error = raised.value
  lfw, = tfds_sources.source_files('lfw')
  assert (error.path, error.expected_sha256, error.actual_sha256) == (
      path, lfw.sha256, sha256_of(path))
  for text in [path, lfw.sha256, sha256_of(path), 'verify_checksums=False']:
    assert text in str(error)
  assert isinstance(error, ValueError)
  assert not (data_dir / 'lfw').exists()


def test_verified_files_go_through_tfds_own_validation(tmp_path, monkeypatch):
  """With the fixture registered as lfw's archive, verification passes.

  This is the default path (no internals patched): tensorflow-datasets takes
  the manual file and validates it against the registered checksum itself.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  manual_dir = tmp_path / 'manual'
  write_lfw(manual_dir)
  lfw, = tfds_sources.source_files('lfw')
  fixture_info = tfds.download.checksums.compute_url_info(
      manual_dir / 'lfw.tgz')
  monkeypatch.setattr(tfds.builder_cls('lfw'), 'url_infos',
                      {lfw.url: fixture_info})
  examples = as_numpy_list(tfds_sources.load(
      'lfw', 'train', data_dir=tmp_path / 'tfds', manual_dir=manual_dir))
  assert len(examples) == sum(LFW_PEOPLE.values())
