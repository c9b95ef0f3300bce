"""Tests of the synthetic face-identity dataset."""
import os
import subprocess
import sys

import numpy as np
import pytest

from facejax.data import synthetic
from facejax.data.synthetic import generation
from facejax.data.synthetic import rendering

SIZE = synthetic.IMAGE_SIZE


def test_same_arguments_give_the_same_bytes():
  images, labels = synthetic.generate(3, 4, seed=5)
  again, labels_again = synthetic.generate(3, 4, seed=5)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(labels, labels_again)


def test_images_do_not_depend_on_order_or_batch(monkeypatch):
  identities = np.array([7, 3, 7, 12, 3, 40, 7, 5, 9, 12])
  indices = np.array([0, 2, 5, 1, 0, 3, 1, 0, 0, 9])
  images = synthetic.generate_images(1, identities, indices)
  order = np.random.default_rng(0).permutation(len(identities))
  shuffled = synthetic.generate_images(1, identities[order], indices[order])
  np.testing.assert_array_equal(shuffled, images[order])
  for k in (0, 5, 9):
    np.testing.assert_array_equal(
        synthetic.generate_image(1, int(identities[k]), int(indices[k])),
        images[k])
  # A different set of images around the same ones: other batches.
  more = synthetic.generate_images(
      1, np.concatenate([identities, np.arange(100, 140)]),
      np.concatenate([indices, np.zeros(40, int)]))
  np.testing.assert_array_equal(more[:len(identities)], images)
  monkeypatch.setattr(generation, '_CHUNK', 3)
  monkeypatch.setattr(generation, '_BLOCK', 4)
  np.testing.assert_array_equal(
      synthetic.generate_images(1, identities, indices), images)


def test_windows_change_no_byte(monkeypatch):
  """Each shape's window is conservative: whole-image drawing is the same."""
  identities = np.repeat(np.arange(16), 3)
  indices = np.tile(np.arange(3), 16)
  for size in (SIZE, 40):
    windowed = synthetic.generate_images(2, identities, indices, size)
    monkeypatch.setattr(rendering, '_FULL_WINDOWS', True)
    whole = synthetic.generate_images(2, identities, indices, size)
    monkeypatch.setattr(rendering, '_FULL_WINDOWS', False)
    np.testing.assert_array_equal(windowed, whole)


def test_seeds_identities_and_indices_differ():
  base = synthetic.generate_image(0, 1, 0)
  for other in (synthetic.generate_image(1, 1, 0),
                synthetic.generate_image(0, 2, 0),
                synthetic.generate_image(0, 1, 1)):
    assert np.abs(base.astype(int) - other).mean() > 5
  assert synthetic.identity_params(0, 1) != synthetic.identity_params(1, 1)


def test_shape_dtype_and_range():
  images, labels = synthetic.generate(2, 3)
  assert images.shape == (6, SIZE, SIZE, 3) and images.dtype == np.uint8
  assert labels.shape == (6,) and labels.dtype == np.int32
  for image in images:  # not flat, not saturated
    assert image.std() > 15
    assert (image == 0).mean() < 0.5 and (image == 255).mean() < 0.5
  small = synthetic.generate_image(0, 0, 0, image_size=48)
  assert small.shape == (48, 48, 3) and small.dtype == np.uint8
  assert synthetic.render(synthetic.identity_params(0, 0),
                          synthetic.neutral_nuisance()).shape == (SIZE,
                                                                   SIZE, 3)


def test_labels_and_first_identity():
  images, labels = synthetic.generate(3, 2, seed=4, first_identity=20)
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(
      images, synthetic.generate_images(4, [20, 20, 21, 21, 22, 22],
                                        [0, 1, 0, 1, 0, 1]))


def test_pair_list_is_balanced_deterministic_and_in_range():
  first = synthetic.EVAL_FIRST_IDENTITY
  pairs = synthetic.pair_list(600, seed=3, num_identities=50)
  again = synthetic.pair_list(600, seed=3, num_identities=50)
  for a, b in zip(pairs, again):
    np.testing.assert_array_equal(a, b)
  id_a, index_a, id_b, index_b, issame = pairs
  np.testing.assert_array_equal(issame, np.arange(600) % 2 == 0)
  for fold in np.split(issame, 10):
    assert fold.sum() == 30
  np.testing.assert_array_equal(id_a == id_b, issame)
  assert np.all(index_a[issame] != index_b[issame])
  for ids in (id_a, id_b):
    assert ids.min() >= first and ids.max() < first + 50
  for index in (index_a, index_b):
    assert index.min() >= 0 and index.max() < 10
  other = synthetic.pair_list(600, seed=4, num_identities=50)
  assert not np.array_equal(other[0], id_a)


def test_training_and_evaluation_identities_are_disjoint():
  _, train_labels = synthetic.generate(5, 1)
  train = set(train_labels.tolist())  # first_identity 0: label = identity
  id_a, _, id_b, _, _ = synthetic.pair_list(40)
  assert train.isdisjoint(id_a.tolist() + id_b.tolist())
  assert min(id_a.min(), id_b.min()) >= synthetic.EVAL_FIRST_IDENTITY
  images_a, images_b, issame = synthetic.verification_pairs(4)
  id_a, index_a, id_b, index_b, same = synthetic.pair_list(4)
  np.testing.assert_array_equal(issame, same)
  np.testing.assert_array_equal(
      images_b, synthetic.generate_images(0, id_b, index_b))


def test_identity_is_visible_through_the_nuisance():
  """Nearest identity mean, on raw pixels, is far above chance (1 / 20)."""
  images, _ = synthetic.generate(20, 12, seed=0)
  x = images.reshape(20, 12, -1).astype(np.float64)
  x -= x.mean((0, 1))
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
  means = unit(x[:, :8].mean(1))
  test = unit(x[:, 8:].reshape(80, -1))
  predicted = np.argmax(test @ means.T, axis=1)
  accuracy = np.mean(predicted == np.repeat(np.arange(20), 4))
  assert accuracy > 0.15  # 0.31 when written
  # Without nuisance, any two identities look clearly different.
  clean = np.stack([
      synthetic.render(synthetic.identity_params(0, i),
                       synthetic.neutral_nuisance()) for i in range(20)])
  clean = clean.astype(np.float64)
  difference = np.abs(clean[:, None] - clean[None]).mean((2, 3, 4))
  assert difference[~np.eye(20, dtype=bool)].min() > 3  # 8.3 when written


def test_export_image_folder_writes_decodable_pngs_and_resumes(tmp_path):
  import tensorflow as tf  # only here: the module must not need it
  root = str(tmp_path / 'faces')
  written = synthetic.export_image_folder(root, 2, 3, seed=1,
                                          first_identity=40)
  assert written == 6
  names = [synthetic.identity_name(i) for i in (40, 41)]
  assert sorted(os.listdir(root)) == names
  for name in names:
    assert sorted(os.listdir(os.path.join(root, name))) == [
        '0000.png', '0001.png', '0002.png']
  path = os.path.join(root, names[1], '0002.png')
  with open(path, 'rb') as f:
    decoded = tf.io.decode_png(f.read(), channels=3).numpy()
  np.testing.assert_array_equal(decoded, synthetic.generate_image(1, 41, 2))
  assert synthetic.export_image_folder(root, 2, 3, seed=1,
                                       first_identity=40) == 0
  os.remove(path)
  assert synthetic.export_image_folder(root, 2, 3, seed=1,
                                       first_identity=40) == 1
  with open(path, 'rb') as f:
    assert f.read() == synthetic.encode_png(decoded)
  assert not [n for n in os.listdir(os.path.join(root, names[1]))
              if n.endswith('.tmp')]
  with pytest.raises(ValueError, match='png'):
    synthetic.export_image_folder(root, 1, 1, format='jpeg')


def test_encode_png_checks_its_input():
  with pytest.raises(ValueError, match='uint8'):
    synthetic.encode_png(np.zeros((4, 4, 3), np.float32))
  with pytest.raises(ValueError, match='uint8'):
    synthetic.encode_png(np.zeros((4, 4), np.uint8))
  assert synthetic.encode_png(np.zeros((2, 3, 3), np.uint8)).startswith(
      b'\x89PNG')


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match='seed'):
    synthetic.generate_image(-1, 0, 0)
  with pytest.raises(TypeError, match='int'):
    synthetic.identity_params(0, 1.5)
  with pytest.raises(TypeError, match='integers'):
    synthetic.generate_images(0, [1.0], [0])
  with pytest.raises(ValueError, match='indices'):
    synthetic.generate_images(0, [1, 2], [0])
  with pytest.raises(ValueError, match='identities'):
    synthetic.pair_list(10, num_identities=1)


def test_importing_the_module_does_not_import_tensorflow_or_metrics():
  # Dependencies point down the data flow: the data never import metrics.
  subprocess.run(
      [sys.executable, '-c',
       "import sys, facejax.data.synthetic; "
       "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
       "assert not [m for m in sys.modules "
       "            if m.startswith('facejax.metrics')]"],
      check=True)


def test_command_line(tmp_path, capsys):
  path = str(tmp_path / 'sheet.png')
  synthetic.main(['sheet', path, '--identities', '2', '--images', '3'])
  with open(path, 'rb') as f:
    data = f.read()
  sheet = synthetic.contact_sheet(0, 2, 3)
  assert sheet.shape == (2 * SIZE, 3 * SIZE, 3)
  assert data == synthetic.encode_png(sheet)
  assert 'wrote' in capsys.readouterr().out
  # The package runs as a module, as the single file did.
  again = str(tmp_path / 'again.png')
  subprocess.run([sys.executable, '-m', 'facejax.data.synthetic', 'sheet',
                  again, '--identities', '2', '--images', '3'], check=True)
  with open(again, 'rb') as f:
    assert f.read() == data
