"""Are two photos the same person? One pair, verified by a trained run.

    python -m eval.verify --checkpoint runs/r50 a.jpg b.jpg [--threshold T]

Each photo's largest face is found by :class:`facejax.detection.MTCNN`,
cropped to the run's image size by the 5-point alignment
(:func:`facejax.data.align.crop_faces`, as ``python -m facejax.data.align``
crops a folder) and embedded with the flip test
(:class:`facejax.inference.Embedder`). Prints the cosine similarity and the
verdict: 'same' when it is above the threshold, as the LFW protocol decides.

The threshold is ``--threshold`` when given; otherwise it comes from the
run's latest verification report (the newest ``verification.json`` under
the run's directory, as ``python -m eval.lfw --out RUN/eval/...`` and
``python -m train.demo`` write it): the mean over the ten folds of the
best-accuracy threshold of the model's cosine scores, for the report's
first set. The output says where the threshold came from. With neither, it
is an error asking for ``--threshold``. A photo without a detectable face
(or that cannot be decoded) is an error naming it.
"""

import argparse
import math
import os
import sys

import numpy as np

from eval import extract
from facejax import command_line
from facejax import inference
from facejax.data import align
from facejax.data import files
from facejax.data import sources

REPORT_FILE = 'verification.json'


class NoFaceError(ValueError):
  """A photo in which the detector found no face."""


def latest_report(workdir):
  """The newest ``verification.json`` under ``workdir``, or None."""
  found = []
  for folder, folders, names in os.walk(workdir):
    folders[:] = [f for f in folders if f != 'checkpoints']
    if REPORT_FILE in names:
      path = os.path.join(folder, REPORT_FILE)
      found.append((os.path.getmtime(path), path))
  return max(found)[1] if found else None


def threshold_from_report(path):
  """(threshold, description) from a verification report.

  The mean of the model's per-fold best-accuracy thresholds (the
  ``thresholds`` of :func:`facejax.metrics.verification.evaluate`) of the
  report's first set scored by cosine similarity: the threshold the
  report's 10-fold accuracy was measured with, averaged.

  Raises:
    ValueError: the report is not valid JSON, was scored by another metric,
      or has no finite model threshold.
  """
  report = files.read_json(path)
  metric = report.get('metric', 'cosine') if isinstance(report, dict) else None
  if metric != 'cosine':
    raise ValueError(f'{path}: the report scored pairs by {metric!r}, not '
                     'cosine similarity; give --threshold')
  for set_name, methods in (report.get('sets') or {}).items():
    model = methods.get('model') if isinstance(methods, dict) else None
    if not isinstance(model, dict):
      continue
    thresholds = [t for t in model.get('thresholds') or []
                  if isinstance(t, (int, float)) and math.isfinite(t)]
    if thresholds:
      step = report.get('checkpoint_step')
      return float(np.mean(thresholds)), (
          f"the mean of {len(thresholds)} fold thresholds of set "
          f"'{set_name}' in {path}"
          + (f' (checkpoint step {step})' if step is not None else ''))
  raise ValueError(f'{path}: no finite threshold of the model in it; give '
                   '--threshold')


def largest_face_crop(detector, path, image_size):
  """The aligned (S, S, 3) uint8 crop of the largest face of a photo.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the photo cannot be decoded.
    NoFaceError: no face was found in it.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: photo not found')
  image = align.decode_photo(path)
  if image is None:
    raise ValueError(f'{path}: not a decodable image')
  boxes, _, landmarks = detector.detect(image)
  if not len(boxes):
    raise NoFaceError(
        f'{path}: no face found (at least {detector.min_face_size:g} '
        'pixels wide; try a smaller --min-face)')
  return align.crop_faces(
      image, landmarks[[align.largest_face(boxes)]], image_size)[0]


def similarity(embedder, crops, flip=True):
  """Cosine similarity of two aligned crops' embeddings (flip test)."""
  source = sources.InMemory(np.stack(crops), np.zeros(len(crops), np.int32),
                            name='photos')
  features = embedder.embed(source, flip=flip, progress=False)
  return float(np.dot(features[0], features[1]))


def verify(embedder, detector, first, second, threshold=None, flip=True):
  """dict(similarity, threshold, source, same) for two photos.

  Raises:
    ValueError: no threshold given and no usable report (the message asks
      for ``--threshold``); NoFaceError or another ValueError for a photo.
  """
  if threshold is not None:
    where = 'given by --threshold'
  else:
    report = latest_report(embedder.workdir) if embedder.workdir else None
    if report is None:
      raise ValueError(
          f'no verification report ({REPORT_FILE}) under '
          f'{embedder.workdir} to take a threshold from; give --threshold '
          '(or run python -m eval.lfw with --out under the run first)')
    threshold, where = threshold_from_report(report)
  crops = [largest_face_crop(detector, path, embedder.image_size)
           for path in (first, second)]
  score = similarity(embedder, crops, flip)
  return dict(similarity=score, threshold=threshold, source=where,
              same=score > threshold)


# RuntimeError: the detector's WeightsError (no ``mtcnn`` package).
@command_line.reports_errors(OSError, ValueError, RuntimeError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m eval.verify',
                                   description=__doc__.split('\n')[0])
  extract.add_checkpoint_flags(parser)
  parser.add_argument('first', help='a photo')
  parser.add_argument('second', help='another photo')
  parser.add_argument('--threshold', type=float, default=None,
                      help='cosine similarity above which the faces are the '
                      "same person (default: the run's latest verification "
                      'report)')
  parser.add_argument('--min-face', type=float, default=20,
                      help='smallest face to detect, in pixels (default 20)')
  args = parser.parse_args(argv)
  from facejax import detection  # pylint: disable=g-import-not-at-top
  embedder = inference.Embedder.from_workdir(
      args.checkpoint, args.step, batch_size=args.batch_size)
  detector = detection.MTCNN(min_face_size=args.min_face)
  result = verify(embedder, detector, args.first, args.second,
                  args.threshold, args.flip)
  print(f'cosine similarity {result["similarity"]:.4f}')
  print(f'threshold {result["threshold"]:.4f} ({result["source"]})')
  print(f'verdict: {"same" if result["same"] else "different"}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
