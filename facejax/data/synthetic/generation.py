"""Synthetic datasets: images of (identity, index), labelled sets, pairs.

Training identities conventionally start at 0 and evaluation identities at
``EVAL_FIRST_IDENTITY``, so the two never overlap. Images are rendered 24 at
a time, grouped by eye height so that the shared windows stay small (the
bytes do not depend on the grouping: facejax.data.synthetic.rendering).
"""
import numpy as np

from facejax.data.synthetic import factors
from facejax.data.synthetic import rendering

EVAL_FIRST_IDENTITY = 100_000
# Images rendered together (any value gives the same bytes; 24 was fastest)
# and images whose parameters are drawn and sorted together.
_CHUNK = 24
_BLOCK = 4096


def generate_images(seed, identities, indices, image_size=rendering.IMAGE_SIZE):
  """Images of (identity, index) pairs: uint8 (N, image_size, image_size, 3).

  Args:
    seed: dataset seed (int >= 0).
    identities: N identity numbers (ints >= 0).
    indices: N image numbers within their identities (ints >= 0).
    image_size: side of the square images in pixels.
  """
  identities, indices = (_index_list(v, what) for v, what in (
      (identities, 'identities'), (indices, 'indices')))
  if len(identities) != len(indices):
    raise ValueError(f'{len(identities)} identities but {len(indices)} '
                     'indices')
  out = np.empty((len(identities), image_size, image_size, 3), np.uint8)
  cache = {}
  for block in range(0, len(identities), _BLOCK):
    people, nuisances = [], []
    for identity, index in zip(identities[block:block + _BLOCK],
                               indices[block:block + _BLOCK]):
      if identity not in cache:
        cache[identity] = factors.identity_params(seed, identity)
      people.append(cache[identity])
      nuisances.append(factors.nuisance_params(seed, identity, index))
    # Images with their eyes at similar heights share tighter windows (the
    # bytes do not depend on the grouping).
    order = np.argsort([n['ty'] + n['scale'] * (p['face_cy'] + p['eye_y'])
                        for p, n in zip(people, nuisances)], kind='stable')
    for start in range(0, len(order), _CHUNK):
      part = order[start:start + _CHUNK]
      out[block + part] = rendering.render_batch(
          [people[k] for k in part], [nuisances[k] for k in part],
          image_size)
  return out


def _index_list(values, what):
  """A 1-D sequence of ints as a list; TypeError unless they are ints."""
  values = np.asarray(values).reshape(-1)
  if values.size and not np.issubdtype(values.dtype, np.integer):
    raise TypeError(f'{what} must be integers, got dtype {values.dtype}')
  return values.tolist()


def generate_image(seed, identity, index, image_size=rendering.IMAGE_SIZE):
  """Image ``index`` of ``identity``: uint8 (image_size, image_size, 3)."""
  return generate_images(seed, [identity], [index], image_size)[0]


def generate(num_identities, images_per_identity, seed=0, first_identity=0,
             image_size=rendering.IMAGE_SIZE):
  """A labelled dataset, identity-major.

  Args:
    num_identities: number of identities (classes).
    images_per_identity: images per identity, indices 0, 1, ...
    seed: dataset seed (int >= 0).
    first_identity: the identity of label 0 (``EVAL_FIRST_IDENTITY`` for
      identities disjoint from training's).
    image_size: side of the square images in pixels.

  Returns:
    (images uint8 (N, image_size, image_size, 3), labels int32 (N,)) with
    N = num_identities * images_per_identity and label ``k`` for identity
    ``first_identity + k``.
  """
  factors.check_index(num_identities, 'num_identities')
  factors.check_index(images_per_identity, 'images_per_identity')
  factors.check_index(first_identity, 'first_identity')
  labels = np.repeat(np.arange(num_identities, dtype=np.int32),
                     images_per_identity)
  indices = np.tile(np.arange(images_per_identity), num_identities)
  return generate_images(seed, labels + first_identity, indices,
                         image_size), labels


def pair_list(num_pairs, seed=0, first_identity=EVAL_FIRST_IDENTITY,
              num_identities=None, images_per_identity=10):
  """An LFW-style verification pair list (no pixels).

  Pair ``k`` is a same-identity pair when ``k`` is even, so any run of an
  even number of pairs (an LFW fold of 600) is balanced. Same pairs take two
  different images of one identity; different pairs take two different
  identities.

  Args:
    num_pairs: number of pairs.
    seed: dataset seed (int >= 0); the list is a function of all arguments.
    first_identity: the first identity the pairs draw from.
    num_identities: how many identities they draw from (default num_pairs,
      at least 2).
    images_per_identity: how many images per identity they draw from (>= 2).

  Returns:
    (identity_a, index_a, identity_b, index_b) int64 arrays and issame bool,
    each (num_pairs,).
  """
  factors.check_index(num_pairs, 'num_pairs')
  factors.check_index(first_identity, 'first_identity')
  factors.check_index(images_per_identity, 'images_per_identity')
  if num_identities is None:
    num_identities = max(num_pairs, 2)
  factors.check_index(num_identities, 'num_identities')
  if num_identities < 2 or images_per_identity < 2:
    raise ValueError('pairs need >= 2 identities and >= 2 images each, got '
                     f'{num_identities} and {images_per_identity}')
  rng = factors.stream_rng(seed, factors.PAIR_STREAM, first_identity,
                           num_identities, images_per_identity, num_pairs)
  issame = np.arange(num_pairs) % 2 == 0
  id_a = rng.integers(num_identities, size=num_pairs)
  # A different identity: shift by 1 .. num_identities - 1.
  id_b = (id_a + rng.integers(1, num_identities, size=num_pairs)) % (
      num_identities)
  id_b = np.where(issame, id_a, id_b)
  index_a = rng.integers(images_per_identity, size=num_pairs)
  index_b = (index_a + rng.integers(1, images_per_identity, size=num_pairs)) % (
      images_per_identity)
  other = rng.integers(images_per_identity, size=num_pairs)
  index_b = np.where(issame, index_b, other)
  return (id_a + first_identity, index_a, id_b + first_identity, index_b,
          issame)


def verification_pairs(num_pairs, seed=0, first_identity=EVAL_FIRST_IDENTITY,
                       num_identities=None, images_per_identity=10,
                       image_size=rendering.IMAGE_SIZE):
  """The images of :func:`pair_list`: (images_a, images_b, issame).

  images_a and images_b are uint8 (num_pairs, image_size, image_size, 3);
  issame is bool (num_pairs,), True for every even pair.
  """
  id_a, index_a, id_b, index_b, issame = pair_list(
      num_pairs, seed, first_identity, num_identities, images_per_identity)
  images = generate_images(seed, np.concatenate([id_a, id_b]),
                           np.concatenate([index_a, index_b]), image_size)
  return images[:num_pairs], images[num_pairs:], issame
