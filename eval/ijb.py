"""IJB-B / IJB-C of a checkpoint: 1:1 TAR at FAR and 1:N CMC / TPIR.

    python -m eval.ijb --checkpoint runs/r50 --root IJB_release/IJBC \\
        --target IJBC --out out/ijbc [--no-flip] [--no-detector-score]
    python -m eval.ijb --checkpoint runs/r50 --synthetic 40 --out out/ijb

``--root`` holds insightface's layout (``meta/`` with the protocol files,
NIST's 1:N CSVs among them, and ``loose_crop/``); ``--synthetic N`` writes
a synthetic IJB-style set of N held-out identities there first (or under
``--out`` without ``--root``), so the job runs end to end with no download.

Every loose crop is aligned with its five landmarks and embedded on every
local device, resumably (``eval.extract``'s blocks, under
``OUT/features``), then evaluated by :class:`facejax.evaluators.ijb.
Evaluator`, the object the training loop runs from ``config.evals``. The
1:1 table has insightface's layout (TAR in percent at each FAR), but its
values are exact: the threshold accepts at most floor(FAR x impostors)
impostor pairs, where insightface reads the ROC point nearest the target
FAR, which can lie above it (docs/ijb.md). 1:N: CMC rank 1/5/10 and TPIR at
FPIR 0.01 / 0.1 for each gallery and their mean. Writes ``ijb.json`` and
``roc.png`` beside them.
"""

import argparse
import os
import sys

import numpy as np

from eval import extract
from eval import report
from facejax import command_line
from facejax import inference
from facejax.evaluators import ijb as ijb_evaluator
from facejax.metrics import plots


def _percent(value):
  return f'{100 * value:.2f}'


def tables(results):
  """(1:1 table, 1:N table or '') in markdown, a row per entry of
  ``results`` ({row name: the evaluator's result})."""
  first = next(iter(results.values()))
  fars = list(first['verification']['tar_at_far'])
  verification = report.markdown_table(
      ['Methods'] + [f'{far:g}' for far in fars] + ['AUC'],
      [[name] + [_percent(r['verification']['tar_at_far'][far])
                 for far in fars] + [f'{r["verification"]["auc"]:.4f}']
       for name, r in results.items()])
  if 'identification' not in first:
    return verification, ''
  rows = []
  for name, result in results.items():
    for gallery, values in list(result['identification'].items()) + [
        ('mean', result['identification_mean'])]:
      rows.append([name, gallery]
                  + [_percent(v) for v in values['cmc'].values()]
                  + [_percent(v) for v in values['tpir_at_fpir'].values()])
  mean = first['identification_mean']
  header = (['Methods', 'gallery'] + [f'rank {r}' for r in mean['cmc']]
            + [f'TPIR @ FPIR {f:g}' for f in mean['tpir_at_fpir']])
  return verification, report.markdown_table(header, rows)


def run(embedder, evaluator, out_dir, progress=True, baseline=False):
  """Embeds (resumably), evaluates, writes the report and the ROC plot;
  with ``baseline``, the raw pixels of the aligned crops too.

  Returns:
    (result, 1:1 table, 1:N table, json path, png path).
  """
  protocol = evaluator.protocol
  embeddings = inference.extract(
      embedder, protocol.image_paths, os.path.join(out_dir, 'features'),
      flip=evaluator.flip, landmarks=protocol.landmarks, normalise=False,
      progress=progress)
  result = evaluator.evaluate_embeddings(np.asarray(embeddings))
  name = os.path.basename(os.path.normpath(embedder.workdir or 'model'))
  results = {name: result}
  if baseline:
    results['raw pixels'] = evaluator.evaluate_embeddings(
        inference.raw_pixel_features(evaluator.source, embedder.image_size))
  verification_table, search_table = tables(results)
  png_path = plots.save_roc(
      os.path.join(out_dir, 'roc.png'),
      {label: (r['verification']['roc'][0], r['verification']['roc'][1],
               r['verification']['auc']) for label, r in results.items()},
      title=f'{evaluator.name} 1:1 verification')
  json_path = os.path.join(out_dir, 'ijb.json')
  report.write_json(json_path, dict(
      target=evaluator.name, checkpoint=embedder.workdir,
      step=embedder.step, flip=evaluator.flip,
      detector_score=evaluator.detector_score,
      media_pooling=evaluator.media_pooling, images=result['images'],
      templates=result['templates'], pairs=result['pairs'],
      tar_at_far={f'{k:g}': v for k, v in
                  result['verification']['tar_at_far'].items()},
      auc=result['verification']['auc'],
      identification={g: dict(cmc=v['cmc'], tpir_at_fpir={
          f'{k:g}': t for k, t in v['tpir_at_fpir'].items()})
                      for g, v in result.get('identification', {}).items()},
      identification_mean=result.get('identification_mean'),
      baseline={'tar_at_far': {
          f'{k:g}': v for k, v in
          results['raw pixels']['verification']['tar_at_far'].items()},
                'auc': results['raw pixels']['verification']['auc'],
                'identification_mean': results['raw pixels'].get(
                    'identification_mean')} if baseline else None))
  return result, verification_table, search_table, json_path, png_path


@command_line.reports_errors(OSError, ValueError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m eval.ijb',
                                   description=__doc__.split('\n')[0])
  extract.add_checkpoint_flags(parser)
  parser.add_argument('--root', help="insightface's IJB layout: meta/ and "
                      'loose_crop/')
  parser.add_argument('--target', default='IJBC', choices=('IJBC', 'IJBB'))
  parser.add_argument('--synthetic', type=int, default=0,
                      help='write a synthetic IJB-style set of this many '
                      'held-out identities first')
  parser.add_argument('--no-detector-score', dest='detector_score',
                      action='store_false',
                      help='do not weigh images by their detector score')
  parser.add_argument('--no-media-pooling', dest='media_pooling',
                      action='store_false',
                      help='every image its own media')
  parser.add_argument('--baseline', action='store_true',
                      help='also evaluate raw pixels of the aligned crops')
  parser.add_argument('--out', required=True, help='output folder')
  args = parser.parse_args(argv)
  if not (args.root or args.synthetic):
    parser.error('give --root (an IJB layout) or --synthetic N')
  embedder = inference.Embedder.from_workdir(
      args.checkpoint, args.step, batch_size=args.batch_size)
  root = args.root or os.path.join(args.out, 'synthetic_ijb')
  if args.synthetic:
    from facejax.data.synthetic import ijb as synthetic_ijb  # pylint: disable=import-outside-toplevel
    synthetic_ijb.write(root, args.synthetic,
                        image_size=embedder.image_size)
    args.target = 'IJBC'
  evaluator = ijb_evaluator.Evaluator(
      root, args.target, flip=args.flip,
      detector_score=args.detector_score,
      media_pooling=args.media_pooling)
  _, verification_table, search_table, json_path, png_path = run(
      embedder, evaluator, args.out, baseline=args.baseline)
  print(verification_table)
  if search_table:
    print()
    print(search_table)
  print(f'report: {json_path}\nROC: {png_path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
