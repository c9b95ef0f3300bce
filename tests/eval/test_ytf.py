"""eval.ytf: YouTube Faces splits and frame folders from a checkpoint."""
import json

import numpy as np
import pytest

from eval import ytf
from facejax import inference
from facejax.data import sources
from facejax.data import synthetic
from facejax.metrics import verification
from facejax.metrics import video
from tests.data import image_fixtures

HEADER = ('split number, pair number, first name, second name, '
          'is physically the same, is the same\n')


@pytest.fixture(scope='module')
def ytf_root(tmp_path_factory):
  """<person>/<video>/aligned_detect_<frame>.jpg: 3 people, 2 videos each,
  frames numbered so that lexicographic order would be wrong."""
  root = tmp_path_factory.mktemp('aligned_images_DB')
  images, _ = synthetic.generate(3, 6, seed=2, image_size=32)
  for person in range(3):
    for number in range(2):
      folder = root / f'P_{person}' / str(number)
      folder.mkdir(parents=True)
      for k, frame in enumerate((9, 10, 100)):
        (folder / f'aligned_detect_{frame}.jpg').write_bytes(
            image_fixtures.encode(images[person * 6 + number * 3 + k],
                                  'jpeg'))
  return root


def write_splits(path, rows):
  path.write_text(HEADER + ''.join(
      f'{split}, {pair}, {a}, {b}, {same}, {same}\n'
      for split, pair, a, b, same in rows))
  return path


ROWS = [(split, pair, f'P_{i}/0', f'P_{j}/1', int(i == j))
        for split in (1, 2)
        for pair, (i, j) in enumerate([(0, 0), (1, 1), (0, 2), (2, 1)], 1)]


def test_report_and_scores(workdir, ytf_root, tmp_path, capsys):
  splits = write_splits(tmp_path / 'splits.txt', ROWS)
  out = tmp_path / 'out'
  assert ytf.main(['--checkpoint', workdir, '--splits', str(splits),
                   '--data', str(ytf_root), '--max-frames', '2',
                   '--out', str(out)]) == 0
  assert '| YTF | model (mean_embedding) |' in capsys.readouterr().out
  report = json.loads((out / 'verification.json').read_text())
  assert report['videos'] == 6 and report['frames'] == 12
  result = report['sets']['YTF']['model (mean_embedding)']
  assert result['pairs'] == 8 and result['fold_ids'] == [1, 2]
  # The same numbers from video embeddings of the kept frames, by hand.
  embedder = inference.Embedder.from_workdir(workdir)

  def embedding(name):  # frames 9 and 100 are the 2 evenly spaced of 3
    kept = [ytf_root / name / f'aligned_detect_{k}.jpg' for k in (9, 100)]
    return video.video_embedding(embedder.embed(sources.ImageFiles(kept),
                                                progress=False))
  scores = [embedding(a) @ embedding(b) for _, _, a, b, _ in ROWS]
  expected = verification.evaluate(scores, [r[4] == 1 for r in ROWS],
                                   folds=[r[0] for r in ROWS])
  for key in ('accuracy_mean', 'auc', 'eer', 'thresholds'):
    np.testing.assert_allclose(result[key], expected[key], rtol=1e-5)


def test_missing_video_names_the_line(workdir, ytf_root, tmp_path, capsys):
  splits = write_splits(tmp_path / 'splits.txt',
                        ROWS[:3] + [(1, 4, 'P_0/0', 'P_9/0', 0)])
  assert ytf.main(['--checkpoint', workdir, '--splits', str(splits),
                   '--data', str(ytf_root), '--out', str(tmp_path)]) == 1
  err = capsys.readouterr().err
  assert 'splits.txt, line 5' in err and 'P_9' in err
