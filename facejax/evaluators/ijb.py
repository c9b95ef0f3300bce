"""IJB-B / IJB-C: 1:1 template verification and 1:N search.

    evaluator = ijb.Evaluator(root='IJB_release/IJBC', target='IJBC')
    for name, value in evaluator.run(embed):     # embed(source, ...) -> (N, D)
      ...                                         # 'tar_at_far_1e-04', ...

The protocol (insightface's ``meta/`` and ``loose_crop/`` under ``root``,
NIST's 1:N CSVs among them: :mod:`facejax.data.ijb`) is read once, when
the evaluator is built. Every loose crop is aligned with its five landmarks
(the pipeline's 5-point similarity alignment) and embedded once per run,
not L2-normalised (``embed(source, flip=..., normalise=False)``: with the
flip test, the mean of the image's and its mirror image's embeddings,
proportional to insightface's sum). Templates are pooled as insightface
pools them (:func:`facejax.metrics.ijb.template_features`: detector-score
weights, per-media means, the sum, L2), the protocol's pairs scored in
blocks over every device, and the metrics are exact
(:mod:`facejax.metrics.ijb`).

It yields ``tar_at_far_<far>`` for FAR 1e-6 ... 1e-1 and ``auc`` (1:1), and
when the 1:N files are there ``rank_<r>`` (CMC) and ``tpir_at_fpir_<f>``,
each the mean over the two galleries (G1/G2, or IJB-B's S1/S2), searched
separately as NIST reports them. The training loop runs it from
``config.evals`` (``dict(type='ijb', root=..., every=...)``), ``eval.ijb``
on a restored checkpoint: the same object.
"""

import os

import numpy as np

from facejax.data import ijb as ijb_files
from facejax.data import sources
from facejax.metrics import ijb
from facejax.training import config_rules


def far_name(far):
  return f'tar_at_far_{far:.0e}'


def fpir_name(fpir):
  return f'tpir_at_fpir_{fpir:g}'


class Evaluator:
  """One IJB target's 1:1 and 1:N evaluation (the module doc says how).

  Attributes:
    protocol: the :class:`facejax.data.ijb.Protocol`.
    source: the loose crops with their landmarks (aligned when embedded).
    flip, detector_score, media_pooling: the pooling variant.
  """

  RULES = (('root', config_rules.STRING),
           ('target', config_rules.one_of(*ijb_files.TARGETS)),
           ('flip', config_rules.BOOLEAN),
           ('detector_score', config_rules.BOOLEAN),
           ('media_pooling', config_rules.BOOLEAN))

  def __init__(self, root, target='IJBC', flip=True, detector_score=True,
               media_pooling=True, fars=ijb.FARS, ranks=ijb.RANKS,
               fpirs=ijb.FPIRS):
    self.protocol = ijb_files.open_protocol(root, target)
    self.name = target
    self.source = sources.ImageFiles(
        self.protocol.image_paths, landmarks=self.protocol.landmarks,
        check_exists=False, name=f'{target} loose crops')
    self.flip, self.detector_score = flip, detector_score
    self.media_pooling = media_pooling
    self.fars, self.ranks, self.fpirs = tuple(fars), tuple(ranks), tuple(
        fpirs)

  @staticmethod
  def check_config(entry, key):
    """Raises ConfigError naming ``key.root`` when there is no protocol."""
    root = entry.get('root')
    if not root or not os.path.isdir(os.path.join(root, 'meta')):
      raise config_rules.ConfigError(
          f'{key}.root={root!r}: no meta/ folder there (insightface\'s IJB '
          'layout: meta/ and loose_crop/)')

  @staticmethod
  def metric_modes(entry):
    """{name: 'max'} of what :meth:`run` yields (all: higher is better)."""
    del entry
    names = [far_name(far) for far in ijb.FARS] + ['auc']
    names += [f'rank_{r}' for r in ijb.RANKS]
    names += [fpir_name(f) for f in ijb.FPIRS]
    return {name: 'max' for name in names}

  def features(self, embeddings):
    """(template features, template ids) of per-image ``embeddings``."""
    return ijb.template_features(
        embeddings, self.protocol.templates, self.protocol.medias,
        detector_scores=(self.protocol.detector_scores
                         if self.detector_score else None),
        media_pooling=self.media_pooling)

  def evaluate_embeddings(self, embeddings):
    """Every result of the protocol from per-image ``embeddings``: 1:1
    (``tar_at_far``'s dict) and, with 1:N files, per-gallery and mean
    ``identification`` dicts."""
    features, template_ids = self.features(embeddings)
    scores = ijb.pair_scores(features, template_ids,
                             self.protocol.pairs[:, 0],
                             self.protocol.pairs[:, 1])
    result = dict(verification=ijb.tar_at_far(scores, self.protocol.labels,
                                              self.fars),
                  pairs=len(scores), templates=len(template_ids),
                  images=len(embeddings))
    if self.protocol.probes is not None:
      rows = lambda wanted: ijb.template_rows(  # noqa: E731
          template_ids, wanted, 'identification')
      probe_templates, probe_subjects = self.protocol.probes
      galleries = {}
      for name, (gallery, subjects) in self.protocol.galleries.items():
        galleries[name] = ijb.identification(
            features[rows(probe_templates)], probe_subjects,
            features[rows(gallery)], subjects, self.ranks, self.fpirs)
      result['identification'] = galleries
      result['identification_mean'] = dict(
          cmc={r: float(np.mean([g['cmc'][r] for g in galleries.values()]))
               for r in self.ranks},
          tpir_at_fpir={f: float(np.mean([g['tpir_at_fpir'][f]
                                          for g in galleries.values()]))
                        for f in self.fpirs})
    return result

  def evaluate(self, embed):
    """:meth:`evaluate_embeddings` of what ``embed`` gives the crops."""
    return self.evaluate_embeddings(np.asarray(embed(
        self.source, flip=self.flip, normalise=False)))

  def run(self, embed):
    """Yields ``(name, value)``: TAR at each FAR, AUC, and with 1:N files
    the mean CMC ranks and TPIR at each FPIR."""
    result = self.evaluate(embed)
    for far, tar in result['verification']['tar_at_far'].items():
      yield far_name(far), tar
    yield 'auc', result['verification']['auc']
    if 'identification_mean' in result:
      for rank, rate in result['identification_mean']['cmc'].items():
        yield f'rank_{rank}', rate
      for fpir, tpir in result['identification_mean'][
          'tpir_at_fpir'].items():
        yield fpir_name(fpir), tpir
