"""Embedding a trained run's images: restore, embed, extract and resume."""
import json
import os

import numpy as np
import pytest

from eval import extract as extract_cli
from facejax import inference
from facejax.data import sources
from facejax.training import loop
from tests.data import image_fixtures
from tests.training.tiny import tiny_config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  run = loop.train(tiny_config(total_steps=2), str(workdir), log=False)
  images = tmp_path_factory.mktemp('faces')
  image_fixtures.write_folder(images, [3, 2, 4], size=32)
  return str(workdir), run, images


def test_embedder_matches_the_in_training_embedding(trained):
  workdir, run, images = trained
  embedder = inference.Embedder.from_workdir(workdir, batch_size=4)
  assert embedder.step == 2 and embedder.batch_size == 8  # rounded up
  source = sources.ImageFolder(images)
  features = embedder.embed(source, progress=False)
  assert features.shape == (9, 8)
  np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1, rtol=1e-5)
  from facejax.training import step as step_lib  # the loop's own path
  expected = inference.embed_source(
      step_lib.make_embed(run.model, run.mesh), inference.backbone_variables(
          run.state), source, run.mesh, 8, 32)
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
  # The flip test is symmetric: an image and its mirror embed the same.
  pictures = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3),
                                               dtype=np.uint8)
  mirrored = sources.InMemory(np.concatenate([pictures, pictures[:, :, ::-1]]),
                              np.zeros(4, np.int32))
  flipped = embedder.embed(mirrored, progress=False)
  np.testing.assert_allclose(flipped[:2], flipped[2:], rtol=1e-4, atol=1e-5)
  plain = embedder.embed(mirrored, flip=False, progress=False)
  assert not np.allclose(plain[:2], plain[2:], rtol=1e-4, atol=1e-5)


def test_extract_writes_and_resumes(trained, tmp_path):
  workdir, _, images = trained
  embedder = inference.Embedder.from_workdir(workdir, batch_size=8)
  paths = extract_cli.image_paths(str(images))
  out = tmp_path / 'features'
  whole = np.array(inference.extract(embedder, paths, str(out), block_size=4,
                                     progress=False))
  assert sorted(os.listdir(out / 'blocks')) == [
      '000000.npy', '000001.npy', '000002.npy']
  features, listed = inference.load_features(str(out))
  assert listed == paths and features.shape == (9, 8)
  np.testing.assert_allclose(whole, embedder.embed(
      sources.ImageFiles(paths), progress=False), rtol=1e-5, atol=1e-6)
  # Interrupted after the first block: the rerun redoes only the rest.
  os.remove(out / 'blocks' / '000001.npy')
  os.remove(out / 'blocks' / '000002.npy')
  mtime = os.path.getmtime(out / 'blocks' / '000000.npy')
  again = inference.extract(embedder, paths, str(out), block_size=4,
                            progress=False)
  np.testing.assert_array_equal(again, whole)
  assert os.path.getmtime(out / 'blocks' / '000000.npy') == mtime
  manifest = json.loads((out / 'extract.json').read_text())
  assert manifest['step'] == 2 and manifest['flip'] is True
  with pytest.raises(ValueError, match='another extraction'):
    inference.extract(embedder, paths[:-1], str(out), block_size=4,
                      progress=False)


def test_extract_cli(trained, tmp_path, capsys):
  workdir, _, images = trained
  listing = tmp_path / 'list.txt'
  names = sorted(os.listdir(images / 'id_000'))
  listing.write_text('# two faces\n' + ''.join(
      f'id_000/{n}\n' for n in names[:2]))
  out = tmp_path / 'out'
  assert extract_cli.main(['--checkpoint', workdir, '--images', str(listing),
                           '--root', str(images), '--out', str(out)]) == 0
  assert '2 features of dimension 8 (step 2)' in capsys.readouterr().out
  listing.write_text('id_000/absent.png\n')
  assert extract_cli.main(['--checkpoint', workdir, '--images', str(listing),
                           '--root', str(images), '--out',
                           str(tmp_path / 'other')]) == 1
  assert 'absent.png: image not found' in capsys.readouterr().err
  assert extract_cli.main(['--checkpoint', str(tmp_path), '--images',
                           str(images), '--out', str(out)]) == 1
  assert 'config.json' in capsys.readouterr().err
