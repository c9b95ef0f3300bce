"""Detect and align a folder of raw photos into ArcFace crops.

    python -m facejax.data.align SRC DST [--size 112] [--min-face 20] \\
        [--largest | --all]

SRC is a folder of photos (usually one sub-folder per identity; the
sub-folders are kept). Every photo is decoded, its faces found by
:class:`facejax.detection.MTCNN` and cropped by the 5-point similarity
alignment of :func:`facejax.data.alignment.align` to the ArcFace template,
the way insightface prepared its training and verification sets. DST
receives:

* ``<identity>/<name>.png``: the largest face of each photo (``--largest``,
  the default), or ``<identity>/<name>_<k>.png`` for every face, in the
  detector's order of descending score (``--all``); PNG, so a crop is not
  compressed twice;
* ``landmarks.txt``: one line per crop in the format
  :func:`facejax.data.sources.read_landmarks` reads (``path x1 y1 ...
  x5 y5``), the template's points, since that is where alignment put the
  detected landmarks; ``ImageFolder(DST, landmarks_file=DST/landmarks.txt)``
  reads the result;
* ``no_face.txt``: the photos in which no face was found (not an error:
  a web-crawled set always has some);
* ``undecodable.txt``: the photos that could not be decoded (truncated,
  not an image), skipped and counted.

Resumable: a photo whose crop already exists is not decoded again, so the
same command after an interruption carries on; ``landmarks.txt`` is
rewritten at the end for every crop in DST. Grayscale, CMYK, palette,
alpha and 16-bit photos are converted to RGB uint8 before detection.
Progress goes to stderr.
"""

import argparse
import os
import sys
import time

import numpy as np

from facejax import command_line
from facejax.data import alignment
from facejax.data import sources

LANDMARKS_FILE = 'landmarks.txt'
NO_FACE_FILE = 'no_face.txt'
UNDECODABLE_FILE = 'undecodable.txt'
CROP_EXTENSION = '.png'

# Photos detected together: the detector batches photos of one size bucket
# on an accelerator, and a chunk bounds the decoded photos held in memory.
_CHUNK = 32


def decode_photo(path):
  """A photo file as an (H, W, 3) uint8 RGB array, or None if undecodable.

  PIL decodes it fully (``load``), so a truncated file is caught here
  rather than half-read. Grayscale, palette, CMYK and alpha images are
  converted to RGB; 16-bit and 32-bit integer images are scaled to 8 bits
  (``value / 257``, clipped), float images clipped to 0..255, since the
  detector and the crops are uint8 RGB.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image.load()
      if image.mode.startswith('I') or image.mode == 'F':
        values = np.asarray(image, dtype=np.float64)
        if image.mode != 'F':
          values = values / 257.0
        grey = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
      return np.asarray(image.convert('RGB'), dtype=np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
    return None


def photo_paths(root):
  """Paths of the photos under ``root``, relative to it, sorted.

  Hidden files and folders are skipped; photos are the files with an
  extension of :data:`facejax.data.sources.IMAGE_EXTENSIONS` (any case).
  """
  found = []
  for folder, folders, names in os.walk(root):
    folders[:] = sorted(f for f in folders if not f.startswith('.'))
    for name in names:
      if (not name.startswith('.') and os.path.splitext(name)[1].lower()
          in sources.IMAGE_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(folder, name), root))
  return sorted(found)


def _crop_stem(relative):
  return os.path.splitext(relative)[0]


def _check_unique_stems(relatives, src):
  """ValueError when two photos would write the same crop (a.jpg, a.png)."""
  seen = {}
  for relative in relatives:
    stem = _crop_stem(relative)
    if stem in seen:
      raise ValueError(
          f'{src}: {seen[stem]} and {relative} would both be cropped to '
          f'{stem}{CROP_EXTENSION}; rename one')
    seen[stem] = relative


def _is_done(dst, relative, all_faces):
  stem = os.path.join(dst, _crop_stem(relative))
  return os.path.exists(stem + ('_0' if all_faces else '') + CROP_EXTENSION)


def _write_png(path, crop):
  """Writes under a temporary name, then renames: a crop that exists is
  whole, which is what resuming relies on."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  partial = path + '.partial'
  Image.fromarray(crop).save(partial, format='PNG')
  os.replace(partial, path)


def largest_face(boxes):
  """The index of the largest of (K, 4) ``x1, y1, x2, y2`` boxes (K >= 1):
  the subject of a portrait, rather than the most confident face."""
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return int(np.argmax(areas))


def crop_faces(image, landmarks, size):
  """Aligned (K, size, size, 3) uint8 crops of ``image`` at (K, 5, 2)
  ``landmarks`` (:func:`facejax.data.alignment.align`)."""
  batch = np.repeat(image[None], len(landmarks), axis=0)
  return np.asarray(alignment.align(batch, np.asarray(landmarks, np.float32),
                                    size))


def _write_lines(path, lines):
  partial = path + '.partial'
  with open(partial, 'w', encoding='utf-8') as f:
    f.writelines(line + '\n' for line in lines)
  os.replace(partial, path)


def write_landmarks_file(dst, size):
  """``dst/landmarks.txt`` for every crop under ``dst``: the template's
  points, where :func:`crop_faces` put the detected landmarks. Returns its
  path and the crop count."""
  points = ' '.join(f'{v:.4f}' for v in alignment.template_for(size).ravel())
  crops = [p for p in photo_paths(dst) if p.endswith(CROP_EXTENSION)]
  path = os.path.join(dst, LANDMARKS_FILE)
  _write_lines(path, [f'{p.replace(os.sep, "/")} {points}' for p in crops])
  return path, len(crops)


def align_folder(src, dst, detector, size=alignment.TEMPLATE_SIZE,
                 all_faces=False, stream=None):
  """Aligns every photo of ``src`` into ``dst`` (the module docstring).

  Args:
    src: the folder of raw photos.
    dst: the output folder (created).
    detector: a :class:`facejax.detection.MTCNN` (anything with
      ``detect_batch``), built once by the caller: it compiles per size
      bucket, so one detector should serve a whole folder.
    size: the side of the square crops.
    all_faces: every face (``<name>_<k>.png``) instead of the largest.
    stream: where progress goes (default stderr; False: nowhere).

  Returns:
    dict(photos, skipped (done before), cropped (photos), faces (crops
    written), no_face, undecodable: lists of relative paths, landmarks_file,
    crops (in DST)).

  Raises:
    FileNotFoundError: ``src`` is not a folder.
    ValueError: no photos in ``src``, ``dst`` inside ``src``, or two photos
      that would write the same crop.
  """
  src, dst = os.fspath(src), os.fspath(dst)
  size = alignment._output_size(size)  # pylint: disable=protected-access
  if not os.path.isdir(src):
    raise FileNotFoundError(f'{src}: photo folder not found')
  inside = os.path.relpath(os.path.realpath(dst), os.path.realpath(src))
  if inside == os.curdir or not inside.startswith(os.pardir):
    raise ValueError(f'{dst}: the output folder must not be inside the '
                     f'photo folder {src}')
  relatives = photo_paths(src)
  if not relatives:
    raise ValueError(f'{src}: no photos in it (extensions '
                     f'{", ".join(sources.IMAGE_EXTENSIONS)})')
  _check_unique_stems(relatives, src)
  os.makedirs(dst, exist_ok=True)
  stream = sys.stderr if stream is None else stream
  todo = [r for r in relatives if not _is_done(dst, r, all_faces)]
  summary = dict(photos=len(relatives), skipped=len(relatives) - len(todo),
                 cropped=0, faces=0, no_face=[], undecodable=[])
  began = time.perf_counter()
  for start in range(0, len(todo), _CHUNK):
    chunk = todo[start:start + _CHUNK]
    decoded = []
    for relative in chunk:
      image = decode_photo(os.path.join(src, relative))
      if image is None:
        summary['undecodable'].append(relative)
      else:
        decoded.append((relative, image))
    found = detector.detect_batch([image for _, image in decoded])
    for (relative, image), (boxes, _, landmarks) in zip(decoded, found):
      if not len(boxes):
        summary['no_face'].append(relative)
        continue
      chosen = (range(len(boxes)) if all_faces else [largest_face(boxes)])
      crops = crop_faces(image, landmarks[list(chosen)], size)
      stem = os.path.join(dst, _crop_stem(relative))
      # With --all the first crop marks the photo done: written last.
      for k in reversed(range(len(crops))):
        _write_png(stem + (f'_{k}' if all_faces else '') + CROP_EXTENSION,
                   crops[k])
      summary['cropped'] += 1
      summary['faces'] += len(crops)
    if stream:
      done = start + len(chunk)
      rate = done / max(time.perf_counter() - began, 1e-9)
      print(f'\r{summary["skipped"] + done}/{len(relatives)} photos '
            f'({summary["skipped"]} done before), {summary["faces"]} faces, '
            f'{len(summary["no_face"])} without a face, '
            f'{len(summary["undecodable"])} undecodable, {rate:.1f} photos/s',
            end='', file=stream, flush=True)
  if stream and todo:
    print(file=stream, flush=True)
  _write_lines(os.path.join(dst, NO_FACE_FILE), summary['no_face'])
  _write_lines(os.path.join(dst, UNDECODABLE_FILE), summary['undecodable'])
  summary['landmarks_file'], summary['crops'] = write_landmarks_file(
      dst, size)
  return summary


# RuntimeError: the detector's WeightsError (no ``mtcnn`` package).
@command_line.reports_errors(OSError, ValueError, RuntimeError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m facejax.data.align',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('src', help='folder of raw photos (identity '
                      'sub-folders kept)')
  parser.add_argument('dst', help='output folder of aligned crops')
  parser.add_argument('--size', type=int, default=alignment.TEMPLATE_SIZE,
                      help='side of the square crops (default 112)')
  parser.add_argument('--min-face', type=float, default=20,
                      help='smallest face to detect, in pixels (default 20)')
  which = parser.add_mutually_exclusive_group()
  which.add_argument('--largest', dest='all_faces', action='store_false',
                     help='the largest face of each photo (default)')
  which.add_argument('--all', dest='all_faces', action='store_true',
                     help='every face, as <name>_<k>.png')
  args = parser.parse_args(argv)
  from facejax import detection  # pylint: disable=g-import-not-at-top
  detector = detection.MTCNN(min_face_size=args.min_face)
  summary = align_folder(args.src, args.dst, detector, args.size,
                         args.all_faces)
  print(f'{summary["photos"]} photos: {summary["cropped"]} cropped '
        f'({summary["faces"]} faces), {summary["skipped"]} done before, '
        f'{len(summary["no_face"])} without a face (listed in '
        f'{os.path.join(args.dst, NO_FACE_FILE)}), '
        f'{len(summary["undecodable"])} undecodable (skipped, listed in '
        f'{os.path.join(args.dst, UNDECODABLE_FILE)}); '
        f'{summary["crops"]} crops in {args.dst}, landmarks in '
        f'{summary["landmarks_file"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
