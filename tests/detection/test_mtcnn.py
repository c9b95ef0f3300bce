"""The whole detector against the mtcnn package's, on real photos and
composites of them, and on bad input.

The photos are matplotlib's ``grace_hopper.jpg`` and composites built by
``bench.detect`` (faces pasted at known places and scales, some mirrored,
on plain and noisy backgrounds; one with scikit-image's astronaut when
installed); all are 600 x 512, one size bucket, so one compilation serves
them. The package runs at facejax's O-Net threshold (0.7; its default is
0.8).
"""
import jax
import numpy as np
import pytest

from bench import detect as photos
from facejax import detection
from facejax.data import alignment
from tests.detection import keras_reference

pytest.importorskip('mtcnn')

# Faces found with at least this score by either detector must be found
# by both, with these agreements.
SURE = 0.9
MIN_IOU = 0.8
MAX_LANDMARK_ERROR = 0.03  # of the box diagonal


@pytest.fixture(scope='module')
def detector():
  return detection.MTCNN()


@pytest.fixture(scope='module')
def sources():
  return photos._sources()  # pylint: disable=protected-access


@pytest.fixture(scope='module')
def composites(sources):
  built = [photos.composite(spec, sources) for spec in photos.COMPOSITES]
  return [c for c in built if c is not None]


def _match(ours, theirs):
  """Pairs (ours, theirs) of sure faces; asserts none is left alone."""
  boxes, scores, _ = ours
  their_boxes, their_scores, _ = theirs
  pairs = []
  for k in np.flatnonzero(their_scores >= SURE):
    ious = [photos.box_iou(their_boxes[k], b) for b in boxes]
    best = int(np.argmax(ious)) if ious else None
    assert best is not None and ious[best] >= MIN_IOU, (
        f'the package\'s face {their_boxes[k]} ({their_scores[k]:.3f}) not '
        f'found: best IoU {max(ious, default=0):.2f}')
    pairs.append((best, k))
  assert sorted(int(b) for b, _ in pairs) == sorted(
      np.flatnonzero(scores >= SURE).tolist()), 'a face only we found'
  return pairs


def _agreement(ours, theirs):
  """(worst IoU, worst landmark error / diagonal, worst score gap)."""
  worst = (1.0, 0.0, 0.0)
  for ours_k, theirs_k in _match(ours, theirs):
    box = theirs[0][theirs_k]
    diagonal = np.hypot(box[2] - box[0], box[3] - box[1])
    iou = photos.box_iou(ours[0][ours_k], box)
    error = np.max(np.linalg.norm(ours[2][ours_k] - theirs[2][theirs_k],
                                  axis=-1)) / diagonal
    gap = abs(float(ours[1][ours_k]) - float(theirs[1][theirs_k]))
    worst = (min(worst[0], iou), max(worst[1], error), max(worst[2], gap))
  return worst


def test_same_faces_as_the_package(detector, sources, composites):
  package = keras_reference.package_detector()
  test_photos = [sources['grace_hopper'][0]] + [c[0] for c in composites]
  found = 0
  for photo in test_photos:
    ours = detector.detect(photo)
    assert ours[0].dtype == ours[1].dtype == ours[2].dtype == np.float32
    assert ours[0].shape[1:] == (4,) and ours[2].shape[1:] == (5, 2)
    assert np.all(np.diff(ours[1]) <= 0)  # best first
    iou, error, gap = _agreement(ours, photos.package_faces(package, photo))
    # Measured: identical to float32 rounding (the same resampling, crops,
    # NMS and box arithmetic); the bounds are 0.8 and 3%.
    assert iou >= 0.999 and error <= 1e-4 and gap <= 1e-4
    found += int(np.sum(ours[1] >= SURE))
  assert found == 1 + sum(len(c[1]) for c in composites)  # every face


def test_composite_faces_where_they_were_pasted(detector, composites):
  # Each detected face against where the paste put the source's face.
  for image, true_boxes, true_landmarks in composites:
    boxes, scores, landmarks = detector.detect(image)
    assert len(boxes) == len(true_boxes)
    for box, points in zip(true_boxes, true_landmarks):
      k = int(np.argmax([photos.box_iou(box, b) for b in boxes]))
      assert photos.box_iou(box, boxes[k]) >= 0.7 and scores[k] >= SURE
      inter_ocular = np.linalg.norm(points[0] - points[1])
      # The order survives the mirror: left eye first, as seen.
      assert landmarks[k][0, 0] < landmarks[k][1, 0]
      assert np.mean(np.linalg.norm(landmarks[k] - points, axis=-1)) < (
          0.08 * inter_ocular)


def test_alignment_from_detected_landmarks_matches_the_true_crop(
    detector, composites):
  # The 112 x 112 ArcFace crop from the detected landmarks against the crop
  # from the paste's true landmarks (facejax.data.alignment, unchanged).
  # Measured: the true landmarks land within 1.5 crop pixels of where the
  # true crop puts them (mean 0.4 to 1.0), pixel correlation 0.89 to 0.98.
  pytest.importorskip('tensorflow')
  for image, _, true_landmarks in composites:
    _, _, landmarks = detector.detect(image)
    for points in true_landmarks:
      k = int(np.argmin([np.linalg.norm(p - points) for p in landmarks]))
      ours = alignment.similarity_transform(landmarks[k],
                                            alignment.ARCFACE_TEMPLATE)
      true = alignment.similarity_transform(points,
                                            alignment.ARCFACE_TEMPLATE)
      misplaced = np.linalg.norm(alignment.apply_affine(ours, points)
                                 - alignment.apply_affine(true, points),
                                 axis=-1)
      assert misplaced.max() < 2.5  # crop pixels, of 112
      crop = alignment.align(image, landmarks[k]).numpy().astype(float)
      true_crop = alignment.align(image, points).numpy().astype(float)
      assert np.corrcoef(crop.ravel(), true_crop.ravel())[0, 1] > 0.85
      assert np.mean(np.abs(crop - true_crop)) < 25


def test_no_recompilation_within_a_bucket(detector, sources, composites):
  detector.detect(sources['grace_hopper'][0])
  for image, _, _ in composites:
    detector.detect(image)
  counts = detector.trace_counts
  assert counts['pyramid'] == counts['propose'] == 1  # one bucket
  # R-Net and O-Net: once per number of candidate rows met.
  for image, _, _ in composites + [(sources['grace_hopper'][0], 0, 0)]:
    detector.detect(image)
  assert detector.trace_counts == counts


def test_batches_and_lists_of_any_size(sources):
  # Photos of one bucket (128 x 128) but different sizes run as one padded
  # batch of 4; each finds what it finds alone. A photo smaller than the
  # minimum face keeps its place in the list.
  grace = sources['grace_hopper'][0]
  crop = photos.lfw_size_crop(grace, photos.GRACE_HOPPER_FACE[0], 100)
  batch = [crop, np.full((100, 100, 3), 128, np.uint8),  # no face
           np.zeros((15, 15, 3), np.uint8),  # below the minimum face
           crop[:, ::-1].copy(), grace[100:340:2, 180:400:2]]  # 120 x 110
  batched = detection.MTCNN(max_batch=4)
  one_by_one = [batched.detect(image) for image in batch]
  assert batched.trace_counts['propose'] == 1
  together = batched.detect_batch(batch)
  assert batched.trace_counts['propose'] == 2  # batch 4 besides batch 1
  assert [len(r[0]) for r in together] == [1, 0, 0, 1, 1]
  for got, want in zip(together, one_by_one):
    for a, b in zip(got, want):  # batched convolutions round differently
      np.testing.assert_allclose(a, b, atol=1e-3)
  assert batched.detect_batch([]) == []


def test_more_candidates_than_the_capacity(detector, sources):
  # A capacity far too small: the photo reruns with doubled capacities
  # until nothing is cut, and finds what the default finds.
  photo = sources['grace_hopper'][0][100:340:3, 170:360:3]
  small = detection.MTCNN(capacity=8)
  for a, b in zip(small.detect(photo), detector.detect(photo)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert small.trace_counts['propose'] > 1


def test_bad_inputs(detector, sources):
  grace = sources['grace_hopper'][0]
  gray = np.round(photos.lfw_size_crop(grace, photos.GRACE_HOPPER_FACE[0],
                                       100).mean(axis=2)).astype(np.uint8)
  as_rgb = np.repeat(gray[:, :, None], 3, axis=2)
  for image in (gray, gray[:, :, None]):  # converted, not refused
    for got, want in zip(detector.detect(image), detector.detect(as_rgb)):
      np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match='uint8 RGB.*uint16.*>> 8'):
    detector.detect(grace.astype(np.uint16) * 257)
  with pytest.raises(ValueError, match='uint8 RGB.*float32'):
    detector.detect(grace.astype(np.float32) / 255)
  with pytest.raises(ValueError, match=r'images\[1\].*\(H, W, 3\).*CMYK'):
    detector.detect_batch([grace, np.zeros((50, 50, 4), np.uint8)])
  with pytest.raises(ValueError, match='shape'):
    detector.detect(np.zeros((5, 5, 5, 3), np.uint8))
  # Smaller than the minimum face, or empty: no face, never a crash.
  for image in (np.zeros((19, 400, 3), np.uint8), np.zeros((0, 0, 3),
                                                            np.uint8)):
    boxes, scores, landmarks = detector.detect(image)
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    assert landmarks.shape == (0, 5, 2) and boxes.dtype == np.float32


def test_what_greedy_nms_and_the_pyramid_rule_change(sources, composites):
  # Measured differences from the package, on the photo where each shows.
  package = keras_reference.package_detector()
  # Fast NMS (the default) equals the package; greedy NMS keeps other
  # candidates early and, on one LFW-size crop of the 18 of bench.detect,
  # ends on another box of the same face (IoU 0.85, landmarks 2% of the
  # diagonal apart, score 0.993 instead of 0.997).
  image, true_boxes, _ = composites[0]
  crop = photos.lfw_size_crop(image, true_boxes[2])
  theirs = photos.package_faces(package, crop)
  fast = detection.MTCNN().detect(crop)
  greedy = detection.MTCNN(nms='greedy').detect(crop)
  assert _agreement(fast, theirs)[0] > 0.999
  iou, error, gap = _agreement(greedy, theirs)
  assert 0.8 < iou < 0.9 and 0.01 < error < 0.03 and gap < 0.01
  # The pyramid: at min_face_size=40 the package's levels go below 12
  # pixels and it finds nothing; the paper's rule finds the face.
  quarter = sources['grace_hopper'][0][::4, ::4].copy()  # 150 x 128
  assert len(photos.package_faces(package, quarter,
                                  min_face_size=40)[0]) == 0
  assert len(detection.MTCNN(min_face_size=40).detect(quarter)[0]) == 1


def test_constructor_refuses_bad_settings():
  for kwargs, message in ((dict(min_face_size=0), 'min_face_size'),
                          (dict(thresholds=(0.6, 0.7)), 'thresholds'),
                          (dict(scale_factor=1.2), 'scale_factor'),
                          (dict(nms='soft'), 'nms'),
                          (dict(max_batch=0), 'max_batch'),
                          (dict(capacity=0), 'capacity')):
    with pytest.raises(ValueError, match=message):
      detection.MTCNN(variables={}, **kwargs)


def test_runs_on_the_default_device():
  assert jax.default_backend() in ('cpu', 'gpu', 'tpu')
