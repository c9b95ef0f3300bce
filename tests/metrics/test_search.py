"""The streaming top-k search against brute force on tiny sets.

The references build the whole probe x distractor score matrix in numpy.
Most sets have small integer features scored unnormalised
(:mod:`tests.metrics.integer_sets`): results must be equal, ties included.
Searches run over the 8 simulated devices (the default mesh) unless a test
says otherwise.
"""
import jax
import numpy as np
import pytest

from facejax import sharding
from facejax.metrics import search
from tests.metrics.integer_sets import integer_set


def one_device_mesh():
  return sharding.make_mesh(devices=jax.devices()[:1])


@pytest.mark.parametrize('k,chunk_size', [(1, 16), (3, 50), (3, 1000)])
def test_top_k_and_nested_sizes_match_brute_force(k, chunk_size):
  probes, _, distractors = integer_set()
  sizes = [1, 7, 50, 64, 203]
  got = search.distractor_top_k(probes, distractors, k, chunk_size,
                                sizes=sizes, normalize=False)
  assert got.shape == (len(sizes), len(probes), k)
  scores = probes @ distractors.T
  for size, top in zip(sizes, got):
    expected = np.full((len(probes), k), -np.inf, np.float32)
    kept = min(k, size)
    expected[:, :kept] = -np.sort(-scores[:, :size], axis=1)[:, :kept]
    np.testing.assert_array_equal(top, expected)
  alone = search.distractor_top_k(probes, distractors, k, chunk_size,
                                  normalize=False)
  np.testing.assert_array_equal(alone, got[-1])


def test_normalised_scores_match_numpy():
  rng = np.random.default_rng(3)
  probes = rng.normal(size=(24, 6)).astype(np.float32) * 3
  distractors = rng.normal(size=(301, 6)).astype(np.float32) * 0.2
  got = search.distractor_top_k(probes, distractors, 4, 48)
  unit_probes = probes / np.linalg.norm(probes, axis=1, keepdims=True)
  unit_distractors = distractors / np.linalg.norm(distractors, axis=1,
                                                  keepdims=True)
  scores = unit_probes.astype(np.float64) @ unit_distractors.T
  np.testing.assert_allclose(got, -np.sort(-scores, axis=1)[:, :4],
                             atol=1e-6)
  assert np.all(np.diff(got, axis=1) <= 0)


@pytest.mark.parametrize('few_rows', [4, 512])
def test_merging_only_the_changed_rows_is_exact(monkeypatch, few_rows):
  # With few_rows=4 < 24 probes, blocks where at most 4 probes gain a
  # score above their k-th merge those rows alone (the others all rows);
  # 512 merges all rows always. Many ties: small integer features.
  monkeypatch.setattr(search, '_FEW_ROWS', few_rows)
  probes, _, distractors = integer_set(seed=11, num_distractors=3_000)
  got = search.distractor_top_k(probes, distractors, 3, 1_024,
                                normalize=False)
  expected = -np.sort(-(probes @ distractors.T), axis=1)[:, :3]
  np.testing.assert_array_equal(got, expected)


def test_eight_devices_equal_one():
  probes, _, distractors = integer_set(seed=2)
  eight = search.distractor_top_k(probes, distractors, 3, 48,
                                  sizes=[5, 120, 203],
                                  normalize=False)
  one = search.distractor_top_k(probes, distractors, 3, 48,
                                mesh=one_device_mesh(),
                                sizes=[5, 120, 203], normalize=False)
  np.testing.assert_array_equal(eight, one)
  assert len(jax.devices()) == 8


def test_memmap_slice_and_iterator_inputs(tmp_path):
  probes, _, distractors = integer_set(seed=4)
  expected = search.distractor_top_k(probes, distractors, 2, 48,
                                     normalize=False)
  path = tmp_path / 'distractors.f32'
  stored = np.memmap(path, np.float32, 'w+', shape=(len(distractors) + 3,
                                                    distractors.shape[1]))
  stored[3:] = distractors
  stored.flush()
  offset = 3 * distractors.shape[1] * 4
  memmap = np.memmap(path, np.float32, 'r', offset=offset,
                     shape=distractors.shape)
  whole = np.memmap(path, np.float32, 'r', shape=stored.shape)
  pieces = iter([distractors[:5], distractors[5:5], distractors[5:150],
                 distractors[150:]])
  float64 = np.memmap(tmp_path / 'f64', np.float64, 'w+',
                      shape=distractors.shape)
  float64[:] = distractors
  for source in (memmap, whole[3:], pieces, float64):
    got = search.distractor_top_k(probes, source, 2, 48,
                                  normalize=False)
    np.testing.assert_array_equal(got, expected)


def test_memmap_is_read_without_mapping_its_pages(tmp_path):
  _, _, distractors = integer_set(num_distractors=10)
  path = tmp_path / 'd.f32'
  distractors.tofile(path)
  memmap = np.memmap(path, np.float32, 'r', shape=distractors.shape)
  assert search._file_backing(memmap) == (str(path), 0)
  assert search._file_backing(memmap[2:]) is None  # a view: indexed
  assert search._file_backing(distractors) is None


def test_empty_and_too_few_distractors():
  probes, _, distractors = integer_set()
  got = search.distractor_top_k(probes, distractors[:2], 4, 48,
                                normalize=False)
  assert np.all(np.isneginf(got[:, 2:]))
  none = search.distractor_top_k(probes, iter([]), 2, 48)
  assert none.shape == (len(probes), 2) and np.all(np.isneginf(none))


# --------------------------------------------------------------- errors ---


def test_bad_input_is_named():
  probes, _, distractors = integer_set()
  with pytest.raises(ValueError, match='probe_features'):
    search.distractor_top_k(probes[0], distractors, 1)
  with pytest.raises(ValueError, match=r'\(n, 6\)'):
    search.distractor_top_k(probes, distractors[:, :4], 1)
  with pytest.raises(ValueError, match='exceed the 203 distractors'):
    search.distractor_top_k(probes, distractors, 1, sizes=[300])
  with pytest.raises(ValueError, match='strictly increasing'):
    search.distractor_top_k(probes, distractors, 1, sizes=[9, 9])
  with pytest.raises(ValueError, match='k must be a positive integer'):
    search.distractor_top_k(probes, distractors, 0)
  bad = distractors.copy()
  bad[100, 2] = np.nan
  with pytest.raises(ValueError, match=r'overflowing values in 1 row\(s\)'):
    search.distractor_top_k(probes, bad, 1, 64)


def test_order_streams_chosen_rows_in_order():
  # A protocol's permutation or subset: sizes count along the order.
  probes, _, distractors = integer_set(seed=12)
  order = np.random.default_rng(0).permutation(len(distractors))[:150]
  prepared = search.prepare_probes(search.probe_matrix(probes), False)
  got = search.prepared_top_k(prepared, distractors, 2, 48, None, [40, 150],
                              False, order=order)
  expected = search.distractor_top_k(probes, distractors[order], 2, 48,
                                     sizes=[40, 150], normalize=False)
  np.testing.assert_array_equal(got, expected)
