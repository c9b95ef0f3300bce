"""MegaFace Challenge 1 identification (and its verification), exact.

The protocol (Kemelmacher-Shlizerman et al., CVPR 2016; the devkit's
``run_experiment.py`` with its ``Identification`` and ``FuseResults``
binaries). The probe set is FaceScrub (80 identities, 3,530 images in the
standard subset). For every identity, each of its images in turn is the
probe p, and each of its *other* images in turn is the mate m: the single
image of p's identity put in the gallery, together with the distractor set D
(MegaFace, up to 1M images). Scores are cosine similarities of L2-normalised
features, ``s(a, b) = <a, b>`` computed in float32 (``probe @ distractor.T``).
A trial (p, m) ranks the mate at

    rank(p, m) = 1 + #{d in D : s(p, d) >= s(p, m)}

Ties count against the mate (the conservative convention): a distractor
scoring exactly the mate's score is counted as ranked above it. The trial
succeeds at rank r when rank(p, m) <= r, i.e. when fewer than r distractors
score at least s(p, m), i.e. when the r-th largest distractor score of p is
strictly below s(p, m) (-inf when p has fewer than r distractors). Then

    CMC(r) = #{trials (p, m) succeeding at rank r} / #{trials}
    rank-1 = CMC(1): the fraction of trials whose mate beats every distractor

Only each probe's top-k distractor scores are needed (k = the largest rank),
so the probe x distractor matrix never exists: the streaming, sharded search
of :mod:`facejax.metrics.search` keeps a running top-k per probe over every
device while the distractors stream past. Rank-1 needs only the running
maximum.

Distractor sizes 10, 100, ..., 1,000,000 are nested: the first n rows of one
fixed seeded permutation of the distractor set (or the devkit's per-size
lists), so one pass yields all of them (a snapshot of the running top-k after
each prefix).

Verification (the devkit's ROC, reported at FAR = 1e-6): genuine pairs are
the trials' (p, m) pairs (ordered, so each unordered pair counts twice:
rates are unchanged), impostor pairs are all (probe, distractor) pairs, n_I
of them. With a = floor(FAR n_I) impostors allowed above the threshold, the
threshold t is the (a + 1)-th largest impostor score, and

    TAR = #{genuine pairs with s > t} / #{genuine pairs}

(accept iff s > t, as :mod:`facejax.metrics.verification`; at most a <=
FAR n_I impostors are accepted, fewer with ties at t). Only the global top
a + 1 impostor scores matter, and they are taken from the per-probe top-k
lists: the result is exact when every probe whose list was cut (more than k
distractors) has its k-th score <= t (missing scores are then <= t and
cannot move it), which holds whenever k >= a + 1. :func:`megaface_evaluate`
checks this and rescans the distractors for the few probes that fail it
with k = a + 1 (:func:`_exact_tar`), so its TAR is exact; should that need
more than 2^24 scores (a large FAR), it warns instead and reports
``tar_exact=False`` (the TAR is then an upper bound: the threshold found
is <= the true one).

Exclusions (the ArcFace paper's cleaned lists, read with
:func:`facejax.data.megaface.read_noise_list` and
:func:`facejax.data.megaface.noise_mask`): excluded probe images are
neither probes nor mates; excluded distractors are dropped from each size's
list, so a size names the devkit's list and the result reports how many
distractors remained.
"""

import dataclasses
import math
import operator
import warnings

import numpy as np

from facejax.metrics import search

DEFAULT_SIZES = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
# The most impostor scores (probes x k) a rescan for an exact TAR may keep.
_MAX_RESCAN_SCORES = 2 ** 24


# ---------------------------------------------------------------- inputs ---


def _row_mask(exclude, count, name):
  """A boolean keep-mask (count,) from a boolean drop-mask or index list."""
  keep = np.ones(count, bool)
  if exclude is None:
    return keep
  exclude = np.asarray(exclude)
  if exclude.dtype == bool:
    if exclude.shape != (count,):
      raise ValueError(f'{name} as a mask must have shape ({count},), got '
                       f'{exclude.shape}')
    return ~exclude
  if exclude.size and not np.issubdtype(exclude.dtype, np.integer):
    raise ValueError(f'{name} must be a boolean mask or integer indices, '
                     f'got {exclude.dtype}')
  exclude = exclude.astype(np.int64).ravel()
  if exclude.size and (exclude.min() < -count or exclude.max() >= count):
    raise ValueError(f'{name} has indices outside [0, {count}): '
                     f'{exclude[(exclude < -count) | (exclude >= count)][:5]}')
  keep[exclude] = False
  return keep


# ----------------------------------------------------------------- trials ---


def trials(probe_ids, keep=None):
  """Every (probe, mate) pair of the protocol: ordered, same identity, p != m.

  Args:
    probe_ids: (P,) identity of each probe image (any comparable values).
    keep: optional (P,) boolean mask of the images taking part.

  Returns:
    (probe_index, mate_index): int64 arrays of the trials, grouped by
    identity.
  """
  ids = np.asarray(probe_ids)
  if ids.ndim != 1:
    raise ValueError(f'probe_ids must be (P,), got shape {ids.shape}')
  keep = np.ones(len(ids), bool) if keep is None else np.asarray(keep, bool)
  kept = np.flatnonzero(keep)
  if not len(kept):
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  _, labels = np.unique(ids[kept], return_inverse=True)
  kept = kept[np.argsort(labels, kind='stable')]
  counts = np.bincount(labels)
  probe_index, mate_index = [], []
  for group in np.split(kept, np.cumsum(counts)[:-1]):
    if len(group) < 2:
      continue
    probe = np.repeat(group, len(group))
    mate = np.tile(group, len(group))
    probe_index.append(probe[probe != mate])
    mate_index.append(mate[probe != mate])
  if not probe_index:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  return np.concatenate(probe_index), np.concatenate(mate_index)


def _mate_scores(probes, probe_index, mate_index):
  """s(p, m) for each trial, float32, from the normalised probes."""
  probes = np.asarray(probes, np.float32)
  scores = np.empty(len(probe_index), np.float32)
  block = 8_192  # trials at a time: two (block, d) gathers
  for start in range(0, len(probe_index), block):
    p = probes[probe_index[start:start + block]]
    m = probes[mate_index[start:start + block]]
    scores[start:start + block] = np.einsum('td,td->t', p, m)
  return scores


def cmc_from_top_k(top, probe_index, mate_scores, max_rank):
  """CMC(1..max_rank) of trials from each probe's top distractor scores.

  CMC(r) = mean over trials of [r-th largest distractor score of p <
  s(p, m)] (ties against the mate).

  Args:
    top: (P, k) descending distractor scores per probe, k >= max_rank.
    probe_index: (T,) the probe of each trial (rows of ``top``).
    mate_scores: (T,) s(p, m) of each trial.
    max_rank: the largest rank.
  """
  top = np.asarray(top)
  if top.ndim != 2 or top.shape[1] < max_rank:
    raise ValueError(f'need top scores (P, k >= {max_rank}), got shape '
                     f'{top.shape}')
  if not len(probe_index):
    raise ValueError('no (probe, mate) trials: every identity has fewer than '
                     'two images')
  beaten = top[probe_index, :max_rank] < np.asarray(mate_scores)[:, None]
  return beaten.mean(axis=0)


def tar_at_far_from_top_k(top, probe_rows, num_distractors, genuine_scores,
                          far):
  """TAR at FAR from per-probe top-k impostor lists (see the module doc).

  Args:
    top: (P, k) descending distractor (impostor) scores per probe.
    probe_rows: the rows of ``top`` that are probes (each with
      ``num_distractors`` impostor pairs).
    num_distractors: distractors per probe.
    genuine_scores: (G,) genuine pair scores.
    far: the false accept rate, in [0, 1].

  Returns:
    dict: ``tar``, ``threshold`` (accept iff score > threshold),
    ``false_accepts`` (among the kept lists), ``impostor_pairs``,
    ``allowed`` (floor(far x impostor pairs)), ``exact`` (whether the lists
    were long enough, see the module doc) and ``short_rows`` (the rows of
    ``probe_rows`` whose lists were too short).
  """
  if not 0 <= far <= 1:
    raise ValueError(f'far must be in [0, 1], got {far}')
  top = np.asarray(top)
  probe_rows = np.asarray(probe_rows, np.int64)
  genuine_scores = np.asarray(genuine_scores)
  if not len(genuine_scores):
    raise ValueError('no genuine pairs: every identity has fewer than two '
                     'images')
  impostor_pairs = len(probe_rows) * num_distractors
  allowed = math.floor(far * impostor_pairs + 1e-9)
  needed = allowed + 1
  kept = top[probe_rows, :min(top.shape[1], num_distractors)]
  union = kept.ravel()
  if needed > impostor_pairs:
    threshold = -np.inf
  elif union.size >= needed:
    threshold = float(np.partition(union, union.size - needed)[-needed])
  else:
    threshold = -np.inf
  cut = num_distractors > top.shape[1] and needed <= impostor_pairs
  if cut:
    short = kept[:, -1] > threshold
    if union.size < needed:
      short[:] = True
  else:
    short = np.zeros(len(probe_rows), bool)
  return dict(
      tar=float(np.mean(genuine_scores > threshold)), threshold=threshold,
      false_accepts=int(np.sum(union > threshold)),
      impostor_pairs=impostor_pairs, allowed=allowed, exact=not short.any(),
      short_rows=probe_rows[short])


# ------------------------------------------------------------- the metrics --


def _identification(probe_features, probe_ids, distractor_features, k,
                    chunk_size, mesh, normalize):
  probes = search.probe_matrix(probe_features)
  ids = np.asarray(probe_ids)
  if ids.shape != probes.shape[:1]:
    raise ValueError(f'probe_ids must be ({probes.shape[0]},), got shape '
                     f'{ids.shape}')
  probe_index, mate_index = trials(ids)
  if not len(probe_index):
    raise ValueError('no (probe, mate) trials: every identity has fewer than '
                     'two images')
  probes = search.prepare_probes(probes, normalize)
  top = search.prepared_top_k(probes, distractor_features, k, chunk_size,
                              mesh, None, normalize)
  mate_scores = _mate_scores(probes, probe_index, mate_index)
  return cmc_from_top_k(top, probe_index, mate_scores, k)


def megaface_rank1(probe_features, probe_ids, distractor_features, *,
                   chunk_size=search.DEFAULT_CHUNK_SIZE, mesh=None,
                   normalize=True):
  """MegaFace rank-1 identification rate against all the distractors given.

  The fraction of (probe, mate) trials whose mate scores strictly above
  every distractor (see the module doc); only each probe's maximum
  distractor score is kept.

  Args:
    probe_features: (P, d) probe (FaceScrub) features.
    probe_ids: (P,) their identities.
    distractor_features: (N, d) array or memmap, or an iterable of chunks.
    chunk_size, mesh, normalize: as
      :func:`facejax.metrics.search.distractor_top_k`.

  Returns:
    The rank-1 rate, a float in [0, 1].
  """
  return float(_identification(probe_features, probe_ids, distractor_features,
                               1, chunk_size, mesh, normalize)[0])


def cmc(probe_features, probe_ids, distractor_features, max_rank=10, *,
        chunk_size=search.DEFAULT_CHUNK_SIZE, mesh=None, normalize=True):
  """MegaFace CMC: identification rates at ranks 1..max_rank.

  Args: as :func:`megaface_rank1`, and ``max_rank``.

  Returns:
    float64 (max_rank,): CMC(1), ..., CMC(max_rank), non-decreasing.
  """
  max_rank = search.check_positive_int(max_rank, 'max_rank')
  return _identification(probe_features, probe_ids, distractor_features,
                         max_rank, chunk_size, mesh, normalize)


def _size_streams(num_distractors, keep, sizes, seed, distractor_lists):
  """[(stream order, [(label, prefix length)])] and the skipped sizes."""
  skipped = {}
  if distractor_lists is None:
    order = np.random.default_rng(seed).permutation(num_distractors)
    counts = np.cumsum(keep[order])
    prefixes = []
    for size in sizes:
      if size > num_distractors:
        skipped[size] = (f'size {size} is more than the {num_distractors} '
                         'distractors given')
      else:
        prefixes.append((size, int(counts[size - 1])))
    if not prefixes:
      return [], skipped
    stream = order[keep[order]][:prefixes[-1][1]]
    return [(stream, prefixes)], skipped
  lists = []
  for label, indices in distractor_lists.items():
    indices = np.asarray(indices).astype(np.int64).ravel()
    if indices.size and (indices.min() < 0 or
                         indices.max() >= num_distractors):
      raise ValueError(f'distractor list {label!r} has rows outside [0, '
                       f'{num_distractors})')
    lists.append((len(indices), label, np.unique(indices)))
  lists.sort(key=operator.itemgetter(0))
  nested = all(np.isin(a, b).all()
               for (_, _, a), (_, _, b) in zip(lists, lists[1:]))
  if not nested:  # one pass per list
    return [(indices[keep[indices]], [(label, int(keep[indices].sum()))])
            for _, label, indices in lists], skipped
  stream, prefixes, seen = [], [], np.zeros(num_distractors, bool)
  for _, label, indices in lists:
    new = indices[~seen[indices]]
    seen[new] = True
    stream.append(new[keep[new]])
    prefixes.append((label, sum(len(part) for part in stream)))
  return [(np.concatenate(stream), prefixes)], skipped


def _distractor_count(distractor_features):
  if not (hasattr(distractor_features, 'shape')
          and hasattr(distractor_features, 'dtype')):
    raise ValueError('megaface_evaluate needs distractor_features as an '
                     '(N, d) array or memmap (it permutes and may rescan '
                     'them)')
  return distractor_features.shape[0]


@dataclasses.dataclass(frozen=True)
class _Stream:
  """One pass over the distractors, which the exact TAR may scan again.

  Attributes:
    probes: the kept probes as the search scores them
      (:func:`facejax.metrics.search.prepare_probes`).
    distractor_features: the (N, d) array or memmap.
    order: its rows in stream order (kept distractors only).
    lengths: the non-zero prefix lengths cut from the stream, increasing.
    chunk_size, mesh, normalize: as
      :func:`facejax.metrics.search.distractor_top_k`.
  """
  probes: object
  distractor_features: object
  order: np.ndarray
  lengths: list
  chunk_size: int
  mesh: object
  normalize: bool

  def top_k(self, k, rows=None):
    """(len(lengths), P, k): every probe's (or ``rows``') top-k at each
    length, in one pass."""
    probes = self.probes if rows is None else self.probes[rows]
    return search.prepared_top_k(
        probes, self.distractor_features, k, self.chunk_size, self.mesh,
        self.lengths, self.normalize, order=self.order)


def _exact_tar(stream, tops, mate_scores, far, verification_top_k):
  """TAR at FAR at every prefix length of ``stream``, exact (module doc).

  First from the pass's top-k lists; the probes whose lists were cut above
  the threshold at some length are then scanned again, once for every
  length, keeping the allowed + 1 scores the largest length needs, and
  every length is measured from those longer lists. Should a rescan keep
  more than ``_MAX_RESCAN_SCORES`` scores, it warns instead, and the
  lists' result stands (``exact`` False: the TAR is an upper bound).

  Args:
    stream: the pass (:class:`_Stream`).
    tops: {prefix length: (P, k) top-k impostor scores of every kept probe}
      for every prefix length of the stream, 0 included.
    mate_scores: (T,) genuine pair scores.
    far: the false accept rate.
    verification_top_k: the caller's argument, which the warning names.

  Returns:
    {prefix length: :func:`tar_at_far_from_top_k`'s dict}.
  """
  all_probes = np.arange(len(stream.probes))
  verifications = {length: tar_at_far_from_top_k(top, all_probes, length,
                                                  mate_scores, far)
                   for length, top in tops.items()}
  short = [v for v in verifications.values() if not v['exact']]
  if not short:
    return verifications
  rows = np.unique(np.concatenate([v['short_rows'] for v in short]))
  long_k = min(max(v['allowed'] + 1 for v in short), max(tops))
  if len(rows) * long_k > _MAX_RESCAN_SCORES:
    warnings.warn(
        f'TAR at FAR={far} is not exact (an upper bound, tar_exact='
        f'False): it needs the top {long_k} impostor scores of '
        f'{len(rows)} probes, more than a rescan keeps '
        f'({_MAX_RESCAN_SCORES:,}); raise verification_top_k (now '
        f'{verification_top_k}) or lower far', stacklevel=3)
    return verifications
  longer = stream.top_k(long_k, rows)
  for length, longer_top in zip(stream.lengths, longer):
    top = tops[length]
    combined = np.full((len(all_probes), long_k), -np.inf, np.float32)
    combined[:, :top.shape[1]] = top
    combined[rows] = longer_top
    verification = tar_at_far_from_top_k(combined, all_probes, length,
                                         mate_scores, far)
    assert verification['exact'], 'k = allowed + 1 is always enough'
    verifications[length] = verification
  return verifications


def megaface_evaluate(probe_features, probe_ids, distractor_features,
                      sizes=DEFAULT_SIZES, max_rank=10, far=1e-6, seed=0,
                      probe_exclude=None, distractor_exclude=None,
                      distractor_lists=None, *,
                      chunk_size=search.DEFAULT_CHUNK_SIZE,
                      mesh=None, normalize=True, verification_top_k=16):
  """The MegaFace Challenge 1 results at every distractor size, in one pass.

  Args:
    probe_features: (P, d) FaceScrub features.
    probe_ids: (P,) their identities (the devkit list's ``"id"``).
    distractor_features: (N, d) MegaFace features, array or memmap.
    sizes: distractor sizes; each is the first ``size`` rows of one
      permutation of the N distractors drawn with ``seed`` (so the sets are
      nested). Sizes above N are skipped, with a note.
    max_rank: CMC ranks 1..max_rank.
    far: the verification operating point (the devkit reports 1e-6).
    seed: the permutation's seed.
    probe_exclude, distractor_exclude: images to leave out, as boolean
      masks (True = drop) or index lists: e.g. the ArcFace noise lists
      through :func:`facejax.data.megaface.noise_mask`. Excluded
      distractors are dropped from each size's set.
    distractor_lists: instead of ``sizes`` and ``seed``, explicit sets, as
      {label: row indices into distractor_features} (the devkit's per-size
      lists, resolved to rows). Nested lists are scanned in one pass, others
      one pass each.
    chunk_size, mesh, normalize: as
      :func:`facejax.metrics.search.distractor_top_k`.
    verification_top_k: impostor scores kept per probe in the main pass
      (with ``max_rank``); probes for which that is not enough for an exact
      TAR are rescanned with as many as needed (see the module doc).

  Returns:
    {size or label: dict} with ``rank1``, ``cmc`` (list, ranks
    1..max_rank), ``tar_at_far``, ``tar_exact``, ``far``, ``threshold``
    (the score a genuine pair must exceed), ``probes``,
    ``identities`` (those with trials), ``trials``, ``distractors`` (after
    exclusion), ``impostor_pairs``, ``skipped`` (False); a skipped size maps
    to {``skipped``: True, ``note``: why}.
  """
  probes = search.probe_matrix(probe_features)
  ids = np.asarray(probe_ids)
  if ids.shape != probes.shape[:1]:
    raise ValueError(f'probe_ids must be ({probes.shape[0]},), got shape '
                     f'{ids.shape}')
  max_rank = search.check_positive_int(max_rank, 'max_rank')
  verification_top_k = search.check_positive_int(verification_top_k,
                                                 'verification_top_k')
  if not 0 <= far <= 1:
    raise ValueError(f'far must be in [0, 1], got {far}')
  num_distractors = _distractor_count(distractor_features)
  probe_keep = _row_mask(probe_exclude, len(probes), 'probe_exclude')
  distractor_keep = _row_mask(distractor_exclude, num_distractors,
                              'distractor_exclude')
  if distractor_lists is None:
    sizes = search.check_sizes(sizes)
  probe_rows = np.flatnonzero(probe_keep)
  probe_index, mate_index = trials(ids[probe_rows])
  if not len(probe_index):
    raise ValueError('no (probe, mate) trials: every identity has fewer than '
                     'two kept images')
  kept = search.prepare_probes(probes[probe_rows], normalize)
  mate_scores = _mate_scores(kept, probe_index, mate_index)
  identities = len(np.unique(ids[probe_rows][probe_index]))
  k = max(max_rank, verification_top_k)
  streams, skipped = _size_streams(num_distractors, distractor_keep, sizes,
                                   seed, distractor_lists)
  results = {label: dict(skipped=True, note=note)
             for label, note in skipped.items()}
  for order, prefixes in streams:
    lengths = [length for _, length in prefixes]
    stream = _Stream(kept, distractor_features, order,
                     sorted({length for length in lengths if length}),
                     chunk_size, mesh, normalize)
    tops = {}
    if stream.lengths:
      tops = dict(zip(stream.lengths, stream.top_k(k)))
    for length in set(lengths) - set(tops):  # no distractor kept
      tops[length] = np.full((len(probe_rows), k), -np.inf, np.float32)
    verifications = _exact_tar(stream, tops, mate_scores, far,
                               verification_top_k)
    for label, length in prefixes:
      verification = verifications[length]
      curve = cmc_from_top_k(tops[length], probe_index, mate_scores,
                             max_rank)
      results[label] = dict(
          skipped=False, rank1=float(curve[0]), cmc=curve.tolist(),
          tar_at_far=verification['tar'], tar_exact=verification['exact'],
          far=far, threshold=verification['threshold'],
          probes=len(probe_rows),
          identities=identities, trials=len(probe_index),
          distractors=length,
          impostor_pairs=verification['impostor_pairs'])
  labels = sizes if distractor_lists is None else sorted(
      distractor_lists, key=lambda label: len(distractor_lists[label]))
  return {label: results[label] for label in labels}
