"""MegaFace Challenge 1 identification of a trained run (or of features).

    # Images and the devkit's lists: embed, then score at every size.
    python -m eval.megaface --checkpoint runs/r50 \\
        --probes devkit/templatelists/facescrub_features_list.json \\
        --probe-root facescrub_images \\
        --distractors devkit/templatelists/megaface_features_list.json_1000000_1 \\
        --distractor-root megaface_images --out runs/r50/eval/megaface \\
        [--probe-noise facescrub_noises.txt --distractor-noise megaface_noises.txt]
    # Features made elsewhere, in the devkit's feature files:
    python -m eval.megaface --probes ... --probe-features FEATURES \\
        --distractors ... --distractor-features FEATURES \\
        --algorithm r50 --out OUT
    # Held-out synthetic identities (what `make demo` runs):
    python -m eval.megaface --checkpoint runs/default --synthetic \\
        --out runs/default/eval

The protocol is :mod:`facejax.metrics.identification`'s: every FaceScrub
image in turn is the probe and every other image of its identity the mate
in a gallery with the distractors; rank-1 is the fraction of (probe, mate)
trials in which the mate beats every distractor, at each distractor size
(the first n of one seeded permutation of the distractor list; sizes above
the list's length are skipped); CMC to ``--max-rank``, and TAR at
FAR = 1e-6. The search streams the distractors in chunks over every device.
Writes ``megaface.json`` and ``cmc.png``; ``--write-features`` also writes
every embedded image as a devkit feature file
(``<image path>_<algorithm>.bin``) under ``<out>/devkit_features`` so the
devkit can score ours. Every image path of the lists must stay under its
root (:func:`facejax.data.files.confine`): a list entry that is absolute or
climbs out with ``..`` stops the job, naming the list, before anything is
read or written.
"""

import argparse
import os
import sys

import numpy as np

from eval import extract
from eval import report
from facejax import command_line
from facejax import inference
from facejax.data import files
from facejax.data import megaface
from facejax.data import sources
from facejax.data import synthetic
from facejax.metrics import identification
from facejax.metrics import plots

# Synthetic stand-ins, identities disjoint from training's and from the
# verification pairs': FaceScrub-like probes and one image per distractor.
SYNTHETIC_PROBE_IDENTITY = 2 * synthetic.EVAL_FIRST_IDENTITY
SYNTHETIC_DISTRACTOR_IDENTITY = 3 * synthetic.EVAL_FIRST_IDENTITY


def synthetic_sets(probe_identities=80, images_per_probe=10,
                   distractors=10_000, seed=0, image_size=None):
  """(probe source, probe ids, distractor source) of synthetic faces."""
  image_size = image_size or synthetic.IMAGE_SIZE
  probe_ids = np.repeat(np.arange(probe_identities), images_per_probe)
  probe_images = synthetic.generate_images(
      seed, SYNTHETIC_PROBE_IDENTITY + probe_ids,
      np.tile(np.arange(images_per_probe), probe_identities), image_size)
  distractor_images = synthetic.generate_images(
      seed, SYNTHETIC_DISTRACTOR_IDENTITY + np.arange(distractors),
      np.zeros(distractors, np.int64), image_size)
  return (sources.InMemory(probe_images, probe_ids.astype(np.int32),
                           name='synthetic probes'), probe_ids,
          sources.InMemory(distractor_images,
                           np.zeros(distractors, np.int32),
                           name='synthetic distractors'))


def _image_paths(root, relative_paths, list_path):
  """The images of a devkit list under ``root``, each confined to it."""
  return [files.confine(root, relative, source=list_path,
                        key=f'"path"[{index}]')
          for index, relative in enumerate(relative_paths)]


def _exclusions(relative_paths, noise_list):
  if not noise_list:
    return None
  return megaface.noise_mask(relative_paths, megaface.read_noise_list(
      noise_list))


def evaluate(feature_sets, probe_ids, out_dir,
             sizes=identification.DEFAULT_SIZES, max_rank=10, seed=0,
             probe_exclude=None, distractor_exclude=None, **meta):
  """Scores every feature set, writes ``megaface.json`` and ``cmc.png``.

  Args:
    feature_sets: {name: (probe features, distractor features)}, e.g. the
      model's and the raw-pixel baseline's.
    probe_ids, sizes, max_rank, seed, probe_exclude, distractor_exclude: as
      :func:`facejax.metrics.identification.megaface_evaluate`.
    **meta: recorded at the top of the JSON.

  Returns:
    ({name: {size: result}}, markdown table, JSON path, PNG path).
  """
  results, rows, curves = {}, [], {}
  for name, (probe_features, distractor_features) in feature_sets.items():
    results[name] = identification.megaface_evaluate(
        probe_features, probe_ids, distractor_features, sizes=sizes,
        max_rank=max_rank, seed=seed, probe_exclude=probe_exclude,
        distractor_exclude=distractor_exclude)
    for size, result in results[name].items():
      if result.get('skipped'):
        continue
      rows.append([name, f'{size:,}', f"{result['distractors']:,}",
                   f"{result['rank1']:.4f}", f"{result['cmc'][-1]:.4f}",
                   f"{result['tar_at_far']:.4f}"])
      curves[f"{name}, {result['distractors']:,} distractors"] = result['cmc']
  if not rows:
    raise ValueError('no distractor size fits the distractors given')
  table = report.markdown_table(
      ['features', 'size', 'distractors', 'rank-1', f'rank-{max_rank}',
       'TAR@FAR=1e-6'], rows)
  json_path = report.write_json(os.path.join(out_dir, 'megaface.json'),
                                dict(meta, seed=seed, max_rank=max_rank,
                                     results=results))
  png_path = plots.save_cmc(os.path.join(out_dir, 'cmc.png'), curves,
                            title='MegaFace identification (CMC)')
  return results, table, json_path, png_path


def write_devkit_features(features, relative_paths, root, algorithm):
  """Each feature as ``<root>/<relative path>_<algorithm>.bin``.

  Raises:
    facejax.data.files.UnsafePathError: a relative path would leave
      ``root``; checked for every path before any folder or file is made.
  """
  # All paths first: a bad entry at the end must not leave half the files.
  paths = [megaface.feature_path(root, relative, algorithm)
           for relative in relative_paths]
  for vector, path in zip(features, paths):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    megaface.write_feature(path, vector)


def parse_sizes(text):
  try:
    sizes = tuple(int(size) for size in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'--sizes: not a list of integers: '
                                     f'{text!r}') from None
  return sizes


@command_line.reports_errors(FileNotFoundError, ValueError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m eval.megaface',
                                   description=__doc__.split('\n')[0])
  extract.add_checkpoint_flags(parser, required=False)
  parser.add_argument('--probes', help='the devkit FaceScrub JSON list')
  parser.add_argument('--probe-root', help='FaceScrub images (to embed)')
  parser.add_argument('--probe-features', help='FaceScrub feature files')
  parser.add_argument('--distractors', help='a devkit MegaFace JSON list')
  parser.add_argument('--distractor-root', help='MegaFace images (to embed)')
  parser.add_argument('--distractor-features',
                      help='MegaFace feature files')
  parser.add_argument('--algorithm', default='facejax',
                      help='the devkit feature files are '
                      '<image path>_<algorithm>.bin')
  parser.add_argument('--probe-noise', help='FaceScrub noise list')
  parser.add_argument('--distractor-noise', help='MegaFace noise list')
  parser.add_argument('--synthetic', action='store_true',
                      help='synthetic probes and distractors')
  parser.add_argument('--baseline', action='store_true',
                      help='with --synthetic: also the raw-pixel baseline')
  parser.add_argument('--synthetic-identities', type=int, default=80,
                      help='synthetic probe identities (FaceScrub: 80)')
  parser.add_argument('--synthetic-images', type=int, default=10,
                      help='images per synthetic probe identity')
  parser.add_argument('--synthetic-distractors', type=int, default=10_000)
  parser.add_argument('--sizes', type=parse_sizes,
                      default=identification.DEFAULT_SIZES)
  parser.add_argument('--max-rank', type=int, default=10)
  parser.add_argument('--seed', type=int, default=0,
                      help='the permutation that draws each size')
  parser.add_argument('--write-features', action='store_true',
                      help='also write devkit feature files of what is '
                      'embedded')
  parser.add_argument('--out', required=True, help='output folder')
  args = parser.parse_args(argv)
  embedded = not (args.probe_features and args.distractor_features)
  if embedded and not args.checkpoint:
    parser.error('--checkpoint is needed unless both --probe-features and '
                 '--distractor-features are given')
  if not args.synthetic and not (args.probes and args.distractors):
    parser.error('give --probes and --distractors, or --synthetic')
  if args.baseline and not args.synthetic:
    parser.error('--baseline goes with --synthetic (it holds every image '
                 'in memory)')
  embedder = (inference.Embedder.from_workdir(
      args.checkpoint, args.step, batch_size=args.batch_size)
              if embedded else None)
  probe_exclude = distractor_exclude = None
  if args.synthetic:
    probe_source, probe_ids, distractor_source = synthetic_sets(
        args.synthetic_identities, args.synthetic_images,
        distractors=args.synthetic_distractors,
        image_size=embedder.image_size)
    feature_sets = {'model': (
        embedder.embed(probe_source, flip=args.flip),
        embedder.embed(distractor_source, flip=args.flip))}
    if args.baseline:  # one mean image over probes and distractors
      pixels = inference.raw_pixel_features(sources.InMemory(
          np.concatenate([probe_source.images, distractor_source.images]),
          np.zeros(len(probe_ids) + args.synthetic_distractors, np.int32)),
                                            embedder.image_size)
      feature_sets['raw pixels'] = (pixels[:len(probe_ids)],
                                    pixels[len(probe_ids):])
  else:
    probe_paths, probe_names = megaface.read_probe_list(args.probes)
    _, probe_ids = np.unique(np.asarray(probe_names, dtype=str),
                             return_inverse=True)
    distractor_paths = megaface.read_distractor_list(args.distractors)
    probe_exclude = _exclusions(probe_paths, args.probe_noise)
    distractor_exclude = _exclusions(distractor_paths,
                                     args.distractor_noise)
    features = {}
    for name, paths, list_path, root, feature_root in (
        ('probes', probe_paths, args.probes, args.probe_root,
         args.probe_features),
        ('distractors', distractor_paths, args.distractors,
         args.distractor_root, args.distractor_features)):
      if feature_root:
        features[name] = megaface.read_features(
            [megaface.feature_path(feature_root, p, args.algorithm)
             for p in paths])
      elif root:
        features[name] = inference.extract(
            embedder, _image_paths(root, paths, list_path),
            os.path.join(args.out, 'features', name), flip=args.flip)
        if args.write_features:
          write_devkit_features(features[name], paths, os.path.join(
              args.out, 'devkit_features', name), args.algorithm)
      else:
        parser.error(f'--{name[:-1]}-root or --{name[:-1]}-features '
                     'is needed')
    feature_sets = {'model': (features['probes'],
                              features['distractors'])}
  _, table, json_path, png_path = evaluate(
      feature_sets, probe_ids, args.out,
      sizes=args.sizes, max_rank=args.max_rank, seed=args.seed,
      probe_exclude=probe_exclude, distractor_exclude=distractor_exclude,
      checkpoint_step=embedder.step if embedder else None,
      probes=len(probe_ids), synthetic=args.synthetic)
  print(table)
  print(f'report: {json_path}\nCMC: {png_path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
