"""WIDER FACE face detection: the official evaluation protocol, in numpy.

WIDER FACE (Yang et al., "WIDER FACE: A Face Detection Benchmark", CVPR
2016) scores a detector by its average precision on the validation set in
three settings, easy, medium and hard. Published numbers come from the
dataset's own MATLAB ``eval_tools`` (``wider_eval.m`` -> ``read_pred.m``,
``norm_score.m``, ``evaluation.m`` with ``image_evaluation``,
``image_pr_info`` and ``dataset_pr_info``, ``boxoverlap.m``, ``VOCap.m``);
the widely used Python port (wondervictor/WiderFace-Evaluation,
``evaluation.py`` and ``box_overlaps.pyx``) follows it step by step. This
module implements the MATLAB tool's rules, each below with where it comes
from; where the port differs, the MATLAB tool wins and the difference is
named.

Ground truth (``eval_tools/ground_truth``, :func:`read_ground_truth`):
  * ``wider_face_val.mat``: ``event_list`` (a cell of the 61 event names,
    ``'0--Parade'``), ``file_list`` (per event, a cell of image names
    without extension) and ``face_bbx_list`` (per event, per image, an
    (F, 4) matrix of ``x y w h`` faces).
  * ``wider_{easy,medium,hard}_val.mat``: ``gt_list`` (per event, per image,
    the 1-based indices of the faces that count in that setting). Every
    other face of the image is an *ignored region* in that setting: a
    detection on it is neither a true nor a false positive.

Predictions (the submission format, :func:`read_predictions`): a folder
``event/image.txt`` per image, holding the image name, the number of boxes,
then one ``x y w h score`` line per box.

The protocol (:func:`wider_face_evaluate`):
  1. Per image, predictions sorted by score, highest first (``read_pred.m``:
     ``sort(bbx(:,5), 'descend')``). The order among equal scores changes
     which of them is the true positive but no count at any threshold
     (they pass every threshold together). The Python port does not sort;
     its results differ for files not written in score order.
  2. Scores min-max normalised over every prediction of every image of the
     ground truth (``norm_score.m``): ``(s - min) / (max - min)`` with the
     running max starting at ``realmin('single')`` and the running min at
     ``realmax('single')``, as there (the port starts them at 0 and 1,
     which differs only for scores outside [0, 1]). Where every score is
     the same, MATLAB divides 0 by 0 and the submission scores AP 0; here
     every score becomes 1 instead (one operating point, kept at every
     threshold).
  3. Boxes ``x y w h`` become corners ``x2 = x + w``, ``y2 = y + h``
     (``image_evaluation``), and overlaps use the +1 pixel convention of
     ``boxoverlap.m`` (Felzenszwalb/Girshick's VOC code): widths
     ``x2 - x1 + 1``, the intersection ``min(x2) - max(x1) + 1`` and 0 where
     it is not positive. IoU = intersection / (area_a + area_b -
     intersection), in float64 as MATLAB computes (the port uses float32).
  4. Matching (``image_evaluation``), per image, predictions in score
     order: each takes the ground-truth face it overlaps most (the first
     one on a tie, as MATLAB's ``max``), whatever earlier predictions took.
     If that IoU is at least 0.5: a face ignored in the setting marks the
     prediction as ignored (it is not a proposal, so not a false positive);
     a counted face not yet matched becomes recalled (a true positive); a
     counted face already matched makes the prediction a false positive
     (duplicate detections). Below 0.5 the prediction is a false positive.
  5. Images with no ground-truth face or no prediction are skipped
     (``evaluation.m``: ``if isempty(gt_bbx) || isempty(pred_info)
     continue``): detections on a face-free image cost nothing. Their
     counted faces still count (in the recall's denominator).
  6. The curve (``image_pr_info``, ``dataset_pr_info``): at the 1000
     thresholds ``1 - t / 1000``, t = 1..1000, the predictions with
     normalised score >= the threshold; precision = recalled faces /
     proposals (not-ignored predictions), summed over images before
     dividing (NaN where there are no proposals, as there); recall =
     recalled faces / the number of counted faces of the setting over all
     images.
  7. AP (``VOCap.m``, VOC's all-point interpolation): recall and precision
     padded with (0, 0) before and (1, 0) after, the precision replaced by
     its running maximum from the right (NaN ignored, as MATLAB's ``max``),
     then the sum of the recall's increments times the precision where the
     recall changes.

Reading a file names it, and the line or variable, in a
:class:`facejax.data.files.DataFileError` (a ``ValueError``).
"""
import dataclasses
import os

import numpy as np

from facejax.data import files

SETTINGS = ('easy', 'medium', 'hard')
IOU_THRESHOLD = 0.5
THRESHOLD_COUNT = 1000
GROUND_TRUTH_FILE = 'wider_face_val.mat'
SETTING_FILES = {setting: f'wider_{setting}_val.mat' for setting in SETTINGS}
# MATLAB's realmin('single') and realmax('single'), norm_score.m's starting
# maximum and minimum.
_MATLAB_REALMIN_SINGLE = float(np.finfo(np.float32).tiny)
_MATLAB_REALMAX_SINGLE = float(np.finfo(np.float32).max)

__all__ = ['GroundTruthImage', 'IOU_THRESHOLD', 'SETTINGS', 'THRESHOLD_COUNT',
           'read_ground_truth', 'read_prediction_file', 'read_predictions',
           'wider_face_evaluate']


@dataclasses.dataclass(frozen=True)
class GroundTruthImage:
  """One validation image: its faces and which of them count per setting.

  Attributes:
    event: the event folder (``'0--Parade'``).
    name: the image name without extension (``'0_Parade_marchingband_1_465'``).
    boxes: (F, 4) float64 faces as ``x y w h``.
    counted: setting -> (F,) bool, the faces of that setting's ``gt_list``;
      the others are ignored regions there.
  """
  event: str
  name: str
  boxes: np.ndarray
  counted: dict


def _load_mat(path, required):
  """The variables of a MATLAB (v5) file as scipy loads them (a dict),
  holding at least those ``required``."""
  from scipy import io  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{path}: no such file; the WIDER FACE ground-truth folder '
        f'(eval_tools/ground_truth) holds {GROUND_TRUTH_FILE} and '
        + ', '.join(SETTING_FILES.values()))
  try:
    contents = io.loadmat(path)
  except NotImplementedError as error:  # v7.3 files are HDF5
    raise files.DataFileError(f'{path}: not readable as a v5 MATLAB file '
                              f'({error})') from None
  except Exception as error:  # pylint: disable=broad-except
    # scipy raises ValueError, TypeError, OSError, zlib.error or its own
    # MatReadError for a damaged file, none naming it.
    raise files.DataFileError(f'{path}: not a MATLAB .mat file '
                              f'({type(error).__name__}: {error})') from None
  missing = [name for name in required if name not in contents]
  if missing:
    present = sorted(k for k in contents if not k.startswith('__'))
    raise files.DataFileError(f'{path}: no variable {missing[0]!r} (it holds '
                              f'{present})')
  return contents


def _cell(value, origin):
  """The elements of a MATLAB cell vector, in order.

  ``loadmat`` returns a cell as an object array, (n, 1) or (1, n) (1-D with
  ``squeeze_me``); its elements are arrays, or further object arrays for
  nested cells.
  """
  if not (isinstance(value, np.ndarray) and value.dtype == object
          and (value.ndim <= 1 or (value.ndim == 2 and min(value.shape) <= 1))):
    shape = getattr(value, 'shape', None)
    raise files.DataFileError(
        f'{origin}: expected a cell vector, got {type(value).__name__} '
        f'{getattr(value, "dtype", "")} of shape {shape}')
  return list(value.ravel())


def _string(value, origin):
  """A MATLAB char array as ``loadmat`` returns it (``array(['name'])``, a
  char vector, or either wrapped in a one-element cell) as a str."""
  while (isinstance(value, np.ndarray) and value.dtype == object
         and value.size == 1):
    value = value.ravel()[0]
  if isinstance(value, np.ndarray) and value.dtype.kind in 'US':
    items = [str(item) if value.dtype.kind == 'U' else item.decode()
             for item in value.ravel()]
    if len(items) == 1 or all(len(item) <= 1 for item in items):
      value = ''.join(items)
  if isinstance(value, bytes):
    value = value.decode()
  if not isinstance(value, str) or not value:
    raise files.DataFileError(f'{origin}: expected a name (a char array), '
                              f'got {value!r}')
  return value


def _numbers(value, origin):
  """A numeric MATLAB matrix as a float64 array (finite)."""
  while (isinstance(value, np.ndarray) and value.dtype == object
         and value.size == 1):
    value = value.ravel()[0]
  array = np.asarray(value)
  if array.dtype.kind not in 'iuf' and not (array.dtype == object
                                           and array.size == 0):
    raise files.DataFileError(f'{origin}: expected numbers, got '
                              f'{array.dtype} of shape {array.shape}')
  array = array.astype(np.float64)
  if not np.all(np.isfinite(array)):
    raise files.DataFileError(f'{origin}: holds a value that is not finite')
  return array


def _faces(value, origin):
  """face_bbx_list{i}{j}: (F, 4) x y w h; an empty matrix is no face."""
  boxes = _numbers(value, origin)
  if boxes.size == 0:
    return np.zeros((0, 4))
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise files.DataFileError(f'{origin}: expected an (F, 4) matrix of '
                              f'x y w h faces, got shape {boxes.shape}')
  return boxes


def _counted(value, num_faces, origin):
  """gt_list{i}{j}: 1-based face indices -> (F,) bool of the counted faces.

  A repeated index is refused: ``evaluation.m`` counts ``length(keep_index)``
  faces, so a repeat would count one face twice.
  """
  indices = _numbers(value, origin).ravel()
  if np.any(indices != np.round(indices)):
    raise files.DataFileError(f'{origin}: face indices must be integers')
  bad = indices[(indices < 1) | (indices > num_faces)]
  if bad.size:
    raise files.DataFileError(
        f'{origin}: face index {bad[0]:g} is not one of the image\'s '
        f'{num_faces} faces (1-based)')
  if np.unique(indices).size != indices.size:
    raise files.DataFileError(f'{origin}: a face index is repeated')
  counted = np.zeros(num_faces, bool)
  counted[indices.astype(np.int64) - 1] = True
  return counted


def read_ground_truth(gt_dir):
  """The WIDER FACE validation ground truth of ``eval_tools/ground_truth``.

  Reads ``wider_face_val.mat`` (``event_list``, ``file_list``,
  ``face_bbx_list``) and the three ``wider_{setting}_val.mat`` (``gt_list``;
  where they also carry ``event_list`` and ``file_list``, those must name
  the same events and images).

  Returns:
    A list of :class:`GroundTruthImage`, event by event, in the files'
    order.

  Raises:
    FileNotFoundError: a file is missing (the message lists the four).
    DataFileError: a file is not a .mat file, lacks a variable, or its cells
      do not have the official structure (the message names the file and
      the cell, 1-based as in MATLAB: ``face_bbx_list{3}{7}``).
  """
  val_path = os.path.join(gt_dir, GROUND_TRUTH_FILE)
  contents = _load_mat(val_path, ('event_list', 'file_list', 'face_bbx_list'))
  events, image_cells = _events(val_path, contents)
  box_cells = _cell(contents['face_bbx_list'],
                    files.where(val_path, key='face_bbx_list'))
  if not len(events) == len(image_cells) == len(box_cells):
    raise files.DataFileError(
        f'{val_path}: event_list, file_list and face_bbx_list have '
        f'{len(events)}, {len(image_cells)} and {len(box_cells)} events')
  names, boxes = [], []
  for i, (images, faces) in enumerate(zip(image_cells, box_cells), 1):
    box_key = f'face_bbx_list{{{i}}}'
    names.append(_image_names(val_path, i, images))
    faces = _cell(faces, files.where(val_path, key=box_key))
    if len(names[-1]) != len(faces):
      raise files.DataFileError(
          f'{files.where(val_path, key=box_key)}: {len(faces)} face lists '
          f'for the event\'s {len(names[-1])} images')
    boxes.append([_faces(face, files.where(val_path, key=f'{box_key}{{{j}}}'))
                  for j, face in enumerate(faces, 1)])

  counted = {}
  for setting, file_name in SETTING_FILES.items():
    path = os.path.join(gt_dir, file_name)
    counted[setting] = _setting_counted(path, events, names, boxes)
  return [GroundTruthImage(event, name, faces,
                           {s: counted[s][i][j] for s in SETTINGS})
          for i, event in enumerate(events)
          for j, (name, faces) in enumerate(zip(names[i], boxes[i]))]


def _events(path, contents):
  """(event names, the file_list cell of each event) of a loaded file."""
  events = [_string(name, files.where(path, key=f'event_list{{{i}}}'))
            for i, name in enumerate(_cell(
                contents['event_list'], files.where(path, key='event_list')),
                                     1)]
  return events, _cell(contents['file_list'],
                       files.where(path, key='file_list'))


def _image_names(path, i, images):
  """The names of file_list{i}, an event's cell of image names."""
  key = f'file_list{{{i}}}'
  return [_string(name, files.where(path, key=f'{key}{{{j}}}'))
          for j, name in enumerate(_cell(images, files.where(path, key=key)),
                                   1)]


def _setting_counted(path, events, names, boxes):
  """[event][image] -> counted mask of one setting's ``gt_list``.

  Where the file also carries ``event_list`` and ``file_list`` (the
  official ones do), they must name the images of ``wider_face_val.mat``.
  """
  contents = _load_mat(path, ('gt_list',))
  if 'event_list' in contents and 'file_list' in contents:
    their_events, image_cells = _events(path, contents)
    their_names = [_image_names(path, i, images)
                   for i, images in enumerate(image_cells, 1)]
    if their_events != events or their_names != names:
      raise files.DataFileError(
          f'{path}: its event_list/file_list name other images than '
          f'{GROUND_TRUTH_FILE} (files of different WIDER FACE releases?)')
  event_cells = _cell(contents['gt_list'], files.where(path, key='gt_list'))
  if len(event_cells) != len(events):
    raise files.DataFileError(f'{path}: gt_list has {len(event_cells)} '
                              f'events, {GROUND_TRUTH_FILE} {len(events)}')
  counted = []
  for i, cells in enumerate(event_cells, 1):
    key = f'gt_list{{{i}}}'
    cells = _cell(cells, files.where(path, key=key))
    if len(cells) != len(names[i - 1]):
      raise files.DataFileError(
          f'{files.where(path, key=key)}: {len(cells)} images, '
          f'{GROUND_TRUTH_FILE} has {len(names[i - 1])} in {events[i - 1]}')
    counted.append([
        _counted(cell, len(faces), files.where(path, key=f'{key}{{{j}}}'))
        for j, (cell, faces) in enumerate(zip(cells, boxes[i - 1]), 1)])
  return counted


def _image_name_matches(written, stem):
  """Line 1 names the file's image: its base name (any folder dropped),
  with or without the extension, is the file name without ``.txt``."""
  base = written.strip().replace('\\', '/').rsplit('/', 1)[-1]
  return stem in (base, os.path.splitext(base)[0])


def read_prediction_file(path, image=None):
  """One submission file: (N, 5) float64 rows ``x y w h score``.

  The format (the WIDER FACE submission format, ``read_pred.m``): line 1
  the image name, line 2 the number of boxes N, then N lines of five
  numbers ``x y w h score``, separated by white space. Blank lines are
  skipped. ``read_pred.m`` reads line 1 not at all, at most N box lines and
  the first five numbers of each, and treats a file it cannot parse as no
  detections; here every departure is an error instead, so that a broken
  writer is found rather than scored.

  Args:
    path: the file.
    image: the image name without extension that line 1 must name (its
      base name, with or without an extension), or None not to check.

  Raises:
    FileNotFoundError: no such file.
    DataFileError: naming the file and the line: a missing name or count
      line, a count that is not a non-negative integer or disagrees with
      the number of box lines, a box line without exactly five numbers, a
      number that is not finite, a negative width or height.
  """
  lines = files.read_text_lines(path)
  if len(lines) < 2:
    raise files.DataFileError(
        f'{path}: {"empty" if not lines else "no count line"}; expected the '
        'image name, the number of boxes, then one "x y w h score" line each')
  (name_line, name), (count_line, count_text) = lines[:2]
  if image is not None and not _image_name_matches(name, image):
    raise files.DataFileError(
        f'{files.where(path, name_line)}: names the image {name.strip()!r}, '
        f'but the file is that of {image!r}')
  try:
    count = int(count_text.strip())
  except ValueError:
    count = -1
  if count < 0:
    raise files.DataFileError(
        f'{files.where(path, count_line)}: the number of boxes '
        f'{count_text.strip()!r} is not a non-negative integer')
  box_lines = lines[2:]
  if len(box_lines) != count:
    raise files.DataFileError(
        f'{files.where(path, count_line)}: says {count} boxes, but '
        f'{len(box_lines)} box lines follow')
  rows = []
  for number, text in box_lines:
    fields = text.split()
    try:
      row = [float(field) for field in fields]
    except ValueError:
      row = None
    if row is None or len(row) != 5:
      raise files.DataFileError(f'{files.where(path, number)}: expected five '
                                f'numbers "x y w h score", got {text!r}')
    if not all(np.isfinite(row)):
      raise files.DataFileError(f'{files.where(path, number)}: a number is '
                                f'not finite: {text!r}')
    if row[2] < 0 or row[3] < 0:
      raise files.DataFileError(f'{files.where(path, number)}: a negative '
                                f'width or height: {text!r}')
    rows.append(row)
  return np.array(rows, np.float64).reshape(-1, 5)


def read_predictions(directory):
  """A submission folder: ``{event: {image: (N, 5) x y w h score}}``.

  Every ``event/image.txt`` of ``directory`` is read with
  :func:`read_prediction_file` (line 1 must name ``image``); other files,
  files at the top and names starting with ``.`` are not part of the format
  and are left alone.

  Raises:
    FileNotFoundError: ``directory`` is not a folder.
    DataFileError: it holds no ``event/image.txt`` file, or one is
      malformed (naming the file and the line).
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'{directory}: no such folder of predictions')
  predictions = {}
  for event in sorted(os.listdir(directory)):
    event_dir = files.confine(directory, event)
    if event.startswith('.') or not os.path.isdir(event_dir):
      continue
    for file_name in sorted(os.listdir(event_dir)):
      if file_name.startswith('.') or not file_name.endswith('.txt'):
        continue
      image = file_name[:-len('.txt')]
      path = files.confine(directory, f'{event}/{file_name}')
      predictions.setdefault(event, {})[image] = read_prediction_file(
          path, image)
  if not predictions:
    raise files.DataFileError(
        f'{directory}: no prediction files; the submission format is one '
        'folder per event holding one image.txt per image')
  return predictions


def _checked_predictions(value, origin):
  """A mapping's (N, 5) array, checked as the reader checks a file."""
  array = np.asarray(value, np.float64)
  if array.size == 0:
    return np.zeros((0, 5))
  if array.ndim != 2 or array.shape[1] != 5:
    raise ValueError(f'predictions of {origin}: expected (N, 5) rows '
                     f'x y w h score, got shape {array.shape}')
  if not np.all(np.isfinite(array)):
    raise ValueError(f'predictions of {origin}: a value is not finite')
  if np.any(array[:, 2:4] < 0):
    raise ValueError(f'predictions of {origin}: a negative width or height')
  return array


def _corners(boxes):
  """``x y w h`` -> ``x1 y1 x2 y2`` with x2 = x + w (``image_evaluation``)."""
  return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]], axis=1)


def _overlaps(predicted, faces):
  """(P, G) IoU of corner boxes, +1 pixel convention (``boxoverlap.m``)."""
  widths = (np.minimum(predicted[:, None, 2], faces[None, :, 2])
            - np.maximum(predicted[:, None, 0], faces[None, :, 0]) + 1)
  heights = (np.minimum(predicted[:, None, 3], faces[None, :, 3])
             - np.maximum(predicted[:, None, 1], faces[None, :, 1]) + 1)
  intersection = widths * heights

  def area(boxes):
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)

  union = area(predicted)[:, None] + area(faces)[None, :] - intersection
  with np.errstate(divide='ignore', invalid='ignore'):
    iou = intersection / union
  iou[(widths <= 0) | (heights <= 0)] = 0
  # MATLAB's max skips NaN (a degenerate face of zero area): never a match.
  iou[np.isnan(iou)] = -np.inf
  return iou


def _normalised_scores(score_lists):
  """``norm_score.m``'s min-max normalisation over all predictions."""
  highest, lowest = _MATLAB_REALMIN_SINGLE, _MATLAB_REALMAX_SINGLE
  for scores in score_lists:
    if scores.size:
      highest, lowest = max(highest, scores.max()), min(lowest, scores.min())
  if highest == lowest:  # MATLAB: 0 / 0; here one operating point
    return [np.ones_like(scores) for scores in score_lists]
  return [(scores - lowest) / (highest - lowest) for scores in score_lists]


def _average_precision(recall, precision):
  """``VOCap.m``: VOC's all-point interpolated AP (NaN precision skipped)."""
  recall = np.concatenate([[0.0], recall, [1.0]])
  precision = np.concatenate([[0.0], precision, [0.0]])
  precision = np.fmax.accumulate(precision[::-1])[::-1]
  changed = np.flatnonzero(recall[1:] != recall[:-1]) + 1
  return float(np.sum((recall[changed] - recall[changed - 1])
                      * precision[changed]))


def wider_face_evaluate(predictions, gt_dir):
  """Easy, medium and hard AP by the official WIDER FACE protocol.

  The rules, each with its source in the official tool, are in this
  module's docstring: predictions sorted by score per image, scores
  min-max normalised over all, ``x y w h`` boxes with the +1 pixel IoU,
  each prediction matched to its best face at IoU >= 0.5 (a face ignored
  in the setting makes it ignored, a face already matched makes it a false
  positive), images without faces or predictions skipped, precision and
  recall at the thresholds ``1 - t / 1000``, VOC's all-point AP.

  Args:
    predictions: a submission folder (read by :func:`read_predictions`), or
      a mapping ``{event: {image: (N, 5) x y w h score}}`` (image names
      without extension). An image of the ground truth without predictions
      has no detections (``read_pred.m`` goes on past a missing file);
      predictions of images not in the ground truth are not used.
    gt_dir: the folder of ``wider_face_val.mat`` and
      ``wider_{easy,medium,hard}_val.mat`` (:func:`read_ground_truth`).

  Returns:
    A dict: ``'easy'``, ``'medium'``, ``'hard'``: the AP (float; NaN for a
    setting without counted faces); ``'curves'``: setting -> (precision,
    recall), each (1000,) float64 at the thresholds ``1 - t / 1000``
    (precision NaN where no prediction is a proposal); ``'faces'``: setting
    -> the number of counted faces; ``'images'``: the number of
    ground-truth images; ``'missing_images'``: ``'event/image'`` of the
    ground-truth images without predictions; ``'unknown_predictions'``:
    ``'event/image'`` of predictions for images not in the ground truth.

  Raises:
    FileNotFoundError, DataFileError: as the readers.
    ValueError: a mapping's array is not (N, 5) finite rows with
      non-negative sizes, or no prediction names an image of the ground
      truth (predictions of another split, or the wrong folder).
  """
  images = read_ground_truth(gt_dir)
  if isinstance(predictions, (str, os.PathLike)):
    predictions = read_predictions(predictions)
  known = {(image.event, image.name) for image in images}
  unknown = sorted(f'{event}/{name}' for event, by_name in predictions.items()
                   for name in by_name if (event, name) not in known)
  found = [predictions.get(image.event, {}).get(image.name)
           for image in images]
  missing = [f'{image.event}/{image.name}'
             for image, boxes in zip(images, found) if boxes is None]
  if predictions and len(missing) == len(images):
    raise ValueError(
        f'none of the predictions names an image of the ground truth in '
        f'{gt_dir} (first prediction: {unknown[0]}, first image: '
        f'{missing[0]})')
  predicted = []
  for image, boxes in zip(images, found):
    boxes = _checked_predictions([] if boxes is None else boxes,
                                 f'{image.event}/{image.name}')
    order = np.argsort(-boxes[:, 4], kind='stable')  # read_pred.m's sort
    predicted.append(boxes[order])
  scores = _normalised_scores([boxes[:, 4] for boxes in predicted])

  # The match of each prediction to its best face does not depend on the
  # setting; only which faces are ignored does.
  evaluated = []
  for image, boxes, image_scores in zip(images, predicted, scores):
    if not len(image.boxes) or not len(boxes):
      continue
    iou = _overlaps(_corners(boxes), _corners(image.boxes))
    best = np.argmax(iou, axis=1)
    hit = iou[np.arange(len(best)), best] >= IOU_THRESHOLD
    evaluated.append((image, image_scores, best, hit))

  thresholds = 1 - np.arange(1, THRESHOLD_COUNT + 1) / THRESHOLD_COUNT
  result = dict(curves={}, faces={}, images=len(images),
                missing_images=missing, unknown_predictions=unknown)
  for setting in SETTINGS:
    num_faces = int(sum(image.counted[setting].sum() for image in images))
    all_scores, proposals, recalled = [], [], []
    for image, image_scores, best, hit in evaluated:
      counted = image.counted[setting][best]
      on_counted = np.flatnonzero(hit & counted)
      # A counted face is recalled by the first prediction that takes it;
      # the later ones are duplicates (false positives).
      _, first = np.unique(best[on_counted], return_index=True)
      new = np.zeros(len(best), bool)
      new[on_counted[first]] = True
      all_scores.append(image_scores)
      proposals.append(~(hit & ~counted))
      recalled.append(new)
    precision, recall = _curve(thresholds, all_scores, proposals, recalled,
                               num_faces)
    result['curves'][setting] = (precision, recall)
    result['faces'][setting] = num_faces
    result[setting] = (_average_precision(recall, precision) if num_faces
                       else float('nan'))
  return result


def _curve(thresholds, scores, proposals, recalled, num_faces):
  """(precision, recall) at each threshold from per-prediction flags.

  ``image_pr_info`` takes, per image, the proposals among the first
  ``r_index`` predictions (the last with score >= threshold) and the faces
  recalled by them; predictions being sorted, those are the predictions
  with score >= threshold, so the dataset's sums are sums over all
  predictions at or above it.
  """
  scores = np.concatenate(scores or [np.zeros(0)])
  order = np.argsort(scores, kind='stable')
  ascending = scores[order]
  proposal_sums = np.concatenate(
      [[0], np.cumsum(np.concatenate(proposals or [np.zeros(0)])[order][::-1])])
  recall_sums = np.concatenate(
      [[0], np.cumsum(np.concatenate(recalled or [np.zeros(0)])[order][::-1])])
  above = len(ascending) - np.searchsorted(ascending, thresholds, side='left')
  true_positives = recall_sums[above].astype(np.float64)
  with np.errstate(divide='ignore', invalid='ignore'):
    precision = true_positives / proposal_sums[above]
    recall = true_positives / num_faces
  return precision, recall
