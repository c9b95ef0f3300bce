"""The MegaFace devkit's files: feature .bin files, JSON lists, noise lists.

Feature files are also written here byte by byte as insightface's
``gen_megaface.py`` writes them (``struct.pack('4i', d, 1, 4, 5)`` then the
floats), independently of :func:`facejax.data.megaface.write_feature`.
The JSON lists and the feature files are also fuzzed with seeded mutants of
a valid file (tests/mutations.py).
"""
import json
import os
import struct

import numpy as np
import pytest

from facejax.data import files
from facejax.data import megaface
from tests import mutations


def insightface_bin(path, feature):
  feature = list(feature)
  with open(path, 'wb') as f:
    f.write(struct.pack('4i', len(feature), 1, 4, 5))
    f.write(struct.pack('%df' % len(feature), *feature))


# -------------------------------------------------------------- features ---


def test_feature_round_trip_and_insightface_bytes(tmp_path):
  vector = np.random.default_rng(0).normal(size=512).astype(np.float32)
  path = tmp_path / 'a' / 'b' / 'x.jpg_facejax.bin'
  megaface.write_feature(path, vector)
  np.testing.assert_array_equal(megaface.read_feature(path), vector)
  reference = tmp_path / 'insightface.bin'
  insightface_bin(reference, vector)
  assert path.read_bytes() == reference.read_bytes()
  assert megaface.read_feature(reference).dtype == np.float32


def test_matrix_round_trip(tmp_path):
  matrix = np.arange(6, dtype=np.float32).reshape(2, 3)
  megaface.write_feature(tmp_path / 'm.bin', matrix)
  assert (tmp_path / 'm.bin').read_bytes()[:16] == struct.pack('<4i', 2, 3,
                                                                12, 5)
  np.testing.assert_array_equal(megaface.read_feature(tmp_path / 'm.bin'),
                                matrix.ravel())


def test_read_features_stacks_in_order(tmp_path):
  rows = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
  paths = []
  for i, row in enumerate(rows):
    paths.append(tmp_path / f'{i}.bin')
    insightface_bin(paths[-1], row)
  np.testing.assert_array_equal(megaface.read_features(paths[::-1]),
                                rows[::-1])
  insightface_bin(tmp_path / 'short.bin', rows[0, :5])
  with pytest.raises(ValueError, match='short.bin: dimension 5'):
    megaface.read_features(paths + [tmp_path / 'short.bin'])
  with pytest.raises(ValueError, match='at least one'):
    megaface.read_features([])


@pytest.mark.parametrize('content,message', [
    (b'\x01\x00', 'shorter than the 16-byte header'),
    (struct.pack('<4i', 4, 1, 8, 6) + bytes(32), r'type 6 \(CV_64F\)'),
    (struct.pack('<4i', 4, 1, 4, 0) + bytes(16), r'type 0 \(CV_8U\)'),
    (struct.pack('<4i', 0, 1, 4, 5), '0 x 1 values'),
    (struct.pack('<4i', 4, 1, 8, 5) + bytes(32), 'row stride 8'),
    (struct.pack('<4i', 4, 1, 4, 5) + bytes(12), '28 bytes, but its header'),
    (struct.pack('<4i', 4, 1, 4, 5) + bytes(20), '36 bytes, but its header'),
], ids=['short', 'float64', 'uint8', 'empty', 'stride', 'truncated',
        'trailing'])
def test_bad_headers_name_the_file(tmp_path, content, message):
  path = tmp_path / 'broken_feature.bin'
  path.write_bytes(content)
  with pytest.raises(ValueError, match=f'broken_feature.bin: .*{message}'):
    megaface.read_feature(path)


def test_write_refuses_bad_features(tmp_path):
  with pytest.raises(ValueError, match='x.bin: a feature must be'):
    megaface.write_feature(tmp_path / 'x.bin', np.zeros((2, 2, 2)))
  with pytest.raises(ValueError, match='x.bin: the feature has NaN'):
    megaface.write_feature(tmp_path / 'x.bin', [1.0, np.nan])


def test_feature_path_convention():
  assert megaface.file_ending('facejax') == '_facejax.bin'
  assert megaface.feature_path('/f/megaface', '375/3753@N00/41_0.jpg',
                               'facejax') == os.path.join(
                                   '/f/megaface', '375/3753@N00/41_0.jpg'
                                   '_facejax.bin')
  for suffix in ('', '_facejax', 'facejax.bin'):
    with pytest.raises(ValueError, match='bare name'):
      megaface.file_ending(suffix)


# ----------------------------------------------------------------- lists ---


def test_json_lists_round_trip(tmp_path):
  paths = ['Aaron_Eckhart/Aaron_Eckhart_136.png',
           'Adam_McKay/Adam_McKay_468.png']
  ids = ['Aaron_Eckhart', 'Adam_McKay']
  probe_list = tmp_path / 'facescrub_features_list.json'
  megaface.write_image_list(probe_list, paths, np.array(ids))
  assert megaface.read_probe_list(probe_list) == (paths, ids)
  assert json.loads(probe_list.read_text()) == {'id': ids, 'path': paths}
  name = megaface.distractor_list_name(1_000_000)
  assert name == 'megaface_features_list.json_1000000_1'
  distractors = ['375/37531198@N00/4174611825_0.jpg']
  megaface.write_image_list(tmp_path / name, distractors)
  assert megaface.read_distractor_list(tmp_path / name) == distractors
  assert megaface.read_probe_list(probe_list)[1] == ids


def test_bad_lists_name_the_file(tmp_path):
  path = tmp_path / 'list.json'
  path.write_text('{"path": ["a", "b"]}')
  with pytest.raises(ValueError, match="list.json: no list under the key 'id'"):
    megaface.read_probe_list(path)
  path.write_text('{"path": ["a", "b"], "id": ["x"]}')
  with pytest.raises(ValueError, match='list.json: lists of different'):
    megaface.read_probe_list(path)
  path.write_text('{"path": ')
  with pytest.raises(ValueError, match='list.json, line 1: not valid JSON'):
    megaface.read_distractor_list(path)
  path.write_text('{"path": [1, 2]}')
  with pytest.raises(ValueError, match='list.json: "path" entries'):
    megaface.read_distractor_list(path)
  with pytest.raises(ValueError, match='2 ids for 1 paths'):
    megaface.write_image_list(path, ['a'], ['x', 'y'])


# ----------------------------------------------------------------- noise ---


def test_noise_lists(tmp_path):
  facescrub = tmp_path / 'facescrub_noises.txt'
  facescrub.write_text(
      '#Please strictly follow the rules in README.md\n'
      'Aaron_Eckhart_136.png\n\n  Adam_McKay_468.png  \n')
  megaface_noises = tmp_path / 'megaface_noises.txt'
  megaface_noises.write_text(
      '# comment\n375/37531198@N00/4174611825_0.jpg\n'
      '12\t925/92596048@N00/3910487430_2.jpg\n')
  names = megaface.read_noise_list(facescrub)
  assert names == {'Aaron_Eckhart_136.png', 'Adam_McKay_468.png'}
  paths = megaface.read_noise_list(megaface_noises)
  assert paths == {'375/37531198@N00/4174611825_0.jpg',
                   '925/92596048@N00/3910487430_2.jpg'}
  probe_paths = ['Aaron_Eckhart/Aaron_Eckhart_136.png',
                 'Aaron_Eckhart/Aaron_Eckhart_137.png', 'Adam_McKay_468.png']
  assert megaface.noise_mask(probe_paths, names).tolist() == [True, False,
                                                              True]
  distractor_paths = ['375/37531198@N00/4174611825_0.jpg',
                      '375/37531198@N00/4174611825_1.jpg',
                      'megaface/925/92596048@N00/3910487430_2.jpg',
                      '4174611825_0.jpg']
  assert megaface.noise_mask(distractor_paths, paths).tolist() == [
      True, False, True, False]


# ------------------------------------------------------ untrusted lists ---


def write_json(path, content):
  path.write_text(json.dumps(content))
  return path


@pytest.mark.parametrize('entry', ['../../../x', 'a/../../x', '/abs/x',
                                   '~/x', '', 'a\0b'])
def test_lists_refuse_paths_that_leave_the_root(tmp_path, entry):
  path = write_json(tmp_path / 'list.json',
                    {'path': ['a/b.png', entry], 'id': [0, 0]})
  for read in (megaface.read_probe_list, megaface.read_distractor_list):
    with pytest.raises(files.UnsafePathError) as error:
      read(path)
    assert f'{path}, "path"[1]: the path {entry!r}' in str(error.value)


def test_feature_path_stays_under_the_root():
  with pytest.raises(files.UnsafePathError,
                     match=r'leaves the root; .*\(root: /f\)'):
    megaface.feature_path('/f', '../../x.jpg', 'facejax')
  with pytest.raises(files.UnsafePathError, match='is absolute'):
    megaface.feature_path('/f', '/x.jpg', 'facejax')


@pytest.mark.parametrize('ids, index, message', [
    ([0, True], 1, 'an identity must be'),
    ([0, 1.0], 1, 'an identity must be'),
    ([0, -1], 1, 'an identity must be'),
    ([None, 0], 0, 'an identity must be'),
    ([0, [1]], 1, 'an identity must be'),
    (['Aaron', ' '], 1, 'an identity must be'),
])
def test_probe_ids_must_be_non_negative_integers_or_names(tmp_path, ids,
                                                          index, message):
  path = write_json(tmp_path / 'list.json', {'path': ['a', 'b'], 'id': ids})
  with pytest.raises(files.DataFileError,
                     match=f'list.json, "id"\\[{index}\\]: {message}'):
    megaface.read_probe_list(path)


def test_probe_ids_are_one_kind(tmp_path):
  path = write_json(tmp_path / 'list.json',
                    {'path': ['a', 'b', 'c'], 'id': [0, 7, 10**20]})
  assert megaface.read_probe_list(path)[1] == [0, 7, 10**20]
  write_json(path, {'path': ['a', 'b'], 'id': [1, '1']})
  with pytest.raises(files.DataFileError,
                     match='list.json: "id" mixes integers and names'):
    megaface.read_probe_list(path)


@pytest.mark.parametrize('text, message', [
    ('["a"]', 'expected a JSON object .* got list'),
    ('{"path": "a/b.png"}', "no list under the key 'path'"),
    ('{"path": ["a"], "id": [NaN]}', 'NaN is not a number JSON allows'),
    ('{"path": [["a"]]}', r'"path"\[0\] is \[\'a\'\]'),
])
def test_list_structure_errors_name_the_file(tmp_path, text, message):
  path = tmp_path / 'list.json'
  path.write_text(text)
  with pytest.raises(files.DataFileError, match=f'list.json.*{message}'):
    if '"id"' in text:
      megaface.read_probe_list(path)
    else:
      megaface.read_distractor_list(path)


def test_invalid_utf8_names_the_file_and_line(tmp_path):
  path = tmp_path / 'list.json'
  megaface.write_image_list(path, ['a.png', 'b.png'], [0, 1])
  path.write_bytes(path.read_bytes().replace(b'b.png', b'b\xff.png'))
  with pytest.raises(files.DataFileError, match='list.json, line 8: not UTF-8'):
    megaface.read_probe_list(path)
  noise = tmp_path / 'noise.txt'
  noise.write_bytes(b'# noise\nA_1.png\nB\xc3.png\n')
  with pytest.raises(files.DataFileError, match='noise.txt, line 3: not UTF-8'):
    megaface.read_noise_list(noise)


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
def test_read_feature_refuses_non_finite_values(tmp_path, value):
  path = tmp_path / 'x.jpg_facejax.bin'
  matrix = np.zeros((3, 2), np.float32)
  matrix[2, 1] = value
  path.write_bytes(struct.pack('<4i', 3, 2, 8, 5) + matrix.tobytes())
  with pytest.raises(ValueError, match='x.jpg_facejax.bin: .* at row 2, '
                     r'column 1 \(from 0; 1 non-finite'):
    megaface.read_feature(path)
  with pytest.raises(ValueError, match='x.jpg_facejax.bin'):
    megaface.read_features([path])


def test_read_feature_refuses_a_folder(tmp_path):
  with pytest.raises(files.DataFileError, match='is a folder'):
    megaface.read_feature(tmp_path)


def test_fuzzed_json_lists_parse_consistently_or_name_the_file(tmp_path):
  path = tmp_path / 'facescrub_features_list.json'
  megaface.write_image_list(path, [f'P_{k // 2}/P_{k // 2}_{k}.png'
                                   for k in range(6)], [0, 0, 1, 1, 2, 2])
  valid = path.read_bytes()

  def check(result):
    paths, ids = result
    assert len(paths) == len(ids)
    for relative in paths:
      normal = os.path.normpath(relative)
      assert isinstance(relative, str) and not os.path.isabs(relative)
      assert not relative.startswith('~') and normal != '.'
      assert normal.split(os.sep)[0] != '..', relative
    assert all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
               for i in ids) or all(isinstance(i, str) and i.strip()
                                    for i in ids)

  mutations.fuzz(path, valid, lambda: megaface.read_probe_list(path), check)


def test_fuzzed_feature_files_parse_consistently_or_name_the_file(tmp_path):
  path = tmp_path / 'x.jpg_facejax.bin'
  # Two values whose bytes hold a newline, so that line mutations cut
  # inside the data.
  with_newline = np.frombuffer(b'\n\x00\x80\x3f\x00\n\x20\xc1', '<f4')
  megaface.write_feature(path, np.concatenate([[1.0, -2.5], with_newline,
                                               [0.1]]))
  valid = path.read_bytes()
  assert valid.count(b'\n') == 2

  def check(vector):
    assert vector.dtype == np.float32 and vector.ndim == 1 and vector.size
    assert np.all(np.isfinite(vector))
    assert os.path.getsize(path) == 16 + 4 * vector.size

  mutations.fuzz(path, valid, lambda: megaface.read_feature(path), check)
