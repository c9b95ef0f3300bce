"""A synthetic IJB-style set, in insightface's layout, with no download.

IJB-B and IJB-C compare *templates*: a subject's set of media, each a still
photo or the frames of one video. Drawn from the embedded synthetic
identities (the held-out ones, from ``EVAL_FIRST_IDENTITY``):

* every identity has ``templates_per_identity`` templates of 1 to 3 media;
* a media is a still (one image) or a video of 2 to 4 frames; the frames of
  a video share its nuisance (background, clothes, light, expression,
  occluder) and differ by a small jitter of pose and their pixel noise, so
  that images within a media are more alike than across media, as in IJB;
* every image is a "loose crop" with its five landmarks (those of the ArcFace
  template at the image's size: the renderer centres its faces) and a
  detector score in [0.6, 1.0];
* the 1:1 protocol holds every genuine template pair and
  ``impostors_per_genuine`` times as many random impostor pairs (or every
  impostor pair, when there are fewer); the 1:N
  protocol puts the first template of every even-numbered identity in
  gallery G1 and of every odd one in G2, and every other template among the
  mixed probes (mated in one gallery, non-mated in the other).

:func:`write` renders it under ``root`` (``meta/`` and ``loose_crop/``) for
``python -m eval.ijb --root ROOT --target IJBC``.
"""

import copy
import os

import numpy as np

from facejax.data import alignment
from facejax.data import ijb
from facejax.data.synthetic import export
from facejax.data.synthetic import factors
from facejax.data.synthetic import generation
from facejax.data.synthetic import rendering

IJB_STREAM = 0x11B  # this set's own random stream (see factors.stream_rng)


def _frame(nuisance, rng):
  """A video frame: the media's nuisance with a small pose jitter and its
  own pixel noise."""
  frame = copy.deepcopy(nuisance)
  frame['tx'] += rng.normal(0, 0.015)
  frame['ty'] += rng.normal(0, 0.015)
  frame['rotation'] += rng.normal(0, 0.03)
  frame['scale'] *= 1 + rng.normal(0, 0.02)
  frame['noise_seed'] = int(rng.integers(2**53))
  return frame


def draw(num_identities=40, templates_per_identity=3, seed=0,
         first_identity=generation.EVAL_FIRST_IDENTITY,
         impostors_per_genuine=20):
  """The set's structure: (identities, nuisances, protocol without paths).

  ``identities`` (N,) and ``nuisances`` (N dicts) say what each image shows.
  """
  rng = factors.stream_rng(seed, IJB_STREAM)
  identities, nuisances, templates, medias, subjects = [], [], [], [], []
  template, media = 0, 0
  first_templates = []
  for person in range(num_identities):
    identity = first_identity + person
    for number in range(templates_per_identity):
      template += 1
      if number == 0:
        first_templates.append(template)
      subjects.append(identity)
      for _ in range(int(rng.integers(1, 4))):
        media += 1
        base = factors.nuisance_params(seed, identity, media)
        frames = 1 if rng.random() < 0.5 else int(rng.integers(2, 5))
        for _ in range(frames):
          identities.append(identity)
          nuisances.append(base if frames == 1 else _frame(base, rng))
          templates.append(template)
          medias.append(media)
  templates, subjects = np.array(templates), np.array(subjects)
  owner = np.repeat(np.arange(num_identities), templates_per_identity)
  genuine = [(a + 1, b + 1) for a in range(len(owner))
             for b in range(a + 1, len(owner)) if owner[a] == owner[b]]
  impostor = set()
  possible = len(owner) * (len(owner) - 1) // 2 - len(genuine)
  while len(impostor) < min(impostors_per_genuine * len(genuine), possible):
    a, b = (int(v) for v in rng.integers(0, len(owner), 2))
    if owner[a] != owner[b]:
      impostor.add((min(a, b) + 1, max(a, b) + 1))
  pairs = np.array(genuine + sorted(impostor), np.int64)
  labels = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
  first_templates = np.array(first_templates)
  first_subjects = subjects[first_templates - 1]
  even = np.arange(num_identities) % 2 == 0
  probe_templates = np.setdiff1d(np.arange(1, len(subjects) + 1),
                                 first_templates)
  protocol = ijb.Protocol(
      target='IJBC', image_paths=np.array([]),
      templates=templates, medias=np.array(medias),
      landmarks=None, detector_scores=rng.uniform(
          0.6, 1.0, len(templates)).astype(np.float32),
      pairs=pairs, labels=labels,
      probes=(probe_templates, subjects[probe_templates - 1]),
      galleries={'G1': (first_templates[even], first_subjects[even]),
                 'G2': (first_templates[~even], first_subjects[~even])})
  return np.array(identities), nuisances, protocol


def write(root, num_identities=40, templates_per_identity=3, seed=0,
          image_size=rendering.IMAGE_SIZE, impostors_per_genuine=20):
  """Renders the set under ``root`` and returns its :class:`ijb.Protocol`.

  Images that exist are kept (a rerun resumes); each is written under a
  temporary name and renamed.
  """
  identities, nuisances, protocol = draw(
      num_identities, templates_per_identity, seed,
      impostors_per_genuine=impostors_per_genuine)
  crops = os.path.join(root, 'loose_crop')
  os.makedirs(crops, exist_ok=True)
  paths = [os.path.join(crops, f'{n + 1}.png')
           for n in range(len(identities))]
  todo = [n for n, path in enumerate(paths) if not os.path.exists(path)]
  people = {}
  for start in range(0, len(todo), 64):
    chunk = todo[start:start + 64]
    for n in chunk:
      if identities[n] not in people:
        people[identities[n]] = factors.identity_params(seed, identities[n])
    images = rendering.render_batch([people[identities[n]] for n in chunk],
                                    [nuisances[n] for n in chunk],
                                    image_size)
    for n, image in zip(chunk, images):
      with open(paths[n] + '.tmp', 'wb') as f:
        f.write(export.encode_png(image))
      os.replace(paths[n] + '.tmp', paths[n])
  protocol.image_paths = np.array(paths)
  protocol.landmarks = np.broadcast_to(
      alignment.template_for(image_size), (len(paths), 5, 2)).copy()
  ijb.write_protocol(root, protocol, 'ijbc')
  return protocol
