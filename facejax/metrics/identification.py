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
so the probe x distractor matrix never exists: :func:`distractor_top_k`
streams the distractors in fixed-size chunks (numpy arrays, memmaps read with
positioned reads, or iterators of chunks), splits each chunk's rows over the
devices of a mesh (``jax.shard_map``), lets every device score its real rows
``SUB_BLOCK`` at a time and keep their top-k per probe, and merges those with
the running top-k in the same jitted step, while the host reads the next
chunk. Rank-1 needs only the running maximum.

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
with k = a + 1, so its TAR is exact; should that need more than 2^24
scores (a large FAR), it warns instead and reports ``tar_exact=False``
(the TAR is then an upper bound: the threshold found is <= the true one).

Exclusions (the ArcFace paper's cleaned lists, read with
:func:`facejax.data.megaface.read_noise_list` and
:func:`facejax.data.megaface.noise_mask`): excluded probe images are
neither probes nor mates; excluded distractors are dropped from each size's
list, so a size names the devkit's list and the result reports how many
distractors remained.
"""

import functools
import math
import mmap
import numbers
import operator
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from facejax import sharding

DEFAULT_SIZES = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
DEFAULT_CHUNK_SIZE = 16_384
# Each device scores its rows of a chunk this many at a time, in a loop with
# a dynamic trip count: a short last chunk costs its real rows only, and the
# (P, SUB_BLOCK) scores of one block (7 MiB for MegaFace's 3,530 probes) stay
# in a CPU's last-level cache between the product and its reduction (about
# 10% less CPU time than blocks of 16,384 on a 2-core EPYC; see
# bench/megaface_search.py).
SUB_BLOCK = 512
# Rows merged one by one when no more of them change (see _merge_few).
_FEW_ROWS = 512
# The most impostor scores (probes x k) a rescan for an exact TAR may keep.
_MAX_RESCAN_SCORES = 2 ** 24


# ---------------------------------------------------------------- inputs ---


def _probe_matrix(features, name='probe_features'):
  features = np.asarray(features)
  if features.ndim != 2 or not features.shape[0] or not features.shape[1]:
    raise ValueError(f'{name} must be a non-empty (n, d) array, got shape '
                     f'{features.shape}')
  if not np.issubdtype(features.dtype, np.number) or features.dtype == bool:
    raise ValueError(f'{name} must be numeric, got {features.dtype}')
  features = features.astype(np.float32)
  if not np.all(np.isfinite(features)):
    row = int(np.flatnonzero(~np.all(np.isfinite(features), axis=1))[0])
    raise ValueError(f'{name} has NaN or infinite values (row {row})')
  return features


def _check_positive_int(value, name):
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
      value < 1):
    raise ValueError(f'{name} must be a positive integer, got {value!r}')
  return int(value)


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


def _normalise_rows(chunk, normalize):
  """(rows as given or unit, squared norms); the norms flag bad rows."""
  squares = jnp.sum(chunk * chunk, axis=-1, keepdims=True)
  if not normalize:
    return chunk, squares
  norm = jnp.sqrt(squares)
  return jnp.where(norm > 0, chunk / jnp.where(norm > 0, norm, 1), 0), squares


@jax.jit
def _normalised_probes(probes):
  return _normalise_rows(probes, True)[0]


# -------------------------------------------------------- reading chunks ---


def _file_backing(features):
  """(path, byte offset) when ``features`` is a whole memmap of a file.

  Such arrays are read with positioned reads into fresh buffers rather than
  through the mapping, so the pages streamed through never count in the
  process's resident memory (they stay in the kernel's page cache).
  Slices of a memmap (whose base is the parent memmap, not the mmap) and
  copy-on-write mappings (whose changes are private) are read by indexing.
  """
  if (isinstance(features, np.memmap) and isinstance(features.base, mmap.mmap)
      and features.filename and features.mode in ('r', 'r+', 'w+')
      and features.flags.c_contiguous and features.ndim == 2):
    return os.fspath(features.filename), int(features.offset)
  return None


class _RowReader:
  """Reads rows of an (n, d) array or memmap into (rows, d) float32 buffers."""

  def __init__(self, features):
    self.features = features
    self.backing = _file_backing(features)
    self.file = None

  def __enter__(self):
    if self.backing:
      self.file = open(self.backing[0], 'rb', buffering=0)
    return self

  def __exit__(self, *exc_info):
    if self.file is not None:
      self.file.close()

  def _pread(self, buffer, first_row):
    row_bytes = self.features.dtype.itemsize * self.features.shape[1]
    view = memoryview(buffer).cast('B')
    offset = self.backing[1] + first_row * row_bytes
    done = 0
    while done < len(view):
      read = os.preadv(self.file.fileno(), [view[done:]], offset + done)
      if read <= 0:
        raise ValueError(f'{self.backing[0]}: file ends before row '
                         f'{first_row + done // row_bytes}')
      done += read

  def read(self, indices, out):
    """Rows ``indices`` (sorted) into ``out[:len(indices)]`` as float32."""
    if not len(indices):
      return
    if self.backing is None:
      first, last = int(indices[0]), int(indices[-1])
      contiguous = last - first + 1 == len(indices)  # sorted and distinct
      out[:len(indices)] = self.features[first:last + 1] if contiguous else (
          self.features[indices])
      return
    dtype = self.features.dtype
    raw = out if dtype == np.float32 else np.empty(
        (len(indices), self.features.shape[1]), dtype)
    starts = np.flatnonzero(np.diff(indices, prepend=indices[0] - 2) != 1)
    ends = np.append(starts[1:], len(indices))
    for start, end in zip(starts, ends):
      self._pread(raw[start:end], int(indices[start]))
    if raw is not out:
      out[:len(indices)] = raw


def _array_chunks(features, chunk_rows, order):
  """(buffer (chunk_rows, d), valid rows) over ``order`` (row indices)."""
  dim = features.shape[1]
  with _RowReader(features) as reader:
    for start in range(0, len(order), chunk_rows):
      indices = order[start:start + chunk_rows]
      buffer = np.empty((chunk_rows, dim), np.float32)
      if len(indices) > 1 and np.any(np.diff(indices) < 0):
        # Read in file order, keep stream order (nested sizes cut by it).
        by_row = np.argsort(indices, kind='stable')
        rows = np.empty((len(indices), dim), np.float32)
        reader.read(indices[by_row], rows)
        buffer[by_row] = rows
      else:
        reader.read(indices, buffer)
      buffer[len(indices):] = 0
      yield buffer, len(indices)


def _iterator_chunks(pieces, chunk_rows, dim):
  """Re-cuts an iterator of (n_i, d) arrays into fixed chunks."""
  buffer, filled = np.zeros((chunk_rows, dim), np.float32), 0
  for piece_number, piece in enumerate(pieces):
    piece = np.asarray(piece)
    if piece.ndim != 2 or piece.shape[1] != dim:
      raise ValueError(f'distractor chunk {piece_number} must be (n, {dim}), '
                       f'got shape {piece.shape}')
    used = 0
    while used < len(piece):
      take = min(chunk_rows - filled, len(piece) - used)
      buffer[filled:filled + take] = piece[used:used + take]
      filled, used = filled + take, used + take
      if filled == chunk_rows:
        yield buffer, filled
        buffer, filled = np.zeros((chunk_rows, dim), np.float32), 0
  if filled:
    yield buffer, filled


def _distractor_chunks(features, chunk_rows, dim, order=None):
  if hasattr(features, 'shape') and hasattr(features, 'dtype'):
    if len(features.shape) != 2 or features.shape[1] != dim:
      raise ValueError(f'distractor_features must be (n, {dim}) like the '
                       f'probes, got shape {features.shape}')
    if not np.issubdtype(features.dtype, np.floating):
      raise ValueError('distractor_features must be floating point, got '
                       f'{features.dtype}')
    if order is None:
      order = np.arange(features.shape[0])
    return _array_chunks(features, chunk_rows, order)
  if order is not None:
    raise ValueError('an iterator of distractor chunks cannot be permuted or '
                     'filtered: pass an array or memmap')
  return _iterator_chunks(features, chunk_rows, dim)


# ---------------------------------------------------------- device search ---


def _top(scores, k):
  """The k largest of each row, descending: (..., n) -> (..., k)."""
  if k == 1:
    return jnp.max(scores, axis=-1, keepdims=True)
  return jax.lax.top_k(scores, k)[0]


def _merge(tops, new, k):
  """Running top-k (..., k) merged with candidates (..., m)."""
  if k == 1:
    return jnp.maximum(tops, jnp.max(new, axis=-1, keepdims=True))
  return _top(jnp.concatenate([tops, new], axis=-1), k)


def _merge_few(tops, scores, k, few_rows, floor):
  """:func:`_merge` of (P, k) and (P, n) where few rows can matter.

  ``floor`` (P, 1) is each probe's k-th score over all distractors so far
  (the running top-k before this step): a new score matters only if it is
  strictly above both that and the row's own k-th value (a score equal to
  the final k-th value changes no value of the top-k; one below the floor
  cannot be in it). Once many distractors are in, few probes have such a
  score in a block (about P k n / N of them for n new scores after N), so
  when at most ``few_rows`` do, only those rows are gathered and merged:
  XLA's CPU top-k costs about 1.5 us a row, the product 8 us a row of 512
  scores. Otherwise every row is merged. Rows left out only miss scores
  that no merge of the final top-k can keep, so the result is exact.
  """
  if k == 1 or tops.shape[0] <= few_rows:
    return _merge(tops, scores, k)
  changed = jnp.any(scores > jnp.maximum(tops[:, -1:], floor), axis=1)

  def few(tops):
    rows = jnp.nonzero(changed, size=few_rows, fill_value=tops.shape[0])[0]
    merged = _merge(tops.at[rows].get(mode='fill', fill_value=-jnp.inf),
                    scores.at[rows].get(mode='fill', fill_value=-jnp.inf), k)
    return tops.at[rows].set(merged, mode='drop')

  return jax.lax.cond(jnp.sum(changed) <= few_rows, few,
                      lambda tops: _merge(tops, scores, k), tops)


@functools.lru_cache(maxsize=None)
def _search_step(mesh, k, num_limits, normalize, sub_block, few_rows):
  """The jitted step: merge one chunk's scores into the running top-k.

  ``step(top, bad, probes, chunk, limits)``: ``chunk`` (rows, d) is split
  by rows over every device of ``mesh``; ``limits[0]`` is the number of
  real rows (the rest is padding, never scored), ``limits[1:]`` are cuts
  (the running top-k after only the rows before each cut: a nested size
  ending inside the chunk). Each device loops over its real rows
  ``sub_block`` at a time: scores (P, sub_block), reduced to its top-k at
  once, so a short chunk costs its real rows and the scores never exceed
  P x sub_block per device; only the last, partial block (and every block
  of a chunk with cuts) is masked. Full blocks merge only the rows that
  can change (:func:`_merge_few`, with ``few_rows``). Returns the new top
  (P, k), the count of real rows with a NaN, infinite or overflowing value
  so far, and the (num_limits - 1, P, k) cut snapshots.
  """
  axes = tuple(mesh.axis_names)

  def local(probes, chunk, limits, floor):
    rows, dim = chunk.shape
    blocks = chunk.reshape(rows // sub_block, sub_block, dim)
    first_row = jax.lax.axis_index(axes) * rows
    local_limits = jnp.clip(limits - first_row, 0, rows)
    column = jnp.arange(sub_block)

    def scores_of(i):
      block = jax.lax.dynamic_index_in_dim(blocks, i, keepdims=False)
      block, squares = _normalise_rows(block.astype(jnp.float32), normalize)
      scores = jnp.matmul(probes, block.T,
                          precision=jax.lax.Precision.HIGHEST,
                          preferred_element_type=jnp.float32)
      return scores, ~jnp.isfinite(squares[:, 0])

    def masked(i, carry):
      tops, bad = carry
      scores, bad_rows = scores_of(i)
      row = i * sub_block + column
      tops = jnp.stack([
          _merge(tops[j], jnp.where(row < local_limits[j], scores, -jnp.inf),
                 k) for j in range(num_limits)])
      return tops, bad + jnp.sum(bad_rows & (row < local_limits[0]))

    carry = jax.lax.pcast(  # per-device values, as the loop makes them
        (jnp.full((num_limits, probes.shape[0], k), -jnp.inf, jnp.float32),
         jnp.zeros((), jnp.int32)), axes, to='varying')
    if num_limits > 1:
      carry = jax.lax.fori_loop(0, -(-local_limits[0] // sub_block), masked,
                                carry)
    else:
      def full(i, carry):
        tops, bad = carry
        scores, bad_rows = scores_of(i)
        return (_merge_few(tops[0], scores, k, few_rows, floor)[None],
                bad + jnp.sum(bad_rows))

      whole = local_limits[0] // sub_block
      carry = jax.lax.fori_loop(0, whole, full, carry)
      carry = jax.lax.cond(local_limits[0] % sub_block > 0,
                           functools.partial(masked, whole),
                           lambda carry: carry, carry)
    tops, bad = carry
    return tops[None], bad[None]

  rows_spec = P(axes)
  replicated = NamedSharding(mesh, P())

  def step(top, bad, probes, chunk, limits):
    probes = jax.reshard(probes, replicated)
    chunk = jax.reshard(chunk, NamedSharding(mesh, rows_spec))
    limits = jax.reshard(limits, replicated)
    device_tops, device_bad = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), rows_spec, P(), P()),
        out_specs=(rows_spec, rows_spec))(probes, chunk, limits,
                                          top[:, -1:])
    device_tops = jax.reshard(device_tops, replicated)  # (devices, L, P, k)
    candidates = jnp.moveaxis(device_tops, 0, -2).reshape(
        (num_limits, top.shape[0], -1))
    merged = _merge(jnp.broadcast_to(top, (num_limits,) + top.shape),
                    candidates, k)
    bad = bad + jnp.sum(jax.reshard(device_bad, replicated))
    return merged[0], bad, merged[1:]

  return jax.jit(step)


def _check_sizes(sizes):
  if sizes is None:
    return None
  sizes = [_check_positive_int(size, 'each of sizes') for size in sizes]
  if any(b <= a for a, b in zip(sizes, sizes[1:])):
    raise ValueError(f'sizes must be strictly increasing, got {sizes}')
  return sizes


def _search(probes, distractor_features, k, chunk_size, mesh, sizes,
            normalize, order=None):
  """distractor_top_k on validated, normalised probes (a device array)."""
  k = _check_positive_int(k, 'k')
  chunk_size = _check_positive_int(chunk_size, 'chunk_size')
  sizes = _check_sizes(sizes)
  mesh = sharding.make_mesh() if mesh is None else mesh
  devices = mesh.size
  rows_per_device = -(-chunk_size // devices)
  sub_block = min(SUB_BLOCK, rows_per_device)
  rows_per_device = -(-rows_per_device // sub_block) * sub_block
  chunk_rows = rows_per_device * devices
  replicated = NamedSharding(mesh, P())
  rows = NamedSharding(mesh, P(tuple(mesh.axis_names)))
  probes = jax.device_put(probes, replicated)
  top = jax.device_put(jnp.full((probes.shape[0], k), -jnp.inf), replicated)
  bad = jax.device_put(jnp.zeros((), jnp.int32), replicated)
  snapshots, pending = {}, None
  start = 0
  for buffer, count in _distractor_chunks(distractor_features, chunk_rows,
                                          probes.shape[1], order):
    end = start + count
    cuts = [size for size in (sizes or ()) if start < size < end]
    step = _search_step(mesh, k, 1 + len(cuts), bool(normalize), sub_block,
                        _FEW_ROWS)
    limits = np.array([count] + [size - start for size in cuts], np.int32)
    top, bad, cut_tops = step(top, bad, probes, jax.device_put(buffer, rows),
                              jax.device_put(limits, replicated))
    for i, size in enumerate(cuts):
      snapshots[size] = cut_tops[i]
    if end in (sizes or ()):
      snapshots[end] = top
    # At most two steps in flight: the next chunk is read while this one
    # runs, and memory stays a few chunks whatever the distractor count.
    if pending is not None:
      pending.block_until_ready()
    pending, start = top, end
  if int(bad):
    raise ValueError('distractor_features have NaN, infinite or overflowing '
                     f'values in {int(bad)} row(s)')
  if sizes is None:
    return np.asarray(top)
  missing = [size for size in sizes if size not in snapshots]
  if missing:
    raise ValueError(f'sizes {missing} exceed the {start} distractors')
  return np.stack([np.asarray(snapshots[size]) for size in sizes])


def distractor_top_k(probe_features, distractor_features, k,
                     chunk_size=DEFAULT_CHUNK_SIZE, mesh=None, sizes=None, *,
                     normalize=True):
  """Each probe's k largest distractor scores, without the full matrix.

  Scores are ``s(p, d) = <p, d>`` in float32 (``Precision.HIGHEST``) of the
  L2-normalised features. Distractors are read ``chunk_size`` rows at a
  time into a fresh buffer (the last one zero-padded), whose rows are split
  evenly over all devices of ``mesh``; every device scores its real rows
  against all probes ``SUB_BLOCK`` rows at a time (padding is never scored)
  and keeps its top-k per probe, and the same jitted step merges those into
  the running top-k. At most two chunks are in flight (the next is read
  while one is scored), so memory is a few chunks plus (P, SUB_BLOCK) scores
  per device, whatever the distractor count.

  Args:
    probe_features: (P, d) probes.
    distractor_features: (N, d) numpy array, or ``np.memmap`` (read with
      positioned reads, never resident), or an iterable of (n_i, d) chunks.
    k: how many scores to keep per probe.
    chunk_size: distractor rows per step (rounded up to a multiple of the
      device count, and of ``SUB_BLOCK`` rows per device when larger).
    mesh: the devices to split rows over; default
      :func:`facejax.sharding.make_mesh` (every device). Rows are split over
      all of its axes.
    sizes: increasing prefix sizes: also return the top-k of the first n
      distractors for each n (one pass gives every MegaFace size).
    normalize: L2-normalise probes and distractors first (zero vectors
      score 0); False uses the features as given.

  Returns:
    float32 (P, k), each row descending, -inf where there are fewer than k
    distractors; with ``sizes``, (len(sizes), P, k), one per size.

  Raises:
    ValueError: bad shapes or values (naming them), non-finite distractors,
      or a size beyond the number of distractors.
  """
  probes = _normalised_probes(_probe_matrix(probe_features)) if normalize \
      else jnp.asarray(_probe_matrix(probe_features))
  return _search(probes, distractor_features, k, chunk_size, mesh, sizes,
                 normalize)


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
  probes = _probe_matrix(probe_features)
  ids = np.asarray(probe_ids)
  if ids.shape != probes.shape[:1]:
    raise ValueError(f'probe_ids must be ({probes.shape[0]},), got shape '
                     f'{ids.shape}')
  probe_index, mate_index = trials(ids)
  if not len(probe_index):
    raise ValueError('no (probe, mate) trials: every identity has fewer than '
                     'two images')
  probes = _normalised_probes(probes) if normalize else jnp.asarray(probes)
  top = _search(probes, distractor_features, k, chunk_size, mesh, None,
                normalize)
  mate_scores = _mate_scores(probes, probe_index, mate_index)
  return cmc_from_top_k(top, probe_index, mate_scores, k)


def megaface_rank1(probe_features, probe_ids, distractor_features, *,
                   chunk_size=DEFAULT_CHUNK_SIZE, mesh=None, normalize=True):
  """MegaFace rank-1 identification rate against all the distractors given.

  The fraction of (probe, mate) trials whose mate scores strictly above
  every distractor (see the module doc); only each probe's maximum
  distractor score is kept.

  Args:
    probe_features: (P, d) probe (FaceScrub) features.
    probe_ids: (P,) their identities.
    distractor_features: (N, d) array or memmap, or an iterable of chunks.
    chunk_size, mesh, normalize: as :func:`distractor_top_k`.

  Returns:
    The rank-1 rate, a float in [0, 1].
  """
  return float(_identification(probe_features, probe_ids, distractor_features,
                               1, chunk_size, mesh, normalize)[0])


def cmc(probe_features, probe_ids, distractor_features, max_rank=10, *,
        chunk_size=DEFAULT_CHUNK_SIZE, mesh=None, normalize=True):
  """MegaFace CMC: identification rates at ranks 1..max_rank.

  Args: as :func:`megaface_rank1`, and ``max_rank``.

  Returns:
    float64 (max_rank,): CMC(1), ..., CMC(max_rank), non-decreasing.
  """
  max_rank = _check_positive_int(max_rank, 'max_rank')
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


def megaface_evaluate(probe_features, probe_ids, distractor_features,
                      sizes=DEFAULT_SIZES, max_rank=10, far=1e-6, seed=0,
                      probe_exclude=None, distractor_exclude=None,
                      distractor_lists=None, *, chunk_size=DEFAULT_CHUNK_SIZE,
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
    chunk_size, mesh, normalize: as :func:`distractor_top_k`.
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
  probes = _probe_matrix(probe_features)
  ids = np.asarray(probe_ids)
  if ids.shape != probes.shape[:1]:
    raise ValueError(f'probe_ids must be ({probes.shape[0]},), got shape '
                     f'{ids.shape}')
  max_rank = _check_positive_int(max_rank, 'max_rank')
  verification_top_k = _check_positive_int(verification_top_k,
                                           'verification_top_k')
  if not 0 <= far <= 1:
    raise ValueError(f'far must be in [0, 1], got {far}')
  num_distractors = _distractor_count(distractor_features)
  probe_keep = _row_mask(probe_exclude, len(probes), 'probe_exclude')
  distractor_keep = _row_mask(distractor_exclude, num_distractors,
                              'distractor_exclude')
  if distractor_lists is None:
    sizes = _check_sizes(sizes)
  probe_rows = np.flatnonzero(probe_keep)
  probe_index, mate_index = trials(ids[probe_rows])
  if not len(probe_index):
    raise ValueError('no (probe, mate) trials: every identity has fewer than '
                     'two kept images')
  kept = probes[probe_rows]
  kept = _normalised_probes(kept) if normalize else jnp.asarray(kept)
  mate_scores = _mate_scores(kept, probe_index, mate_index)
  identities = len(np.unique(ids[probe_rows][probe_index]))
  k = max(max_rank, verification_top_k)
  search = functools.partial(_search, chunk_size=chunk_size, mesh=mesh,
                             normalize=normalize)
  streams, skipped = _size_streams(num_distractors, distractor_keep, sizes,
                                   seed, distractor_lists)
  results = {label: dict(skipped=True, note=note)
             for label, note in skipped.items()}
  all_probes = np.arange(len(probe_rows))
  for order, prefixes in streams:
    lengths = [length for _, length in prefixes]
    sizes_in_stream = sorted({length for length in lengths if length})
    tops = {}
    if sizes_in_stream:
      found = search(kept, distractor_features, k, sizes=sizes_in_stream,
                     order=order)
      tops = dict(zip(sizes_in_stream, found))
    verifications = {}
    for length in set(lengths):
      top = tops.get(length, np.full((len(probe_rows), k), -np.inf,
                                     np.float32))
      verifications[length] = (top, tar_at_far_from_top_k(
          top, all_probes, length, mate_scores, far))
    short = [v for _, v in verifications.values() if not v['exact']]
    if short:  # rescan the probes whose lists were too short, long enough
      rows = np.unique(np.concatenate([v['short_rows'] for v in short]))
      long_k = min(max(v['allowed'] + 1 for v in short), max(lengths))
      if len(rows) * long_k > _MAX_RESCAN_SCORES:
        warnings.warn(
            f'TAR at FAR={far} is not exact (an upper bound, tar_exact='
            f'False): it needs the top {long_k} impostor scores of '
            f'{len(rows)} probes, more than a rescan keeps '
            f'({_MAX_RESCAN_SCORES:,}); raise verification_top_k (now '
            f'{verification_top_k}) or lower far', stacklevel=2)
      else:
        longer = search(kept[rows], distractor_features, long_k,
                        sizes=sizes_in_stream, order=order)
        for length, top in tops.items():
          combined = np.full((len(probe_rows), long_k), -np.inf, np.float32)
          combined[:, :k] = top
          combined[rows] = longer[sizes_in_stream.index(length)]
          verification = tar_at_far_from_top_k(combined, all_probes, length,
                                               mate_scores, far)
          assert verification['exact'], 'k = allowed + 1 is always enough'
          verifications[length] = (top, verification)
    for label, length in prefixes:
      top, verification = verifications[length]
      curve = cmc_from_top_k(top, probe_index, mate_scores, max_rank)
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
