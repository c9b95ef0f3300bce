"""Embed image files with a trained run's backbone.

    python -m eval.extract --checkpoint runs/default --images faces/ \\
        --out runs/default/features/faces [--no-flip] [--step N]

``--images`` is a folder (every image under it, sorted by path) or a UTF-8
text file with one image path per line, relative to ``--root`` (default
the list's folder; ``#`` starts a comment). A listed path must stay under
the root: an absolute path or one that climbs out with ``..`` is refused,
naming the list's line (:func:`facejax.data.files.confine`). Writes
``features.npy`` (N, D) float32 L2-normalised, ``files.txt`` and
``extract.json`` into ``--out``; an interrupted run resumes where it
stopped (blocks of ``--block-size`` images).
"""

import argparse
import os
import sys

from facejax import command_line
from facejax import inference
from facejax.data import files
from facejax.data import sources


def image_paths(images, root=None):
  """The image files of a folder (recursive, sorted) or of a list file.

  Raises:
    FileNotFoundError: ``images`` is neither a folder nor a file.
    ValueError: no image found; a list that is not UTF-8, or names a path
      that would leave ``root`` (its line named).
  """
  if os.path.isdir(images):
    found = []
    for folder, _, names in os.walk(images):
      found.extend(os.path.join(folder, name) for name in names
                   if name.lower().endswith(sources.IMAGE_EXTENSIONS))
    if not found:
      raise ValueError(f'{images}: no image files under it')
    return sorted(found)
  if not os.path.isfile(images):
    raise FileNotFoundError(f'{images}: neither a folder nor a list file')
  root = root or os.path.dirname(os.path.abspath(images))
  paths = []
  for number, line in files.read_text_lines(images):
    entry = line.split('#', 1)[0].strip()
    if entry:
      paths.append(files.confine(root, entry, source=images, line=number))
  if not paths:
    raise ValueError(f'{images}: the list names no image')
  return paths


def add_checkpoint_flags(parser, required=True):
  """The flags every evaluation job shares: which run, how to embed."""
  parser.add_argument('--checkpoint', required=required,
                      help='the --workdir of a `python -m train` run')
  parser.add_argument('--step', type=int, default=None,
                      help='checkpoint step (default: the newest; a damaged '
                      'newest step is refused, naming the newest intact one)')
  parser.add_argument('--batch-size', type=int, default=None,
                      help='images per batch over all devices')
  parser.add_argument('--no-flip', dest='flip', action='store_false',
                      help='no flip test-time augmentation')


@command_line.reports_errors(FileNotFoundError, ValueError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m eval.extract',
                                   description=__doc__.split('\n')[0])
  add_checkpoint_flags(parser)
  parser.add_argument('--images', required=True,
                      help='a folder of images or a list file')
  parser.add_argument('--root', default=None,
                      help='folder that relative paths of a list start from')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--block-size', type=int, default=10_000)
  args = parser.parse_args(argv)
  paths = image_paths(args.images, args.root)
  embedder = inference.Embedder.from_workdir(
      args.checkpoint, args.step, batch_size=args.batch_size)
  features = inference.extract(embedder, paths, args.out, flip=args.flip,
                               block_size=args.block_size)
  print(f'{features.shape[0]} features of dimension {features.shape[1]} '
        f'(step {embedder.step}) in '
        f'{os.path.join(args.out, inference.FEATURES_FILE)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
