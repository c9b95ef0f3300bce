"""Tests of facejax.data.celeba: CelebA's annotation files, the synthetic set.

The fixtures are small files in CelebA's published layout (a count line, the
40 names, then ``000001.jpg -1  1 ...`` with values padded to two columns as
in the real file), written to tmp_path, with an empty JPEG per image.
:func:`celeba.load_tfds` is tested on tensorflow-datasets' ``celeb_a``
prepared from tiny copies of its original files
(``test_tfds_sources.write_celeb_a``). Both lists are also fuzzed with
seeded mutants of a valid file (tests/mutations.py).
"""
import os

import numpy as np
import pytest

from facejax.data import celeba
from facejax.data import files
from facejax.data import synthetic
from facejax.data import tfds_sources
from tests import mutations
from tests.data import test_tfds_sources

# Every test of this module runs with the socket functions refused and
# checked unused (the autouse fixture of test_tfds_sources).
network_attempts = test_tfds_sources.network_attempts

# Image i (from 0) has attribute a present when (i + a) % 3 == 0; its split is
# i % 3 (train, val, test).
NUM_IMAGES = 7


def file_name(i):
  return f'{i + 1:06d}.jpg'


def present(i, a):
  return (i + a) % 3 == 0


def attribute_line(i, values=None):
  if values is None:
    values = ['1' if present(i, a) else '-1' for a in range(40)]
  return file_name(i) + ' ' + ' '.join(f'{v:>2}' for v in values)


def attribute_text(lines=None, count=NUM_IMAGES):
  if lines is None:
    lines = [attribute_line(i) for i in range(NUM_IMAGES)]
  return '\n'.join([str(count), ' '.join(celeba.ATTRIBUTE_NAMES) + ' ']
                   + lines) + '\n'


def partition_text(lines=None):
  if lines is None:
    lines = [f'{file_name(i)} {i % 3}' for i in range(NUM_IMAGES)]
  return '\n'.join(lines) + '\n'


def write(path, text):
  path.write_text(text)
  return str(path)


@pytest.fixture
def root(tmp_path):
  write(tmp_path / celeba.ATTRIBUTES_FILE, attribute_text())
  write(tmp_path / celeba.PARTITION_FILE, partition_text())
  images = tmp_path / celeba.IMAGES_FOLDER
  images.mkdir()
  for i in range(NUM_IMAGES):
    (images / file_name(i)).write_bytes(b'')
  return tmp_path


# ----------------------------------------------------------------------------
# read_attributes.
# ----------------------------------------------------------------------------


def test_read_attributes_matches_the_file(tmp_path):
  path = write(tmp_path / 'attr.txt', attribute_text())
  names, attribute_names, attributes = celeba.read_attributes(path)
  assert names == [file_name(i) for i in range(NUM_IMAGES)]
  assert attribute_names == list(celeba.ATTRIBUTE_NAMES)
  assert attributes.dtype == bool and attributes.shape == (NUM_IMAGES, 40)
  for i in range(NUM_IMAGES):
    for a in range(40):
      assert attributes[i, a] == present(i, a)


def test_read_attributes_accepts_runs_of_spaces_and_blank_lines(tmp_path):
  lines = ['', attribute_line(0).replace(' ', '   '), '  ']
  path = write(tmp_path / 'attr.txt', attribute_text(lines, count=1))
  names, _, attributes = celeba.read_attributes(path)
  assert names == [file_name(0)]
  assert attributes[0].tolist() == [present(0, a) for a in range(40)]


def test_the_official_names_are_celebas_forty():
  assert len(celeba.ATTRIBUTE_NAMES) == len(set(celeba.ATTRIBUTE_NAMES)) == 40
  assert celeba.ATTRIBUTE_NAMES[0] == '5_o_Clock_Shadow'
  assert celeba.ATTRIBUTE_NAMES[4] == 'Bald'
  assert celeba.ATTRIBUTE_NAMES[20] == 'Male'
  assert celeba.ATTRIBUTE_NAMES[-1] == 'Young'


@pytest.mark.parametrize('text, message', [
    ('', r'attr\.txt:1: empty'),
    ('seven\n', r'attr\.txt:1: expected the number of images'),
    ('7\n', r'attr\.txt:2: missing the attribute names'),
    ('1\nSmiling Smiling\n', r'attr\.txt:2: repeated attribute names'),
    (attribute_text(count=8), r'attr\.txt:1: the first line says 8 images '
     'but the file lists 7'),
    (attribute_text(count=6), r'attr\.txt:1: the first line says 6'),
    (attribute_text([attribute_line(0), attribute_line(1, ['1'] * 39)], 2),
     r'attr\.txt:4: 000002\.jpg has 39 values, expected 40'),
    (attribute_text([attribute_line(0, ['1'] * 41)], 1),
     r'attr\.txt:3: 000001\.jpg has 41 values'),
    (attribute_text([attribute_line(0, ['1'] * 39 + ['0'])], 1),
     r"attr\.txt:3: 000001\.jpg has the value '0', expected 1 or -1"),
    (attribute_text([attribute_line(0, ['+1'] * 40)], 1),
     r"attr\.txt:3: 000001\.jpg has the value '\+1'"),
    (attribute_text([attribute_line(0), attribute_line(1),
                     attribute_line(0)], 3),
     r'attr\.txt:5: 000001\.jpg is listed again \(first at line 3\)'),
])
def test_read_attributes_errors_name_the_file_and_line(tmp_path, text,
                                                       message):
  path = write(tmp_path / 'attr.txt', text)
  with pytest.raises(ValueError, match=message):
    celeba.read_attributes(path)


# ----------------------------------------------------------------------------
# read_partition.
# ----------------------------------------------------------------------------


def test_read_partition_matches_the_file(tmp_path):
  path = write(tmp_path / 'part.txt', partition_text())
  assert celeba.read_partition(path) == {
      file_name(i): i % 3 for i in range(NUM_IMAGES)}


@pytest.mark.parametrize('lines, message', [
    (['000001.jpg 0', '000002.jpg'],
     r'part\.txt:2: expected "<file name> <split>", got 1 fields'),
    (['000001.jpg 0 1'], r'part\.txt:1: expected .* got 3 fields'),
    (['000001.jpg 3'], r"part\.txt:1: 000001\.jpg has the split '3'"),
    (['000001.jpg train'], r"part\.txt:1: .* split 'train'"),
    (['000001.jpg 0', '', '000001.jpg 1'],
     r'part\.txt:3: 000001\.jpg is listed again \(first at line 1\)'),
])
def test_read_partition_errors_name_the_file_and_line(tmp_path, lines,
                                                      message):
  path = write(tmp_path / 'part.txt', partition_text(lines))
  with pytest.raises(ValueError, match=message):
    celeba.read_partition(path)


# ----------------------------------------------------------------------------
# load_split.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('split, number', [('train', 0), ('val', 1),
                                           ('test', 2)])
def test_load_split_joins_the_files(root, split, number):
  paths, attributes = celeba.load_split(str(root), split)
  expected = [i for i in range(NUM_IMAGES) if i % 3 == number]
  assert paths == [os.path.join(str(root), celeba.IMAGES_FOLDER, file_name(i))
                   for i in expected]
  assert attributes.dtype == bool and attributes.shape == (len(expected), 40)
  for row, i in enumerate(expected):
    assert attributes[row].tolist() == [present(i, a) for a in range(40)]


def test_load_split_takes_other_locations(root, tmp_path_factory):
  elsewhere = tmp_path_factory.mktemp('elsewhere')
  attributes_path = write(elsewhere / 'attributes.txt', attribute_text())
  os.rename(root / celeba.PARTITION_FILE, root / 'partition.txt')
  os.rename(root / celeba.IMAGES_FOLDER, root / 'png')
  dataset = celeba.CelebA(str(root), attributes_path=attributes_path,
                          partition_path='partition.txt', images_folder='png')
  assert dataset.attributes_path == attributes_path
  paths, attributes = dataset.load('val')
  assert paths == [os.path.join(str(root), 'png', file_name(i))
                   for i in (1, 4)]
  assert attributes.shape == (2, 40)


def test_load_split_names_a_missing_image(root):
  missing = root / celeba.IMAGES_FOLDER / file_name(3)
  os.remove(missing)
  assert len(celeba.load_split(str(root), 'val')[0]) == 2
  with pytest.raises(FileNotFoundError, match=str(missing)):
    celeba.load_split(str(root), 'train')


def test_load_split_rejects_an_unknown_split(root):
  with pytest.raises(ValueError, match="split must be one of .* 'valid'"):
    celeba.load_split(str(root), 'valid')


def test_load_split_needs_both_files_to_list_the_same_images(root):
  write(root / celeba.PARTITION_FILE,
        partition_text([f'{file_name(i)} 0' for i in range(NUM_IMAGES - 1)]))
  with pytest.raises(ValueError, match=r"1 images of .*list_attr_celeba\.txt "
                     r"are not in .*list_eval_partition\.txt.*000007\.jpg"):
    celeba.load_split(str(root), 'train')
  write(root / celeba.PARTITION_FILE, partition_text(
      [f'{file_name(i)} 0' for i in range(NUM_IMAGES + 1)]))
  with pytest.raises(ValueError, match=r'1 images of .*list_eval_partition'
                     r'.*are not in .*000008\.jpg'):
    celeba.load_split(str(root), 'train')


def test_load_split_needs_celebas_attribute_names(root):
  text = attribute_text().replace('Young', 'Old')
  write(root / celeba.ATTRIBUTES_FILE, text)
  with pytest.raises(ValueError, match=r'list_attr_celeba\.txt:2: expected '
                     'the 40 CelebA attribute names'):
    celeba.load_split(str(root), 'train')


# ----------------------------------------------------------------------------
# The lists are untrusted.
# ----------------------------------------------------------------------------

ESCAPING_NAMES = ['../outside.jpg', 'a/../../outside.jpg', '/etc/passwd',
                  '~/x.jpg']


@pytest.mark.parametrize('name', ESCAPING_NAMES)
def test_read_attributes_refuses_names_that_leave_the_images(tmp_path, name):
  lines = [attribute_line(0), attribute_line(1).replace(file_name(1), name)]
  path = write(tmp_path / 'attr.txt', attribute_text(lines, count=2))
  with pytest.raises(files.UnsafePathError) as error:
    celeba.read_attributes(path)
  assert f'{path}, line 4: the path {name!r}' in str(error.value)


@pytest.mark.parametrize('name', ESCAPING_NAMES)
def test_read_partition_refuses_names_that_leave_the_images(tmp_path, name):
  path = write(tmp_path / 'part.txt', partition_text(['000001.jpg 0', '',
                                                      f'{name} 1']))
  with pytest.raises(files.UnsafePathError) as error:
    celeba.read_partition(path)
  assert f'{path}, line 3: the path {name!r}' in str(error.value)


def test_load_split_reads_nothing_outside_the_images_folder(root):
  # The file exists, so only the confinement can refuse it.
  (root / 'outside.jpg').write_bytes(b'')
  write(root / celeba.ATTRIBUTES_FILE, attribute_text(
      [attribute_line(0).replace(file_name(0), '../outside.jpg')], count=1))
  write(root / celeba.PARTITION_FILE, partition_text(['../outside.jpg 0']))
  with pytest.raises(files.UnsafePathError, match='list_attr_celeba.txt'):
    celeba.load_split(str(root), 'train')


@pytest.mark.parametrize('read, text, line', [
    (celeba.read_attributes, attribute_text(), 5),
    (celeba.read_partition, partition_text(), 3),
])
def test_invalid_utf8_names_the_file_and_line(tmp_path, read, text, line):
  path = tmp_path / 'list.txt'
  lines = text.encode().split(b'\n')
  lines[line - 1] = lines[line - 1].replace(b'.jpg', b'\xe9.jpg')
  path.write_bytes(b'\n'.join(lines))
  with pytest.raises(files.DataFileError,
                     match=f'{path}, line {line}: not UTF-8'):
    read(path)


def test_fuzzed_attribute_lists_parse_consistently_or_name_the_file(
    tmp_path):
  # 5 images of 3 attributes: small enough that a mutation often changes
  # the structure rather than one of 200 values.
  lines = [f'{file_name(i)} ' + ' '.join('1' if present(i, a) else '-1'
                                          for a in range(3))
           for i in range(5)]
  valid = '\n'.join(['5', 'A B C'] + lines) + '\n'

  def check(result):
    names, attribute_names, attributes = result
    assert len(set(attribute_names)) == len(attribute_names)
    assert attributes.dtype == bool
    assert attributes.shape == (len(names), len(attribute_names))
    assert len(set(names)) == len(names)
    for name in names:
      assert mutations.stays_under_any_root(name), name

  mutations.fuzz(tmp_path / 'list.txt', valid.encode(),
                 lambda: celeba.read_attributes(str(tmp_path / 'list.txt')), check)


def test_fuzzed_partition_lists_parse_consistently_or_name_the_file(
    tmp_path):

  def check(split_of):
    assert set(split_of.values()) <= {0, 1, 2}
    for name in split_of:
      assert mutations.stays_under_any_root(name), name

  mutations.fuzz(tmp_path / 'list.txt', partition_text().encode(),
                 lambda: celeba.read_partition(str(tmp_path / 'list.txt')),
                 check)


# ----------------------------------------------------------------------------
# load_tfds.
# ----------------------------------------------------------------------------

TFDS_PARTITIONS = {'train': 0, 'val': 1, 'test': 2}


@pytest.fixture
def celeb_a_files(tmp_path):
  """(manual dir with tfds' original CelebA files, data dir, the records)."""
  manual_dir = tmp_path / 'manual'
  records = test_tfds_sources.write_celeb_a(manual_dir)
  return manual_dir, tmp_path / 'tfds', records


def load_fixture(celeb_a_files, split, **kwargs):
  manual_dir, data_dir, _ = celeb_a_files
  return celeba.load_tfds(split, data_dir=data_dir, manual_dir=manual_dir,
                          verify_checksums=False, **kwargs)


def match_records(images, records):
  """The records of ``images``, matched by image: tfds keeps no file name."""
  unmatched = dict(records)
  matched = []
  for image in images:
    identity = min(unmatched, key=lambda identity: np.abs(
        unmatched[identity]['image'].astype(int) - image.astype(int)).mean())
    matched.append(unmatched.pop(identity))
  return matched


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_load_tfds_reads_the_split(celeb_a_files, split):
  records = {identity: record
             for identity, record in celeb_a_files[2].items()
             if record['partition'] == TFDS_PARTITIONS[split]}
  images, attributes = load_fixture(celeb_a_files, split)
  assert images.dtype == np.uint8
  assert images.shape == (len(records), 218, 178, 3)
  assert attributes.dtype == bool and attributes.shape == (len(records), 40)
  for image, row, record in zip(images, attributes,
                                match_records(images, records)):
    test_tfds_sources.check_image(image, record['image'], record['jpeg'])
    assert row.tolist() == [record['attributes'][name]
                            for name in celeba.ATTRIBUTE_NAMES]


def test_load_tfds_orders_attributes_as_attribute_names(celeb_a_files,
                                                        monkeypatch):
  # CelebA's names are in alphabetical order, as tfds' dict may be: a
  # permutation tells the order of ATTRIBUTE_NAMES from theirs.
  _, expected = load_fixture(celeb_a_files, 'train')
  permutation = np.random.default_rng(1).permutation(40)
  monkeypatch.setattr(celeba, 'ATTRIBUTE_NAMES', tuple(
      celeba.ATTRIBUTE_NAMES[k] for k in permutation))
  _, permuted = load_fixture(celeb_a_files, 'train')
  np.testing.assert_array_equal(permuted, expected[:, permutation])


def test_load_tfds_needs_celebas_attribute_names(celeb_a_files, monkeypatch):
  monkeypatch.setattr(celeba, 'ATTRIBUTE_NAMES',
                      celeba.ATTRIBUTE_NAMES[:-1] + ('Old',))
  with pytest.raises(ValueError, match=r"not CelebA's 40: missing \['Old'\], "
                     r"extra \['Young'\]"):
    load_fixture(celeb_a_files, 'test')


def test_load_tfds_takes_the_first_max_examples(celeb_a_files):
  images, attributes = load_fixture(celeb_a_files, 'train')
  assert len(images) == 3
  for max_examples in (1, 2):
    first_images, first_attributes = load_fixture(
        celeb_a_files, 'train', max_examples=max_examples)
    np.testing.assert_array_equal(first_images, images[:max_examples])
    np.testing.assert_array_equal(first_attributes,
                                  attributes[:max_examples])
  all_images, all_attributes = load_fixture(celeb_a_files, 'train',
                                            max_examples=4)
  np.testing.assert_array_equal(all_images, images)
  np.testing.assert_array_equal(all_attributes, attributes)
  val_images, _ = load_fixture(celeb_a_files, 'val', max_examples=1)
  assert val_images.shape == (1, 218, 178, 3)


@pytest.mark.parametrize('kwargs, message', [
    (dict(split='validation'), r"split must be one of .* 'validation'"),
    (dict(split='train[:10%]'), r"split must be one of .* 'train\[:10%\]'"),
    (dict(split='Train'), r"got 'Train'"),
    (dict(split=None), r'got None'),
    (dict(split=['train']), r"got \['train'\]"),
    (dict(split='train', max_examples=0), r'max_examples must be an int in '
     r'\[1, inf\], got 0'),
    (dict(split='train', max_examples=-2), r'max_examples .* got -2'),
    (dict(split='train', max_examples=2.0), r'max_examples .* got 2\.0'),
    (dict(split='train', max_examples='2'), r"max_examples .* got '2'"),
    (dict(split='train', max_examples=True), r'max_examples .* got True'),
])
def test_load_tfds_arguments_are_checked(tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=message):
    celeba.load_tfds(data_dir=tmp_path / 'tfds', manual_dir=tmp_path,
                     **kwargs)
  assert os.listdir(tmp_path) == []


def test_load_tfds_without_the_data_raises_source_files_not_found(tmp_path):
  with pytest.raises(tfds_sources.SourceFilesNotFoundError) as raised:
    celeba.load_tfds('val', data_dir=tmp_path / 'tfds', manual_dir=tmp_path)
  assert sorted(source.filename for source in raised.value.missing) == list(
      test_tfds_sources.CELEB_A_FILES)
  assert 'img_align_celeba.zip  (missing)' in str(raised.value)
  assert not (tmp_path / 'tfds' / 'celeb_a').exists()


# ----------------------------------------------------------------------------
# The synthetic stand-in.
# ----------------------------------------------------------------------------


def test_synthetic_rates_run_from_2_to_50_percent():
  rates = [entry.rate for entry in celeba.SYNTHETIC_ATTRIBUTES]
  names = [entry.name for entry in celeba.SYNTHETIC_ATTRIBUTES]
  assert len(rates) == 40 and len(set(names)) == 40
  assert rates == sorted(rates)
  assert rates[0] == pytest.approx(0.02) and rates[-1] == pytest.approx(0.5)
  # Spread over the range, as CelebA's: a fifth below 4%, a fifth above 35%.
  assert sum(rate < 0.04 for rate in rates) >= 7
  assert sum(rate > 0.35 for rate in rates) >= 7


def test_synthetic_frequencies_match_the_declared_rates():
  num_images = 3000
  attributes, names, rates = celeba.synthetic_attribute_labels(
      num_images, seed=11)
  assert attributes.dtype == bool and attributes.shape == (num_images, 40)
  assert names == [entry.name for entry in celeba.SYNTHETIC_ATTRIBUTES]
  for a in range(40):
    frequency = sum(bool(attributes[i, a]) for i in range(num_images))
    frequency /= num_images
    standard_error = (rates[a] * (1 - rates[a]) / num_images) ** 0.5
    assert abs(frequency - rates[a]) < 4.5 * standard_error, (names[a],
                                                              frequency)


def test_synthetic_attributes_follow_the_factors():
  attributes, names, _ = celeba.synthetic_attribute_labels(200, seed=2)
  column = {name: attributes[:, k] for k, name in enumerate(names)}
  for k in range(200):
    identity = synthetic.identity_params(2, k)
    nuisance = synthetic.nuisance_params(2, k, 0)
    assert column['Bald'][k] == (identity['bald'] == 1)
    assert column['Eyeglasses'][k] == (identity['glasses'] == 1)
    assert column['Occluded'][k] == (nuisance['occluded'] == 1)
    # 0.5 + 0.44 * 0.16: the bottom 44% of U(0.5, 0.66).
    assert column['Narrow_Face'][k] == (identity['face_a'] < 0.5704)
    assert not (column['Wide_Face'][k] and column['Narrow_Face'][k])
    if column['Receding_Hairline'][k] or column['Long_Hair'][k]:
      assert identity['bald'] == 0


def test_synthetic_attributes_are_deterministic_per_image():
  full = celeba.synthetic_attributes(5, seed=4, image_size=32)
  assert full.images.shape == (5, 32, 32, 3) and full.images.dtype == np.uint8
  assert full.attributes.shape == (5, 40)
  assert full.names == [entry.name for entry in celeba.SYNTHETIC_ATTRIBUTES]
  np.testing.assert_array_equal(
      full.positive_rates,
      [entry.rate for entry in celeba.SYNTHETIC_ATTRIBUTES])
  again = celeba.synthetic_attributes(5, seed=4, image_size=32)
  np.testing.assert_array_equal(again.images, full.images)
  np.testing.assert_array_equal(again.attributes, full.attributes)
  # The first 3 of 5 images are the 3 images; images 2.. start at 2.
  first = celeba.synthetic_attributes(3, seed=4, image_size=32)
  np.testing.assert_array_equal(first.images, full.images[:3])
  np.testing.assert_array_equal(first.attributes, full.attributes[:3])
  later = celeba.synthetic_attributes(3, seed=4, image_size=32,
                                      first_identity=2)
  np.testing.assert_array_equal(later.images, full.images[2:])
  np.testing.assert_array_equal(later.attributes, full.attributes[2:])
  np.testing.assert_array_equal(
      full.images[1], synthetic.generate_image(4, 1, 0, 32))
  other_seed = celeba.synthetic_attributes(5, seed=5, image_size=32)
  assert not np.array_equal(other_seed.images, full.images)


def test_fewer_synthetic_attributes_still_span_the_rates():
  attributes, names, rates = celeba.synthetic_attribute_labels(
      20, seed=1, num_attributes=5)
  table = celeba.SYNTHETIC_ATTRIBUTES
  assert names == [table[k].name for k in (0, 10, 20, 29, 39)]
  np.testing.assert_array_equal(rates, [table[k].rate
                                        for k in (0, 10, 20, 29, 39)])
  everything, _, _ = celeba.synthetic_attribute_labels(20, seed=1)
  np.testing.assert_array_equal(attributes,
                                everything[:, [0, 10, 20, 29, 39]])
  assert celeba.synthetic_attribute_labels(
      2, num_attributes=1)[1] == [table[0].name]


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_images=-1), 'num_images must be an int'),
    (dict(num_images=2.0), 'num_images must be an int'),
    (dict(num_images=2, num_attributes=0), 'num_attributes must be an int in '
     r'\[1, 40\]'),
    (dict(num_images=2, num_attributes=41), 'num_attributes'),
    (dict(num_images=2, first_identity=-3), 'first_identity'),
])
def test_synthetic_arguments_are_checked(kwargs, message):
  with pytest.raises(ValueError, match=message):
    celeba.synthetic_attribute_labels(**kwargs)
