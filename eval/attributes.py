"""Attribute classification of trained runs, table ordered by imbalance.

    python -m eval.attributes --checkpoint runs/attributes_adaptive \\
        --checkpoint runs/attributes_lmle --out runs/attributes_eval

Each run is evaluated on the test split of its attribute dataset (the
run's ``data.source``, or ``--data``) by what it learned:

* a multi-task run (``loss.name=attributes``): attribute a is predicted
  present where its logit is > 0 (sigmoid > 0.5);
* an LMLE run (``loss.name=lmle_attributes``): LMLE's cluster kNN with the
  large-margin rule (Huang et al., CVPR 2016, section 4): every
  attribute's two classes of the training split are split into
  ``loss.clusters_per_class`` clusters by k-means in that attribute's
  embedding, and a test face takes the class whose neighbouring clusters
  (its ``--knn-k`` nearest centroids) lie inside a margin from the other
  class's (:func:`facejax.metrics.attributes.lmle_knn_predict`).

For each: per-attribute accuracy and balanced accuracy ((TP/P + TN/N)/2),
their means over all attributes and over the ``--most-imbalanced`` ones
(largest |positive rate - 50%|, the rates of the training split), and
the per-attribute table ordered by imbalance, as LMLE's Table 1. Prints
both tables and writes ``attributes.json``. Embeddings are taken without
flip test-time augmentation (attributes need not be mirror invariant).
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from eval import report
from facejax import command_line
from facejax import inference
from facejax.data import attribute_sources
from facejax.losses import attributes as attribute_losses
from facejax.metrics import attributes as attribute_metrics
from facejax.training import checkpoint
from facejax.training import clusters as clusters_lib
from facejax.training import objectives
from facejax.training import run_directory
from facejax.training.objectives import attributes as attribute_objectives

METHOD_NAMES = {'attributes': 'multi-task', 'lmle_attributes': 'LMLE-kNN'}
DEFAULT_KNN_K = 10  # neighbouring centroids (of 4 per attribute: 2 x 2)


def restore_head(embedder, num_attributes):
  """The attribute head's parameters at the embedder's checkpoint step."""
  config = embedder.config
  dim = inference.embedding_dim(embedder.model,
                                (config.data.image_size,) * 2 + (3,))
  objective = objectives.Objective(config.loss, 1, dim, num_examples=1,
                                   num_attributes=num_attributes)
  abstract = jax.eval_shape(objective.init_head, jax.random.key(0))
  checkpoints = checkpoint.Checkpointer(os.path.join(
      embedder.workdir, 'checkpoints'), read_only=True)
  try:
    return jax.device_get(checkpoints.restore_subtree(
        abstract, ('params', 'head'), embedder.step))
  finally:
    checkpoints.close()


def multitask_predictions(head, test_features):
  """bool (n, A): logit > 0 for every attribute (the training logits)."""
  logits = attribute_losses.attribute_logits(
      jnp.asarray(test_features), jnp.asarray(head['attribute_weights']),
      jnp.asarray(head['attribute_bias']))
  return np.asarray(logits > 0)


def lmle_knn_predictions(head, train_features, train_attributes,
                         test_features, clusters_per_class, knn_k, seed=0):
  """bool (n, A): LMLE's large-margin cluster kNN, attribute by attribute."""
  projection = head['attribute_projection']
  train = attribute_objectives.attribute_features(train_features, projection)
  test = attribute_objectives.attribute_features(test_features, projection)
  predictions = np.zeros((len(test_features), len(train)), bool)
  for a in range(len(train)):
    found = clusters_lib.within_class_kmeans(
        train[a], train_attributes[:, a].astype(np.int32),
        clusters_per_class, num_classes=2, seed=(seed, a))
    centroids, labels = found.non_empty()
    predictions[:, a] = attribute_metrics.lmle_knn_predict(
        test[a], centroids, labels, min(knn_k, len(centroids))) == 1
  return predictions


def evaluate_run(workdir, data_config=None, step=None, batch_size=None,
                 knn_k=DEFAULT_KNN_K, progress=True):
  """(method name, dataset, predictions bool (n, A)) of one run."""
  embedder = inference.Embedder.from_workdir(workdir, step,
                                             batch_size=batch_size)
  config = embedder.config
  if config.loss.name not in METHOD_NAMES:
    raise ValueError(f'{workdir}: loss.name={config.loss.name!r} is not an '
                     f'attribute objective ({", ".join(METHOD_NAMES)})')
  data_config = data_config or config.data
  train = attribute_sources.open_split(data_config, 'train')
  test = attribute_sources.open_split(data_config, 'test')
  head = restore_head(embedder, len(test.attribute_names))
  test_features = embedder.embed(test, flip=False, progress=progress,
                                 normalise=False)
  if config.loss.name == 'attributes':
    predictions = multitask_predictions(head, test_features)
  else:
    train_features = embedder.embed(train, flip=False, progress=progress,
                                    normalise=False)
    predictions = lmle_knn_predictions(
        head, train_features, train.attributes, test_features,
        config.loss.clusters_per_class, knn_k, seed=config.seed)
  name = f'{os.path.basename(os.path.normpath(workdir))} ' \
         f'({METHOD_NAMES[config.loss.name]})'
  return name, dict(train=train, test=test), predictions, embedder.step


def summarise(methods, train, test, most_imbalanced):
  """The report: per-attribute and mean metrics of every method."""
  names = list(test.attribute_names)
  rates = train.attributes.mean(axis=0)
  count = min(most_imbalanced, len(names))
  results, balanced = {}, {}
  for method, predictions in methods.items():
    ba = attribute_metrics.balanced_accuracy(predictions, test.attributes)
    acc = attribute_metrics.accuracy(predictions, test.attributes)
    balanced[method] = ba
    results[method] = dict(
        balanced_accuracy=dict(zip(names, ba)), accuracy=dict(zip(names, acc)),
        mean_balanced_accuracy=float(np.mean(ba)),
        mean_accuracy=float(np.mean(acc)),
        mean_balanced_accuracy_most_imbalanced=(
            attribute_metrics.mean_over_most_imbalanced(ba, rates, count)))
  table = attribute_metrics.imbalance_table(names, rates, balanced)
  return dict(attributes=names, positive_rates=dict(zip(names, rates)),
              most_imbalanced=table.names[:count], methods=results,
              test_images=test.num_examples,
              train_images=train.num_examples), table


def summary_table(summary):
  """Markdown: one row per method, the means."""
  count = len(summary['most_imbalanced'])
  rows = [[method, f'{r["mean_balanced_accuracy_most_imbalanced"]:.4f}',
           f'{r["mean_balanced_accuracy"]:.4f}', f'{r["mean_accuracy"]:.4f}']
          for method, r in summary['methods'].items()]
  return report.markdown_table(
      ['method', f'balanced accuracy, {count} most imbalanced',
       f'balanced accuracy, all {len(summary["attributes"])}',
       'accuracy, all'], rows)


def run(workdirs, out_dir, data_config=None, step=None, batch_size=None,
        knn_k=DEFAULT_KNN_K, most_imbalanced=10, progress=True):
  """Evaluates every run on one test split; returns (summary, tables, path)."""
  methods, data, steps = {}, None, {}
  for workdir in workdirs:
    name, run_data, predictions, run_step = evaluate_run(
        workdir, data_config, step, batch_size, knn_k, progress)
    if data is None:
      data = run_data
    elif (list(run_data['test'].attribute_names)
          != list(data['test'].attribute_names)
          or not np.array_equal(run_data['test'].attributes,
                                data['test'].attributes)):
      raise ValueError(f'{workdir}: its test split differs from '
                       f'{workdirs[0]}\'s; evaluate them separately or '
                       'pass --data')
    methods[name] = predictions
    steps[name] = run_step
  summary, table = summarise(methods, data['train'], data['test'],
                             most_imbalanced)
  summary['checkpoint_steps'] = steps
  summary['knn_k'] = knn_k
  path = report.write_json(os.path.join(out_dir, 'attributes.json'),
                           summary)
  return summary, (summary_table(summary),
                   attribute_metrics.format_table(table)), path


@command_line.reports_errors(FileNotFoundError, ValueError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m eval.attributes',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--checkpoint', action='append', required=True,
                      help='the --workdir of a `python -m train` attribute '
                      'run; repeat it to compare runs on one test split')
  parser.add_argument('--step', type=int, default=None,
                      help='checkpoint step (default: the latest)')
  parser.add_argument('--batch-size', type=int, default=None,
                      help='images per batch over all devices')
  parser.add_argument('--data', default=None,
                      help='the attribute dataset (data.source: '
                      'synthetic_attributes, celeba:<root>, tfds:celeb_a); '
                      'default: each run\'s own')
  parser.add_argument('--knn-k', type=int, default=DEFAULT_KNN_K,
                      help='LMLE-kNN: neighbouring cluster centroids')
  parser.add_argument('--most-imbalanced', type=int, default=10,
                      help='attributes in the "most imbalanced" mean')
  parser.add_argument('--out', required=True, help='output folder')
  args = parser.parse_args(argv)
  if args.knn_k < 1 or args.most_imbalanced < 1:
    parser.error('--knn-k and --most-imbalanced must be >= 1')
  workdirs = args.checkpoint
  data_config = None
  if args.data:
    data_config = run_directory.load_config(workdirs[0]).data
    data_config.source = args.data
  _, tables, path = run(workdirs, args.out, data_config, args.step,
                        args.batch_size, args.knn_k, args.most_imbalanced)
  print(tables[0])
  print()
  print(tables[1])
  print(f'report: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
