"""Face detection speed: facejax's MTCNN against the ``mtcnn`` package.

    python -m bench.detect [--rounds 5] [--sets photos,LFW-size]
                           [--photos N] [--markdown]

Both detectors run the same networks with the same weights (the ``mtcnn``
package's) on the same photos, in the same process, rounds alternating so
that the machine's drift hits both; images/s are medians over rounds:

* facejax, batched: ``facejax.detection.MTCNN().detect_batch(photos)`` on
  each set (photos of one bucket run together);
* facejax, one at a time: ``detect(photo)`` per photo;
* the package: ``mtcnn.MTCNN().detect_faces(photo, threshold_onet=0.7)``
  per photo (its fastest use: its list input pads the photos to one size
  and was slower), at facejax's O-Net threshold so both do the same work.

Before timing, each detector runs every set once (compilation, TF
tracing), and the faces found are compared (same faces at score >= 0.9,
box IoU).

The photos are real faces that ship with our dependencies, and composites
of them, built here (the detector's tests use the same builders):

* "photos": matplotlib's ``grace_hopper.jpg`` (600 x 512) and
  scikit-image's ``astronaut`` (512 x 512; when scikit-image is installed)
  and composites of 600 x 512: the faces pasted at known places and scales,
  some mirrored, on a plain or a noisy background (:data:`COMPOSITES`);
* "LFW-size": 250 x 250 crops centred on every face of those photos,
  framed as LFW's (the face box about 45% of the side), the size
  ``eval.lfw --align`` detects on.

"CPU time" is the process's CPU seconds per image (``time.process_time``,
every thread): on a shared machine wall clock moves with the other
processes' load, CPU seconds much less.
"""

import argparse
import dataclasses
import os
import statistics
import time

import numpy as np

from bench import table

# The faces of the two real photos as the detector finds them (facejax's
# MTCNN, equal to the mtcnn package's to 1e-3 pixels): box (x1, y1, x2, y2)
# and landmarks (x, y) in the ArcFace template's order. The composites'
# true landmarks are these, moved as the face is pasted.
GRACE_HOPPER_FACE = (
    (178.36, 109.90, 351.41, 329.82),
    ((220.42, 190.16), (308.18, 186.05), (268.29, 237.37), (231.71, 277.02),
     (303.64, 272.91)))
ASTRONAUT_FACE = (
    (181.60, 63.73, 264.55, 171.08),
    ((203.54, 100.10), (245.41, 102.24), (224.22, 126.42), (201.79, 138.59),
     (244.39, 140.38)))
# Landmark order after a mirror: the eyes and the mouth corners swap.
MIRRORED_ORDER = (1, 0, 2, 4, 3)
COMPOSITE_SIZE = (600, 512)  # (height, width), grace_hopper.jpg's
LFW_SIZE = 250


def grace_hopper():
  """matplotlib's sample photo of Grace Hopper: (600, 512, 3) uint8 RGB."""
  import matplotlib.cbook  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
    return np.asarray(Image.open(f).convert('RGB'))


def astronaut():
  """scikit-image's astronaut (Eileen Collins), or None without skimage."""
  try:
    from skimage import data  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return np.asarray(data.astronaut())


@dataclasses.dataclass(frozen=True)
class Paste:
  """One face pasted into a composite.

  Attributes:
    source: 'grace_hopper' or 'astronaut'.
    scale: the patch's resize factor.
    x, y: where the patch's top-left pixel goes.
    mirror: flip the patch left to right.
  """
  source: str
  scale: float
  x: int
  y: int
  mirror: bool = False


@dataclasses.dataclass(frozen=True)
class Composite:
  """A canvas of ``COMPOSITE_SIZE`` with faces pasted on a background.

  Attributes:
    name: for tables and messages.
    background: 'plain' (one colour) or 'noise' (Gaussian, sd 25).
    pastes: the faces.
  """
  name: str
  background: str
  pastes: tuple


COMPOSITES = (
    Composite('three on plain', 'plain', (
        Paste('grace_hopper', 0.5, 20, 30),
        Paste('grace_hopper', 0.35, 300, 40, mirror=True),
        Paste('grace_hopper', 0.6, 150, 300))),
    Composite('four on noise', 'noise', (
        Paste('grace_hopper', 0.3, 30, 40),
        Paste('grace_hopper', 0.45, 250, 60, mirror=True),
        Paste('grace_hopper', 0.55, 40, 330),
        Paste('grace_hopper', 0.4, 330, 380))),
    Composite('two people on noise', 'noise', (
        Paste('astronaut', 0.9, 40, 60),
        Paste('grace_hopper', 0.45, 280, 250, mirror=True))),
)
# Around the face box, the patch takes this fraction of its side more on
# each side (hair, chin and some background come along).
_PATCH_MARGIN = 0.25


def _sources():
  sources = {'grace_hopper': (grace_hopper(), GRACE_HOPPER_FACE)}
  photo = astronaut()
  if photo is not None:
    sources['astronaut'] = (photo, ASTRONAUT_FACE)
  return sources


def _resize(image, width, height):
  """PIL's bilinear resize (pixel centres map as (x + 0.5) s - 0.5)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  return np.asarray(Image.fromarray(image).resize((width, height),
                                                  Image.BILINEAR))


def paste_face(canvas, photo, face, paste):
  """Pastes ``photo``'s ``face`` into ``canvas`` (in place).

  Returns:
    The face's true ``(box (4,), landmarks (5, 2))`` in the canvas: the
    source's, moved by the crop, the resize (pixel centres: ``x' = (x -
    left + 0.5) s - 0.5``), the mirror (``x' = width - 1 - x'``, with the
    left/right landmarks swapped) and the offset.
  """
  box, landmarks = (np.asarray(a, np.float64) for a in face)
  margin = _PATCH_MARGIN * max(box[2] - box[0], box[3] - box[1])
  left = int(max(0, np.floor(box[0] - margin)))
  top = int(max(0, np.floor(box[1] - margin)))
  right = int(min(photo.shape[1], np.ceil(box[2] + margin)))
  bottom = int(min(photo.shape[0], np.ceil(box[3] + margin)))
  width = round((right - left) * paste.scale)
  height = round((bottom - top) * paste.scale)
  patch = _resize(photo[top:bottom, left:right], width, height)
  scale = np.array([width / (right - left), height / (bottom - top)])

  def move(points):
    moved = (points - [left, top] + 0.5) * scale - 0.5
    if paste.mirror:
      moved[:, 0] = width - 1 - moved[:, 0]
    return moved + [paste.x, paste.y]

  if paste.mirror:
    patch = patch[:, ::-1]
  if (paste.y + height > canvas.shape[0]
      or paste.x + width > canvas.shape[1]):
    raise ValueError(f'{paste} does not fit a canvas of {canvas.shape[:2]}')
  canvas[paste.y:paste.y + height, paste.x:paste.x + width] = patch
  corners = move(box.reshape(2, 2))
  moved_box = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
  moved_landmarks = move(landmarks)
  if paste.mirror:
    moved_landmarks = moved_landmarks[list(MIRRORED_ORDER)]
  return moved_box, moved_landmarks


def composite(spec, sources=None, seed=0):
  """The composite ``spec`` and its faces' true boxes and landmarks.

  Returns:
    ``(image (600, 512, 3) uint8, boxes (K, 4), landmarks (K, 5, 2))``
    (float64), or None when a source photo is unavailable (scikit-image
    not installed).
  """
  sources = _sources() if sources is None else sources
  if any(paste.source not in sources for paste in spec.pastes):
    return None
  rng = np.random.default_rng(seed)
  if spec.background == 'plain':
    canvas = np.empty(COMPOSITE_SIZE + (3,), np.uint8)
    canvas[:] = (96, 128, 112)
  else:
    canvas = np.clip(rng.normal(128, 25, COMPOSITE_SIZE + (3,)), 0,
                     255).astype(np.uint8)
  boxes, landmarks = [], []
  for paste in spec.pastes:
    box, points = paste_face(canvas, *sources[paste.source], paste)
    boxes.append(box)
    landmarks.append(points)
  return canvas, np.array(boxes), np.array(landmarks)


def lfw_size_crop(image, box, size=LFW_SIZE):
  """A ``size`` x ``size`` crop centred on ``box``, the box 45% of it.

  Parts of the crop outside the image are black, as in LFW's originals.
  """
  box = np.asarray(box, np.float64)
  side = max(box[2] - box[0], box[3] - box[1]) / 0.45
  centre = (box[:2] + box[2:]) / 2
  left, top = np.round(centre - side / 2).astype(int)
  side = int(round(side))
  padded = np.zeros((side, side, 3), np.uint8)
  x0, y0 = max(0, left), max(0, top)
  x1 = min(image.shape[1], left + side)
  y1 = min(image.shape[0], top + side)
  padded[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
  return _resize(padded, size, size)


def photo_sets():
  """{'photos': [...], 'LFW-size': [...]}: the uint8 RGB photos timed."""
  sources = _sources()
  photos, faces = [], []
  for photo, face in sources.values():
    photos.append(photo)
    faces.append((photo, face[0]))
  for spec in COMPOSITES:
    built = composite(spec, sources)
    if built is not None:
      photos.append(built[0])
      faces.extend((built[0], box) for box in built[1])
  return {'photos': photos,
          'LFW-size': [lfw_size_crop(photo, box) for photo, box in faces]}


def box_iou(a, b):
  """IoU of two (4,) boxes."""
  width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = width * height
  union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
           - inter)
  return inter / union if union > 0 else 0.0


def package_faces(detector, photo, **kwargs):
  """The package's faces as ``(boxes (K, 4), scores (K,), landmarks (K, 5,
  2))``, at facejax's O-Net threshold (0.7); ``kwargs`` go to its
  ``detect_faces`` (e.g. ``min_face_size``)."""
  found = detector.detect_faces(photo, threshold_onet=0.7, box_format='xyxy',
                                output_type='numpy', **kwargs)
  found = np.asarray(found, np.float64).reshape(-1, 16)
  landmarks = np.stack([found[:, 6:11], found[:, 11:16]], axis=-1)
  return found[:, 1:5], found[:, 5], landmarks


def _agreement(ours, theirs):
  """(faces found by both at >= 0.9, found by one only, worst IoU)."""
  both, one, worst = 0, 0, 1.0
  for (our_boxes, our_scores, _), (boxes, scores, _) in zip(ours, theirs):
    mine = [b for b, s in zip(our_boxes, our_scores) if s >= 0.9]
    other = [b for b, s in zip(boxes, scores) if s >= 0.9]
    for box in mine:
      best = max((box_iou(box, b) for b in other), default=0.0)
      if best >= 0.5:
        both += 1
        worst = min(worst, best)
      else:
        one += 1
    one += sum(max((box_iou(b, m) for m in mine), default=0.0) < 0.5
               for b in other)
  return both, one, worst


def _parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=5,
                      help='timed rounds (alternating); medians reported')
  parser.add_argument('--sets', default='photos,LFW-size',
                      help='comma-separated photo sets to time')
  parser.add_argument('--photos', type=int, default=None,
                      help='time only the first N photos of each set')
  parser.add_argument('--markdown', action='store_true')
  args = parser.parse_args(argv)
  if args.rounds < 1 or (args.photos is not None and args.photos < 1):
    parser.error('--rounds and --photos must be >= 1')
  return args


def _timed(function):
  start, cpu_start = time.perf_counter(), time.process_time()
  function()
  return time.perf_counter() - start, time.process_time() - cpu_start


def main(argv=None):
  """Times both detectors; prints and returns the rows.

  Returns:
    A list of dicts: set, method, images, images_per_second and
    cpu_ms_per_image (medians over rounds), faces (found at score >= 0.9),
    speedup (images/s over the package's on the same set).
  """
  args = _parse_args(argv)
  from mtcnn import MTCNN as PackageMTCNN  # pylint: disable=import-outside-toplevel
  from facejax import detection  # pylint: disable=import-outside-toplevel
  sets = photo_sets()
  names = [name.strip() for name in args.sets.split(',') if name.strip()]
  unknown = set(names) - set(sets)
  if unknown:
    raise SystemExit(f'unknown --sets {sorted(unknown)}; have {sorted(sets)}')
  ours = detection.MTCNN()
  theirs = PackageMTCNN()
  methods = {
      'facejax, batched': lambda photos: ours.detect_batch(photos),
      'facejax, one at a time': lambda photos: [ours.detect(p)
                                                for p in photos],
      'mtcnn package': lambda photos: [package_faces(theirs, p)
                                       for p in photos],
  }
  cores = len(os.sched_getaffinity(0))
  print(f'{cores} cores; load average {os.getloadavg()[0]:.1f}')
  rows = []
  for name in names:
    photos = sets[name][:args.photos]
    found = {method: run(photos) for method, run in methods.items()}
    both, one, worst = _agreement(found['facejax, batched'],
                                  found['mtcnn package'])
    print(f'{name}: {len(photos)} photos; faces at score >= 0.9 found by '
          f'both {both}, by one only {one}; worst IoU {worst:.3f}')
    wall = {method: [] for method in methods}
    cpu = {method: [] for method in methods}
    for _ in range(args.rounds):
      for method, run in methods.items():
        seconds, cpu_seconds = _timed(lambda run=run: run(photos))
        wall[method].append(seconds)
        cpu[method].append(cpu_seconds)
      print(f'  round {len(wall["mtcnn package"])}: ' + ', '.join(
          f'{method} {len(photos) / wall[method][-1]:.1f} img/s'
          for method in methods)
            + f'; load average {os.getloadavg()[0]:.1f}', flush=True)
    package_rate = len(photos) / statistics.median(wall['mtcnn package'])
    for method in methods:
      rate = len(photos) / statistics.median(wall[method])
      faces = sum(int(np.sum(np.asarray(scores) >= 0.9))
                  for _, scores, _ in found[method])
      rows.append(dict(
          set=name, method=method, images=len(photos),
          images_per_second=rate,
          cpu_ms_per_image=1000 * statistics.median(cpu[method])
          / len(photos),
          faces=faces, speedup=rate / package_rate))
  print_table(rows, args.markdown)
  return rows


def print_table(rows, markdown):
  """The rows as aligned text, or as a markdown table."""
  header = ('photos', 'method', 'images', 'faces (score >= 0.9)',
            'images/s', 'CPU ms / image', 'vs the package')
  lines = [(row['set'], row['method'], str(row['images']), str(row['faces']),
            f'{row["images_per_second"]:.1f}',
            f'{row["cpu_ms_per_image"]:.0f}', f'{row["speedup"]:.2f}x')
           for row in rows]
  table.print_rows(header, lines, markdown)


if __name__ == '__main__':
  main()
