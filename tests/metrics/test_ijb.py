"""IJB metrics against brute-force loops written here, with planted answers
and ties."""
import math

import jax
import numpy as np
import pytest

from facejax import sharding
from facejax.metrics import ijb


def brute_force_templates(embeddings, templates, medias, flipped=None,
                          scores=None, media_pooling=True):
  """insightface's loop: per template, per media, mean; sum; normalise."""
  out = {}
  for template in sorted(set(templates.tolist())):
    media_means = []
    members = [i for i in range(len(templates)) if templates[i] == template]
    groups = {}
    for i in members:
      key = medias[i] if media_pooling else ('image', i)
      groups.setdefault(key, []).append(i)
    for indices in groups.values():
      vectors = []
      for i in indices:
        v = embeddings[i].astype(np.float64)
        if flipped is not None:
          v = v + flipped[i]
        if scores is not None:
          v = v * scores[i]
        vectors.append(v)
      media_means.append(sum(vectors) / len(vectors))
    total = sum(media_means)
    out[template] = total / math.sqrt(float(np.dot(total, total)))
  return out


def brute_force_threshold_accepts(negatives, rate):
  """The lowest cut t (accept when score > t) among the candidates that
  accepts at most floor(rate * n) negatives."""
  limit = math.floor(rate * len(negatives) + 1e-9)
  best = math.inf
  for t in sorted(set(negatives.tolist()) | {-math.inf}):
    accepted = sum(1 for s in negatives if s > t)
    if accepted <= limit:
      best = min(best, t)
  return best


def brute_force_tar(scores, labels, far):
  impostors = scores[~labels]
  t = brute_force_threshold_accepts(impostors, far)
  genuine = scores[labels]
  return sum(1 for s in genuine if s > t) / len(genuine)


def brute_force_auc(scores, labels):
  genuine, impostor = scores[labels], scores[~labels]
  total = 0.0
  for g in genuine:
    for i in impostor:
      total += 1.0 if g > i else 0.5 if g == i else 0.0
  return total / (len(genuine) * len(impostor))


def test_template_features_match_insightface_s_loop():
  rng = np.random.default_rng(0)
  n = 40
  embeddings = rng.normal(size=(n, 6)).astype(np.float32)
  flipped = rng.normal(size=(n, 6)).astype(np.float32)
  scores = rng.uniform(0.5, 1.0, n)
  templates = rng.choice([7, 3, 11, 5], n)
  medias = rng.choice([100, 101, 102], n)  # shared ids across templates
  for kwargs in (dict(), dict(flipped=flipped), dict(detector_scores=scores),
                 dict(media_pooling=False),
                 dict(flipped=flipped, detector_scores=scores)):
    features, ids = ijb.template_features(embeddings, templates, medias,
                                          **kwargs)
    expected = brute_force_templates(
        embeddings, templates, medias, kwargs.get('flipped'),
        kwargs.get('detector_scores'), kwargs.get('media_pooling', True))
    assert ids.tolist() == sorted(expected)
    for row, template in enumerate(ids):
      np.testing.assert_allclose(features[row], expected[template],
                                 atol=1e-6)


def test_media_pooling_weighs_media_not_images():
  # Template 0: one still (direction x) and a 3-frame video (direction y):
  # pooled by media, x and y weigh the same; by image, y weighs 3 times.
  embeddings = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], np.float32)
  templates, medias = np.zeros(4, int), np.array([0, 1, 1, 1])
  pooled, _ = ijb.template_features(embeddings, templates, medias)
  np.testing.assert_allclose(pooled[0], [2 ** -0.5, 2 ** -0.5], atol=1e-7)
  per_image, _ = ijb.template_features(embeddings, templates, medias,
                                       media_pooling=False)
  np.testing.assert_allclose(per_image[0], np.array([1, 3]) / 10 ** 0.5,
                             atol=1e-7)


def test_template_features_refuse_bad_shapes_and_zero_templates():
  with pytest.raises(ValueError, match='must be'):
    ijb.template_features(np.zeros((3, 2)), [0, 0], [0, 0, 0])
  with pytest.raises(ValueError, match="template 4: its pooled feature is "
                     'zero'):
    ijb.template_features(np.array([[1.0, 0], [-1.0, 0]]), [4, 4], [0, 1])


@pytest.mark.parametrize('block_size', [1, 7, 64, 1000])
def test_pair_scores_in_blocks_that_do_not_divide(block_size):
  rng = np.random.default_rng(1)
  features = rng.normal(size=(30, 8)).astype(np.float32)
  features /= np.linalg.norm(features, axis=1, keepdims=True)
  ids = np.arange(100, 130)
  p1, p2 = rng.choice(ids, 203), rng.choice(ids, 203)
  scores = ijb.pair_scores(features, ids, p1, p2, block_size=block_size)
  expected = np.sum(features[p1 - 100] * features[p2 - 100], axis=1)
  np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_pair_scores_on_one_device_equal_eight():
  rng = np.random.default_rng(2)
  features = rng.normal(size=(20, 4)).astype(np.float32)
  ids = np.arange(20)
  p1, p2 = rng.choice(ids, 77), rng.choice(ids, 77)
  one = sharding.make_mesh(devices=jax.devices()[:1])
  np.testing.assert_array_equal(
      ijb.pair_scores(features, ids, p1, p2, block_size=16, mesh=one),
      ijb.pair_scores(features, ids, p1, p2, block_size=16))


def test_pair_scores_compile_once_per_block_size():
  rng = np.random.default_rng(3)
  features = rng.normal(size=(10, 4)).astype(np.float32)
  ids = np.arange(10)
  mesh = sharding.make_mesh()
  score = ijb._pair_block_scores(mesh)  # pylint: disable=protected-access
  before = score._cache_size()  # pylint: disable=protected-access
  for pairs in (9, 40, 1000):  # one, several and a ragged last block
    ijb.pair_scores(features, ids, rng.choice(ids, pairs),
                    rng.choice(ids, pairs), block_size=24, mesh=mesh)
  assert score._cache_size() - before <= 1  # pylint: disable=protected-access


def test_pair_scores_name_an_unknown_template():
  with pytest.raises(ValueError, match='template 99 has no feature'):
    ijb.pair_scores(np.eye(3, dtype=np.float32), np.array([1, 2, 3]),
                    [1, 99], [2, 3])


def test_tar_at_far_against_brute_force_with_ties():
  rng = np.random.default_rng(4)
  # Scores on a coarse grid: many ties, some across the thresholds.
  scores = np.round(rng.normal(size=400), 1)
  labels = rng.random(400) < 0.3
  scores[labels] += 1.0
  fars = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
  result = ijb.tar_at_far(scores, labels, fars)
  for far in fars:
    assert result['tar_at_far'][far] == pytest.approx(
        brute_force_tar(scores, labels, far)), far
  assert result['auc'] == pytest.approx(brute_force_auc(scores, labels))


def test_a_tie_across_the_threshold_is_rejected_whole():
  # 10 impostors, FAR 0.2 allows 2; three tie at 0.9 above the rest: taking
  # any of them would take all three (FAR 0.3), so none is accepted.
  impostors = [0.9, 0.9, 0.9] + [0.1] * 7
  genuine = [0.95, 0.9, 0.5]
  scores = np.array(impostors + genuine)
  labels = np.array([False] * 10 + [True] * 3)
  result = ijb.tar_at_far(scores, labels, (0.2, 0.3))
  assert result['tar_at_far'][0.2] == pytest.approx(1 / 3)  # only 0.95
  # FAR 0.3 allows 3: all three ties pass, the cut falls to 0.1.
  assert result['tar_at_far'][0.3] == 1.0


def test_achieved_far_never_exceeds_the_target():
  rng = np.random.default_rng(5)
  impostors = np.round(rng.normal(size=1000), 2)
  for far in (1e-3, 1e-2, 0.037, 0.1):
    threshold = ijb.acceptance_threshold(impostors, far)
    assert np.mean(impostors > threshold) <= far


def test_roc_points():
  result = ijb.tar_at_far([0.9, 0.8, 0.8, 0.1], [True, False, True, False],
                          (0.5,))
  fpr, tpr, _ = result['roc']
  # Nothing accepted, then each distinct score: the ties at 0.8 one point.
  np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
  np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])


def test_tar_at_far_refuses_one_sided_input():
  with pytest.raises(ValueError, match='both genuine and impostor'):
    ijb.tar_at_far([0.1, 0.2], [True, True])


def brute_force_identification(probes, probe_subjects, gallery,
                               gallery_subjects, ranks, fpirs):
  gallery_set = set(gallery_subjects.tolist())
  mated_ranks, mated_scores, non_mated_tops = [], [], []
  for p in range(len(probes)):
    scores = [float(np.dot(probes[p].astype(np.float64), g)) for g in gallery]
    if probe_subjects[p] in gallery_set:
      mate = max(s for s, subject in zip(scores, gallery_subjects)
                 if subject == probe_subjects[p])
      beaten = sum(1 for s, subject in zip(scores, gallery_subjects)
                   if subject != probe_subjects[p] and s >= mate)
      mated_ranks.append(1 + beaten)
      mated_scores.append(mate)
    else:
      non_mated_tops.append(max(scores))
  cmc = {r: sum(1 for k in mated_ranks if k <= r) / len(mated_ranks)
         for r in ranks}
  tpir = {}
  for fpir in fpirs:
    t = brute_force_threshold_accepts(np.array(non_mated_tops), fpir)
    tpir[fpir] = sum(1 for k, s in zip(mated_ranks, mated_scores)
                     if k == 1 and s > t) / len(mated_ranks)
  return cmc, tpir


@pytest.mark.parametrize('block_size', [3, 16, 500])
def test_identification_against_brute_force(block_size):
  rng = np.random.default_rng(6)
  gallery_subjects = np.arange(12)
  gallery = rng.normal(size=(12, 5)).astype(np.float32)
  gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
  probe_subjects = rng.choice(np.arange(20), 45)  # 12..19: non-mated
  noise = rng.normal(size=(45, 5)) * 0.8
  probes = np.where((probe_subjects < 12)[:, None],
                    gallery[np.minimum(probe_subjects, 11)], 0) + noise
  probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(
      np.float32)
  probes = np.round(probes, 1)  # ties between scores
  ranks, fpirs = (1, 2, 5, 10), (0.05, 0.1, 0.5)
  result = ijb.identification(probes, probe_subjects, gallery,
                              gallery_subjects, ranks, fpirs,
                              block_size=block_size)
  cmc, tpir = brute_force_identification(probes, probe_subjects, gallery,
                                         gallery_subjects, ranks, fpirs)
  for r in ranks:
    assert result['cmc'][r] == pytest.approx(cmc[r]), r
  for f in fpirs:
    assert result['tpir_at_fpir'][f] == pytest.approx(tpir[f]), f
  assert result['mated'] + result['non_mated'] == 45


def test_ties_count_against_the_mate():
  gallery = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
  result = ijb.identification(
      np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), np.array(['a', 'z']),
      gallery, np.array(['a', 'b', 'c']), ranks=(1, 2), fpirs=(0.0,))
  # The mate 'a' ties with 'b': rank 2, not 1.
  assert result['cmc'] == {1: 0.0, 2: 1.0}
  assert result['tpir_at_fpir'][0.0] == 0.0


def test_identification_needs_mated_and_non_mated_probes():
  gallery = np.eye(2, dtype=np.float32)
  with pytest.raises(ValueError, match='no probe has a mate'):
    ijb.identification(gallery, [5, 6], gallery, [1, 2])
  with pytest.raises(ValueError, match='needs non-mated'):
    ijb.identification(gallery, [1, 2], gallery, [1, 2])
