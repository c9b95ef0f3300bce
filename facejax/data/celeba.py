"""CelebA's attribute annotations, and a synthetic stand-in with its imbalance.

CelebA (Liu, Luo, Wang, Tang, "Deep Learning Face Attributes in the Wild",
ICCV 2015) ships, in its published layout:

* ``list_attr_celeba.txt``: the first line is the number of images (202599),
  the second the 40 attribute names (:data:`ATTRIBUTE_NAMES`) separated by
  whitespace, then one line per image: its file name (``000001.jpg``) and
  forty values, each ``1`` (present) or ``-1`` (absent), separated by one or
  more spaces.
* ``list_eval_partition.txt``: one line per image, ``000001.jpg 0``, with 0,
  1, 2 for train, val, test (:data:`SPLITS`).
* ``img_align_celeba/``: the aligned and cropped JPEGs (178x218).

:func:`read_attributes` and :func:`read_partition` parse the two lists and
raise ``ValueError('<path>:<line>: ...')`` on anything else;
:class:`CelebA` (or :func:`load_split`) joins them into one split's image
paths and boolean attributes. Blank lines are skipped everywhere; the lines
counted in messages are the file's own, from 1. The lists are untrusted:
they are decoded as UTF-8 (:func:`facejax.data.files.read_text_lines`) and
a file name that would leave the images folder (``..``, an absolute path)
is refused naming its line (:func:`facejax.data.files.confine`).

:func:`load_tfds` reads a split of tensorflow-datasets' ``celeb_a`` builder
instead, prepared offline from the same published files by
:mod:`facejax.data.tfds_sources`, into image and attribute arrays;
tensorflow is imported only when it is called.

The real images cannot ship with the code, so :func:`synthetic_attributes`
draws an attribute set with CelebA-like imbalance from the synthetic face
generator (:mod:`facejax.data.synthetic`): every attribute is a
deterministic function of the factors an image is rendered from, so a
network can learn it from the pixels. Pure python and numpy.
"""
import math
import os
import statistics
from typing import Callable, NamedTuple

import numpy as np

from facejax.data import files
from facejax.data import synthetic
from facejax.data import tfds_sources

ATTRIBUTE_NAMES = (
    '5_o_Clock_Shadow', 'Arched_Eyebrows', 'Attractive', 'Bags_Under_Eyes',
    'Bald', 'Bangs', 'Big_Lips', 'Big_Nose', 'Black_Hair', 'Blond_Hair',
    'Blurry', 'Brown_Hair', 'Bushy_Eyebrows', 'Chubby', 'Double_Chin',
    'Eyeglasses', 'Goatee', 'Gray_Hair', 'Heavy_Makeup', 'High_Cheekbones',
    'Male', 'Mouth_Slightly_Open', 'Mustache', 'Narrow_Eyes', 'No_Beard',
    'Oval_Face', 'Pale_Skin', 'Pointy_Nose', 'Receding_Hairline',
    'Rosy_Cheeks', 'Sideburns', 'Smiling', 'Straight_Hair', 'Wavy_Hair',
    'Wearing_Earrings', 'Wearing_Hat', 'Wearing_Lipstick', 'Wearing_Necklace',
    'Wearing_Necktie', 'Young')
SPLITS = {'train': 0, 'val': 1, 'test': 2}
ATTRIBUTES_FILE = 'list_attr_celeba.txt'
PARTITION_FILE = 'list_eval_partition.txt'
IMAGES_FOLDER = 'img_align_celeba'


# The annotation files.


def _numbered_lines(path):
  """(line number from 1, whitespace-split fields) of the non-blank lines.

  Raises:
    FileNotFoundError: no such file.
    facejax.data.files.DataFileError: a folder, or not UTF-8 (line named).
  """
  for number, line in files.read_text_lines(path):
    yield number, line.split()


def _check_file_name(name, path, number):
  """Refuses, naming the line, a file name that leaves the images folder."""
  files.check_relative(name, source=path, line=number)


def read_attributes(path):
  """Parses ``list_attr_celeba.txt`` (see the module docstring).

  Args:
    path: the attribute list.

  Returns:
    (file names: list of str in file order, attribute names: list of str,
    attributes: bool array (num_images, num_attributes), True where the file
    says 1).

  Raises:
    ValueError('<path>:<line>: ...') when the first line is not a count, the
    names are missing or repeated, an image line has the wrong number of
    values or a value other than 1 and -1, a file name repeats or would
    leave the images folder, or the number of image lines differs from the
    count; the file is a folder or not UTF-8.
    FileNotFoundError: no such file.
  """
  lines = _numbered_lines(path)
  header = next(lines, None)
  if header is None:
    raise ValueError(f'{path}:1: empty; expected the number of images')
  number, fields = header
  if len(fields) != 1 or not fields[0].isdecimal():
    raise ValueError(
        f'{path}:{number}: expected the number of images, got {fields}')
  declared_count = int(fields[0])
  names_line = next(lines, None)
  if names_line is None:
    raise ValueError(f'{path}:{number + 1}: missing the attribute names')
  number, attribute_names = names_line
  if len(set(attribute_names)) != len(attribute_names):
    repeated = sorted({name for name in attribute_names
                       if attribute_names.count(name) > 1})
    raise ValueError(f'{path}:{number}: repeated attribute names {repeated}')
  file_names, rows, first_line_of = [], [], {}
  for number, fields in lines:
    name, values = fields[0], fields[1:]
    if len(values) != len(attribute_names):
      raise ValueError(
          f'{path}:{number}: {name} has {len(values)} values, expected '
          f'{len(attribute_names)} (one per attribute name)')
    if not set(values) <= {'1', '-1'}:
      wrong = next(v for v in values if v not in ('1', '-1'))
      raise ValueError(
          f'{path}:{number}: {name} has the value {wrong!r}, expected 1 or -1')
    if name in first_line_of:
      raise ValueError(f'{path}:{number}: {name} is listed again (first at '
                       f'line {first_line_of[name]})')
    _check_file_name(name, path, number)
    first_line_of[name] = number
    file_names.append(name)
    rows.append([value == '1' for value in values])
  if len(file_names) != declared_count:
    raise ValueError(f'{path}:1: the first line says {declared_count} '
                     f'images but the file lists {len(file_names)}')
  attributes = np.array(rows, dtype=bool).reshape(len(rows),
                                                  len(attribute_names))
  return file_names, list(attribute_names), attributes


def read_partition(path):
  """Parses ``list_eval_partition.txt``: ``<file name> <0|1|2>`` per line.

  Returns:
    dict file name -> split number (0 train, 1 val, 2 test; see
    :data:`SPLITS`), in file order.

  Raises:
    ValueError('<path>:<line>: ...') for a line without exactly two fields,
    a split other than 0, 1, 2, a repeated file name or one that would
    leave the images folder; the file is a folder or not UTF-8.
    FileNotFoundError: no such file.
  """
  split_of, first_line_of = {}, {}
  valid = {str(number): number for number in SPLITS.values()}
  for number, fields in _numbered_lines(path):
    if len(fields) != 2:
      raise ValueError(f'{path}:{number}: expected "<file name> <split>", '
                       f'got {len(fields)} fields {fields}')
    name, split = fields
    if split not in valid:
      raise ValueError(f'{path}:{number}: {name} has the split {split!r}, '
                       'expected 0 (train), 1 (val) or 2 (test)')
    if name in split_of:
      raise ValueError(f'{path}:{number}: {name} is listed again (first at '
                       f'line {first_line_of[name]})')
    _check_file_name(name, path, number)
    split_of[name] = valid[split]
    first_line_of[name] = number
  return split_of


class CelebA:
  """The CelebA attribute dataset in its published layout under ``root``.

  By default ``root`` holds ``list_attr_celeba.txt``,
  ``list_eval_partition.txt`` and the folder ``img_align_celeba/``; each
  location can be given instead (absolute, or relative to ``root``), e.g.
  ``images_folder='img_align_celeba_png'`` for re-encoded images.

  Attributes:
    attributes_path, partition_path, images_folder: the resolved locations.
  """

  def __init__(self, root, attributes_path=ATTRIBUTES_FILE,
               partition_path=PARTITION_FILE, images_folder=IMAGES_FOLDER):
    self.attributes_path = os.path.join(root, attributes_path)
    self.partition_path = os.path.join(root, partition_path)
    self.images_folder = os.path.join(root, images_folder)

  def load(self, split):
    """One split's images and attributes.

    Args:
      split: 'train', 'val' or 'test'.

    Returns:
      (image paths: list of str, in the attribute file's order, attributes:
      bool (num_images, 40) in the order of :data:`ATTRIBUTE_NAMES`).

    Raises:
      ValueError: an unknown split, attribute names other than CelebA's 40,
        or an image listed in one file and not the other (named).
      FileNotFoundError: an image of the split is missing (its path named).
    """
    if split not in SPLITS:
      raise ValueError(f'split must be one of {sorted(SPLITS)}, got '
                       f'{split!r}')
    file_names, attribute_names, attributes = read_attributes(
        self.attributes_path)
    if tuple(attribute_names) != ATTRIBUTE_NAMES:
      raise ValueError(f'{self.attributes_path}:2: expected the 40 CelebA '
                       f'attribute names in order, got {attribute_names}')
    split_of = read_partition(self.partition_path)
    unpartitioned = [name for name in file_names if name not in split_of]
    if unpartitioned:
      raise ValueError(
          f'{len(unpartitioned)} images of {self.attributes_path} are not in '
          f'{self.partition_path}, e.g. {unpartitioned[:3]}')
    listed = set(file_names)
    unlabelled = [name for name in split_of if name not in listed]
    if unlabelled:
      raise ValueError(
          f'{len(unlabelled)} images of {self.partition_path} are not in '
          f'{self.attributes_path}, e.g. {unlabelled[:3]}')
    wanted = SPLITS[split]
    rows = [row for row, name in enumerate(file_names)
            if split_of[name] == wanted]
    # Read-time checks named the line; this is the join itself.
    paths = [files.confine(self.images_folder, file_names[row],
                           source=self.attributes_path) for row in rows]
    for path in paths:
      if not os.path.isfile(path):
        raise FileNotFoundError(f'CelebA image missing: {path}')
    return paths, attributes[np.array(rows, dtype=np.int64)]


def load_split(root, split, **locations):
  """``CelebA(root, **locations).load(split)``: (image paths, attributes)."""
  return CelebA(root, **locations).load(split)


# tensorflow-datasets' celeb_a.


TFDS_NAME = 'celeb_a'
# celeba's split names -> the builder's.
TFDS_SPLITS = {'train': 'train', 'val': 'validation', 'test': 'test'}
IMAGE_SHAPE = (218, 178, 3)
_TFDS_BATCH_SIZE = 256


def load_tfds(split, data_dir=None, manual_dir=None, max_examples=None,
              verify_checksums=True):
  """One split of tensorflow-datasets' ``celeb_a``, read into arrays.

  Reads the builder's split through :func:`facejax.data.tfds_sources.load`:
  from ``data_dir`` when the dataset is prepared there, else prepared first
  from the original files in ``manual_dir`` (the published files, the same
  that :class:`CelebA` reads; see
  :func:`facejax.data.tfds_sources.source_files`). It never touches the
  network. Examples come in the order the builder stored them (shuffled
  once, deterministically, when it prepared them; the shard files are read
  in order), so the first ``max_examples`` are the same at every call.

  Memory: everything is returned in memory. The full train split is 162,770
  images of 218x178x3, about 19 GB as uint8 (val 19,867 images, about
  2.3 GB; test 19,962, about 2.3 GB). Pass ``max_examples``, or for the full
  set use the published layout, ``CelebA(root).load(split)``, which returns
  image paths to read lazily.

  Args:
    split: 'train', 'val' or 'test' (the builder's 'validation' for 'val').
    data_dir: tensorflow-datasets' data directory; default
      :func:`facejax.data.tfds_sources.default_data_dir`.
    manual_dir: the directory holding CelebA's five original files; default
      ``<data_dir>/downloads/manual``.
    max_examples: read only the first ``max_examples`` examples of the split
      (an int >= 1), or all of it (None).
    verify_checksums: check each original file's sha256 against the one
      tensorflow-datasets registers before preparing; see
      :func:`facejax.data.tfds_sources.prepare`.

  Returns:
    (images: uint8 (N, 218, 178, 3), attributes: bool (N, 40) in the order
    of :data:`ATTRIBUTE_NAMES`, True where the attribute is present).

  Raises:
    ValueError: an unknown ``split`` or a ``max_examples`` that is not an
      int >= 1 (either named), or builder attributes other than CelebA's 40
      (the missing and extra names named).
    facejax.data.tfds_sources.SourceFilesNotFoundError: the dataset is not
      prepared in ``data_dir`` and original files are missing from
      ``manual_dir`` (it names them).
    facejax.data.tfds_sources.ChecksumMismatchError: an original file is
      not the published one and ``verify_checksums`` is true.
    RuntimeError: tensorflow-datasets gives the split no known size (not
      expected: it records each split's size when it prepares it).
  """
  if not isinstance(split, str) or split not in SPLITS:
    raise ValueError(f'split must be one of {sorted(SPLITS)}, got '
                     f'{split!r}')
  if max_examples is not None:
    max_examples = _count(max_examples, 'max_examples', low=1)
  dataset = tfds_sources.load(TFDS_NAME, TFDS_SPLITS[split],
                              data_dir=data_dir, manual_dir=manual_dir,
                              verify_checksums=verify_checksums)
  names = set(dataset.element_spec['attributes'])
  if names != set(ATTRIBUTE_NAMES):
    missing = [name for name in ATTRIBUTE_NAMES if name not in names]
    extra = sorted(names - set(ATTRIBUTE_NAMES))
    raise ValueError(
        f"tensorflow-datasets' {TFDS_NAME} attributes are not CelebA's 40: "
        f'missing {missing}, extra {extra}')
  if max_examples is not None:
    dataset = dataset.take(max_examples)
  count = int(dataset.cardinality())
  if count < 0:
    raise RuntimeError(f"tensorflow-datasets' {TFDS_NAME} {split} split has "
                       f'no known size ({count})')
  images = np.empty((count,) + IMAGE_SHAPE, np.uint8)
  attributes = np.empty((count, len(ATTRIBUTE_NAMES)), bool)
  start = 0
  for batch in dataset.batch(_TFDS_BATCH_SIZE).as_numpy_iterator():
    stop = start + len(batch['image'])
    images[start:stop] = batch['image']
    attributes[start:stop] = np.stack(
        [batch['attributes'][name] for name in ATTRIBUTE_NAMES], axis=1)
    start = stop
  return images, attributes


# The synthetic stand-in.


class SyntheticAttribute(NamedTuple):
  """One synthetic attribute: present where ``test(identity, nuisance)``.

  ``identity`` and ``nuisance`` are the dicts of
  :func:`facejax.data.synthetic.identity_params` and
  :func:`~facejax.data.synthetic.nuisance_params`; ``rate`` is the
  probability of the test under the generator's laws.
  """
  name: str
  rate: float
  test: Callable[[dict, dict], bool]


def _tail(name, rate, factor, low, high, larger=True, present=None,
          presence=1.0):
  """Present where a U(low, high) factor is beyond its quantile for ``rate``.

  Args:
    factor: (identity, nuisance) -> the factor's value.
    larger: present for large values (else small ones).
    present: optional (identity, nuisance) -> bool, independent of the
      factor, that must also hold; it holds with probability ``presence``.
  """
  fraction = rate / presence
  if larger:
    threshold = high - fraction * (high - low)
  else:
    threshold = low + fraction * (high - low)

  def test(identity, nuisance):
    if present is not None and not present(identity, nuisance):
      return False
    value = factor(identity, nuisance)
    return value > threshold if larger else value < threshold

  return SyntheticAttribute(name, rate, test)


def _hair_colour(identity):
  """The index of the generator's hair palette entry nearest the hair."""
  palette = synthetic.HAIR_PALETTE.tolist()
  hair = identity['hair']
  gaps = [sum((a - b) ** 2 for a, b in zip(entry, hair)) for entry in palette]
  return gaps.index(min(gaps))


def _has_hair(identity, nuisance):
  del nuisance
  return identity['bald'] == 0


_NOT_BALD = 0.92  # synthetic.identity_params draws bald with probability 0.08
# |rotation| of a N(0, 0.14) clipped at 0.35: beyond 0.321 with probability
# 2.2%, below the clip.
_ROTATION_SD = 0.14


def _tilted(rate):
  threshold = _ROTATION_SD * statistics.NormalDist().inv_cdf(1 - rate / 2)
  return SyntheticAttribute(
      'Tilted_Head', rate, lambda p, n: abs(n['rotation']) > threshold)


def _hair_colour_attribute(name, palette_entries, palette_probability):
  return SyntheticAttribute(
      name, palette_probability * _NOT_BALD,
      lambda p, n: _has_hair(p, n) and _hair_colour(p) in palette_entries)


# Ordered by positive rate, from 2% to 50%. The rates are the generator's
# (its draws in synthetic.identity_params and nuisance_params) for the flags
# and follow from the thresholds for the rest; the hair colours are exact up
# to the rare jitter that crosses to another palette entry (< 0.2%), and
# Blurry is within 1% relative of its rate (the blur is rounded to 0.01).
SYNTHETIC_ATTRIBUTES = (
    _tail('Wide_Face', 0.020, lambda p, n: p['face_a'], 0.5, 0.66),
    _tilted(0.022),
    _tail('Long_Nose', 0.025, lambda p, n: p['nose_len'], 0.16, 0.3),
    _tail('Bushy_Eyebrows', 0.028, lambda p, n: p['brow_t'], 0.009, 0.03),
    _tail('Wide_Mouth', 0.031, lambda p, n: p['mouth_w'], 0.11, 0.21),
    _tail('Dark_Image', 0.035, lambda p, n: n['brightness'], 0.6, 1.25,
          larger=False),
    _tail('Big_Lips', 0.039, lambda p, n: p['lip_lower'], 0.012, 0.035),
    _tail('Receding_Hairline', 0.043, lambda p, n: p['hairline'], -0.62,
          -0.2, larger=False, present=_has_hair, presence=_NOT_BALD),
    SyntheticAttribute('Sunglasses', 0.25 * 0.2, lambda p, n: bool(
        p['glasses'] and p['glasses_dark'])),
    _tail('Wide_Set_Eyes', 0.055, lambda p, n: p['eye_dx'], 0.22, 0.32),
    _hair_colour_attribute('Red_Hair', (4,), 0.07),
    _tail('Close_Up', 0.070, lambda p, n: n['scale'], 0.92, 1.18),
    SyntheticAttribute('Bald', 0.08, lambda p, n: p['bald'] == 1),
    SyntheticAttribute('Eyes_Closed', 0.08, lambda p, n: n['eye_open'] < 0.5),
    _hair_colour_attribute('Blond_Hair', (3,), 0.1),
    _tail('Big_Nose', 0.10, lambda p, n: p['nose_w'], 0.045, 0.085),
    _tail('Arched_Eyebrows', 0.11, lambda p, n: p['brow_arch'], 0.0, 0.05),
    _tail('Long_Face', 0.12, lambda p, n: p['face_b'], 0.7, 0.86),
    _hair_colour_attribute('Gray_Hair', (5, 6), 0.15),
    SyntheticAttribute('Beard', 0.15, lambda p, n: p['beard'] > 0),
    SyntheticAttribute('Goatee', 0.15, lambda p, n: p['goatee'] > 0),
    _tail('Blurry', 0.17, lambda p, n: n['blur'], 0.5, 1.8,
          present=lambda p, n: n['blur'] > 0, presence=0.45),
    _tail('Low_Contrast', 0.18, lambda p, n: n['contrast'], 0.6, 1.2,
          larger=False),
    _tail('Mouth_Open', 0.20, lambda p, n: n['mouth_open'], 0.0, 0.035,
          present=lambda p, n: n['mouth_open'] > 0, presence=0.35),
    _tail('Narrow_Eyes', 0.22, lambda p, n: p['eye_h'], 0.038, 0.058,
          larger=False),
    _tail('Long_Hair', 0.24, lambda p, n: p['hair_bottom'], -0.2, 1.1,
          present=_has_hair, presence=_NOT_BALD),
    SyntheticAttribute('Eyeglasses', 0.25, lambda p, n: p['glasses'] == 1),
    _tail('Raised_Eyebrows', 0.26, lambda p, n: n['brow_raise'], -0.015,
          0.035),
    _tail('Big_Eyes', 0.28, lambda p, n: p['eye_w'], 0.08, 0.12),
    SyntheticAttribute('Occluded', 0.30, lambda p, n: n['occluded'] == 1),
    _tail('Noisy', 0.30, lambda p, n: n['noise'], 0.01, 0.06,
          present=lambda p, n: n['noise'] > 0, presence=0.7),
    _tail('Side_Lit', 0.32, lambda p, n: n['light_strength'], 0.0, 0.5),
    _tail('Voluminous_Hair', 0.34, lambda p, n: p['hair_volume'], 0.02, 0.16,
          present=_has_hair, presence=_NOT_BALD),
    _tail('Tapered_Jaw', 0.36, lambda p, n: p['jaw2'], 0.0, 0.35),
    _tail('Bright_Image', 0.38, lambda p, n: n['brightness'], 0.6, 1.25),
    SyntheticAttribute('Mustache', 0.40, lambda p, n: p['moustache'] > 0),
    _tail('Thin_Lips', 0.42, lambda p, n: p['lip_upper'], 0.008, 0.025,
          larger=False),
    _tail('Narrow_Face', 0.44, lambda p, n: p['face_a'], 0.5, 0.66,
          larger=False),
    _tail('Smiling', 0.47, lambda p, n: n['smile'], -0.03, 0.05),
    _tail('Long_Eyebrows', 0.50, lambda p, n: p['brow_len'], 0.09, 0.15),
)


class SyntheticAttributes(NamedTuple):
  """What :func:`synthetic_attributes` returns."""
  images: np.ndarray  # uint8 (num_images, image_size, image_size, 3)
  attributes: np.ndarray  # bool (num_images, num_attributes)
  names: list  # num_attributes str
  positive_rates: np.ndarray  # float64 (num_attributes,)


def _count(value, what, low=0, high=math.inf):
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)) or not low <= value <= high:
    raise ValueError(f'{what} must be an int in [{low}, {high}], got '
                     f'{value!r}')
  return int(value)


def synthetic_attribute_table(num_attributes=len(SYNTHETIC_ATTRIBUTES)):
  """The attributes :func:`synthetic_attributes` labels, by positive rate.

  Fewer than all 40 are spread evenly over :data:`SYNTHETIC_ATTRIBUTES`
  (entries ``round(linspace(0, 39, num_attributes))``), so their rates still
  run from 2% to 50% (one attribute: the 2% one).
  """
  num_attributes = _count(num_attributes, 'num_attributes', 1,
                          len(SYNTHETIC_ATTRIBUTES))
  picks = np.round(np.linspace(0, len(SYNTHETIC_ATTRIBUTES) - 1,
                               num_attributes)).astype(int)
  return [SYNTHETIC_ATTRIBUTES[k] for k in picks]


def synthetic_attribute_labels(num_images, seed=0,
                               num_attributes=len(SYNTHETIC_ATTRIBUTES),
                               first_identity=0):
  """The attributes of :func:`synthetic_attributes`, without the images.

  Returns:
    (attributes bool (num_images, num_attributes), names, positive rates).
  """
  num_images = _count(num_images, 'num_images')
  first_identity = _count(first_identity, 'first_identity')
  table = synthetic_attribute_table(num_attributes)
  attributes = np.zeros((num_images, len(table)), bool)
  for k in range(num_images):
    identity = synthetic.identity_params(seed, first_identity + k)
    nuisance = synthetic.nuisance_params(seed, first_identity + k, 0)
    attributes[k] = [bool(entry.test(identity, nuisance)) for entry in table]
  return (attributes, [entry.name for entry in table],
          np.array([entry.rate for entry in table]))


def synthetic_attributes(num_images, seed=0,
                         num_attributes=len(SYNTHETIC_ATTRIBUTES),
                         image_size=synthetic.IMAGE_SIZE, first_identity=0):
  """A synthetic attribute dataset with CelebA-like imbalance.

  Image k is image 0 of identity ``first_identity + k`` of the synthetic
  face generator (:func:`facejax.data.synthetic.generate_images`), so it and
  its attributes depend on (seed, first_identity + k) only: the first m of n
  images are the m images. Each attribute is a deterministic function of
  the factors the image is rendered from (:data:`SYNTHETIC_ATTRIBUTES`): a
  flag the generator draws (glasses, a beard, a bald head, an occluder, ...),
  the palette entry of the hair colour, or a continuous factor (face width,
  nose length, smile, brightness, blur, ...) beyond the quantile of its law
  that gives the attribute's positive rate. The rates run from 2% to 50%,
  about geometrically, like CelebA's (from 2.2% for Bald to about 50%); where
  CelebA has rates above 50% (No_Beard, Young) the imbalance
  |rate - 0.5| is what matters, and it spans the same range here.

  Args:
    num_images: number of images (int >= 0).
    seed: dataset seed (int >= 0).
    num_attributes: 1 to 40 (see :func:`synthetic_attribute_table`).
    image_size: side of the square images in pixels; fine attributes (a
      slightly narrow eye) need the default 112 to be seen at all.
    first_identity: the identity of image 0 (e.g.
      ``synthetic.EVAL_FIRST_IDENTITY`` for images disjoint from training's).

  Returns:
    :class:`SyntheticAttributes`: images uint8 (num_images, image_size,
    image_size, 3), attributes bool (num_images, num_attributes), names,
    positive_rates float64 (num_attributes,) (the probabilities under the
    generator, not the frequencies in this sample).
  """
  attributes, names, rates = synthetic_attribute_labels(
      num_images, seed, num_attributes, first_identity)
  identities = np.arange(first_identity, first_identity + num_images)
  images = synthetic.generate_images(seed, identities,
                                     np.zeros(num_images, np.int64),
                                     image_size)
  return SyntheticAttributes(images, attributes, names, rates)
