"""The paper-figure jobs of eval/figures.py, on tiny training budgets."""
import json
import os

import numpy as np
import pytest

from eval import figures

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
SETTING_FIELDS = (
    'lambda', 'softmax_accuracy', 'nearest_centre_accuracy', 'compactness',
    'intra_class_distance', 'inter_centre_distance', 'final_softmax_loss',
    'final_center_loss')


def test_center_loss_figure_writes_png_and_json(tmp_path):
  lambdas = (0.0, 0.1)
  results = figures.center_loss_figure(str(tmp_path), steps=30,
                                       lambdas=lambdas, seed=0)
  with open(results['png'], 'rb') as stream:
    assert stream.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
  assert os.path.dirname(results['png']) == str(tmp_path)
  with open(results['json']) as stream:
    saved = json.load(stream)
  assert saved == results
  assert [setting['lambda'] for setting in saved['settings']] == list(lambdas)
  for setting in saved['settings']:
    assert set(SETTING_FIELDS) <= set(setting)
    assert all(np.isfinite(setting[field]) for field in SETTING_FIELDS)
    assert 0.0 <= setting['softmax_accuracy'] <= 1.0
    assert 0.0 <= setting['nearest_centre_accuracy'] <= 1.0
    assert setting['compactness'] > 0.0
  table = figures.center_loss_table(results)
  assert results['png'] in table and results['json'] in table


def test_nearest_centre_classifier_matches_a_plain_loop():
  rng = np.random.default_rng(0)
  num_classes, dim = 4, 3
  labels = np.repeat(np.arange(num_classes), 5)
  features = rng.normal(size=(len(labels), dim)) + 3.0 * labels[:, None]
  queries = rng.normal(size=(17, dim)) * 4.0 + 4.0

  means = figures.class_means(features, labels, num_classes)
  expected_means = np.stack([
      np.mean([f for f, y in zip(features, labels) if y == label], axis=0)
      for label in range(num_classes)])
  np.testing.assert_allclose(means, expected_means, rtol=1e-12)

  expected = []
  for query in queries:
    best_label, best_distance = None, np.inf
    for label, centre in enumerate(expected_means):
      distance = np.sqrt(np.sum((query - centre) ** 2))
      if distance < best_distance:
        best_label, best_distance = label, distance
    expected.append(best_label)
  np.testing.assert_array_equal(
      figures.nearest_centre_predict(queries, means), expected)


def test_compactness_of_tight_clusters_is_lower():
  rng = np.random.default_rng(1)
  labels = np.repeat(np.arange(3), 50)
  centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  noise = rng.normal(size=(len(labels), 2))
  tight, _, _ = figures.compactness(centres[labels] + 0.1 * noise, labels, 3)
  loose, _, _ = figures.compactness(centres[labels] + 2.0 * noise, labels, 3)
  assert tight < loose
  scaled, _, _ = figures.compactness(
      5.0 * (centres[labels] + 0.1 * noise), labels, 3)
  np.testing.assert_allclose(scaled, tight, rtol=1e-12)


def test_command_line_parses_the_center_loss_subcommand():
  args = figures.build_parser().parse_args(
      ['center_loss', '--steps', '7', '--lambdas', '0,0.5', '--out', 'x'])
  assert (args.figure, args.steps, args.lambdas, args.out) == (
      'center_loss', 7, (0.0, 0.5), 'x')


def test_principal_plane_matches_the_covariance_eigenvectors():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(50, 5)) * [5.0, 3.0, 1.0, 0.5, 0.1]
  plane = figures.principal_plane(features)
  centred = features - features.mean(0)
  values, vectors = np.linalg.eigh(centred.T @ centred)
  expected = centred @ vectors[:, ::-1][:, :2]
  np.testing.assert_allclose(np.abs(plane), np.abs(expected), atol=1e-9)


def test_embeddings_figure_from_trained_runs(workdir, tmp_path, capsys):
  assert figures.main(['embeddings', '--runs',
                       f'first={workdir},second={workdir}', '--identities',
                       '3', '--images', '4', '--out', str(tmp_path)]) == 0
  printed = capsys.readouterr().out
  assert '| first |' in printed and '| second |' in printed
  with open(tmp_path / 'embeddings.json') as stream:
    saved = json.load(stream)
  assert [run['run'] for run in saved['runs']] == ['first', 'second']
  assert saved['runs'][0]['compactness'] == saved['runs'][1]['compactness']
  with open(tmp_path / 'embeddings.png', 'rb') as stream:
    assert stream.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
  with pytest.raises(SystemExit):
    figures.main(['embeddings', '--runs', 'no-workdir'])
