"""WIDER FACE detection AP (easy, medium, hard) by the official protocol.

    # A submission folder (event/image.txt: name, count, x y w h score lines):
    python -m eval.wider_face --predictions preds/ \\
        --gt eval_tools/ground_truth --out out/wider_face
    # facejax's MTCNN over the validation images first, writing that folder:
    python -m eval.wider_face --detector mtcnn --images WIDER_val/images \\
        --predictions preds/ --gt eval_tools/ground_truth --out out/wider_face

The protocol is :func:`facejax.metrics.detection.wider_face_evaluate`'s, the
official MATLAB tool's rules (scores min-max normalised over all
predictions, the +1 pixel IoU at 0.5, faces outside a setting's ``gt_list``
ignored, duplicate detections false positives, precision and recall at 1000
thresholds, VOC's all-point AP). Prints a markdown table, writes
``wider_face.json`` (the APs, the curves, the images without predictions)
and ``wider_face_pr.png`` (the three precision-recall curves).

``--detector`` runs a facejax detector over ``--images`` (an event folder
per event, as ``WIDER_val/images``) and writes its boxes in the submission
format into ``--predictions``, which must then be empty or new: a box
``x1 y1 x2 y2`` is written ``x1 y1 (x2 - x1) (y2 - y1)`` so that the
protocol's ``x2 = x + w`` gives it back. A photo that cannot be read is
skipped and listed (it then counts as an image without detections).
"""

import argparse
import os
import sys

import numpy as np

from eval import report
from facejax import command_line
from facejax.data import files
from facejax.data import image_headers
from facejax.metrics import detection

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
REPORT_FILE = 'wider_face.json'
PLOT_FILE = 'wider_face_pr.png'
PROGRESS_EVERY = 100  # images between two progress lines


def _mtcnn(min_face_size):
  """facejax's MTCNN (imported only when asked for)."""
  from facejax import detection as detectors
  return detectors.MTCNN(min_face_size=min_face_size)


# --detector NAME -> a function of the minimum face size giving an object
# with detect(uint8 RGB image) -> (x1 y1 x2 y2 boxes, scores, landmarks).
DETECTORS = {'mtcnn': _mtcnn}


def read_rgb(path, max_pixels=image_headers.DEFAULT_MAX_PIXELS):
  """An image file as (H, W, 3) uint8 RGB pixels, as a detector takes them.

  Grayscale, palette, CMYK and alpha images are converted to RGB; 16-bit
  grayscale keeps its high byte. The EXIF orientation is not applied: the
  ground truth's boxes are in the stored pixels' frame.

  Raises:
    ValueError: naming the file, when it is not an image PIL decodes
      (unknown format, truncated), declares more than ``max_pixels``
      pixels, or has float pixels.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(path) as image:
      if image.width * image.height > max_pixels:
        raise ValueError(f'declares {image.width} x {image.height} pixels, '
                         f'more than {max_pixels}')
      if image.mode == 'F':
        raise ValueError('float pixels')
      image.load()
      if image.mode == 'I' or image.mode.startswith('I;16'):
        high_byte = np.clip(np.asarray(image, np.int64), 0, 65535) >> 8
        return np.repeat(high_byte.astype(np.uint8)[..., None], 3, axis=2)
      return np.asarray(image.convert('RGB'))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ValueError(f'{path}: cannot be read as an image ({e})') from None


def image_paths(images_dir):
  """``[(event, file name)]`` of ``images_dir/event/*.jpg`` (.jpeg, .png).

  Raises:
    FileNotFoundError: ``images_dir`` is not a folder.
    DataFileError: it holds no such image.
  """
  if not os.path.isdir(images_dir):
    raise FileNotFoundError(f'{images_dir}: no such folder of images')
  found = []
  for event in sorted(os.listdir(images_dir)):
    event_dir = files.confine(images_dir, event)
    if event.startswith('.') or not os.path.isdir(event_dir):
      continue
    found += [(event, name) for name in sorted(os.listdir(event_dir))
              if not name.startswith('.')
              and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
  if not found:
    raise files.DataFileError(
        f'{images_dir}: no images; expected one folder per event holding '
        f'its {"/".join(IMAGE_EXTENSIONS)} images, as WIDER_val/images')
  return found


def submission_text(image, boxes, scores):
  """One image's submission file: name, count, ``x y w h score`` lines.

  Args:
    image: the image name written on line 1 (without extension).
    boxes: (K, 4) ``x1 y1 x2 y2`` pixel boxes, as the detector gives them.
    scores: (K,) their scores.

  Raises:
    ValueError: shapes that disagree, a value that is not finite, or a box
      with x2 < x1 or y2 < y1.
  """
  boxes = np.asarray(boxes, np.float64)
  scores = np.asarray(scores, np.float64).reshape(-1)
  if boxes.size == 0:  # K = 0 may come as (0,) or (0, 4)
    boxes = np.zeros((0, 4))
  if boxes.shape != (len(scores), 4):
    raise ValueError(f'{image}: the detector gave boxes of shape '
                     f'{boxes.shape} for {len(scores)} scores')
  sizes = boxes[:, 2:] - boxes[:, :2]
  if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
    raise ValueError(f'{image}: the detector gave a value that is not finite')
  if np.any(sizes < 0):
    raise ValueError(f'{image}: the detector gave a box with x2 < x1 or '
                     'y2 < y1')
  lines = [image, str(len(scores))]
  # repr: the shortest text that reads back as the same float, so that the
  # written scores keep their order, ties included.
  lines += [' '.join(repr(float(v)) for v in (*corner, *size, score))
            for corner, size, score in zip(boxes[:, :2], sizes, scores)]
  return '\n'.join(lines) + '\n'


def write_predictions(images_dir, out_dir, detector, read_image=read_rgb,
                      progress=False):
  """Runs ``detector`` over ``images_dir``, writing the submission folder.

  Args:
    images_dir: one folder per event of images (``WIDER_val/images``).
    out_dir: where ``event/image.txt`` files go (created).
    detector: an object with ``detect(image)`` taking (H, W, 3) uint8 RGB
      and returning ``(boxes (K, 4) x1 y1 x2 y2, scores (K,), landmarks)``,
      as :class:`facejax.detection.MTCNN`.
    read_image: path -> (H, W, 3) uint8 RGB, raising ValueError for a file
      it cannot read.
    progress: print a progress line every ``PROGRESS_EVERY`` images.

  Returns:
    ``(written, skipped)``: the number of files written, and
    ``[(event/file name, reason)]`` of the images that could not be read.
  """
  from facejax.training import observe  # pylint: disable=g-import-not-at-top

  paths = image_paths(images_dir)
  bar = observe.Progress(len(paths), 0, 1, enabled=progress, unit='image')
  written, skipped = 0, []
  for done, (event, file_name) in enumerate(paths, 1):
    relative = f'{event}/{file_name}'
    try:
      image = read_image(files.confine(images_dir, relative))
    except ValueError as error:
      skipped.append((relative, str(error)))
      continue
    boxes, scores, _ = detector.detect(image)
    stem = os.path.splitext(file_name)[0]
    text = submission_text(stem, boxes, scores)
    target = files.confine(out_dir, f'{event}/{stem}.txt')
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + '.tmp', 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(target + '.tmp', target)
    written += 1
    if done % PROGRESS_EVERY == 0 or done == len(paths):
      bar.update(done, {})
  return written, skipped


def save_pr_curves(path, result):
  """Writes the three precision-recall curves of a result to a PNG file."""
  from matplotlib import figure
  from matplotlib.backends import backend_agg

  fig = figure.Figure(figsize=(6, 5))
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.add_subplot()
  for setting in detection.SETTINGS:
    precision, recall = result['curves'][setting]
    axes.plot(recall, precision, label=f'{setting} (AP {result[setting]:.3f})')
  axes.set_xlim(0, 1)
  axes.set_ylim(0, 1.01)
  axes.set_xlabel('recall')
  axes.set_ylabel('precision')
  axes.set_title('WIDER FACE validation')
  axes.grid(True, alpha=0.3)
  axes.legend(loc='lower left')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format='png', dpi=100)
  return path


def run(predictions, gt_dir, out_dir, **meta):
  """Evaluates a submission; returns (result, table, json path, png path).

  ``meta`` is recorded at the top of the JSON report (the detector, the
  images it skipped...).
  """
  result = detection.wider_face_evaluate(predictions, gt_dir)
  rows = [[setting, f'{result[setting]:.4f}', result['faces'][setting]]
          for setting in detection.SETTINGS]
  table = report.markdown_table(['setting', 'AP', 'faces'], rows)
  curves = {setting: dict(precision=precision, recall=recall)
            for setting, (precision, recall) in result['curves'].items()}
  json_path = report.write_json(os.path.join(out_dir, REPORT_FILE), dict(
      meta, predictions=str(predictions), gt=str(gt_dir),
      ap={s: result[s] for s in detection.SETTINGS}, faces=result['faces'],
      images=result['images'], missing_images=result['missing_images'],
      unknown_predictions=result['unknown_predictions'], curves=curves,
      thresholds='1 - t / 1000, t = 1..1000'))
  png_path = save_pr_curves(os.path.join(out_dir, PLOT_FILE), result)
  return result, table, json_path, png_path


def _warn_listed(what, names, total=None):
  """``warning: 3 images ...: a, b, c`` on stderr (the first five named)."""
  if names:
    shown = ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')
    of_total = f' of {total}' if total is not None else ''
    print(f'warning: {len(names)}{of_total} {what}: {shown}', file=sys.stderr)


@command_line.reports_errors(OSError, ValueError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m eval.wider_face',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--predictions', required=True,
                      help='the submission folder (event/image.txt); with '
                      '--detector, an empty or new folder to write it into')
  parser.add_argument('--gt', required=True,
                      help='the folder of wider_face_val.mat and '
                      'wider_{easy,medium,hard}_val.mat')
  parser.add_argument('--detector', choices=sorted(DETECTORS),
                      help='run this facejax detector over --images first')
  parser.add_argument('--images', help='WIDER_val/images (with --detector)')
  parser.add_argument('--min-face', type=int, default=20,
                      help="the detector's minimum face size in pixels")
  parser.add_argument('--out', required=True, help='output folder')
  args = parser.parse_args(argv)
  if bool(args.detector) != bool(args.images):
    parser.error('--detector and --images go together')
  meta = {}
  # The ground truth is read first: a wrong --gt stops the job before
  # the detector has run over every image.
  detection.read_ground_truth(args.gt)
  if args.detector:
    if os.path.isdir(args.predictions) and os.listdir(args.predictions):
      raise ValueError(f'{args.predictions}: not empty; --detector writes '
                       'a new submission folder, give an empty or new one')
    image_paths(args.images)  # no images: stop before building it
    detector = DETECTORS[args.detector](args.min_face)
    written, skipped = write_predictions(args.images, args.predictions,
                                         detector, progress=True)
    meta = dict(detector=args.detector, min_face=args.min_face,
                image_folder=args.images, written=written,
                skipped=[dict(image=name, reason=reason)
                         for name, reason in skipped])
    _warn_listed('images could not be read (skipped)',
                 [name for name, _ in skipped])
  result, table, json_path, png_path = run(args.predictions, args.gt,
                                           args.out, **meta)
  _warn_listed('ground-truth images have no prediction file (no detections, '
               'as the official tool counts them)', result['missing_images'],
               result['images'])
  _warn_listed('prediction files name no ground-truth image (not used)',
               result['unknown_predictions'])
  print(table)
  print(f'report: {json_path}\nPR curves: {png_path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
