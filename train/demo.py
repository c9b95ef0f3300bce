"""The main job, end to end: what ``make demo`` runs.

    python -m train.demo [--workdir runs/demo] [--config FILE]
        [--override key=value ...] [--pairs 3000] [--distractors 5000]

1. trains ``--config`` (default ``train/configs/default.py``: a small IResNet
   with ArcFace on the embedded synthetic identities) on every local
   device, with a progress line, checkpointing into ``--workdir`` (a
   finished run is kept, an interrupted one resumed);
2. restores the checkpoint in a separate evaluation job (``python -m
   eval.lfw``): LFW-protocol 10-fold accuracy, VAL@FAR=1e-3, EER and AUC on
   pairs of held-out identities, next to the raw-pixel baseline;
3. a MegaFace-style identification job (``python -m eval.megaface``):
   rank-1 of held-out probe identities against synthetic distractors;
4. prints one table and writes ``report.json`` (every number, and the
   paths of the ROC and CMC plots) under ``<workdir>/eval``.

Training identities and evaluation identities never overlap (synthetic
identities from 0 for training, from 100,000 for pairs, 200,000 for
probes and 300,000 for distractors).

The jobs run with :mod:`facejax.cpu_host`'s settings (one XLA CPU device
per core, tcmalloc when the system has it; ``--no-cpu-settings``: as
they are), which only matter where there is no accelerator.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from eval import report
from facejax import command_line
from facejax import cpu_host

DEFAULT_CONFIG = os.path.join('train', 'configs', 'default.py')


def _run(command, what, environ=None):
  print(f'\n== {what}\n$ {" ".join(command)}', flush=True)
  began = time.perf_counter()
  finished = subprocess.run(command, check=False, env=environ)
  if finished.returncode:
    raise RuntimeError(f'{what} failed (exit {finished.returncode}): '
                       f'{" ".join(command)}')
  return time.perf_counter() - began


def summary_table(verification, identification, size):
  """Model and raw pixels side by side: verification and rank-1."""
  rows = []
  pairs_set = next(iter(verification['sets']))
  for method, result in verification['sets'][pairs_set].items():
    at_size = identification['results'][method][str(size)]
    rows.append([method,
                 report.mean_std(result['accuracy_mean'],
                                 result['accuracy_std']),
                 report.mean_std(result['val_at_far'],
                                 result['val_at_far_std']),
                 f"{result['eer']:.3f}", f"{result['auc']:.4f}",
                 f"{at_size['rank1']:.4f}"])
  return report.markdown_table(
      ['features', f'10-fold accuracy ({result["pairs"]} pairs)',
       'VAL@FAR=1e-3', 'EER', 'AUC',
       f'rank-1 ({at_size["distractors"]:,} distractors)'], rows)


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m train.demo',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default=os.path.join('runs', 'demo'))
  parser.add_argument('--config', default=DEFAULT_CONFIG)
  parser.add_argument('--override', action='append', default=[],
                      metavar='KEY=VALUE',
                      help='a config override (repeatable), as '
                      '--config.KEY=VALUE of python -m train')
  parser.add_argument('--pairs', type=int, default=3000,
                      help='held-out verification pairs (10 folds)')
  parser.add_argument('--distractors', type=int, default=5_000)
  parser.add_argument('--probe-identities', type=int, default=80)
  parser.add_argument('--probe-images', type=int, default=10)
  parser.add_argument('--no-cpu-settings', action='store_true',
                      help="run the jobs without facejax.cpu_host's "
                      'settings (one device per CPU core, tcmalloc)')
  args = parser.parse_args(argv)
  python = sys.executable
  environ = None
  if not args.no_cpu_settings:
    changes = cpu_host.environment()
    environ = dict(os.environ, **changes)
    if changes:
      print('CPU settings for the jobs (facejax.cpu_host; no effect on an '
            'accelerator): ' + ' '.join(f'{k}={v}' for k, v
                                        in changes.items()), flush=True)
  out = os.path.join(args.workdir, 'eval')
  began = time.perf_counter()
  try:
    train_seconds = _run(
        [python, '-m', 'train', '--config', args.config, '--workdir',
         args.workdir] + [f'--config.{o}' for o in args.override],
        'training (resumes if interrupted)', environ)
    verify_seconds = _run(
        [python, '-m', 'eval.lfw', '--checkpoint', args.workdir,
         '--synthetic', str(args.pairs), '--baseline', '--out', out],
        'verification on held-out identities (separate job, restores the '
        'checkpoint)', environ)
    sizes = sorted({s for s in (10, 100, 1000, 10_000, args.distractors)
                    if s <= args.distractors})
    identify_seconds = _run(
        [python, '-m', 'eval.megaface', '--checkpoint', args.workdir,
         '--synthetic', '--baseline', '--synthetic-distractors',
         str(args.distractors), '--synthetic-identities',
         str(args.probe_identities), '--synthetic-images',
         str(args.probe_images), '--sizes', ','.join(map(str, sizes)),
         '--out', out], 'MegaFace-style identification (separate job)',
        environ)
  except RuntimeError as e:
    return command_line.report(e)
  with open(os.path.join(out, 'verification.json'), encoding='utf-8') as f:
    verification = json.load(f)
  with open(os.path.join(out, 'megaface.json'), encoding='utf-8') as f:
    identification = json.load(f)
  table = summary_table(verification, identification, args.distractors)
  paths = dict(roc=os.path.join(out, 'roc.png'),
               cmc=os.path.join(out, 'cmc.png'),
               verification=os.path.join(out, 'verification.json'),
               identification=os.path.join(out, 'megaface.json'),
               checkpoints=os.path.join(args.workdir, 'checkpoints'))
  report_path = report.write_json(os.path.join(out, 'report.json'), dict(
      config=args.config, overrides=args.override,
      checkpoint_step=verification['checkpoint_step'],
      verification=verification['sets'],
      identification=identification['results'],
      seconds=dict(train=train_seconds, verification=verify_seconds,
                   identification=identify_seconds,
                   evaluate=verify_seconds + identify_seconds,
                   total=time.perf_counter() - began),
      files=paths))
  print('\n' + table)
  print(f'\nreport: {report_path}\nROC: {paths["roc"]}\n'
        f'CMC: {paths["cmc"]}\n'
        f'total {time.perf_counter() - began:.0f} s (training '
        f'{train_seconds:.0f} s, verification {verify_seconds:.0f} s, '
        f'identification {identify_seconds:.0f} s)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
