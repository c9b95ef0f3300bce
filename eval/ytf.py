"""YouTube Faces verification of a trained run (Wolf et al., CVPR 2011).

    python -m eval.ytf --checkpoint runs/r50 --splits ytf/splits.txt \\
        --data ytf/aligned_images_DB --out runs/r50/eval/ytf \\
        [--max-frames 100] [--mode mean_embedding|mean_pairwise]

5,000 video pairs in the ten splits of ``splits.txt``; a video is the
frames of ``<data>/<person>/<video number>/`` (up to ``--max-frames``,
evenly spaced). Its score against another video is the cosine of their
video embeddings (mean of the L2-normalised frame embeddings, normalised
again), or with ``--mode mean_pairwise`` the mean cosine over all frame
couples (:mod:`facejax.metrics.video`). Reports the 10-fold accuracy
(each split's threshold chosen on the other nine), VAL@FAR=1e-3, EER
(the paper's "100% - EER" is 1 - eer) and AUC; writes
``verification.json`` and ``roc.png``.
"""

import argparse
import sys

import numpy as np

from eval import extract
from eval import report
from facejax import command_line
from facejax import inference
from facejax.data import protocols
from facejax.data import sources
from facejax.metrics import video

DEFAULT_MAX_FRAMES = 100


def video_frames(splits_path, splits, data_root, max_frames):
  """{video: its frame paths} for every video the splits name."""
  frames = {}
  for pair, videos in enumerate(zip(splits.first, splits.second)):
    for name in videos:
      if name in frames:
        continue
      try:
        frames[name] = protocols.ytf_video_frames(data_root, name, max_frames)
      except FileNotFoundError as e:
        raise FileNotFoundError(
            f'{splits_path}, line {splits.line_numbers[pair]}: {e}') from e
  return frames


def run(embedder, splits_path, data_root, out_dir, max_frames=None,
        mode='mean_embedding', flip=True, progress=True):
  """Embeds every frame once, scores the pairs, writes the report."""
  splits = protocols.read_ytf_splits(splits_path)
  frames = video_frames(splits_path, splits, data_root, max_frames)
  paths = [path for video_paths in frames.values() for path in video_paths]
  features = embedder.embed(sources.ImageFiles(paths, check_exists=False),
                            flip=flip, progress=progress)
  by_video, start = {}, 0
  for name, video_paths in frames.items():
    by_video[name] = features[start:start + len(video_paths)]
    start += len(video_paths)
  scores = video.pair_scores([by_video[v] for v in splits.first],
                             [by_video[v] for v in splits.second], mode=mode)
  return report.verification_report(
      [dict(set='YTF', method=f'model ({mode})', scores=scores,
            issame=splits.issame, folds=splits.folds)],
      out_dir, checkpoint_step=embedder.step, flip=flip, mode=mode,
      max_frames=max_frames, videos=len(frames), frames=len(paths),
      frames_per_video=float(np.mean([len(p) for p in frames.values()])))


@command_line.reports_errors(FileNotFoundError, ValueError)
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m eval.ytf',
                                   description=__doc__.split('\n')[0])
  extract.add_checkpoint_flags(parser)
  parser.add_argument('--splits', required=True, help="YTF's splits.txt")
  parser.add_argument('--data', required=True,
                      help='frame_images_DB or aligned_images_DB')
  parser.add_argument('--max-frames', type=int, default=DEFAULT_MAX_FRAMES,
                      help='frames per video, evenly spaced (0: all)')
  parser.add_argument('--mode', choices=video.MODES,
                      default='mean_embedding')
  parser.add_argument('--out', required=True, help='output folder')
  args = parser.parse_args(argv)
  embedder = inference.Embedder.from_workdir(
      args.checkpoint, args.step, batch_size=args.batch_size)
  _, table, json_path, png_path = run(
      embedder, args.splits, args.data, args.out, args.max_frames or None,
      args.mode, args.flip)
  print(table)
  print(f'report: {json_path}\nROC: {png_path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
