"""LFW-protocol verification of a trained run (and of every .bin set).

    python -m eval.lfw --checkpoint runs/r50 --pairs lfw/pairs.txt \\
        --data lfw/ --out runs/r50/eval/lfw
    python -m eval.lfw --checkpoint runs/r50 --bin lfw.bin \\
        --bin cfp_fp.bin --bin agedb_30.bin --out runs/r50/eval/bins
    python -m eval.lfw --checkpoint runs/default --synthetic 3000 \\
        --baseline --out runs/default/eval
    python -m eval.lfw --checkpoint runs/r50 --pairs lfw/pairs.txt \\
        --data lfw/ --align --out runs/r50/eval/lfw_aligned

Pair sets: LFW's ``pairs.txt`` with its image folder (the file's folds),
insightface ``.bin`` sets (ten consecutive folds, as they are written),
or pairs of held-out synthetic identities. ``--align``: the LFW images are
raw (``lfw/`` as released, 250x250), so each is detected by MTCNN and
aligned on the fly by its central face's landmarks, the way insightface
prepared ``lfw.bin``; images without a face are centre-cropped and
counted. For each set: 10-fold accuracy
(mean ± std; each fold's threshold chosen on the other nine), VAL at
FAR = 1e-3, EER and ROC AUC (:func:`facejax.metrics.verification.evaluate`);
cosine similarity of the flip-summed, L2-normalised embeddings, or
Euclidean distance (``--metric euclidean``). ``--baseline`` adds the
raw-pixel baseline's row. Writes ``verification.json`` and ``roc.png``.

Each set is a :class:`facejax.evaluators.verification.Evaluator`, the
evaluator that ``config.evals`` runs during training.
"""

import argparse
import sys

from eval import extract
from eval import report
from facejax import command_line
from facejax import inference
from facejax.evaluators import verification


def run(embedder, evaluators, out_dir, flip=True, baseline=False,
        progress=True):
  """Evaluates every set; returns (results, table, json path, png path).

  Args:
    embedder: the restored run (:class:`facejax.inference.Embedder`).
    evaluators: :class:`facejax.evaluators.verification.Evaluator` s, one
      per pair set (all with one score metric).
    out_dir: where ``verification.json`` and ``roc.png`` go.
    flip: the flip test.
    baseline: also the raw-pixel features.
    progress: print a progress line while embedding.
  """
  entries = []
  for evaluator in evaluators:
    methods = {'model': lambda source: embedder.embed(
        source, flip=flip, progress=progress)}
    if baseline:
      methods['raw pixels'] = lambda source: inference.raw_pixel_features(
          source, embedder.image_size)
    for method, embed in methods.items():
      entries.append(dict(set=evaluator.name, method=method,
                          result=evaluator.evaluate(embed),
                          pairs=len(evaluator.pair_set.issame)))
  return report.evaluated_verification_report(
      entries, out_dir, checkpoint_step=embedder.step,
      metric=evaluators[0].metric, flip=flip)


# A damaged .bin is a ValueError naming it; an unreadable one an OSError.
# RuntimeError: the detector's WeightsError (--align without ``mtcnn``).
@command_line.reports_errors(OSError, ValueError, RuntimeError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m eval.lfw',
                                   description=__doc__.split('\n')[0])
  extract.add_checkpoint_flags(parser)
  parser.add_argument('--pairs', help="LFW's pairs.txt")
  parser.add_argument('--data', help='the LFW image folder (with --pairs)')
  parser.add_argument('--align', action='store_true',
                      help='detect and align the raw LFW images (MTCNN)')
  parser.add_argument('--min-face', type=float, default=20,
                      help='with --align: smallest face, pixels (default 20)')
  parser.add_argument('--bin', action='append', default=[],
                      help='an insightface .bin set (repeatable)')
  parser.add_argument('--synthetic', type=int, default=0,
                      help='pairs of held-out synthetic identities')
  parser.add_argument('--metric', choices=verification.SCORES,
                      default='cosine')
  parser.add_argument('--baseline', action='store_true',
                      help='also evaluate raw-pixel features')
  parser.add_argument('--out', required=True, help='output folder')
  args = parser.parse_args(argv)
  if bool(args.pairs) != bool(args.data):
    parser.error('--pairs and --data go together')
  if not (args.pairs or args.bin or args.synthetic):
    parser.error('give --pairs/--data, --bin or --synthetic')
  if args.align and not args.pairs:
    parser.error('--align goes with --pairs/--data (raw LFW images)')
  detector = None
  if args.align:
    from facejax import detection  # pylint: disable=g-import-not-at-top
    detector = detection.MTCNN(min_face_size=args.min_face)
  evaluators = ([verification.Evaluator(
      pairs_file=args.pairs, data=args.data, metric=args.metric,
      detector=detector)] if args.pairs else [])
  for evaluator in evaluators:
    if evaluator.pair_set.undetected:
      print(f'{evaluator.name}: no face found in '
            f'{len(evaluator.pair_set.undetected)} images, centre-cropped: '
            f'{", ".join(evaluator.pair_set.undetected[:5])}'
            f'{", ..." if len(evaluator.pair_set.undetected) > 5 else ""}')
  evaluators += [verification.Evaluator(bin=path, metric=args.metric)
                 for path in args.bin]
  embedder = inference.Embedder.from_workdir(
      args.checkpoint, args.step, batch_size=args.batch_size)
  if args.synthetic:  # drawn at the model's input side
    evaluators.append(verification.Evaluator(
        pairs=args.synthetic, metric=args.metric,
        image_size=embedder.image_size))
  _, table, json_path, png_path = run(
      embedder, evaluators, args.out, args.flip, args.baseline)
  print(table)
  print(f'report: {json_path}\nROC: {png_path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
