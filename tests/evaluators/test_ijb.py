"""The IJB evaluator: pooling and metrics from per-image embeddings, the
embedding options it asks for, and its config entry."""
import numpy as np
import pytest

from facejax.data.synthetic import ijb as synthetic_ijb
from facejax.evaluators import ijb as ijb_evaluator
from facejax.metrics import ijb


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('ijb'))
  synthetic_ijb.write(directory, num_identities=8, templates_per_identity=3,
                      image_size=32)
  return directory


def identity_embeddings(protocol, noise, seed=0):
  """Each image: its identity's direction plus noise (so the answers are
  known: little noise, perfect verification). The synthetic set numbers
  its templates from 1, three per identity."""
  rng = np.random.default_rng(seed)
  subject = (protocol.templates - 1) // 3
  directions = rng.normal(size=(subject.max() + 1, 16))
  return (directions[subject] + noise * rng.normal(
      size=(len(subject), 16))).astype(np.float32)


def test_run_asks_for_raw_embeddings_and_yields_every_metric(root):
  evaluator = ijb_evaluator.Evaluator(root, 'IJBC')
  asked = {}

  def embed(source, **options):
    asked.update(options, count=source.num_examples)
    return identity_embeddings(evaluator.protocol, 0.05)

  metrics = dict(evaluator.run(embed))
  assert asked == dict(flip=True, normalise=False,
                       count=len(evaluator.protocol.image_paths))
  assert set(metrics) == set(ijb_evaluator.Evaluator.metric_modes({}))
  assert metrics['tar_at_far_1e-01'] == 1.0 and metrics['auc'] == 1.0
  assert metrics['rank_1'] == 1.0


def test_results_equal_the_metrics_applied_by_hand(root):
  evaluator = ijb_evaluator.Evaluator(root, 'IJBC', detector_score=False)
  embeddings = identity_embeddings(evaluator.protocol, 1.5, seed=3)
  result = evaluator.evaluate_embeddings(embeddings)
  protocol = evaluator.protocol
  features, ids = ijb.template_features(embeddings, protocol.templates,
                                        protocol.medias)
  scores = ijb.pair_scores(features, ids, protocol.pairs[:, 0],
                           protocol.pairs[:, 1])
  expected = ijb.tar_at_far(scores, protocol.labels)
  assert result['verification']['tar_at_far'] == expected['tar_at_far']
  g1 = ijb.identification(
      features[ijb.template_rows(ids, protocol.probes[0], 'p')],
      protocol.probes[1],
      features[ijb.template_rows(ids, protocol.galleries['G1'][0], 'g')],
      protocol.galleries['G1'][1])
  assert result['identification']['G1'] == g1
  mean = result['identification_mean']['cmc'][1]
  assert mean == pytest.approx(np.mean(
      [g['cmc'][1] for g in result['identification'].values()]))


def test_detector_scores_weigh_the_templates(root):
  with_scores = ijb_evaluator.Evaluator(root, 'IJBC')
  without = ijb_evaluator.Evaluator(root, 'IJBC', detector_score=False)
  embeddings = identity_embeddings(with_scores.protocol, 1.0, seed=4)
  a, _ = with_scores.features(embeddings)
  b, _ = without.features(embeddings)
  assert not np.allclose(a, b)


def test_config_entry_checks_the_root(tmp_path):
  from facejax.training import config_rules  # pylint: disable=import-outside-toplevel
  with pytest.raises(config_rules.ConfigError, match=r'evals\.ijbc\.root'):
    ijb_evaluator.Evaluator.check_config({'root': str(tmp_path)},
                                         'evals.ijbc')
