"""IJB-B / IJB-C: template features, 1:1 verification and 1:N search.

IARPA Janus Benchmarks B and C (Whitelam et al. 2017; Maze et al. 2018)
compare *templates*: sets of still images and video frames of one subject.
The conventions here are insightface's IJB evaluation (``IJB_11.py``,
``IJB_1N.py``) where it defines them, NIST's where it does not, and exact
where insightface rounds:

* **Template features** (:func:`template_features`). For image i with
  embedding e_i (plus its mirror image's, the flip test) and detector score
  q_i ("faceness"), the media m (a still, or the frames of one video) of a
  template T has the mean  mu_m = mean_{i in m} q_i e_i,  and the template
  the normalised sum  f_T = sum_m mu_m / ||sum_m mu_m||.  No per-image
  normalisation before pooling (insightface's ``use_norm_score=True``, its
  default): an image's norm weighs it.
* **1:1 verification** (:func:`pair_scores`, :func:`tar_at_far`). The score
  of a pair is the cosine f_T1 . f_T2. TAR at FAR uses the threshold that
  accepts at most floor(FAR x impostors) impostor pairs: with the impostor
  scores sorted down, s_(1) >= s_(2) >= ..., and k = floor(FAR x n), a pair
  is accepted when its score is strictly above s_(k+1); a tie at the
  threshold is rejected whole, so the achieved FAR never exceeds the target.
  insightface instead reads the ROC point nearest the target FAR, which can
  lie above it (and then reports a higher TAR).
* **1:N identification** (:func:`identification`), open set, one gallery per
  call (IJB-C's G1 and G2 are searched separately and the figures averaged,
  as NIST reports them; insightface concatenates the galleries). A mated
  search (the probe's subject is in the gallery) ranks its mate at
  1 + the number of non-mate gallery templates scoring at least the mate's
  score (ties count against the mate, as MegaFace's metric does); CMC at
  rank r is the fraction of mated searches ranked r or better. FPIR at a
  threshold is the fraction of non-mated searches whose top score reaches
  it; TPIR the fraction of mated searches ranked 1 whose mate score reaches
  it; the threshold follows the same rule as TAR at FAR, over the non-mated
  top scores.

Scale: IJB-C's 1:1 protocol has 469,375 pairs over 23,124 templates. Pair
scores and the 1:N search run in fixed-size blocks over every device
(one compilation), so memory is bounded by the block, not by the number of
pairs or probes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from facejax import sharding
from facejax.metrics import verification

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
RANKS = (1, 5, 10)
FPIRS = (0.01, 0.1)
DEFAULT_BLOCK_SIZE = 1 << 16


def template_features(embeddings, templates, medias, *, flipped=None,
                      detector_scores=None, media_pooling=True):
  """(features (T, D) L2-normalised float32, template_ids (T,) sorted).

  Args:
    embeddings: (N, D) one embedding per image (not normalised).
    templates: (N,) the template of each image.
    medias: (N,) the media (still or video) of each image; media are grouped
      within each template.
    flipped: (N, D) the mirror images' embeddings, added (the flip test).
    detector_scores: (N,) faceness scores multiplying each embedding before
      the per-media mean.
    media_pooling: False: every image is its own media (the template is the
      sum of its images).

  Raises:
    ValueError: shapes that disagree, or a template whose pooled feature is
      zero (it cannot be normalised).
  """
  embeddings = np.asarray(embeddings, np.float64)
  templates, medias = np.asarray(templates), np.asarray(medias)
  count = len(embeddings)
  if embeddings.ndim != 2 or templates.shape != (count,) or (
      medias.shape != (count,)):
    raise ValueError(f'template_features: embeddings {embeddings.shape}, '
                     f'templates {templates.shape} and medias '
                     f'{medias.shape} must be (N, D), (N,) and (N,)')
  if flipped is not None:
    flipped = np.asarray(flipped, np.float64)
    if flipped.shape != embeddings.shape:
      raise ValueError(f'template_features: flipped {flipped.shape} is not '
                       f'the embeddings\' {embeddings.shape}')
    embeddings = embeddings + flipped
  if detector_scores is not None:
    scores = np.asarray(detector_scores, np.float64)
    if scores.shape != (count,):
      raise ValueError(f'template_features: detector_scores {scores.shape} '
                       f'must be ({count},)')
    embeddings = embeddings * scores[:, None]
  template_ids, template_index = np.unique(templates, return_inverse=True)
  if media_pooling:
    _, media_index = np.unique(
        np.stack([template_index, np.unique(medias, return_inverse=True)[1]],
                 axis=1), axis=0, return_inverse=True)
    media_index = media_index.reshape(-1)
  else:
    media_index = np.arange(count)
  groups = media_index.max(initial=-1) + 1
  media_sum = np.zeros((groups, embeddings.shape[1]))
  np.add.at(media_sum, media_index, embeddings)
  media_size = np.bincount(media_index, minlength=groups)
  media_template = np.zeros(groups, np.int64)
  media_template[media_index] = template_index
  features = np.zeros((len(template_ids), embeddings.shape[1]))
  np.add.at(features, media_template, media_sum / media_size[:, None])
  norms = np.linalg.norm(features, axis=1)
  if np.any(norms == 0):
    raise ValueError(f'template {template_ids[np.argmin(norms)].item()!r}: its '
                     'pooled feature is zero')
  return (features / norms[:, None]).astype(np.float32), template_ids


def template_rows(template_ids, wanted, what):
  """Row of each of ``wanted`` in the sorted ``template_ids``
  (:func:`template_features`' second result); ValueError names the first
  template with no row (``what`` says who asked)."""
  wanted = np.asarray(wanted)
  rows = np.searchsorted(template_ids, wanted)
  rows = np.minimum(rows, len(template_ids) - 1)
  unknown = template_ids[rows] != wanted
  if np.any(unknown):
    raise ValueError(f'{what}: template {wanted[np.argmax(unknown)].item()!r} has '
                     'no feature')
  return rows.astype(np.int32)


def _block(block_size, mesh):
  """The block size rounded up to a multiple of the mesh's devices."""
  return -(-max(block_size, 1) // mesh.size) * mesh.size


@functools.lru_cache(maxsize=None)
def _pair_block_scores(mesh):
  spread = sharding.batch_sharding(mesh)

  rows = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(*spread.spec, None))

  @functools.partial(jax.jit, out_shardings=spread)
  def scores(features, first, second):
    gather = lambda index: features.at[index].get(  # noqa: E731
        out_sharding=rows)
    return jnp.sum(gather(first) * gather(second), axis=-1)
  return scores


def pair_scores(features, template_ids, p1, p2, *, block_size=None,
                mesh=None):
  """(P,) float32 cosine scores of the template pairs (p1[k], p2[k]).

  Pairs are scored ``block_size`` at a time (padded, one compilation),
  each block split over every device of ``mesh`` (default: all), the
  features replicated: memory is the features plus one block.

  Raises:
    ValueError: a pair names a template with no feature.
  """
  mesh = mesh or sharding.make_mesh()
  first = template_rows(template_ids, p1, 'pair_scores')
  second = template_rows(template_ids, p2, 'pair_scores')
  if first.shape != second.shape:
    raise ValueError(f'pair_scores: {len(first)} first and {len(second)} '
                     'second templates')
  size = _block(block_size or DEFAULT_BLOCK_SIZE, mesh)
  replicated = jax.device_put(np.asarray(features, np.float32),
                              sharding.replicated(mesh))
  spread = sharding.batch_sharding(mesh)
  score = _pair_block_scores(mesh)
  out = np.empty(len(first), np.float32)
  for start in range(0, len(first), size):
    stop = min(start + size, len(first))
    block = [np.zeros(size, np.int32) for _ in range(2)]
    block[0][:stop - start] = first[start:stop]
    block[1][:stop - start] = second[start:stop]
    values = score(replicated, *(jax.device_put(b, spread) for b in block))
    out[start:stop] = np.asarray(values)[:stop - start]
  return out


def acceptance_threshold(negative_scores, rate):
  """The score a pair must exceed to be accepted at false-accept ``rate``.

  With the negatives sorted down, s_(1) >= s_(2) >= ..., and
  k = floor(rate x n): s_(k+1), so that at most k negatives are strictly
  above it (a tie at it is rejected whole); -inf when k = n (accept all).
  """
  negatives = np.sort(np.asarray(negative_scores, np.float64))[::-1]
  k = int(np.floor(rate * len(negatives) + 1e-9))
  return float(negatives[k]) if k < len(negatives) else -np.inf


def tar_at_far(scores, labels, fars=FARS):
  """{'tar_at_far': {far: tar}, 'auc': float, 'roc': (fpr, tpr, thr)}, the
  AUC and ROC those of :mod:`facejax.metrics.verification`.

  Exact TAR at each FAR (module docstring): a genuine pair counts when its
  score is strictly above :func:`acceptance_threshold` of the impostor
  scores.

  Raises:
    ValueError: no genuine or no impostor pair, or shapes that disagree.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(bool)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise ValueError(f'tar_at_far: scores {scores.shape} and labels '
                     f'{labels.shape} must be the same (P,)')
  if labels.all() or not labels.any():
    raise ValueError('tar_at_far: needs both genuine and impostor pairs')
  genuine, impostor = scores[labels], scores[~labels]
  tars = {}
  for far in fars:
    threshold = acceptance_threshold(impostor, far)
    tars[far] = float(np.mean(genuine > threshold))
  return dict(tar_at_far=tars,
              auc=verification.area_under_roc(scores, labels),
              roc=verification.roc_curve(scores, labels))


@functools.lru_cache(maxsize=None)
def _search_block(mesh):
  spread = sharding.batch_sharding(mesh)

  @functools.partial(jax.jit, out_shardings=(spread, spread, spread))
  def search(probes, probe_subjects, gallery, gallery_subjects):
    scores = probes @ gallery.T  # (B, G)
    mate = probe_subjects[:, None] == gallery_subjects[None, :]
    mate_score = jnp.max(jnp.where(mate, scores, -jnp.inf), axis=1)
    beaten_by = jnp.sum((~mate) & (scores >= mate_score[:, None]), axis=1)
    return mate_score, beaten_by, jnp.max(scores, axis=1)
  return search


def identification(probe_features, probe_subjects, gallery_features,
                   gallery_subjects, ranks=RANKS, fpirs=FPIRS, *,
                   block_size=4096, mesh=None):
  """{'cmc': {rank: rate}, 'tpir_at_fpir': {fpir: tpir}, 'mated': int,
  'non_mated': int}: open-set search of one gallery (module docstring).

  Probes are searched ``block_size`` at a time over every device; memory is
  one block of (probes x gallery) scores.

  Raises:
    ValueError: no mated or no non-mated probe when one is needed, or
      shapes that disagree.
  """
  mesh = mesh or sharding.make_mesh()
  probes = np.asarray(probe_features, np.float32)
  gallery = np.asarray(gallery_features, np.float32)
  subjects, codes = np.unique(
      np.concatenate([np.asarray(probe_subjects), np.asarray(
          gallery_subjects)]), return_inverse=True)
  del subjects
  probe_codes = codes[:len(probes)].astype(np.int32)
  gallery_codes = codes[len(probes):].astype(np.int32)
  if len(probe_codes) != len(probes) or len(gallery_codes) != len(gallery):
    raise ValueError('identification: one subject per probe and per '
                     'gallery template')
  size = _block(block_size, mesh)
  spread = sharding.batch_sharding(mesh)
  everywhere = sharding.replicated(mesh)
  gallery_device = jax.device_put(gallery, everywhere)
  gallery_codes_device = jax.device_put(gallery_codes, everywhere)
  search = _search_block(mesh)
  mate_score = np.empty(len(probes), np.float32)
  beaten_by = np.empty(len(probes), np.int64)
  top_score = np.empty(len(probes), np.float32)
  for start in range(0, len(probes), size):
    stop = min(start + size, len(probes))
    block = np.zeros((size, probes.shape[1]), np.float32)
    block[:stop - start] = probes[start:stop]
    codes_block = np.full(size, -1, np.int32)
    codes_block[:stop - start] = probe_codes[start:stop]
    results = search(jax.device_put(block, spread),
                     jax.device_put(codes_block, spread), gallery_device,
                     gallery_codes_device)
    mate_score[start:stop], beaten_by[start:stop], top_score[start:stop] = (
        np.asarray(r)[:stop - start] for r in results)
  mated = np.isin(probe_codes, gallery_codes)
  if not mated.any():
    raise ValueError('identification: no probe has a mate in the gallery')
  rank = 1 + beaten_by[mated]
  cmc = {r: float(np.mean(rank <= r)) for r in ranks}
  tpir = {}
  if fpirs:
    if mated.all():
      raise ValueError('identification: TPIR at FPIR needs non-mated '
                       'probes')
    for fpir in fpirs:
      threshold = acceptance_threshold(top_score[~mated], fpir)
      tpir[fpir] = float(np.mean((rank == 1)
                                 & (mate_score[mated] > threshold)))
  return dict(cmc=cmc, tpir_at_fpir=tpir, mated=int(mated.sum()),
              non_mated=int((~mated).sum()))
