"""WIDER FACE evaluation against a plainly written reference of the protocol.

The ground truth is written as the official ``.mat`` files (cells of cells,
as MATLAB saves them) with faces left out of each setting's ``gt_list``
(ignored regions); the predictions plant duplicate detections, detections
on ignored faces, misses, false positives, images without faces or without
a prediction file, and files not in score order.
"""
import math
import os

import numpy as np
import pytest
from scipy import io

from facejax.data import files
from facejax.metrics import detection

SETTINGS = ('easy', 'medium', 'hard')


def _cell(items, row=False):
  """A MATLAB cell vector as savemat takes it: an object array."""
  cell = np.empty((1, len(items)) if row else (len(items), 1), dtype=object)
  for i, item in enumerate(items):
    cell.flat[i] = item
  return cell


def write_ground_truth(directory, events, row_cells=False):
  """The four official files for ``events``.

  Args:
    directory: where they go.
    events: ``[(event, [(image, (F, 4) x y w h, kept)])]``, ``kept``:
      setting -> the 1-based indices of the faces that count there.
    row_cells: save cells as (1, n) rows instead of MATLAB's (n, 1) columns.
  """
  os.makedirs(directory, exist_ok=True)
  event_list = _cell([event for event, _ in events], row_cells)
  file_list = _cell([_cell([name for name, _, _ in images], row_cells)
                     for _, images in events], row_cells)
  io.savemat(os.path.join(directory, 'wider_face_val.mat'), dict(
      event_list=event_list, file_list=file_list,
      face_bbx_list=_cell([_cell([np.asarray(boxes, np.float64).reshape(-1, 4)
                                  for _, boxes, _ in images], row_cells)
                           for _, images in events], row_cells)))
  for setting in SETTINGS:
    gt_list = _cell([_cell([np.asarray(kept[setting], np.float64).reshape(-1, 1)
                            for _, _, kept in images], row_cells)
                     for _, images in events], row_cells)
    io.savemat(os.path.join(directory, f'wider_{setting}_val.mat'), dict(
        event_list=event_list, file_list=file_list, gt_list=gt_list))
  return directory


def write_prediction_folder(directory, predictions):
  """``{event: {image: rows}}`` as the submission format."""
  for event, by_image in predictions.items():
    os.makedirs(os.path.join(directory, event), exist_ok=True)
    for image, rows in by_image.items():
      lines = [f'{image}.jpg', str(len(rows))]
      lines += [' '.join(repr(float(v)) for v in row) for row in rows]
      with open(os.path.join(directory, event, f'{image}.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
  return directory


def random_face(rng, size=200):
  x, y = rng.integers(0, size - 20, 2)
  w, h = rng.integers(4, 40, 2)
  return [float(x), float(y), float(w), float(h)]


def generated_dataset(seed, score_low=0.0, score_high=1.0):
  """(events, predictions): a random ground truth and planted predictions.

  Settings are nested as the official ones (hard keeps medium's faces,
  medium easy's), the rest of each image's faces ignored there. Predictions
  per face: a miss, a near or a loose box, duplicates, and ones on faces
  ignored in some setting; plus false positives; an image without faces
  that has predictions; an image without a prediction file; a file written
  in random score order; tied scores.
  """
  rng = np.random.default_rng(seed)
  events, predictions = [], {}
  for e in range(4):
    event = f'{e}--Event{e}'
    images = []
    for i in range(int(rng.integers(2, 8))):
      name = f'{e}_Event{e}_{i}'
      num_faces = int(rng.integers(0, 13)) if i else 0  # image 0: no face
      boxes = [random_face(rng) for _ in range(num_faces)]
      order = rng.permutation(num_faces) + 1
      hard = sorted(order[:int(rng.integers(0, num_faces + 1))])
      medium = sorted(order[:int(rng.integers(0, len(hard) + 1))])
      easy = sorted(order[:int(rng.integers(0, len(medium) + 1))])
      images.append((name, np.array(boxes).reshape(-1, 4),
                     dict(easy=easy, medium=medium, hard=hard)))
      if i == 1 and e == 1:
        continue  # no prediction file
      rows = []
      for x, y, w, h in boxes:
        for _ in range(int(rng.choice([0, 1, 1, 1, 2, 3]))):  # miss, dups
          jitter = rng.choice([0.0, 1.0, 3.0, 10.0])
          rows.append([x + rng.normal(0, jitter), y + rng.normal(0, jitter),
                       max(w + rng.normal(0, jitter), 0.0),
                       max(h + rng.normal(0, jitter), 0.0), 0.0])
      for _ in range(int(rng.integers(0, 4))):  # false positives
        rows.append(random_face(rng) + [0.0])
      for row in rows:
        row[4] = float(rng.choice([rng.uniform(score_low, score_high),
                                   score_low + 0.5 * (score_high - score_low)]))
      rng.shuffle(rows)
      predictions.setdefault(event, {})[name] = np.array(rows).reshape(-1, 5)
    events.append((event, images))
  return events, predictions


# --- The reference: the official tool's steps, one loop at a time. ---


def reference_iou(a, b):
  """IoU of two x y w h boxes, x2 = x + w, +1 pixel widths."""
  ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
  bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
  w = min(ax2, bx2) - max(ax1, bx1) + 1
  h = min(ay2, by2) - max(ay1, by1) + 1
  if w <= 0 or h <= 0:
    return 0.0
  inter = w * h
  area_a = (ax2 - ax1 + 1) * (ay2 - ay1 + 1)
  area_b = (bx2 - bx1 + 1) * (by2 - by1 + 1)
  return inter / (area_a + area_b - inter)


def reference_ap(recall, precision):
  mrec = [0.0] + list(recall) + [1.0]
  mpre = [0.0] + list(precision) + [0.0]
  for i in range(len(mpre) - 2, -1, -1):
    if math.isnan(mpre[i]) or mpre[i + 1] > mpre[i]:
      mpre[i] = mpre[i + 1]
  ap = 0.0
  for i in range(1, len(mrec)):
    if mrec[i] != mrec[i - 1]:
      ap += (mrec[i] - mrec[i - 1]) * mpre[i]
  return ap


def reference_evaluate(events, predictions):
  """setting -> (ap, precision list, recall list)."""
  images = []
  for event, event_images in events:
    for name, boxes, kept in event_images:
      rows = [list(map(float, row))
              for row in predictions.get(event, {}).get(name, [])]
      rows = sorted(rows, key=lambda row: -row[4])  # stable
      images.append((boxes.tolist(), kept, rows))
  highest = float(np.finfo(np.float32).tiny)
  lowest = float(np.finfo(np.float32).max)
  for _, _, rows in images:
    for row in rows:
      highest, lowest = max(highest, row[4]), min(lowest, row[4])
  for _, _, rows in images:
    for row in rows:
      row[4] = (1.0 if highest == lowest
                else (row[4] - lowest) / (highest - lowest))
  results = {}
  for setting in SETTINGS:
    proposals_at = [0] * 1000
    recalled_at = [0] * 1000
    count_face = 0
    for boxes, kept, rows in images:
      count_face += len(kept[setting])
      if not boxes or not rows:
        continue
      ignore = [0] * len(boxes)
      for index in kept[setting]:
        ignore[index - 1] = 1
      recall_list = [0] * len(boxes)
      proposal_list = [1] * len(rows)
      pred_recall = []
      for h, row in enumerate(rows):
        overlaps = [reference_iou(row, box) for box in boxes]
        best = 0
        for k in range(len(overlaps)):
          if overlaps[k] > overlaps[best]:
            best = k
        if overlaps[best] >= 0.5:
          if ignore[best] == 0:
            recall_list[best] = -1
            proposal_list[h] = -1
          elif recall_list[best] == 0:
            recall_list[best] = 1
        pred_recall.append(sum(1 for r in recall_list if r == 1))
      for t in range(1, 1001):
        thresh = 1 - t / 1000
        last = None
        for h, row in enumerate(rows):
          if row[4] >= thresh:
            last = h
        if last is not None:
          proposals_at[t - 1] += sum(1 for p in proposal_list[:last + 1]
                                     if p == 1)
          recalled_at[t - 1] += pred_recall[last]
    precision = [r / p if p else math.nan
                 for r, p in zip(recalled_at, proposals_at)]
    recall = [r / count_face for r in recalled_at]
    results[setting] = (reference_ap(recall, precision), precision, recall)
  return results


def _assert_matches_reference(result, events, predictions):
  reference = reference_evaluate(events, predictions)
  for setting in SETTINGS:
    ap, precision, recall = reference[setting]
    assert result[setting] == pytest.approx(ap, abs=1e-9), setting
    np.testing.assert_allclose(result['curves'][setting][0], precision,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(result['curves'][setting][1], recall,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize('seed', range(6))
def test_matches_the_reference_on_planted_data(tmp_path, seed):
  events, predictions = generated_dataset(seed)
  gt_dir = write_ground_truth(str(tmp_path / 'gt'), events)
  result = detection.wider_face_evaluate(predictions, gt_dir)
  _assert_matches_reference(result, events, predictions)
  assert 0 < result['hard'] < 1
  assert result['missing_images'] == ['1--Event1/1_Event1_1']
  assert result['faces'] == {
      s: sum(len(kept[s]) for _, images in events for _, _, kept in images)
      for s in SETTINGS}


@pytest.mark.parametrize('low, high', [(2.0, 10.0), (-3.0, -1.0),
                                       (-1.0, 1.0)])
def test_scores_outside_0_1_normalise_as_the_matlab_tool(tmp_path, low, high):
  events, predictions = generated_dataset(7, low, high)
  gt_dir = write_ground_truth(str(tmp_path / 'gt'), events)
  result = detection.wider_face_evaluate(predictions, gt_dir)
  _assert_matches_reference(result, events, predictions)


def test_submission_folder_reads_back_to_the_same_result(tmp_path):
  events, predictions = generated_dataset(3)
  gt_dir = write_ground_truth(str(tmp_path / 'gt'), events)
  folder = write_prediction_folder(str(tmp_path / 'pred'), predictions)
  read = detection.read_predictions(folder)
  assert read.keys() == predictions.keys()
  for event, by_image in predictions.items():
    for image, rows in by_image.items():
      np.testing.assert_array_equal(read[event][image], rows)
  from_folder = detection.wider_face_evaluate(folder, gt_dir)
  from_mapping = detection.wider_face_evaluate(predictions, gt_dir)
  for setting in SETTINGS:
    assert from_folder[setting] == from_mapping[setting]


def test_row_and_column_cells_read_the_same(tmp_path):
  events, predictions = generated_dataset(4)
  columns = detection.wider_face_evaluate(
      predictions, write_ground_truth(str(tmp_path / 'col'), events))
  rows = detection.wider_face_evaluate(
      predictions, write_ground_truth(str(tmp_path / 'row'), events,
                                      row_cells=True))
  for setting in SETTINGS:
    assert rows[setting] == columns[setting]


# --- Small cases checked by hand. ---


def _one_image(tmp_path, boxes, kept):
  """Ground truth of one image with ``boxes``; ``kept`` for every setting."""
  events = [('0--E', [('0_E_0', np.array(boxes, np.float64),
                       {s: kept for s in SETTINGS})])]
  return write_ground_truth(str(tmp_path / 'gt'), events)


FACES = [[10, 10, 30, 30], [100, 100, 20, 40], [60, 10, 15, 15]]


def test_a_perfect_detector_has_ap_1(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1, 2, 3])
  rows = [face + [score] for face, score in zip(FACES, (0.9, 0.8, 0.7))]
  result = detection.wider_face_evaluate({'0--E': {'0_E_0': rows}}, gt_dir)
  assert [result[s] for s in SETTINGS] == [1.0, 1.0, 1.0]
  precision, recall = result['curves']['hard']
  assert recall[-1] == 1.0 and np.all(precision[~np.isnan(precision)] == 1)


def test_a_detection_on_an_ignored_face_is_no_false_positive(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1, 2])  # face 3 ignored
  rows = [FACES[2] + [1.0], FACES[0] + [0.5], FACES[1] + [0.0]]
  result = detection.wider_face_evaluate({'0--E': {'0_E_0': rows}}, gt_dir)
  assert result['hard'] == 1.0
  precision, recall = result['curves']['hard']
  # Above 0.5 only the ignored face's detection: no proposal at all.
  assert np.all(np.isnan(precision[:499])) and np.all(recall[:499] == 0)
  assert precision[499] == 1.0 and recall[499] == 0.5
  assert precision[-1] == 1.0 and recall[-1] == 1.0


def test_the_only_detection_on_an_ignored_face_proposes_nothing(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1, 2])
  result = detection.wider_face_evaluate(
      {'0--E': {'0_E_0': [FACES[2] + [0.9]]}}, gt_dir)
  precision, recall = result['curves']['easy']
  assert np.all(np.isnan(precision)) and np.all(recall == 0)
  assert result['easy'] == 0.0


def test_a_duplicate_detection_is_a_false_positive(tmp_path):
  gt_dir = _one_image(tmp_path, FACES[:1], [1])
  rows = [FACES[0] + [1.0], [11, 10, 30, 30, 0.0]]
  result = detection.wider_face_evaluate({'0--E': {'0_E_0': rows}}, gt_dir)
  precision, recall = result['curves']['easy']
  assert np.all(precision[:-1] == 1.0) and precision[-1] == 0.5
  assert np.all(recall == 1.0)


def test_iou_uses_x_plus_w_and_the_plus_one_pixel_areas(tmp_path):
  # Face x2 = 9 + 0 -> 10 pixels a side (area 100); the box covers half
  # of it (10 x 5 = 50 pixels): IoU 0.5 exactly, a match. Without the +1
  # it would be 36 / 81 and no match.
  gt_dir = _one_image(tmp_path, [[0, 0, 9, 9]], [1])
  result = detection.wider_face_evaluate(
      {'0--E': {'0_E_0': [[0, 0, 9, 4, 1.0], [50, 50, 5, 5, 0.0]]}}, gt_dir)
  assert result['easy'] == 1.0
  result = detection.wider_face_evaluate(
      {'0--E': {'0_E_0': [[0, 0, 9, 3, 1.0], [50, 50, 5, 5, 0.0]]}}, gt_dir)
  assert result['easy'] == 0.0


def test_a_prediction_takes_its_best_face_even_if_already_matched(tmp_path):
  # Two faces; both boxes overlap face 1 most, so the second is a
  # duplicate although it overlaps face 2 at IoU >= 0.5 too: the official
  # rule is the best face, not the best free face.
  gt_dir = _one_image(tmp_path, [[0, 0, 19, 19], [2, 0, 19, 19]], [1, 2])
  rows = [[0, 0, 19, 19, 1.0], [0, 0, 19, 19, 0.5], [100, 100, 5, 5, 0.0]]
  result = detection.wider_face_evaluate({'0--E': {'0_E_0': rows}}, gt_dir)
  precision, recall = result['curves']['easy']
  assert recall[-1] == 0.5 and precision[600] == 0.5


def test_false_positives_on_an_image_without_faces_cost_nothing(tmp_path):
  events = [('0--E', [('0_E_0', np.array(FACES[:1], np.float64),
                       {s: [1] for s in SETTINGS}),
                      ('0_E_1', np.zeros((0, 4)), {s: [] for s in SETTINGS})])]
  gt_dir = write_ground_truth(str(tmp_path / 'gt'), events)
  predictions = {'0--E': {'0_E_0': [FACES[0] + [0.5]],
                          '0_E_1': [[1, 1, 20, 20, 1.0]]}}
  result = detection.wider_face_evaluate(predictions, gt_dir)
  assert result['easy'] == 1.0


def test_a_file_out_of_score_order_is_sorted(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1, 2, 3])
  rows = [FACES[0] + [0.2], [150, 150, 9, 9, 0.9], FACES[1] + [0.6],
          FACES[2] + [0.0]]
  shuffled = detection.wider_face_evaluate({'0--E': {'0_E_0': rows}}, gt_dir)
  ordered = detection.wider_face_evaluate(
      {'0--E': {'0_E_0': sorted(rows, key=lambda r: -r[4])}}, gt_dir)
  assert shuffled['hard'] == ordered['hard'] < 1


def test_equal_scores_make_one_operating_point(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1, 2, 3])
  rows = [FACES[0] + [0.7], FACES[1] + [0.7], [150, 150, 9, 9, 0.7]]
  result = detection.wider_face_evaluate({'0--E': {'0_E_0': rows}}, gt_dir)
  precision, recall = result['curves']['easy']
  np.testing.assert_allclose(precision, 2 / 3)
  np.testing.assert_allclose(recall, 2 / 3)
  assert result['easy'] == pytest.approx(4 / 9)


def test_a_setting_without_faces_has_nan_ap(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [])
  result = detection.wider_face_evaluate(
      {'0--E': {'0_E_0': [FACES[0] + [1.0], FACES[1] + [0.0]]}}, gt_dir)
  assert math.isnan(result['easy']) and result['faces']['easy'] == 0


# --- Bad input. ---


def _prediction_file(tmp_path, text, name='0_E_0'):
  path = tmp_path / 'pred' / '0--E' / f'{name}.txt'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return str(path)


@pytest.mark.parametrize('text, line, message', [
    ('0_E_0\n2\n1 2 3 4 0.5\n1 2 3 0.5\n', 4, 'expected five numbers'),
    ('0_E_0\n1\n1 2 3 4 x\n', 3, 'expected five numbers'),
    ('0_E_0\n1\n1 2 3 4 0.5 7\n', 3, 'expected five numbers'),
    ('0_E_0\n1\n1 2 nan 4 0.5\n', 3, 'not finite'),
    ('0_E_0\n1\n1 2 -3 4 0.5\n', 3, 'negative width'),
    ('0_E_0\n2\n1 2 3 4 0.5\n', 2, 'says 2 boxes, but 1'),
    ('0_E_0\n0\n1 2 3 4 0.5\n', 2, 'says 0 boxes, but 1'),
    ('0_E_0\nthree\n', 2, 'not a non-negative integer'),
    ('0_E_0\n-1\n', 2, 'not a non-negative integer'),
    ('0_E_9.jpg\n0\n', 1, "names the image '0_E_9.jpg'"),
])
def test_a_malformed_prediction_file_names_file_and_line(tmp_path, text, line,
                                                         message):
  path = _prediction_file(tmp_path, text)
  with pytest.raises(files.DataFileError) as error:
    detection.read_predictions(str(tmp_path / 'pred'))
  assert f'{path}, line {line}: ' in str(error.value)
  assert message in str(error.value)


@pytest.mark.parametrize('first_line', [
    '0_E_0', '0_E_0.jpg', '0--E/0_E_0.jpg',
    'WIDER_val\\images\\0--E\\0_E_0.jpg', '  0_E_0.jpg  '])
def test_the_image_name_line_may_carry_folder_and_extension(tmp_path,
                                                            first_line):
  _prediction_file(tmp_path, f'{first_line}\n1\n\n1 2 3 4 0.5\n\n')
  read = detection.read_predictions(str(tmp_path / 'pred'))
  np.testing.assert_array_equal(read['0--E']['0_E_0'], [[1, 2, 3, 4, 0.5]])


@pytest.mark.parametrize('text', ['', '0_E_0\n'])
def test_a_file_without_count_is_an_error(tmp_path, text):
  path = _prediction_file(tmp_path, text)
  with pytest.raises(files.DataFileError, match='count|empty') as error:
    detection.read_predictions(str(tmp_path / 'pred'))
  assert path in str(error.value)


def test_an_empty_prediction_folder_is_an_error(tmp_path):
  (tmp_path / 'pred' / '0--E').mkdir(parents=True)
  (tmp_path / 'pred' / 'README').write_text('not a prediction')
  with pytest.raises(files.DataFileError, match='no prediction files'):
    detection.read_predictions(str(tmp_path / 'pred'))
  with pytest.raises(FileNotFoundError, match='no such folder'):
    detection.read_predictions(str(tmp_path / 'absent'))


def test_predictions_of_other_images_only_are_an_error(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1])
  with pytest.raises(ValueError, match='none of the predictions names'):
    detection.wider_face_evaluate({'9--X': {'9_X_0': [FACES[0] + [1]]}},
                                  gt_dir)
  result = detection.wider_face_evaluate(
      {'0--E': {'0_E_0': [FACES[0] + [1]]}, '9--X': {'9_X_0': []}}, gt_dir)
  assert result['unknown_predictions'] == ['9--X/9_X_0']


@pytest.mark.parametrize('rows, message', [
    ([[1, 2, 3, 4]], r'\(N, 5\)'), ([[1, 2, 3, np.inf, 1]], 'not finite'),
    ([[1, 2, -3, 4, 1]], 'negative')])
def test_a_bad_mapping_is_an_error(tmp_path, rows, message):
  gt_dir = _one_image(tmp_path, FACES, [1])
  with pytest.raises(ValueError, match=message):
    detection.wider_face_evaluate({'0--E': {'0_E_0': rows}}, gt_dir)


def test_a_missing_ground_truth_file_is_named(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1])
  os.remove(os.path.join(gt_dir, 'wider_medium_val.mat'))
  with pytest.raises(FileNotFoundError, match='wider_medium_val.mat: no such'):
    detection.read_ground_truth(gt_dir)


def test_a_damaged_ground_truth_file_is_named(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1])
  path = os.path.join(gt_dir, 'wider_face_val.mat')
  with open(path, 'wb') as f:
    f.write(b'not a mat file at all' * 10)
  with pytest.raises(files.DataFileError, match='not a MATLAB .mat file'):
    detection.read_ground_truth(gt_dir)


@pytest.mark.parametrize('kept, message', [
    ([4], r'gt_list\{1\}\{1\}: face index 4 is not one of'),
    ([1, 1], r'gt_list\{1\}\{1\}: a face index is repeated'),
    ([1.5], 'integers')])
def test_bad_face_indices_are_named(tmp_path, kept, message):
  gt_dir = _one_image(tmp_path, FACES, kept)
  with pytest.raises(files.DataFileError, match=message):
    detection.read_ground_truth(gt_dir)


def test_setting_files_of_other_images_are_refused(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1])
  other = str(tmp_path / 'other')
  write_ground_truth(other, [('0--E', [('0_E_7', np.array(FACES, float),
                                        {s: [1] for s in SETTINGS})])])
  os.replace(os.path.join(other, 'wider_hard_val.mat'),
             os.path.join(gt_dir, 'wider_hard_val.mat'))
  with pytest.raises(files.DataFileError, match='name other images'):
    detection.read_ground_truth(gt_dir)


def test_a_missing_variable_is_named(tmp_path):
  gt_dir = _one_image(tmp_path, FACES, [1])
  io.savemat(os.path.join(gt_dir, 'wider_easy_val.mat'),
             dict(gtlist=_cell([_cell([np.ones((1, 1))])])))
  with pytest.raises(files.DataFileError, match="no variable 'gt_list'"):
    detection.read_ground_truth(gt_dir)
