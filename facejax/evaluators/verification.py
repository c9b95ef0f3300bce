"""Pair verification of one pair set: 10-fold accuracy, VAL@FAR, EER, AUC.

    evaluator = verification.Evaluator(bin='lfw.bin')
    for name, value in evaluator.run(embed):    # embed(source) -> (N, D)
      ...                                        # 'accuracy', 0.9953, ...

The pair set is one of

* ``pairs=N``: N pairs of held-out synthetic identities (never seen in
  training; ``seed`` draws them, at ``image_size``: the model's input
  side, which the config's evaluators get from ``config.data``), ten
  consecutive folds;
* ``bin=PATH``: an insightface ``.bin`` set (lfw, cfp_fp, agedb_30, ...),
  ten consecutive folds as they are written;
* ``pairs_file=PATH, data=FOLDER``: LFW's ``pairs.txt`` over its image
  folder, the file's own folds; with ``detector=`` (a
  :class:`facejax.detection.MTCNN`) the raw images are detected once and
  aligned on the fly (:func:`detected_landmarks`), the way insightface
  prepared ``lfw.bin``.

It is read (or drawn) once, when the evaluator is built; every image is
embedded once per run, each pair scored by the cosine similarity of its
two embeddings (or their Euclidean distance, ``metric='euclidean'``), and
the scores go to :func:`facejax.metrics.verification.evaluate` (each
fold's threshold chosen on the other nine). The training loop runs it on
the current model every few steps (``config.evals``), ``eval.lfw`` on a
restored checkpoint (and on raw pixels): the same object, so the numbers
agree.
"""

import dataclasses
import os

import numpy as np

from facejax.data import align
from facejax.data import alignment
from facejax.data import protocols
from facejax.data import sources
from facejax.data import synthetic
from facejax.metrics import verification
from facejax.training import config_rules

# LFW's protocol: 10 folds, each with a same and a different pair.
MIN_PAIRS = 20
SCORES = ('cosine', 'euclidean')
# What run() yields: name -> (the key of evaluate's result, which of its
# values are better, for keeping the best checkpoint).
METRICS = {
    'accuracy': ('accuracy_mean', 'max'),
    'accuracy_std': ('accuracy_std', 'min'),
    'val_at_far': ('val_at_far', 'max'),
    'eer': ('eer', 'min'),
    'auc': ('auc', 'max'),
}


@dataclasses.dataclass
class PairSet:
  """Pairs of images of one source; ``folds`` None: ten equal blocks."""
  name: str
  source: object
  first: np.ndarray
  second: np.ndarray
  issame: np.ndarray
  folds: object = None
  undetected: tuple = ()  # images aligned by the fallback: no face found


def _central_face(boxes, height, width):
  """The index of the face insightface's LFW alignment keeps.

  insightface's ``align_lfw.py`` (after facenet's ``align_dataset_mtcnn``)
  keeps, of several faces, the one of largest box area minus twice the
  squared distance of its centre from the image centre: an LFW image is
  centred on its subject but often shows other people.
  """
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 - width / 2,
                      (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2], axis=1)
  return int(np.argmax(areas - 2.0 * np.sum(centres ** 2, axis=1)))


def detected_landmarks(paths, detector, chunk=64):
  """(N, 5, 2) landmarks of each image's central face, and the images
  in which none was found.

  An image without a detected face gets the 112 template placed at the
  image centre (a 112x112 centre crop at the photo's scale: LFW's 250x250
  images are centred on a face of about that size), so that every pair is
  still scored, as LFW's protocol requires; those images are listed.

  Raises:
    ValueError: an image that cannot be decoded (named).
  """
  landmarks = np.zeros((len(paths), 5, 2), np.float32)
  undetected = []
  for start in range(0, len(paths), chunk):
    batch = paths[start:start + chunk]
    images = []
    for path in batch:
      image = align.decode_photo(path)
      if image is None:
        raise ValueError(f'{path}: not a decodable image')
      images.append(image)
    for offset, (image, (boxes, _, points)) in enumerate(
        zip(images, detector.detect_batch(images))):
      height, width = image.shape[:2]
      if len(boxes):
        landmarks[start + offset] = points[_central_face(boxes, height,
                                                         width)]
      else:
        undetected.append(batch[offset])
        landmarks[start + offset] = alignment.ARCFACE_TEMPLATE + np.array(
            [(width - alignment.TEMPLATE_SIZE) / 2,
             (height - alignment.TEMPLATE_SIZE) / 2], np.float32)
  return landmarks, tuple(undetected)


def lfw_pairs(pairs_file, data_root, detector=None):
  """LFW's pairs.txt over its image folder; with ``detector``, each
  image aligned by the landmarks of its detected central face."""
  pairs = protocols.read_lfw_pairs(pairs_file)
  paths, first, second = protocols.lfw_pair_paths(pairs, data_root)
  landmarks, undetected = (detected_landmarks(list(paths), detector)
                           if detector is not None else (None, ()))
  return PairSet(os.path.basename(pairs_file),
                 sources.ImageFiles(paths, landmarks=landmarks),
                 first, second, pairs.issame, pairs.folds, undetected)


def bin_pairs(path):
  """An insightface .bin set (lfw, cfp_fp, agedb_30, ...)."""
  source, first, second, issame = sources.verification_bin(path)
  name = os.path.splitext(os.path.basename(path))[0]
  return PairSet(name, source, first, second, issame)


def synthetic_pairs(num_pairs, seed=0, image_size=None):
  """Pairs of held-out synthetic identities (never seen in training): the
  first images of the pairs, then the second ones, in one source, drawn at
  ``image_size`` (default ``synthetic.IMAGE_SIZE``)."""
  images_a, images_b, issame = synthetic.verification_pairs(
      num_pairs, seed=seed, image_size=image_size or synthetic.IMAGE_SIZE)
  source = sources.InMemory(np.concatenate([images_a, images_b]),
                            np.zeros(2 * num_pairs, np.int32),
                            name='held-out synthetic pairs')
  return PairSet(f'synthetic ({num_pairs} pairs)', source,
                 np.arange(num_pairs), np.arange(num_pairs, 2 * num_pairs),
                 issame)


def pair_scores(features, pair_set, metric):
  """Cosine similarities, or Euclidean distances, of the pairs."""
  a, b = features[pair_set.first], features[pair_set.second]
  if metric == 'cosine':
    return np.sum(a * b, axis=1)
  return np.linalg.norm(a - b, axis=1)


class Evaluator:
  """Verification of one pair set (the module doc says which).

  Attributes:
    pair_set: the :class:`PairSet`.
    name: the set's name ('lfw', 'pairs.txt', 'synthetic (600 pairs)').
    metric: 'cosine' or 'euclidean'.
    metrics: the names :meth:`run` yields (keys of ``METRICS``).
  """

  # (key, Allowed) of the keyword arguments, as config.evals entries give
  # them; check_config relates them.
  RULES = (('pairs', config_rules.integer(0)),
           ('seed', config_rules.integer(0)),
           ('image_size', config_rules.integer(8)),
           ('bin', config_rules.STRING),
           ('pairs_file', config_rules.STRING),
           ('data', config_rules.STRING),
           ('metric', config_rules.one_of(*SCORES)),
           ('metrics', config_rules.Allowed(
               f'a list of {", ".join(METRICS)}',
               lambda value: isinstance(value, (list, tuple)) and all(
                   name in METRICS for name in value))))

  def __init__(self, pairs=0, seed=0, bin='', pairs_file='', data='',  # pylint: disable=redefined-builtin
               metric='cosine', metrics=None, detector=None,
               image_size=None):
    if bin:
      self.pair_set = bin_pairs(bin)
    elif pairs_file:
      self.pair_set = lfw_pairs(pairs_file, data, detector)
    else:
      self.pair_set = synthetic_pairs(pairs, seed, image_size)
    self.name = self.pair_set.name
    self.metric = metric
    self.metrics = tuple(metrics or METRICS)

  @staticmethod
  def check_config(entry, key):
    """Raises ConfigError naming ``key.<argument>`` where the arguments of
    ``entry`` (a config.evals entry) cannot work: exactly one pair set, a
    synthetic one with at least ``MIN_PAIRS`` pairs, files that exist."""
    given = [name for name in ('pairs', 'bin', 'pairs_file')
             if entry.get(name)]
    if len(given) != 1:
      raise config_rules.ConfigError(
          f'{key}: give one pair set: pairs (held-out synthetic pairs), bin '
          f'(an insightface .bin) or pairs_file and data (LFW), got '
          f'{", ".join(given) or "none"}')
    if given == ['pairs']:
      config_rules.check_rules(entry, (('pairs', config_rules.integer(
          MIN_PAIRS)),), prefix=f'{key}.')
    if bool(entry.get('pairs_file')) != bool(entry.get('data')):
      raise config_rules.ConfigError(
          f'{key}: pairs_file and data (the image folder) go together')
    for name in ('bin', 'pairs_file', 'data'):
      if entry.get(name) and not os.path.exists(entry[name]):
        raise config_rules.ConfigError(
            f'{key}.{name}={entry[name]!r} does not exist')

  @staticmethod
  def metric_modes(entry):
    """{name: 'max' or 'min'} of what :meth:`run` yields for ``entry``."""
    return {name: METRICS[name][1]
            for name in (entry.get('metrics') or METRICS)}

  def evaluate(self, embed):
    """:func:`facejax.metrics.verification.evaluate`'s result (ROC
    included) of the features ``embed(source)`` gives."""
    features = np.asarray(embed(self.pair_set.source))
    return verification.evaluate(
        pair_scores(features, self.pair_set, self.metric),
        self.pair_set.issame, folds=self.pair_set.folds,
        higher_is_same=self.metric == 'cosine')

  def run(self, embed):
    """Yields ``(name, value)`` of every metric in ``self.metrics``."""
    result = self.evaluate(embed)
    for name in self.metrics:
      yield name, result[METRICS[name][0]]
