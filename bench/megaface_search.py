"""Exact MegaFace rank-1: facejax's streamed search against faiss's flat index.

    python -m bench.megaface_search [--probes 3530] [--identities 80]
                                    [--distractors 1000000] [--dim 512]
                                    [--chunk N] [--repeats 1] [--seed 0]
                                    [--no-faiss] [--markdown]

Synthetic L2-normalised features: ``--identities`` identity centres drawn
uniformly on the sphere, each probe its identity's centre plus a random
direction of length r (r uniform in [1.2, 2.4] per image, so mate scores
spread over about 0.15 to 0.45 and rank-1 is neither 0 nor 1 at a million
distractors), and ``--distractors`` uniform random unit vectors, generated
chunk by chunk from a seeded generator into a float32 memmap in a temporary
folder (so neither side ever needs them in memory).

Timed, in the same run (wall clock, ``--repeats`` rounds alternating the
two so that the machine's drift hits both; medians reported):

* facejax: :func:`facejax.metrics.identification.megaface_rank1` on the
  memmap (its search, :mod:`facejax.metrics.search`, reads it in chunks
  with positioned reads, scores them and reduces them to each probe's
  maximum on every local device), after one untimed warm-up call on 1,000
  distractors that compiles the step;
* faiss (when importable; ``--no-faiss`` skips it): ``faiss.IndexFlatIP``,
  the exact inner-product index, filled from the same file (read in blocks)
  and searched with k = 1 (the largest rank rank-1 needs), rank-1 then
  computed from its scores exactly as facejax does (a trial succeeds when
  its mate scores strictly above the probe's best distractor). The table
  shows its search time (the search, the trials' mate scores and the
  comparison, as in facejax's call) and its fill (``add``) time; "faiss /
  facejax" is faiss's search time alone (the stricter comparison) over
  facejax's total.

"CPU time" is the process's CPU seconds (``time.process_time``, every
thread) over the same span: on a shared machine wall clock moves with the
other processes' load, CPU seconds much less, so it shows whether a gap in
wall clock is work or contention.

The two rank-1 values must agree: they may differ only on trials whose mate
and best-distractor scores are closer than float32 rounding of the two
libraries' different summation orders (1e-5); any other difference exits
with an error. Peak memory is the growth of the process's peak resident set
(``VmHWM`` in ``/proc/self/status``, reset through ``/proc/self/clear_refs``
before each side; "n/a" where the kernel does not allow it) over its
resident set at the start of that side: for facejax it does not depend on
``--distractors``, for faiss it includes the index (N x dim x 4 bytes).
Run as ``python -m`` there is no test conftest: JAX sees the real devices
(one CPU device using every core).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

from bench import table
from facejax.metrics import identification
from facejax.metrics import search

MEMMAP_BLOCK = 65_536  # rows generated (and read into faiss) at a time
NEAR_TIE = 1e-5  # float32 rounding of two summation orders, with margin


def _unit_rows(rows):
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def probe_features(num_probes, num_identities, dim, seed):
  """(probes (P, dim) float32 unit rows, identities (P,) int)."""
  rng = np.random.default_rng(seed)
  centres = _unit_rows(rng.standard_normal((num_identities, dim)))
  ids = np.arange(num_probes) % num_identities
  spread = rng.uniform(1.2, 2.4, size=(num_probes, 1))
  directions = _unit_rows(rng.standard_normal((num_probes, dim)))
  return _unit_rows(centres[ids] + spread * directions).astype(
      np.float32), ids


def write_distractors(path, num_distractors, dim, seed):
  """Random unit float32 rows into a new file, block by block."""
  rng = np.random.default_rng(seed + 1)
  features = np.memmap(path, np.float32, 'w+', shape=(num_distractors, dim))
  for start in range(0, num_distractors, MEMMAP_BLOCK):
    rows = min(MEMMAP_BLOCK, num_distractors - start)
    features[start:start + rows] = _unit_rows(
        rng.standard_normal((rows, dim), np.float32))
  features.flush()
  del features


def _status_kib(field):
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  return None


class PeakMemory:
  """Growth of the peak resident set over a block (MiB), or None."""

  def __enter__(self):
    try:
      with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets VmHWM to the current resident set
      self.start = _status_kib('VmRSS')
    except OSError:
      self.start = None
    return self

  def __exit__(self, *exc_info):
    peak = _status_kib('VmHWM') if self.start is not None else None
    self.growth_mib = None if peak is None else (peak - self.start) / 1024


def _faiss():
  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return faiss


def mate_scores(probes, ids, block=8_192):
  """(probe index, s(p, m)) of every trial, as facejax pairs them."""
  probe_index, mate_index = identification.trials(ids)
  scores = np.empty(len(probe_index), np.float32)
  for start in range(0, len(probe_index), block):
    scores[start:start + block] = np.einsum(
        'td,td->t', probes[probe_index[start:start + block]],
        probes[mate_index[start:start + block]])
  return probe_index, scores


def faiss_rank1(faiss, path, num_distractors, dim, probes, ids):
  """(rank-1, best score per probe, trials, add s, search s, search CPU s).

  The search time includes the trials' mate scores and the comparison, as
  facejax's time does.
  """
  start = time.perf_counter()
  index = faiss.IndexFlatIP(dim)
  with open(path, 'rb') as f:
    for first in range(0, num_distractors, MEMMAP_BLOCK):
      rows = min(MEMMAP_BLOCK, num_distractors - first)
      block = np.fromfile(f, np.float32, rows * dim).reshape(rows, dim)
      index.add(block)
  added, cpu_start = time.perf_counter(), time.process_time()
  best, _ = index.search(probes, 1)
  best = best[:, 0]
  probe_index, scores = mate_scores(probes, ids)
  rank1 = float(np.mean(best[probe_index] < scores))
  searched, cpu = time.perf_counter(), time.process_time() - cpu_start
  return (rank1, best, (probe_index, scores), added - start, searched - added,
          cpu)


def _parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--probes', type=int, default=3530)
  parser.add_argument('--identities', type=int, default=80)
  parser.add_argument('--distractors', type=int, default=1_000_000)
  parser.add_argument('--dim', type=int, default=512)
  parser.add_argument('--chunk', type=int,
                      default=search.DEFAULT_CHUNK_SIZE,
                      help='distractor rows per facejax step')
  parser.add_argument('--repeats', type=int, default=1,
                      help='timed rounds (alternating); medians reported')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--no-faiss', action='store_true')
  parser.add_argument('--markdown', action='store_true')
  args = parser.parse_args(argv)
  if min(args.probes, args.identities, args.distractors, args.dim,
         args.chunk, args.repeats) < 1:
    parser.error('sizes and --repeats must be >= 1')
  if args.probes < 2 * args.identities:
    parser.error('need at least two probes per identity')
  return args


def main(argv=None):
  """Runs the comparison; prints and returns the result rows.

  Returns:
    A list of dicts (facejax first, then faiss when timed): method, probes,
    identities, distractors, dim, trials, rank1, seconds and cpu_seconds
    (medians), add_seconds (faiss), peak_mib (None when unmeasurable),
    faiss_over_facejax (faiss search time / facejax time), agreement.
  """
  args = _parse_args(argv)
  faiss = None if args.no_faiss else _faiss()
  if faiss is None and not args.no_faiss:
    print('note: faiss is not installed: facejax is timed alone')
  probes, ids = probe_features(args.probes, args.identities, args.dim,
                               args.seed)
  num_trials = len(identification.trials(ids)[0])
  cores = len(os.sched_getaffinity(0))
  devices = jax.devices()
  print(f'{args.probes} probes ({args.identities} identities, '
        f'{num_trials:,} trials) x {args.distractors:,} distractors, '
        f'dim {args.dim}; facejax on {len(devices)} x '
        f'{devices[0].device_kind}, chunk {args.chunk:,}; {cores} cores')
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, 'distractors.f32')
    write_distractors(path, args.distractors, args.dim, args.seed)
    distractors = np.memmap(path, np.float32, 'r',
                            shape=(args.distractors, args.dim))
    start = time.perf_counter()
    identification.megaface_rank1(probes, ids, distractors[:1000],
                                  chunk_size=args.chunk)
    print(f'facejax warm-up (compile) {time.perf_counter() - start:.1f} s')
    times = {'facejax': [], 'faiss': [], 'faiss add': []}
    cpu = {'facejax': [], 'faiss': []}
    peaks = {}
    for _ in range(args.repeats):
      with PeakMemory() as memory:
        start, cpu_start = time.perf_counter(), time.process_time()
        rank1 = identification.megaface_rank1(probes, ids, distractors,
                                              chunk_size=args.chunk)
        times['facejax'].append(time.perf_counter() - start)
        cpu['facejax'].append(time.process_time() - cpu_start)
      peaks['facejax'] = memory.growth_mib
      if faiss is not None:
        with PeakMemory() as memory:
          faiss_result = faiss_rank1(faiss, path, args.distractors, args.dim,
                                     probes, ids)
        cpu['faiss'].append(faiss_result[5])
        peaks['faiss'] = memory.growth_mib
        times['faiss add'].append(faiss_result[3])
        times['faiss'].append(faiss_result[4])
      print(f'round {len(times["facejax"])}: facejax '
            f'{times["facejax"][-1]:.2f} s' + (
                f', faiss add {times["faiss add"][-1]:.2f} s + search '
                f'{times["faiss"][-1]:.2f} s' if faiss is not None else '')
            + f'; load average {os.getloadavg()[0]:.1f}', flush=True)
    del distractors
  seconds = {name: statistics.median(values) if values else None
             for name, values in times.items()}
  cpu_seconds = {name: statistics.median(values) if values else None
                 for name, values in cpu.items()}
  common = dict(probes=args.probes, identities=args.identities,
                distractors=args.distractors, dim=args.dim,
                trials=num_trials)
  rows = [dict(common, method='facejax', rank1=rank1,
               seconds=seconds['facejax'], cpu_seconds=cpu_seconds['facejax'],
               add_seconds=None, peak_mib=peaks['facejax'],
               faiss_over_facejax=None, agreement=None)]
  if faiss is not None:
    faiss_rank, best, (probe_index, scores) = faiss_result[:3]
    near = int(np.sum(np.abs(best[probe_index] - scores) < NEAR_TIE))
    differing = round(abs(rank1 - faiss_rank) * num_trials)
    if differing == 0:
      agreement = 'equal'
    elif differing <= near:
      agreement = f'{differing} trials apart, within {near} near-ties'
    else:
      agreement = None
    ratio = seconds['faiss'] / seconds['facejax']
    rows[0].update(faiss_over_facejax=ratio, agreement=agreement)
    rows.append(dict(common, method='faiss IndexFlatIP', rank1=faiss_rank,
                     seconds=seconds['faiss'], cpu_seconds=cpu_seconds['faiss'],
                     add_seconds=seconds['faiss add'],
                     peak_mib=peaks['faiss'], faiss_over_facejax=ratio,
                     agreement=agreement))
  print_table(rows, args.markdown)
  if faiss is not None:
    if rows[0]['agreement'] is None:
      sys.exit(f'rank-1 disagrees: facejax {rank1:.6f}, faiss '
               f'{faiss_rank:.6f} ({differing} trials, only {near} near-ties)')
    faster = 'facejax' if ratio > 1 else 'faiss'
    print(f'rank-1 agrees ({rows[0]["agreement"]}); faiss search / facejax '
          f'time: {ratio:.3f} ({faster} faster)')
  return rows


def print_table(rows, markdown):
  """The rows as aligned text, or as a markdown table."""
  header = ('method', 'probes', 'distractors', 'dim', 'trials', 'rank-1',
            'time (s)', 'CPU time (s)', 'faiss add (s)',
            'peak RSS growth (MiB)', 'faiss / facejax')
  lines = [(row['method'], f'{row["probes"]:,}', f'{row["distractors"]:,}',
            str(row['dim']), f'{row["trials"]:,}', f'{row["rank1"]:.6f}',
            f'{row["seconds"]:.2f}', f'{row["cpu_seconds"]:.2f}',
            table.optional(row['add_seconds'], '.2f'),
            table.optional(row['peak_mib'], ',.0f'),
            table.optional(row['faiss_over_facejax'], '.3f')) for row in rows]
  table.print_rows(header, lines, markdown)


if __name__ == '__main__':
  main()
