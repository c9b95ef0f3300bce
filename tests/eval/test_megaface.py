"""eval.megaface: synthetic sets, devkit lists and feature files."""
import json

import numpy as np
import pytest

from eval import megaface as megaface_job
from facejax.data import files
from facejax.data import megaface
from facejax.data import synthetic
from facejax.metrics import identification
from tests.data import image_fixtures


def test_synthetic(workdir, tmp_path, capsys):
  out = tmp_path / 'out'
  assert megaface_job.main([
      '--checkpoint', workdir, '--synthetic', '--synthetic-identities', '4',
      '--synthetic-images', '3', '--synthetic-distractors', '30',
      '--sizes', '10,30,100', '--max-rank', '3', '--baseline',
      '--out', str(out)]) == 0
  printed = capsys.readouterr().out
  assert '| model | 10 | 10 |' in printed and '| model | 30 | 30 |' in printed
  assert '| raw pixels | 30 | 30 |' in printed
  report = json.loads((out / 'megaface.json').read_text())
  for method in ('model', 'raw pixels'):
    sizes = report['results'][method]
    assert sizes['100']['skipped'] is True
    for size in ('10', '30'):
      assert sizes[size]['trials'] == 4 * 3 * 2
      assert len(sizes[size]['cmc']) == 3
      assert 0 <= sizes[size]['rank1'] <= sizes[size]['cmc'][-1] <= 1
    assert sizes['10']['rank1'] >= sizes['30']['rank1']  # nested sets
  assert (out / 'cmc.png').read_bytes()[:4] == b'\x89PNG'


def write_devkit_layout(root):
  """FaceScrub-like probes (3 people x 3) and 12 distractors, with lists."""
  faces, _ = synthetic.generate(3, 3, seed=4, image_size=32)
  others, _ = synthetic.generate(12, 1, seed=5, image_size=32,
                                 first_identity=500)
  probe_paths, names = [], []
  for k, face in enumerate(faces):
    name = f'Person_{k // 3}'
    relative = f'{name}/{name}_{k % 3}.png'
    (root / 'facescrub' / name).mkdir(parents=True, exist_ok=True)
    (root / 'facescrub' / relative).write_bytes(
        image_fixtures.encode(face, 'png'))
    probe_paths.append(relative)
    names.append(name)
  distractor_paths = []
  for k, face in enumerate(others):
    relative = f'{k % 2}/user{k}/{k}_0.jpg'
    (root / 'megaface' / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / 'megaface' / relative).write_bytes(
        image_fixtures.encode(face, 'jpeg'))
    distractor_paths.append(relative)
  megaface.write_image_list(root / 'facescrub.json', probe_paths, names)
  megaface.write_image_list(root / 'megaface.json_12_1', distractor_paths)
  return probe_paths, names, distractor_paths


def test_devkit_lists_images_and_feature_files(workdir, tmp_path, capsys):
  probe_paths, names, distractor_paths = write_devkit_layout(tmp_path)
  (tmp_path / 'noise.txt').write_text(
      '# noise\nPerson_2_0.png\n1/user1/1_0.jpg\n')
  lists = ['--probes', str(tmp_path / 'facescrub.json'), '--distractors',
           str(tmp_path / 'megaface.json_12_1'), '--sizes', '10,11',
           '--probe-noise', str(tmp_path / 'noise.txt'), '--distractor-noise',
           str(tmp_path / 'noise.txt')]
  out = tmp_path / 'embedded'
  assert megaface_job.main([
      '--checkpoint', workdir, '--probe-root', str(tmp_path / 'facescrub'),
      '--distractor-root', str(tmp_path / 'megaface'), '--write-features',
      '--out', str(out)] + lists) == 0
  embedded = json.loads((out / 'megaface.json').read_text())['results'][
      'model']
  # One probe image and one distractor are noise: n (n - 1) trials per
  # identity of n images, 6 + 6 + 2 with Person_2 left with two.
  assert embedded['10']['trials'] == 14
  assert embedded['11']['distractors'] <= 11
  # The same numbers from the devkit feature files it wrote.
  features = tmp_path / 'embedded' / 'devkit_features'
  again = tmp_path / 'from_files'
  assert megaface_job.main([
      '--probe-features', str(features / 'probes'), '--distractor-features',
      str(features / 'distractors'), '--out', str(again)] + lists) == 0
  from_files = json.loads((again / 'megaface.json').read_text())[
      'results']['model']
  for size in ('10', '11'):
    for key in ('rank1', 'cmc', 'tar_at_far', 'trials', 'distractors'):
      np.testing.assert_allclose(from_files[size][key], embedded[size][key],
                                 rtol=1e-6)
  # And from the extracted .npy, through the library directly.
  probes = np.load(out / 'features' / 'probes' / 'features.npy')
  distractors = np.load(out / 'features' / 'distractors' / 'features.npy')
  _, ids = np.unique(names, return_inverse=True)
  direct = identification.megaface_evaluate(
      probes, ids, distractors, sizes=(10,),
      probe_exclude=megaface.noise_mask(probe_paths, {'Person_2_0.png'}),
      distractor_exclude=megaface.noise_mask(distractor_paths,
                                             {'1/user1/1_0.jpg'}))
  assert direct[10]['rank1'] == pytest.approx(embedded['10']['rank1'])
  capsys.readouterr()


def test_errors(workdir, tmp_path, capsys):
  with pytest.raises(SystemExit):
    megaface_job.main(['--synthetic', '--out', str(tmp_path)])
  assert '--checkpoint is needed' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    megaface_job.main(['--checkpoint', workdir, '--probes', 'p.json',
                       '--distractors', 'd.json', '--baseline', '--out',
                       str(tmp_path)])
  assert '--baseline goes with --synthetic' in capsys.readouterr().err
  (tmp_path / 'bad.json').write_text('{"path": ["a.png"]}')
  assert megaface_job.main([
      '--checkpoint', workdir, '--probes', str(tmp_path / 'bad.json'),
      '--distractors', str(tmp_path / 'bad.json'), '--probe-root',
      str(tmp_path), '--distractor-root', str(tmp_path),
      '--out', str(tmp_path / 'out')]) == 1
  assert "bad.json: no list under the key 'id'" in capsys.readouterr().err


def test_write_devkit_features_writes_nothing_outside_its_root(tmp_path):
  root = tmp_path / 'out' / 'devkit_features' / 'probes'
  features = np.ones((2, 4), np.float32)
  with pytest.raises(files.UnsafePathError, match='leaves the root'):
    megaface_job.write_devkit_features(
        features, ['P/P_0.png', '../../../escaped/x.png'], str(root),
        'facejax')
  # Every path is checked before the first folder is made.
  assert not (tmp_path / 'escaped').exists() and not root.exists()
  megaface_job.write_devkit_features(features, ['P/P_0.png', 'Q/Q_1.png'],
                                     str(root), 'facejax')
  np.testing.assert_array_equal(megaface.read_feature(
      root / 'Q' / 'Q_1.png_facejax.bin'), features[1])


def test_a_list_entry_outside_the_root_stops_the_job(tmp_path, capsys):
  # Feature files on both sides of the root: only the confinement refuses.
  inside, outside = tmp_path / 'features' / 'a.png', tmp_path / 'b.png'
  for image in (inside, outside):
    image.parent.mkdir(parents=True, exist_ok=True)
    megaface.write_feature(f'{image}_facejax.bin', np.ones(4, np.float32))
  megaface.write_image_list(tmp_path / 'bad.json', ['a.png', '../b.png'],
                            [0, 0])
  assert megaface_job.main([
      '--probes', str(tmp_path / 'bad.json'), '--distractors',
      str(tmp_path / 'bad.json'), '--probe-features',
      str(tmp_path / 'features'), '--distractor-features',
      str(tmp_path / 'features'), '--out', str(tmp_path / 'out')]) == 1
  err = capsys.readouterr().err
  assert 'bad.json, "path"[1]: the path \'../b.png\' leaves the root' in err
