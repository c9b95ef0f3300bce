"""Face attribute datasets as sources, one split at a time.

``config.data.source`` names the dataset:

  ``synthetic_attributes``  the synthetic attribute set
                            (:func:`facejax.data.celeba.synthetic_attributes`):
                            train, val and test are disjoint identity ranges
                            (:data:`SYNTHETIC_FIRST_IDENTITY`), sizes from
                            ``data.synthetic_attributes``
  ``celeba:<root>``         CelebA in its published layout under ``<root>``
                            (:class:`facejax.data.celeba.CelebA`; images
                            read lazily from ``img_align_celeba/``)
  ``tfds:celeb_a``          tensorflow-datasets' ``celeb_a``, prepared (or
                            preparable offline) under ``data.tfds_data_dir``
                            (original files in ``data.tfds_manual_dir``)
                            (decoded into memory: limit it with
                            ``data.max_examples``)

Every split comes back as a random-access source (:mod:`facejax.data.
sources`) whose examples carry ``attributes`` (bool (A,)) besides the
image; identity labels are all 0 (attributes are the targets).
``data.max_examples`` (``{'train': n, 'val': n, 'test': n}``, 0 for all)
keeps the first n images of a CelebA split.
"""

from facejax.data import celeba
from facejax.data import sources

SPLITS = tuple(celeba.SPLITS)  # 'train', 'val', 'test'
SYNTHETIC = 'synthetic_attributes'
CELEBA_PREFIX = 'celeba:'
TFDS = 'tfds:celeb_a'
# Identity k of a split is image 0 of synthetic identity first + k, so the
# splits never share a face (and none is an identity set's identity:
# those start at 0, 100,000, 200,000 and 300,000 and are far smaller).
SYNTHETIC_FIRST_IDENTITY = {'train': 1_000_000, 'val': 2_000_000,
                            'test': 3_000_000}


def is_attribute_dataset(spec):
  """True when ``data.source`` names an attribute dataset (above)."""
  return spec in (SYNTHETIC, TFDS) or spec.startswith(CELEBA_PREFIX)


def _limit(data_config, split):
  limit = data_config.get('max_examples', {}).get(split, 0) or None
  if limit is not None and limit < 1:
    raise ValueError(f'data.max_examples.{split} must be >= 0, got {limit}')
  return limit


def open_split(data_config, split):
  """The ``split`` ('train', 'val' or 'test') of ``data_config.source``.

  Raises:
    ValueError: an unknown split or source, naming it.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  spec = data_config.source
  name = f'{spec} {split}'
  if spec == SYNTHETIC:
    c = data_config.synthetic_attributes
    data = celeba.synthetic_attributes(
        c[split], seed=c.get('seed', 0),
        num_attributes=c.get('num_attributes', len(
            celeba.SYNTHETIC_ATTRIBUTES)),
        image_size=c.get('image_size', 112),
        first_identity=SYNTHETIC_FIRST_IDENTITY[split])
    return sources.InMemory(data.images, [0] * len(data.images), name=name,
                            attributes=data.attributes,
                            attribute_names=data.names)
  limit = _limit(data_config, split)
  if spec.startswith(CELEBA_PREFIX):
    paths, attributes = celeba.load_split(spec[len(CELEBA_PREFIX):], split)
    return sources.ImageFiles(paths[:limit], name=name,
                              attributes=attributes[:limit],
                              attribute_names=celeba.ATTRIBUTE_NAMES)
  if spec == TFDS:
    images, attributes = celeba.load_tfds(
        split, data_dir=data_config.get('tfds_data_dir') or None,
        manual_dir=data_config.get('tfds_manual_dir') or None,
        max_examples=limit)
    return sources.InMemory(images, [0] * len(images), name=name,
                            attributes=attributes,
                            attribute_names=celeba.ATTRIBUTE_NAMES)
  raise ValueError(f'data.source={spec!r} is not an attribute dataset; use '
                   f'{SYNTHETIC!r}, {CELEBA_PREFIX!r}<root> or {TFDS!r}')
