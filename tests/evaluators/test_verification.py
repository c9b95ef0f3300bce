"""evaluators.verification: one pair set, the metrics of its embeddings."""
import pickle

import ml_collections
import numpy as np
import pytest

from facejax.data import synthetic
from facejax.evaluators import verification
from facejax.metrics import verification as verification_metrics
from facejax.training import config_rules
from tests.data import image_fixtures


def pixels(source):
  """A stand-in embedding: the images' pixels, centred and normalised."""
  rows = source.images.reshape(source.num_examples, -1).astype(np.float64)
  rows -= rows.mean(axis=0)
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope='module')
def synthetic_pairs():
  return verification.Evaluator(pairs=40, seed=3)


def test_synthetic_pairs_are_the_generators(synthetic_pairs):
  pair_set = synthetic_pairs.pair_set
  images_a, images_b, issame = synthetic.verification_pairs(40, seed=3)
  np.testing.assert_array_equal(pair_set.source.images[pair_set.first],
                                images_a)
  np.testing.assert_array_equal(pair_set.source.images[pair_set.second],
                                images_b)
  np.testing.assert_array_equal(pair_set.issame, issame)
  assert synthetic_pairs.name == 'synthetic (40 pairs)'


def test_run_yields_evaluate_of_the_cosine_scores(synthetic_pairs):
  pair_set = synthetic_pairs.pair_set
  features = pixels(pair_set.source)
  scores = np.sum(features[pair_set.first] * features[pair_set.second], 1)
  expected = verification_metrics.evaluate(scores, pair_set.issame)
  got = dict(synthetic_pairs.run(pixels))
  assert list(got) == list(verification.METRICS)
  assert got == dict(accuracy=expected['accuracy_mean'],
                     accuracy_std=expected['accuracy_std'],
                     val_at_far=expected['val_at_far'],
                     eer=expected['eer'], auc=expected['auc'])
  # What the training loop records as verification_accuracy: the LFW
  # protocol's ten-fold accuracy.
  assert got['accuracy'] == verification_metrics.ten_fold_accuracy(
      scores, pair_set.issame)[0]


def test_euclidean_scores_and_chosen_metrics():
  evaluator = verification.Evaluator(pairs=40, seed=3, metric='euclidean',
                                     metrics=('eer', 'accuracy'))
  pair_set = evaluator.pair_set
  features = pixels(pair_set.source)
  distances = np.linalg.norm(
      features[pair_set.first] - features[pair_set.second], axis=1)
  expected = verification_metrics.evaluate(distances, pair_set.issame,
                                           higher_is_same=False)
  assert list(evaluator.run(pixels)) == [
      ('eer', expected['eer']), ('accuracy', expected['accuracy_mean'])]


def test_bin_set(tmp_path):
  images, _ = synthetic.generate(2, 2, seed=1, image_size=32)
  encoded = [image_fixtures.encode(image, 'png') for image in images] * 5
  (tmp_path / 'cfp_fp.bin').write_bytes(pickle.dumps(
      (encoded, [True, False] * 5)))
  evaluator = verification.Evaluator(bin=str(tmp_path / 'cfp_fp.bin'))
  assert evaluator.name == 'cfp_fp'
  assert len(evaluator.pair_set.issame) == 10
  np.testing.assert_array_equal(evaluator.pair_set.first, np.arange(0, 20, 2))


@pytest.mark.parametrize('entry, message', [
    (dict(), 'give one pair set'),
    (dict(pairs=40, bin='lfw.bin'), 'give one pair set'),
    (dict(pairs=10), r'^evals.x.pairs must be >= 20, got 10$'),
    (dict(pairs_file='pairs.txt'), 'pairs_file and data'),
    (dict(bin='absent.bin'), r"evals.x.bin='absent.bin' does not exist"),
])
def test_config_errors_name_the_key(entry, message):
  with pytest.raises(config_rules.ConfigError, match=message):
    verification.Evaluator.check_config(ml_collections.ConfigDict(entry),
                                        'evals.x')


def test_metric_modes():
  assert verification.Evaluator.metric_modes(dict(pairs=40)) == dict(
      accuracy='max', accuracy_std='min', val_at_far='max', eer='min',
      auc='max')
  assert verification.Evaluator.metric_modes(dict(metrics=['eer'])) == dict(
      eer='min')
