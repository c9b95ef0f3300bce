"""python -m eval.attributes: tiny attribute runs, restored and scored."""
import json
import os

import numpy as np
import pytest

from eval import attributes as eval_attributes


@pytest.fixture
def runs(attribute_runs):
  """The session's two 5-step attribute runs (tests/conftest.py)."""
  return {'multitask': attribute_runs['adaptive'].workdir,
          'lmle': attribute_runs['lmle'].workdir}


def balanced_accuracy_by_loops(predictions, targets):
  out = []
  for a in range(targets.shape[1]):
    positives = [i for i in range(len(targets)) if targets[i, a]]
    negatives = [i for i in range(len(targets)) if not targets[i, a]]
    recalls = []
    if positives:
      recalls.append(sum(predictions[i, a] for i in positives)
                     / len(positives))
    if negatives:
      recalls.append(sum(not predictions[i, a] for i in negatives)
                     / len(negatives))
    out.append(sum(recalls) / len(recalls))
  return np.array(out)


def test_the_report_scores_each_runs_predictions(runs, tmp_path, capsys,
                                                 monkeypatch):
  evaluated = {}  # what each run predicted, as the job computed it

  def recording(workdir, *args, **kwargs):
    result = evaluate_run(workdir, *args, **kwargs)
    evaluated[result[0]] = result
    return result
  evaluate_run = eval_attributes.evaluate_run
  monkeypatch.setattr(eval_attributes, 'evaluate_run', recording)
  out = str(tmp_path / 'eval')
  assert eval_attributes.main(
      ['--checkpoint', runs['multitask'], '--checkpoint', runs['lmle'],
       '--knn-k', '3', '--most-imbalanced', '2', '--out', out]) == 0
  printed = capsys.readouterr().out
  with open(os.path.join(out, 'attributes.json'), encoding='utf-8') as f:
    report = json.load(f)
  assert set(report['methods']) == set(evaluated) == {
      'adaptive (multi-task)', 'lmle (LMLE-kNN)'}
  assert 'balanced accuracy, 2 most imbalanced' in printed
  for method, (_, data, predictions, step) in evaluated.items():
    assert step == 5 and report['checkpoint_steps'][method] == 5
    targets = data['test'].attributes
    expected = balanced_accuracy_by_loops(predictions, targets)
    result = report['methods'][method]
    np.testing.assert_allclose(
        [result['balanced_accuracy'][n] for n in report['attributes']],
        expected)
    np.testing.assert_allclose(result['mean_balanced_accuracy'],
                               expected.mean())
    rates = data['train'].attributes.mean(axis=0)
    worst = np.argsort(-np.abs(rates - 0.5), kind='stable')[:2]
    assert report['most_imbalanced'] == [report['attributes'][a]
                                         for a in worst]
    np.testing.assert_allclose(
        result['mean_balanced_accuracy_most_imbalanced'],
        expected[worst].mean())
    assert printed.count(method) == 2  # the summary and the table
  # The multi-task predictions are the head's logits > 0 on the test split.
  multitask = evaluated['adaptive (multi-task)']
  assert multitask[2].shape == (16, 6) and multitask[2].dtype == bool


def test_multitask_predicts_present_where_the_logit_is_positive():
  head = dict(attribute_weights=np.array([[1.0, -1.0], [0.5, 0.0]]),
              attribute_bias=np.array([0.0, 0.25]))
  features = np.array([[1.0, 0.0], [-1.0, 1.0], [0.0, -1.0]])
  np.testing.assert_array_equal(
      eval_attributes.multitask_predictions(head, features),
      [[True, False], [False, True], [False, True]])


def test_lmle_knn_recovers_separable_attributes():
  rng = np.random.default_rng(0)
  # Two attributes, each the sign of one coordinate, in its own embedding.
  projection = np.zeros((2, 2, 2))
  projection[0, 0] = [1.0, 0.0]
  projection[1, 1] = [1.0, 0.0]
  train = rng.normal(size=(200, 2))
  test = rng.normal(size=(50, 2))
  # Keep a margin around zero so the classes are separable.
  train += np.sign(train) * 0.5
  test += np.sign(test) * 0.5
  train_attributes = train > 0
  predictions = eval_attributes.lmle_knn_predictions(
      dict(attribute_projection=projection), train, train_attributes, test,
      clusters_per_class=2, knn_k=3)
  np.testing.assert_array_equal(predictions, test > 0)


def test_an_identity_run_is_refused(workdir, tmp_path, capsys):
  assert eval_attributes.main(['--checkpoint', workdir, '--out',
                               str(tmp_path)]) == 1
  assert 'is not an attribute objective' in capsys.readouterr().err
