"""Streaming, sharded top-k search: each probe's k best distractor scores.

The engine under MegaFace identification
(:mod:`facejax.metrics.identification`), for galleries too large for the
probe x distractor score matrix to exist. Scores are ``s(p, d) = <p, d>`` in
float32 (``Precision.HIGHEST``) of the L2-normalised features (zero vectors
score 0), or of the features as given with ``normalize=False``.

:func:`distractor_top_k` streams the distractors in fixed-size chunks (numpy
arrays, memmaps read with positioned reads, or iterators of chunks), splits
each chunk's rows over the devices of a mesh (``jax.shard_map``), lets every
device score its real rows ``SUB_BLOCK`` at a time and keep their top-k per
probe, and merges those with the running top-k in the same jitted step,
while the host reads the next chunk. k = 1 keeps only the running maximum.
Memory is a few chunks, whatever the distractor count.

With ``sizes`` one pass also returns the running top-k after each prefix of
the first n distractors (nested sets, as MegaFace's distractor sizes), and
:func:`prepared_top_k`'s ``order`` streams chosen rows in a chosen order (a
permutation, a subset). A protocol that searches the same probes more than
once (MegaFace's exact TAR rescans a few of them) checks and normalises them
once (:func:`probe_matrix`, :func:`prepare_probes`) and passes the prepared
rows to :func:`prepared_top_k`, so every pass scores them alike.
"""

import functools
import mmap
import numbers
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from facejax import sharding

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


# ---------------------------------------------------------------- inputs ---


def probe_matrix(features, name='probe_features'):
  """``features`` as a checked float32 (n, d) numpy array, or a ValueError
  naming ``name``."""
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


def check_positive_int(value, name):
  """``value`` as an int >= 1, or a ValueError naming ``name``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
      value < 1):
    raise ValueError(f'{name} must be a positive integer, got {value!r}')
  return int(value)


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


def prepare_probes(probes, normalize):
  """The probes as the search scores them: a device array, unit rows with
  ``normalize`` (zero rows stay zero). ``probes``: a :func:`probe_matrix`."""
  return _normalised_probes(probes) if normalize else jnp.asarray(probes)


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


def check_sizes(sizes):
  """``sizes`` (None, or strictly increasing ints >= 1) as a list, or a
  ValueError."""
  if sizes is None:
    return None
  sizes = [check_positive_int(size, 'each of sizes') for size in sizes]
  if any(b <= a for a, b in zip(sizes, sizes[1:])):
    raise ValueError(f'sizes must be strictly increasing, got {sizes}')
  return sizes


def prepared_top_k(probes, distractor_features, k, chunk_size, mesh, sizes,
                   normalize, order=None):
  """:func:`distractor_top_k` of probes from :func:`prepare_probes`.

  ``order``: the rows of an array or memmap ``distractor_features`` to
  stream, in stream order (``sizes`` count along it); None streams all
  rows in order. An iterator of chunks cannot be reordered.
  """
  k = check_positive_int(k, 'k')
  chunk_size = check_positive_int(chunk_size, 'chunk_size')
  sizes = check_sizes(sizes)
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
  probes = prepare_probes(probe_matrix(probe_features), normalize)
  return prepared_top_k(probes, distractor_features, k, chunk_size, mesh,
                        sizes, normalize)
