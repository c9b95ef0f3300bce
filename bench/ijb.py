"""IJB-C scoring at full size: facejax.metrics.ijb against plain numpy.

    python -m bench.ijb [--markdown] [--smoke]

Random L2-normalised 512-d template features at IJB-C's sizes: the 1:1
protocol's pairs over 23,124 templates (``--pairs``, default 469,375) and
the 1:N search of 19,593 mixed-media probes against gallery G1 (1,772
templates). Each is timed for facejax (blocks over every local device, the
first call's compilation reported apart) and for a plain numpy
implementation in the same run (row gathers and a sum of products; one
probes x gallery matrix product and its reductions), with the largest
difference between the two. Then the memory the pair scoring needs: the
peak resident memory of a fresh process scoring ``--pairs`` pairs and 4
times as many with the same block size: bounded by the block, it should not
grow with the pair count.
"""

import argparse
import resource
import subprocess
import sys
import time

import numpy as np

from bench import table

TEMPLATES, PAIRS, PROBES, GALLERY, DIM = 23_124, 469_375, 19_593, 1_772, 512
SMOKE = dict(templates=300, pairs=5_000, probes=400, gallery=50, dim=32)


def features(count, dim, seed):
  x = np.random.default_rng(seed).normal(size=(count, dim)).astype(
      np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(function, repeats=3):
  """(first call's seconds, best of ``repeats`` later calls, result)."""
  start = time.perf_counter()
  result = function()
  first = time.perf_counter() - start
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    result = function()
    best = min(best, time.perf_counter() - start)
  return first, best, result


def numpy_pair_scores(feats, first, second, block=1 << 16):
  out = np.empty(len(first), np.float32)
  for start in range(0, len(first), block):
    stop = start + block
    out[start:stop] = np.einsum('ij,ij->i', feats[first[start:stop]],
                                feats[second[start:stop]])
  return out


def numpy_search(probes, probe_subjects, gallery, gallery_subjects):
  scores = probes @ gallery.T
  mate = probe_subjects[:, None] == gallery_subjects[None, :]
  mate_score = np.where(mate, scores, -np.inf).max(axis=1)
  beaten = ((~mate) & (scores >= mate_score[:, None])).sum(axis=1)
  return mate_score, beaten, scores.max(axis=1)


def peak_memory_mib(pairs, templates, dim, block_size):
  """Peak resident MiB of a fresh process scoring ``pairs`` pairs."""
  code = (
      'import resource, numpy as np\n'
      'from bench import ijb as b\n'
      'from facejax.metrics import ijb\n'
      f'f = b.features({templates}, {dim}, 0)\n'
      f'rng = np.random.default_rng(1)\n'
      f'p = rng.integers(0, {templates}, ({pairs}, 2))\n'
      'base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n'
      f'ijb.pair_scores(f, np.arange({templates}), p[:, 0], p[:, 1], '
      f'block_size={block_size})\n'
      'print(base / 1024, resource.getrusage('
      'resource.RUSAGE_SELF).ru_maxrss / 1024)\n')
  out = subprocess.run([sys.executable, '-c', code], check=True,
                       capture_output=True, text=True).stdout.split()
  return float(out[0]), float(out[1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--pairs', type=int, default=PAIRS)
  parser.add_argument('--block-size', type=int, default=1 << 16)
  parser.add_argument('--smoke', action='store_true', help='tiny sizes')
  parser.add_argument('--markdown', action='store_true')
  args = parser.parse_args(argv)
  from facejax.metrics import ijb  # pylint: disable=import-outside-toplevel
  sizes = SMOKE if args.smoke else dict(
      templates=TEMPLATES, pairs=args.pairs, probes=PROBES, gallery=GALLERY,
      dim=DIM)
  block = 1024 if args.smoke else args.block_size
  feats = features(sizes['templates'], sizes['dim'], 0)
  ids = np.arange(sizes['templates'])
  rng = np.random.default_rng(1)
  pairs = rng.integers(0, sizes['templates'], (sizes['pairs'], 2))
  rows = []
  first, ours, got = timed(lambda: ijb.pair_scores(
      feats, ids, pairs[:, 0], pairs[:, 1], block_size=block))
  _, plain, expected = timed(lambda: numpy_pair_scores(
      feats, pairs[:, 0], pairs[:, 1]))
  rows.append(dict(task=f'1:1 scores, {sizes["pairs"]:,} pairs',
                   first=first, facejax=ours, numpy=plain,
                   difference=float(np.abs(got - expected).max())))
  gallery = features(sizes['gallery'], sizes['dim'], 2)
  gallery_subjects = np.arange(sizes['gallery'])
  probe_subjects = rng.integers(0, 2 * sizes['gallery'], sizes['probes'])
  probes = features(sizes['probes'], sizes['dim'], 3)
  first, ours, result = timed(lambda: ijb.identification(
      probes, probe_subjects, gallery, gallery_subjects))
  _, plain, reference = timed(lambda: numpy_search(
      probes, probe_subjects, gallery, gallery_subjects))
  mated = np.isin(probe_subjects, gallery_subjects)
  rank1 = float(np.mean(reference[1][mated] == 0))
  rows.append(dict(task=f'1:N search, {sizes["probes"]:,} x '
                   f'{sizes["gallery"]:,}', first=first, facejax=ours,
                   numpy=plain,
                   difference=abs(result['cmc'][1] - rank1)))
  table.print_rows(
      ('task', 'facejax s (first call)', 'facejax s', 'numpy s',
       'numpy / facejax', 'max difference'),
      [(r['task'], f'{r["first"]:.3f}', f'{r["facejax"]:.3f}',
        f'{r["numpy"]:.3f}', f'{r["numpy"] / r["facejax"]:.2f}',
        f'{r["difference"]:.1e}') for r in rows], args.markdown)
  memory = []
  for count in (sizes['pairs'], 4 * sizes['pairs']):
    base, peak = peak_memory_mib(count, sizes['templates'], sizes['dim'],
                                 block)
    memory.append((f'{count:,}', f'{base:.0f}', f'{peak:.0f}',
                   f'{peak - base:.0f}'))
  print()
  table.print_rows(('pairs scored', 'MiB before', 'peak MiB',
                    'growth MiB'), memory, args.markdown)
  return rows, memory


if __name__ == '__main__':
  main()
