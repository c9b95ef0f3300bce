"""Every loss family on the synthetic data, same backbone and budget.

    python -m train.sweep [--workdir runs/sweep] [--losses arcface,cosface]
        [--steps 400] [--pairs 3000] [--distractors 2000]

Trains ``train/configs/sweep.py:<loss>`` for each loss (each in
``<workdir>/<loss>``, resumed if interrupted, kept if finished; its
evaluation is kept too, so sweeps over parts of the list can run side by
side and a last full sweep assembles the table), then evaluates it on held-out identities exactly as ``make demo`` does: LFW-
protocol 10-fold accuracy and VAL@FAR=1e-3 on ``--pairs`` pairs, and
MegaFace-style rank-1 of 80 probe identities x 10 images against
``--distractors`` synthetic distractors. Prints the table the README
carries and writes ``<workdir>/sweep.json``.
"""

import argparse
import os
import sys
import time

import numpy as np

from eval import megaface
from eval import report
from facejax import inference
from facejax.evaluators import verification
from facejax.metrics import identification
from facejax.training import loop
from train.configs import sweep as sweep_configs


def evaluate_run(workdir, pairs, probe_source, probe_ids,
                 distractor_source):
  """(verification result, rank-1) of the run in ``workdir``; ``pairs``: a
  :class:`facejax.evaluators.verification.Evaluator`."""
  embedder = inference.Embedder.from_workdir(workdir)
  result = pairs.evaluate(lambda source: embedder.embed(source,
                                                        progress=False))
  rank1 = identification.megaface_rank1(
      embedder.embed(probe_source, progress=False), probe_ids,
      embedder.embed(distractor_source, progress=False))
  return result, rank1


def _timed_training(config, workdir):
  """Trains (resuming); the training seconds over every attempt so far."""
  timing = os.path.join(workdir, 'train_seconds.json')
  before = report.read_json(timing).get('seconds', 0.0) if os.path.exists(
      timing) else 0.0
  began = time.perf_counter()
  loop.train(config, workdir)
  seconds = before + time.perf_counter() - began
  report.write_json(timing, dict(seconds=seconds))
  return seconds


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m train.sweep',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default=os.path.join('runs', 'sweep'))
  parser.add_argument('--losses', default=','.join(sweep_configs.LOSSES))
  parser.add_argument('--steps', type=int, default=None,
                      help='training steps per loss (default: the config)')
  parser.add_argument('--pairs', type=int, default=3000)
  parser.add_argument('--distractors', type=int, default=2_000)
  parser.add_argument('--probe-identities', type=int, default=80)
  parser.add_argument('--probe-images', type=int, default=10)
  args = parser.parse_args(argv)
  losses = args.losses.split(',')
  unknown = [loss for loss in losses if loss not in sweep_configs.LOSSES]
  if unknown:
    parser.error(f'unknown losses {unknown}; choose from '
                 f'{", ".join(sweep_configs.LOSSES)}')
  pairs = {}  # by image size: drawn once, at the models' input side
  probe_source, probe_ids, distractor_source = None, None, None
  rows, results = [], {}
  for loss in losses:
    config = sweep_configs.get_config(loss)
    config.total_steps = args.steps or config.total_steps
    config.eval.every = 0  # evaluated once, below
    workdir = os.path.join(args.workdir, loss)
    print(f'\n== {loss}', flush=True)
    seconds = _timed_training(config, workdir)
    settings = dict(pairs=args.pairs, distractors=args.distractors,
                    probe_identities=args.probe_identities,
                    probe_images=args.probe_images, steps=config.total_steps)
    cached = os.path.join(workdir, 'sweep_result.json')
    if os.path.exists(cached) and report.read_json(cached).get(
        'settings') == settings:  # trained and evaluated before
      results[loss] = report.read_json(cached)['result']
      results[loss]['train_seconds'] = seconds
    else:
      if probe_source is None:
        probe_source, probe_ids, distractor_source = megaface.synthetic_sets(
            args.probe_identities, args.probe_images, args.distractors,
            image_size=config.data.image_size)
      size = config.data.image_size
      if size not in pairs:
        pairs[size] = verification.Evaluator(pairs=args.pairs,
                                             image_size=size)
      result, rank1 = evaluate_run(workdir, pairs[size], probe_source,
                                   probe_ids,
                                   distractor_source)
      losses_seen = [h['loss'] for h in report.read_jsonl(
          os.path.join(workdir, 'metrics.jsonl'))]
      results[loss] = dict(
          accuracy_mean=result['accuracy_mean'],
          accuracy_std=result['accuracy_std'],
          val_at_far=result['val_at_far'], eer=result['eer'], rank1=rank1,
          train_seconds=seconds, steps=config.total_steps,
          first_loss=losses_seen[0], last_loss=losses_seen[-1])
      report.write_json(cached, dict(settings=settings,
                                     result=results[loss]))
    result = results[loss]
    rank1 = result['rank1']
    rows.append([loss, report.mean_std(result['accuracy_mean'],
                                       result['accuracy_std']),
                 f"{result['val_at_far']:.3f}", f"{result['eer']:.3f}",
                 f'{rank1:.3f}', f'{seconds:.0f}'])
  table = report.markdown_table(
      ['loss', f'10-fold accuracy ({args.pairs} pairs)', 'VAL@FAR=1e-3',
       'EER', f'rank-1 ({args.distractors:,} distractors)',
       'training (s)'], rows)
  path = report.write_json(os.path.join(args.workdir, 'sweep.json'),
                           dict(pairs=args.pairs,
                                distractors=args.distractors,
                                losses=results))
  print('\n' + table + f'\n\nreport: {path}')
  accuracies = [r['accuracy_mean'] for r in results.values()]
  return 0 if np.all(np.isfinite(accuracies)) else 1


if __name__ == '__main__':
  sys.exit(main())
