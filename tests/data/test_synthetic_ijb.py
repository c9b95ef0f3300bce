"""The synthetic IJB-style set: its structure, protocols and files."""
import os

import numpy as np

from facejax.data import ijb
from facejax.data.synthetic import ijb as synthetic_ijb


def test_structure_of_the_drawn_set():
  identities, nuisances, protocol = synthetic_ijb.draw(
      num_identities=12, templates_per_identity=3, seed=1)
  templates, medias = protocol.templates, protocol.medias
  assert len(identities) == len(nuisances) == len(templates) == len(medias)
  # One identity per template; templates_per_identity templates each.
  for template in np.unique(templates):
    assert len(set(identities[templates == template])) == 1
  assert len(np.unique(templates)) == 36
  # The frames of a video share its background and light, not their noise.
  videos = [m for m in np.unique(medias) if (medias == m).sum() > 1]
  assert videos
  for media in videos:
    frames = [nuisances[i] for i in np.flatnonzero(medias == media)]
    assert all(np.array_equal(f['bg_top'], frames[0]['bg_top'])
               and f['brightness'] == frames[0]['brightness']
               for f in frames)
    assert len({f['noise_seed'] for f in frames}) == len(frames)
  # Labels say whether the two templates show the same identity.
  owner = {t: identities[templates == t][0] for t in np.unique(templates)}
  for (a, b), label in zip(protocol.pairs, protocol.labels):
    assert label == (owner[a] == owner[b])
  assert protocol.labels.sum() == 12 * 3  # three pairs of 3 per identity
  # Every probe's subject is in exactly one gallery; galleries disjoint.
  g1, g2 = (set(protocol.galleries[g][1]) for g in ('G1', 'G2'))
  assert not g1 & g2
  for subject in protocol.probes[1]:
    assert (subject in g1) != (subject in g2)


def test_written_set_reads_back_and_resumes(tmp_path):
  root = str(tmp_path)
  written = synthetic_ijb.write(root, num_identities=6,
                                templates_per_identity=2, image_size=32)
  read = ijb.open_protocol(root, 'IJBC')
  np.testing.assert_array_equal(read.templates, written.templates)
  np.testing.assert_array_equal(read.pairs, written.pairs)
  np.testing.assert_allclose(read.landmarks, written.landmarks, atol=0.01)
  first = os.path.join(root, 'loose_crop', '1.png')
  stamp = os.stat(first).st_mtime_ns
  again = synthetic_ijb.write(root, num_identities=6,
                              templates_per_identity=2, image_size=32)
  assert os.stat(first).st_mtime_ns == stamp  # not rendered again
  np.testing.assert_array_equal(again.detector_scores,
                                written.detector_scores)
