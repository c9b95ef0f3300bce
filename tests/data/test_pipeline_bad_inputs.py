"""Inputs that must not stop a long run, or must stop it clearly.

Decompression bombs (a small file declaring a huge image) are skipped from
their header, before decoding; a bad image is counted once however often it
is met; a folder or broken link named like an image is left out of the
listing; a damaged TFRecord shard stops the pipeline with an error naming it.
"""
import os
import re
import struct
import threading
import zlib

import numpy as np
import pytest
import tensorflow as tf

from facejax.data import augment
from facejax.data import convert
from facejax.data import image_headers
from facejax.data import pipeline
from facejax.data import sources
from tests.data import image_fixtures
from tests.data.image_fixtures import SIZE, identify


def one():
  return pipeline.ProcessShard(0, 1)


def batches(dataset, count):
  return list(dataset.take(count).as_numpy_iterator())


# ------------------------------------------- images of every format, by hand.


def png_declaring(width, height):
  """A PNG whose IHDR declares width x height, with (almost) no pixels."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data)))
  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
          + chunk(b'IDAT', zlib.compress(b'')) + chunk(b'IEND', b''))


def jpeg_declaring(width, height, image):
  """A JPEG of ``image`` whose frame header is changed to width x height."""
  data = bytearray(image_fixtures.encode(image, 'jpeg'))
  frame = data.index(b'\xff\xc0')  # baseline SOF0: length, precision, h, w
  data[frame + 5:frame + 9] = struct.pack('>HH', height, width)
  return bytes(data)


def bmp(image, top_down=False):
  """A 24-bit BMP of uint8 (H, W, 3) ``image``."""
  height, width, _ = image.shape
  row = (3 * width + 3) // 4 * 4
  rows = image[:, :, ::-1] if top_down else image[::-1, :, ::-1]  # BGR
  pixels = b''.join(r.tobytes().ljust(row, b'\0') for r in rows)
  info = struct.pack('<IiiHHIIiiII', 40, width,
                     -height if top_down else height, 1, 24, 0, len(pixels),
                     0, 0, 0, 0)
  return (b'BM' + struct.pack('<IHHI', 54 + len(pixels), 0, 0, 54) + info
          + pixels)


def bmp_declaring(width, height):
  return bmp(np.zeros((1, 1, 3), np.uint8))[:18] + struct.pack(
      '<ii', width, height) + bytes(32)


def gif(width, height, frames=1, screen=None):
  """A GIF of ``frames`` black frames; ``screen``: its (width, height).

  The LZW codes stay 3 bits wide: a clear code before every two pixels
  keeps the decoder's table from growing.
  """
  codes = []
  for pixel in range(width * height):
    codes += [4, 0] if pixel % 2 == 0 else [0]  # 4: clear, 0: black
  codes.append(5)  # end of information
  packed = sum(code << (3 * i) for i, code in enumerate(codes))
  lzw = packed.to_bytes((3 * len(codes) + 7) // 8, 'little')
  blocks = b''.join(bytes([len(lzw[i:i + 255])]) + lzw[i:i + 255]
                    for i in range(0, len(lzw), 255)) + b'\0'
  frame = (b'\x2c' + struct.pack('<HHHHB', 0, 0, width, height, 0)
           + b'\x02' + blocks)
  screen_width, screen_height = screen or (width, height)
  return (b'GIF89a' + struct.pack('<HHBBB', screen_width, screen_height,
                                  0x80, 0, 0)
          + bytes(3) + b'\xff' * 3 + frame * frames + b'\x3b')


def webp(chunk, data):
  """A WebP file whose first chunk is ``chunk`` (holding ``data``)."""
  body = b'WEBP' + chunk + struct.pack('<I', len(data)) + data
  return b'RIFF' + struct.pack('<I', len(body)) + body


def webp_lossy(width, height):  # a VP8 frame header
  return webp(b'VP8 ', b'\0\0\0\x9d\x01\x2a'
              + struct.pack('<HH', width, height) + bytes(8))


def webp_lossless(width, height):  # 14-bit sides minus 1
  return webp(b'VP8L', b'\x2f' + struct.pack(
      '<I', (width - 1) | (height - 1) << 14) + bytes(8))


def webp_extended(width, height):  # a 24-bit canvas minus 1
  return webp(b'VP8X', bytes(4) + (width - 1).to_bytes(3, 'little')
              + (height - 1).to_bytes(3, 'little'))


def jxl_codestream(width, height):
  """A JPEG XL codestream whose SizeHeader declares width x height."""
  bits = used = 0
  for value, count in ((0, 1), (3, 2), (height - 1, 30), (0, 3), (3, 2),
                       (width - 1, 30)):  # not small, 30-bit height, width
    bits |= value << used
    used += count
  return b'\xff\x0a' + bits.to_bytes(9, 'little') + bytes(8)


def jxl_container(codestream, partial=False):
  """``codestream`` in the ISO BMFF container, one jxlc (or jxlp) box."""
  def box(kind, data):
    return struct.pack('>I', 8 + len(data)) + kind + data
  if partial:
    boxed = box(b'jxlp', struct.pack('>I', 0x80000000) + codestream)
  else:
    boxed = box(b'jxlc', codestream)
  return (b'\0\0\0\x0cJXL \r\n\x87\n' + box(b'ftyp', b'jxl \0\0\0\0jxl ')
          + boxed)


# cjxl's own headers (libjxl 0.7, lossless): 40 x 24, and 4000 x 3000 (its
# width given by the 4:3 ratio code).
JXL_40_BY_24 = b'\xff\n\x05\x08\x08(.\x04\x08\x02\x01\x00H\x00'
JXL_4000_BY_3000 = b'\xff\n\xba]\x03\x01\xc5\x85\x08\x02\x01\x00<\x00'


def declared(datas):
  """What the pipeline reads from each encoded image's header."""
  batch = image_headers.batch_declared_pixels(tf.constant(datas))
  return [int(image_headers.declared_pixels(tf.constant(data), declared))
          for data, declared in zip(datas, batch)]


def test_declared_size_of_every_format_decode_image_knows():
  picture = image_fixtures.flat_image(1, 2, size=8)
  wide = np.zeros((24, 40, 3), np.uint8)
  cases = {  # name: (encoded, declared width x height)
      'png': (image_fixtures.encode(wide, 'png'), 960),
      'png bomb': (png_declaring(100_000, 100_000), 10**10),
      'jpeg': (image_fixtures.encode(wide, 'jpeg'), 960),
      'jpeg bomb': (jpeg_declaring(60_000, 50_000, picture), 3 * 10**9),
      'bmp': (bmp(wide), 960),
      'bmp top-down': (bmp(wide, top_down=True), 960),
      'bmp bomb': (bmp_declaring(100_000, -100_000), 10**10),
      'gif': (gif(40, 24), 960),
      'gif, frames add up': (gif(8, 8, frames=3), 192),
      'gif, screen': (gif(1, 1, screen=(65_535, 65_535)), 65_535**2),
      'webp lossy': (webp_lossy(30, 20), 600),
      'webp lossless': (webp_lossless(30, 20), 600),
      'webp extended': (webp_extended(30, 20), 600),
      'webp bomb': (webp_extended(16_384, 16_384), 16_384**2),
      'jxl': (JXL_40_BY_24, 960),
      'jxl, by ratio': (JXL_4000_BY_3000, 12 * 10**6),
      'jxl bomb': (jxl_codestream(100_000, 100_000), 10**10),
      'jxl container': (jxl_container(JXL_40_BY_24), 960),
      'jxl partial box': (jxl_container(jxl_codestream(7, 9), True), 63),
      'unknown': (b'<html>not found</html>', -1),
      'empty': (b'', -1),
      'cut gif': (b'GIF89a\x01', -1),
  }
  names = list(cases)
  got = declared([cases[name][0] for name in names])
  assert dict(zip(names, got)) == {name: cases[name][1] for name in names}
  # Outside tf.data (the converter's validation pass, .bin sets), in
  # batches; a JPEG header libjpeg cannot read does not fail the others.
  some = ('png bomb', 'jpeg', 'gif, frames add up', 'unknown')
  assert image_headers.pixels([cases[name][0] for name in some]).tolist() == [
      cases[name][1] for name in some]
  cut_jpeg = cases['jpeg'][0][:20]
  assert image_headers.pixels([cases['png'][0], cut_jpeg]).tolist() == [
      960, image_headers.UNREADABLE]
  # The writers above make images tensorflow decodes to the declared size.
  for name in ('bmp', 'bmp top-down', 'gif'):
    shape = tf.io.decode_image(cases[name][0], channels=3,
                               expand_animations=False).shape
    assert shape == (24, 40, 3), name


# ------------------------------------------------- skipped before decoding.


def test_images_over_the_limit_are_skipped_before_decoding_and_named(
    tmp_path):
  good = {f'{i}.png': image_fixtures.encode(
      image_fixtures.flat_image(i, 0), 'png') for i in range(3)}
  big = np.zeros((24, 24, 3), np.uint8)  # 576 pixels: valid, over 400
  large = {
      'large.png': image_fixtures.encode(big, 'png'),
      'large.jpg': image_fixtures.encode(big, 'jpeg'),
      'large.bmp': bmp(big),
      'large.gif': gif(24, 24),
      'bomb.png': png_declaring(100_000, 100_000),
      'bomb.webp': webp_extended(16_384, 16_384),
      'bomb.jxl': jxl_codestream(100_000, 100_000),
  }
  for name, data in {**good, **large}.items():
    (tmp_path / name).write_bytes(data)
  source = sources.ImageFiles([tmp_path / name for name in {**good, **large}])

  def evaluate(max_pixels):
    skipped = pipeline.SkippedImages()
    got = batches(pipeline.eval_dataset(
        source, 10, image_size=SIZE, process=one(), skipped=skipped,
        max_pixels=max_pixels), 1)[0]
    kept = {os.path.basename(path)
            for path, mask in zip(source.paths, got['mask']) if mask}
    return kept, skipped

  kept, skipped = evaluate(max_pixels=400)
  assert kept == set(good)
  assert skipped.count == len(large)
  assert dict(skipped.by_reason) == {'over 400 pixels': len(large)}
  assert sorted(os.path.basename(k) for k in skipped.first_keys) == sorted(
      large)
  assert str(skipped).startswith('7 image(s) skipped (7 over 400 pixels): ')
  # Without the limit the real images decode; the bombs' headers are all
  # they have, so they do not.
  kept, skipped = evaluate(max_pixels=None)
  assert kept == set(good) | {'large.png', 'large.jpg', 'large.bmp',
                              'large.gif'}
  assert dict(skipped.by_reason) == {pipeline.UNDECODABLE: 3}


def test_training_skips_bombs_under_the_default_limit(tmp_path):
  numbers = image_fixtures.write_folder(tmp_path, [3, 3])
  bombs = {'id_000/zz_bomb.png': png_declaring(100_000, 100_000),
           'id_001/zz_bomb.jpg': jpeg_declaring(
               10_000, 10_000, image_fixtures.flat_image(0, 0))}
  for name, data in bombs.items():
    (tmp_path / name).write_bytes(data)
  skipped = pipeline.SkippedImages()
  got = batches(pipeline.train_dataset(
      sources.ImageFolder(tmp_path), 3, seed=1, image_size=SIZE,
      process=one(), skipped=skipped,
      augmentation=augment.NO_AUGMENTATION), 4)  # two epochs
  seen = np.concatenate([identify(b['image'])[0] for b in got])
  assert sorted(seen) == sorted(list(numbers.values()) * 2)
  assert dict(skipped.by_reason) == {
      pipeline.too_large(pipeline.DEFAULT_MAX_PIXELS): 2}
  assert pipeline.too_large(pipeline.DEFAULT_MAX_PIXELS) == (
      'over 40,000,000 pixels')
  assert sorted(os.path.relpath(k, tmp_path) for k in skipped.first_keys) == (
      sorted(bombs))
  # P x K: a batch holding a bomb is skipped whole.
  skipped = pipeline.SkippedImages()
  got = batches(pipeline.train_dataset(
      sources.ImageFolder(tmp_path), 4, seed=1, image_size=SIZE,
      process=one(), skipped=skipped, identities_per_batch=2,
      images_per_identity=2), 6)
  for b in got:
    found, labels = identify(b['image'])
    assert set(found) <= set(numbers.values())
    assert labels[0] == labels[1] != labels[2] == labels[3]
  assert set(skipped.by_reason) == {
      pipeline.too_large(pipeline.DEFAULT_MAX_PIXELS)}


# ------------------------------------------------ counted once, thread-safe.


def test_skipped_images_counts_each_image_once_from_many_threads():
  skipped = pipeline.SkippedImages(keep=3)
  keys = [f'bad{i}.jpg' for i in range(5)]

  def meet_them_all():
    for _ in range(50):
      for i, key in enumerate(keys):
        skipped.record(key, 'too big' if i == 4 else pipeline.UNDECODABLE)

  threads = [threading.Thread(target=meet_them_all) for _ in range(8)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert skipped.count == 5
  assert len(skipped.first_keys) == len(set(skipped.first_keys)) == 3
  assert dict(skipped.by_reason) == {pipeline.UNDECODABLE: 4, 'too big': 1}
  assert str(skipped).startswith(
      '5 image(s) skipped (1 too big, 4 undecodable): ')
  assert str(skipped).endswith(', ...')
  assert str(pipeline.SkippedImages()) == 'no images skipped'


# ---------------------------------------------------- what the listing takes.


def test_folders_and_broken_links_named_like_images_are_left_out(tmp_path):
  root = tmp_path / 'faces'
  image_fixtures.write_folder(root, [2, 2])
  (root / 'id_000' / 'x.jpg').mkdir()
  (root / 'id_000' / 'gone.png').symlink_to(tmp_path / 'nowhere.png')
  elsewhere = tmp_path / 'kept.png'  # a link to a real image is followed
  elsewhere.write_bytes(image_fixtures.encode(
      image_fixtures.flat_image(4, 1), 'png'))
  (root / 'id_001' / 'linked.png').symlink_to(elsewhere)
  source = sources.ImageFolder(root)
  assert source.left_out == ('id_000/gone.png', 'id_000/x.jpg')
  assert source.left_out_message == (
      f'{root}: left out 2 entries named like images that are not files '
      '(folders, broken links): id_000/gone.png, id_000/x.jpg')
  assert list(source.relative_paths) == [
      'id_000/000.png', 'id_000/001.png', 'id_001/000.png', 'id_001/001.png',
      'id_001/linked.png']
  got = batches(pipeline.eval_dataset(source, 5, image_size=SIZE,
                                      process=one()), 1)[0]
  assert got['mask'].all()
  np.testing.assert_array_equal(identify(got['image'])[0], range(5))
  train = batches(pipeline.train_dataset(source, 5, image_size=SIZE,
                                         process=one()), 2)
  assert len(train) == 2
  # An identity whose only "image" is a folder has no image.
  (root / 'id_002' / 'y.png').mkdir(parents=True)
  with pytest.raises(ValueError, match='id_002: identity folder has no '
                     r'images .*1 entries named like images are not files'):
    sources.ImageFolder(root)


# ------------------------------------------------------ damaged TFRecords.


@pytest.fixture
def shards(tmp_path):
  """(source, shard paths): 8 images converted into 2 TFRecord shards."""
  image_fixtures.write_folder(tmp_path / 'faces', [4, 4])
  destination = tmp_path / 'records'
  assert convert.main([str(tmp_path / 'faces'), str(destination),
                       '--shards', '2']) == 0
  source = sources.TFRecords(destination)
  return source, [shard.path for shard in source.shards]


def records_of(path):
  """(start, length) of each record's payload in a TFRecord file."""
  data, found, position = open(path, 'rb').read(), [], 0
  while position < len(data):
    (length,) = struct.unpack_from('<Q', data, position)
    found.append((position + 12, length))
    position += 12 + length + 4
  return found


def test_a_flipped_payload_byte_is_an_error_naming_the_shard(shards):
  source, paths = shards
  start, length = records_of(paths[1])[1]
  data = bytearray(open(paths[1], 'rb').read())
  data[start + length // 2] ^= 0x40
  open(paths[1], 'wb').write(bytes(data))
  expected = re.escape(
      f'{paths[1]}: damaged TFRecord shard: 1 readable records where '
      f'dataset.json lists {source.shards[1].num_examples}')
  with pytest.raises(tf.errors.OpError, match=expected):
    list(pipeline.eval_dataset(source, 4, image_size=SIZE,
                               process=one()).as_numpy_iterator())
  with pytest.raises(tf.errors.OpError, match=expected):
    batches(pipeline.train_dataset(source, 4, image_size=SIZE,
                                   process=one()), 4)


def test_a_truncated_shard_is_an_error_naming_it(shards):
  source, paths = shards
  start, length = records_of(paths[0])[-1]
  with open(paths[0], 'r+b') as f:
    f.truncate(start + length // 2)
  with pytest.raises(tf.errors.OpError,
                     match=re.escape(f'{paths[0]}: damaged TFRecord shard')):
    list(pipeline.eval_dataset(source, 4, image_size=SIZE,
                               process=one()).as_numpy_iterator())


def test_converter_leaves_out_bombs_and_a_bin_set_refuses_them(tmp_path):
  # The converter's validation pass and the .bin reader decode outside
  # tf.data: they read the header first too.
  root = tmp_path / 'faces'
  image_fixtures.write_folder(root, [2, 2], fmt='png')
  # A valid image that decodes, over a limit set low for the test.
  (root / 'id_001' / 'zz_large.png').write_bytes(
      image_fixtures.encode(np.zeros((40, 50, 3), np.uint8), 'png'))
  manifest = convert.convert(sources.ImageFolder(root), tmp_path / 'records',
                             1, stream=open(os.devnull, 'w'),
                             max_pixels=40 * 50 - 1)
  assert manifest['num_examples'] == 4
  assert [os.path.basename(k) for k in manifest['skipped']] == [
      'zz_large.png']
  import pickle  # pylint: disable=g-import-not-at-top
  images = [image_fixtures.encode(image_fixtures.flat_image(i, 0), 'png')
            for i in range(2)]
  images[1] = png_declaring(100_000, 100_000)
  path = tmp_path / 'bomb.bin'
  path.write_bytes(pickle.dumps((images, [True]), protocol=4))
  with pytest.raises(ValueError, match='bomb.bin: image 1 cannot be decoded: '
                     'its header declares more than 40,000,000 pixels'):
    sources.verification_bin(path)
