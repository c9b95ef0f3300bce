"""LFW-protocol verification of a trained run (and of every .bin set).

    python -m eval.lfw --checkpoint runs/r50 --pairs lfw/pairs.txt \\
        --data lfw/ --out runs/r50/eval/lfw
    python -m eval.lfw --checkpoint runs/r50 --bin lfw.bin \\
        --bin cfp_fp.bin --bin agedb_30.bin --out runs/r50/eval/bins
    python -m eval.lfw --checkpoint runs/default --synthetic 3000 \\
        --baseline --out runs/default/eval

Pair sets: LFW's ``pairs.txt`` with its image folder (the file's folds),
insightface ``.bin`` sets (ten consecutive folds, as they are written),
or pairs of held-out synthetic identities. For each set: 10-fold accuracy
(mean ± std; each fold's threshold chosen on the other nine), VAL at
FAR = 1e-3, EER and ROC AUC (:func:`facejax.metrics.verification.evaluate`);
cosine similarity of the flip-summed, L2-normalised embeddings, or
Euclidean distance (``--metric euclidean``). ``--baseline`` adds the
raw-pixel baseline's row. Writes ``verification.json`` and ``roc.png``.
"""

import argparse
import dataclasses
import os
import sys

import ml_collections
import numpy as np

from eval import extract
from eval import report
from facejax import inference
from facejax.data import protocols
from facejax.data import sources
from facejax.training import loop


@dataclasses.dataclass
class PairSet:
  """Pairs of images of one source; ``folds`` None: ten equal blocks."""
  name: str
  source: object
  first: np.ndarray
  second: np.ndarray
  issame: np.ndarray
  folds: object = None


def lfw_pairs(pairs_file, data_root):
  """LFW's pairs.txt over its image folder."""
  pairs = protocols.read_lfw_pairs(pairs_file)
  paths, first, second = protocols.lfw_pair_paths(pairs, data_root)
  return PairSet(os.path.basename(pairs_file), sources.ImageFiles(paths),
                 first, second, pairs.issame, pairs.folds)


def bin_pairs(path):
  """An insightface .bin set (lfw, cfp_fp, agedb_30, ...)."""
  source, first, second, issame = sources.verification_bin(path)
  name = os.path.splitext(os.path.basename(path))[0]
  return PairSet(name, source, first, second, issame)


def synthetic_pairs(num_pairs, seed=0):
  """Pairs of held-out synthetic identities (never seen in training)."""
  source, first, second, issame = loop.verification_set(
      ml_collections.ConfigDict(dict(pairs=num_pairs, seed=seed)))
  return PairSet(f'synthetic ({num_pairs} pairs)', source, first, second,
                 issame)


def pair_scores(features, pair_set, metric):
  """Cosine similarities, or Euclidean distances, of the pairs."""
  a, b = features[pair_set.first], features[pair_set.second]
  if metric == 'cosine':
    return np.sum(a * b, axis=1)
  return np.linalg.norm(a - b, axis=1)


def run(embedder, pair_sets, out_dir, metric='cosine', flip=True,
        baseline=False, progress=True):
  """Evaluates every set; returns (results, table, json path, png path)."""
  entries = []
  for pair_set in pair_sets:
    methods = {'model': lambda s=pair_set: embedder.embed(
        s.source, flip=flip, progress=progress)}
    if baseline:
      methods['raw pixels'] = lambda s=pair_set: (
          inference.raw_pixel_features(s.source, embedder.image_size))
    for method, features in methods.items():
      entries.append(dict(
          set=pair_set.name, method=method,
          scores=pair_scores(np.asarray(features()), pair_set, metric),
          issame=pair_set.issame, folds=pair_set.folds,
          higher_is_same=metric == 'cosine'))
  return report.verification_report(
      entries, out_dir, checkpoint_step=embedder.step, metric=metric,
      flip=flip)


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m eval.lfw',
                                   description=__doc__.split('\n')[0])
  extract.add_checkpoint_flags(parser)
  parser.add_argument('--pairs', help="LFW's pairs.txt")
  parser.add_argument('--data', help='the LFW image folder (with --pairs)')
  parser.add_argument('--bin', action='append', default=[],
                      help='an insightface .bin set (repeatable)')
  parser.add_argument('--synthetic', type=int, default=0,
                      help='pairs of held-out synthetic identities')
  parser.add_argument('--metric', choices=('cosine', 'euclidean'),
                      default='cosine')
  parser.add_argument('--baseline', action='store_true',
                      help='also evaluate raw-pixel features')
  parser.add_argument('--out', required=True, help='output folder')
  args = parser.parse_args(argv)
  if bool(args.pairs) != bool(args.data):
    parser.error('--pairs and --data go together')
  if not (args.pairs or args.bin or args.synthetic):
    parser.error('give --pairs/--data, --bin or --synthetic')
  try:
    pair_sets = ([lfw_pairs(args.pairs, args.data)] if args.pairs else [])
    pair_sets += [bin_pairs(path) for path in args.bin]
    if args.synthetic:
      pair_sets.append(synthetic_pairs(args.synthetic))
    embedder = inference.Embedder.from_workdir(
        args.checkpoint, args.step, batch_size=args.batch_size)
    _, table, json_path, png_path = run(
        embedder, pair_sets, args.out, args.metric, args.flip, args.baseline)
  # A damaged .bin is a ValueError naming it; an unreadable one an OSError.
  except (OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(table)
  print(f'report: {json_path}\nROC: {png_path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
