"""Synthetic faces as files: image folders, contact sheets, the command line.

    python -m facejax.data.synthetic export DIR [--identities 100] ...
    python -m facejax.data.synthetic sheet sheet.png [--identities 8] ...

An image folder lets every path that reads images from disk run without a
real dataset. PNGs are written with zlib + struct, no PIL.
"""
import argparse
import os
import struct
import zlib

import numpy as np

from facejax.data.synthetic import factors
from facejax.data.synthetic import generation
from facejax.data.synthetic import rendering


def encode_png(image):
  """PNG bytes of a uint8 (H, W, 3) RGB image (zlib + struct, no filters)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f'need uint8 (H, W, 3), got {image.dtype} {image.shape}')
  height, width = image.shape[:2]
  rows = np.zeros((height, 1 + width * 3), np.uint8)  # filter byte 0: none
  rows[:, 1:] = image.reshape(height, -1)

  def chunk(kind, data):
    body = kind + data
    return struct.pack('>I', len(data)) + body + struct.pack(
        '>I', zlib.crc32(body))

  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
          + chunk(b'IDAT', zlib.compress(rows.tobytes(), 6))
          + chunk(b'IEND', b''))


def identity_name(identity):
  """The sub-folder name of an identity: zero-padded, so it sorts."""
  return f'{identity:07d}'


def export_image_folder(root, num_identities, images_per_identity, seed=0,
                        first_identity=0, format='png',
                        image_size=rendering.IMAGE_SIZE):
  """Writes ``root/<identity_name>/<index>.png``, one folder per identity.

  Files that exist are skipped, so an interrupted export resumes; each file
  is written under a temporary name and renamed, so none is left half
  written.

  Args:
    root: output folder (created if missing).
    num_identities, images_per_identity, seed, first_identity, image_size:
      as in :func:`generation.generate`.
    format: 'png' (the only one).

  Returns:
    The number of files written.
  """
  if format != 'png':
    raise ValueError(f"format must be 'png', got {format!r}")
  factors.check_index(first_identity, 'first_identity')
  missing = []
  for identity in range(first_identity, first_identity + num_identities):
    folder = os.path.join(root, identity_name(identity))
    os.makedirs(folder, exist_ok=True)
    for index in range(images_per_identity):
      path = os.path.join(folder, f'{index:04d}.png')
      if not os.path.exists(path):
        missing.append((identity, index, path))
  for start in range(0, len(missing), 256):
    part = missing[start:start + 256]
    images = generation.generate_images(
        seed, [m[0] for m in part], [m[1] for m in part], image_size)
    for (_, _, path), image in zip(part, images):
      temporary = path + '.tmp'
      with open(temporary, 'wb') as f:
        f.write(encode_png(image))
      os.replace(temporary, path)
  return len(missing)


def contact_sheet(seed=0, identities=8, images=8, first_identity=0,
                  image_size=rendering.IMAGE_SIZE):
  """One row per identity, one column per image: uint8 (H, W, 3)."""
  grid, _ = generation.generate(identities, images, seed, first_identity,
                                image_size)
  grid = grid.reshape(identities, images, image_size, image_size, 3)
  return grid.transpose(0, 2, 1, 3, 4).reshape(
      identities * image_size, images * image_size, 3)


def main(argv=None):
  """Command line: ``export`` or ``sheet`` (see ``--help``)."""
  parser = argparse.ArgumentParser(
      prog='python -m facejax.data.synthetic',
      description='An embedded synthetic face-identity dataset, drawn '
      'procedurally in numpy.')
  commands = parser.add_subparsers(dest='command', required=True)
  export = commands.add_parser('export', help='write an image folder')
  export.add_argument('root')
  export.add_argument('--identities', type=int, default=100)
  export.add_argument('--images', type=int, default=20)
  export.add_argument('--first-identity', type=int, default=0)
  sheet = commands.add_parser('sheet', help='write a contact sheet PNG')
  sheet.add_argument('path')
  sheet.add_argument('--identities', type=int, default=8)
  sheet.add_argument('--images', type=int, default=8)
  sheet.add_argument('--first-identity', type=int, default=0)
  for command in (export, sheet):
    command.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  if args.command == 'export':
    written = export_image_folder(args.root, args.identities, args.images,
                                  args.seed, args.first_identity)
    print(f'wrote {written} images under {args.root}')
  else:
    with open(args.path, 'wb') as f:
      f.write(encode_png(contact_sheet(args.seed, args.identities,
                                       args.images, args.first_identity)))
    print(f'wrote {args.path}')
