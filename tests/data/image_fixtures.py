"""Tiny labelled image sets for the pipeline tests, written with tensorflow.

Every image is a flat colour that names it: red = example number % 256,
green = example number // 256, blue = label. Flat images survive flips,
crops, resizing and (almost) JPEG, so a test can tell from a batch exactly
which examples it holds and check their labels.
"""
import numpy as np
import tensorflow as tf

SIZE = 16


def flat_image(number, label, size=SIZE):
  image = np.empty((size, size, 3), np.uint8)
  image[...] = (number % 256, number // 256, label)
  return image


def identify(images):
  """Normalised float images (B, S, S, 3) -> (numbers, labels) from colour."""
  pixels = np.rint((np.asarray(images)[:, SIZE // 2, SIZE // 2] + 1) * 127.5)
  pixels = pixels.astype(int)
  return pixels[:, 0] + 256 * pixels[:, 1], pixels[:, 2]


def encode(image, fmt):
  if fmt == 'png':
    return tf.io.encode_png(image).numpy()
  return tf.io.encode_jpeg(image, quality=100).numpy()


def write_folder(root, counts, fmt='png', size=SIZE):
  """``root/id_<c>/<i>.<fmt>`` with ``counts[c]`` images for identity c.

  Returns:
    ``numbers``: {relative path: example number}, numbered in the order an
    :class:`ImageFolder` lists them (sorted folders, sorted files).
  """
  numbers = {}
  for label, count in enumerate(counts):
    folder = root / f'id_{label:03d}'
    folder.mkdir(parents=True)
    for i in range(count):
      number = len(numbers)
      name = f'{i:03d}.{"jpg" if fmt == "jpeg" else fmt}'
      (folder / name).write_bytes(encode(flat_image(number, label, size),
                                         fmt))
      numbers[f'{folder.name}/{name}'] = number
  return numbers


def corrupt_files(folder):
  """Writes four broken images into ``folder``; returns their names."""
  good_jpeg = encode(flat_image(0, 0, 32) + np.arange(32, dtype=np.uint8)
                     [:, None, None], 'jpeg')
  good_png = encode(np.random.default_rng(0).integers(
      0, 255, (32, 32, 3), np.uint8), 'png')
  broken = {
      'zz_truncated.jpg': good_jpeg[:len(good_jpeg) // 2],
      'zz_garbage.jpg': b'<html>not found</html>',
      'zz_empty.png': b'',
      'zz_bad_crc.png': good_png[:60] + bytes(40) + good_png[100:],
  }
  for name, data in broken.items():
    (folder / name).write_bytes(data)
  return sorted(broken)


def in_memory_images(counts, size=SIZE):
  """(images, labels) as :func:`write_folder` would number them."""
  images, labels = [], []
  for label, count in enumerate(counts):
    for _ in range(count):
      images.append(flat_image(len(images), label, size))
      labels.append(label)
  return np.stack(images), np.array(labels)
