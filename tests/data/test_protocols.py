"""Tests of facejax.data.protocols on small protocol files written here.

A 2-fold LFW pairs.txt (and View 1's single-set form) with empty image
files for the existence checks, a tiny YouTube Faces splits.txt and frame
folders; every malformed file must raise naming the file and the line.
Both parsers are also fuzzed with seeded mutants of a valid file
(tests/mutations.py).
"""
import os
import subprocess
import sys

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from facejax.data import files
from facejax.data import protocols
from tests import mutations

# 2 folds of 2 matched + 2 mismatched pairs, tab separated as the official
# file. Aaron_Peirsol 1 and Abel_Pacheco 1 appear in several pairs.
LFW_PAIRS = """2\t2
Abel_Pacheco\t1\t4
Aaron_Peirsol\t1\t2
Abdel_Madi_Shabneh\t1\tDean_Barker\t1
Aaron_Peirsol\t1\tAbel_Pacheco\t1
Aaron_Peirsol\t3\t4
Abel_Pacheco\t1\t2
Dean_Barker\t1\tAbel_Pacheco\t4
Abdel_Madi_Shabneh\t1\tAaron_Peirsol\t2
"""
LFW_IMAGES = {('Abel_Pacheco', 1), ('Abel_Pacheco', 2), ('Abel_Pacheco', 4),
              ('Aaron_Peirsol', 1), ('Aaron_Peirsol', 2),
              ('Aaron_Peirsol', 3), ('Aaron_Peirsol', 4),
              ('Abdel_Madi_Shabneh', 1), ('Dean_Barker', 1)}


def write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def make_lfw_images(root, images=LFW_IMAGES):
  for name, number in images:
    os.makedirs(os.path.join(root, name), exist_ok=True)
    open(protocols.lfw_image_path(root, name, number), 'wb').close()


# ----------------------------------------------------------------------------
# LFW.
# ----------------------------------------------------------------------------


def test_read_lfw_pairs(tmp_path):
  path = write(tmp_path, 'pairs.txt', LFW_PAIRS)
  pairs = protocols.read_lfw_pairs(path)
  assert pairs.first[:4] == [('Abel_Pacheco', 1), ('Aaron_Peirsol', 1),
                             ('Abdel_Madi_Shabneh', 1), ('Aaron_Peirsol', 1)]
  assert pairs.second[:4] == [('Abel_Pacheco', 4), ('Aaron_Peirsol', 2),
                              ('Dean_Barker', 1), ('Abel_Pacheco', 1)]
  np.testing.assert_array_equal(pairs.issame, [1, 1, 0, 0, 1, 1, 0, 0])
  assert pairs.issame.dtype == bool
  np.testing.assert_array_equal(pairs.folds, [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(pairs.line_numbers, range(2, 10))
  assert pairs.path == path


def test_read_lfw_pairs_single_set_header_and_blank_lines(tmp_path):
  # pairsDevTest.txt's form: one number N, N matched then N mismatched.
  path = write(tmp_path, 'pairsDevTest.txt',
               '2\r\nA_B 1 2  \r\n\r\nC_D\t3\t1\r\nA_B 1 C_D 2\r\n'
               'E_F 1 A_B 4\r\n\r\n')
  pairs = protocols.read_lfw_pairs(path)
  np.testing.assert_array_equal(pairs.issame, [1, 1, 0, 0])
  np.testing.assert_array_equal(pairs.folds, [0, 0, 0, 0])
  np.testing.assert_array_equal(pairs.line_numbers, [2, 4, 5, 6])
  assert pairs.second[1] == ('C_D', 1)


def test_lfw_image_path():
  assert protocols.lfw_image_path('/lfw', 'Abel_Pacheco', 4) == os.path.join(
      '/lfw', 'Abel_Pacheco', 'Abel_Pacheco_0004.jpg')
  assert protocols.lfw_image_path('r', 'A', 12, 'png') == os.path.join(
      'r', 'A', 'A_0012.png')


def test_lfw_pair_paths_lists_each_image_once(tmp_path):
  pairs = protocols.read_lfw_pairs(write(tmp_path, 'pairs.txt', LFW_PAIRS))
  root = str(tmp_path / 'lfw')
  make_lfw_images(root)
  paths, first, second = protocols.lfw_pair_paths(pairs, root)
  assert len(paths) == len(set(paths)) == len(LFW_IMAGES)
  for i in range(len(pairs.issame)):
    assert paths[first[i]] == protocols.lfw_image_path(root, *pairs.first[i])
    assert paths[second[i]] == protocols.lfw_image_path(root,
                                                        *pairs.second[i])
  # In order of first appearance.
  assert paths[:3] == [
      protocols.lfw_image_path(root, 'Abel_Pacheco', 1),
      protocols.lfw_image_path(root, 'Abel_Pacheco', 4),
      protocols.lfw_image_path(root, 'Aaron_Peirsol', 1)]
  assert first.dtype == second.dtype == np.int64


def test_lfw_pair_paths_names_a_missing_image(tmp_path):
  path = write(tmp_path, 'pairs.txt', LFW_PAIRS)
  pairs = protocols.read_lfw_pairs(path)
  root = str(tmp_path / 'lfw')
  make_lfw_images(root, LFW_IMAGES - {('Aaron_Peirsol', 3)})
  missing = protocols.lfw_image_path(root, 'Aaron_Peirsol', 3)
  with pytest.raises(FileNotFoundError) as error:
    protocols.lfw_pair_paths(pairs, root)
  assert f'{path}, line 6' in str(error.value)
  assert missing in str(error.value)
  # Without the check, nothing is opened.
  paths, _, _ = protocols.lfw_pair_paths(pairs, str(tmp_path / 'absent'),
                                         check_exists=False)
  assert len(paths) == len(LFW_IMAGES)


def _replace_line(text, number, new):
  lines = text.splitlines()
  lines[number - 1] = new
  return '\n'.join(lines) + '\n'


@pytest.mark.parametrize('text, line, match', [
    ('', None, 'empty'),
    ('ten 300\n', 1, 'header'),
    ('10 300 5\n', 1, 'header'),
    ('0 300\n', 1, 'header'),
    (_replace_line(LFW_PAIRS, 3, 'Aaron_Peirsol\t1\t2\t3\t4'), 3,
     'expected 3 fields'),
    (_replace_line(LFW_PAIRS, 3, 'Aaron_Peirsol\t1'), 3, 'expected 3 fields'),
    (_replace_line(LFW_PAIRS, 2, 'Abel_Pacheco\tone\t4'), 2, 'integer'),
    (_replace_line(LFW_PAIRS, 2, 'Abel_Pacheco\t1\t-4'), 2, 'integer'),
    (_replace_line(LFW_PAIRS, 2, 'Abel_Pacheco\t0\t4'), 2, 'start at 1'),
    (_replace_line(LFW_PAIRS, 5, 'Aaron_Peirsol\t1\t2'), 5,
     'matched pair .* in the mismatched block of fold 1'),
    (_replace_line(LFW_PAIRS, 7, 'Aaron_Peirsol\t1\tAbel_Pacheco\t1'), 7,
     'mismatched pair .* in the matched block of fold 2'),
    (_replace_line(LFW_PAIRS, 8, 'Dean_Barker\t1\tDean_Barker\t4'), 8,
     'twice'),
    (LFW_PAIRS.rsplit('\n', 2)[0] + '\n', 8, 'ends after 7 pair lines'),
    (LFW_PAIRS + 'Aaron_Peirsol\t1\t2\n', 10, 'more pair lines'),
    ('3 2\n' + LFW_PAIRS.split('\n', 1)[1], 9, 'announces 12'),
])
def test_read_lfw_pairs_errors_name_file_and_line(tmp_path, text, line,
                                                  match):
  path = write(tmp_path, 'pairs.txt', text)
  with pytest.raises(ValueError, match=match) as error:
    protocols.read_lfw_pairs(path)
  where = path if line is None else f'{path}, line {line}:'
  assert where in str(error.value)


@pytest.mark.parametrize('line, entry', [
    ('..\t1\t2', '../.._0001.jpg'),
    ('a/../../..\t1\t2', 'a/../../../a/../../.._0001.jpg'),
    ('/etc\t1\t2', '/etc//etc_0001.jpg'),
    ('~root\t1\t2', '~root/~root_0001.jpg'),
])
def test_read_lfw_pairs_refuses_names_that_leave_the_root(tmp_path, line,
                                                          entry):
  path = write(tmp_path, 'pairs.txt', _replace_line(LFW_PAIRS, 3, line))
  with pytest.raises(files.UnsafePathError) as error:
    protocols.read_lfw_pairs(path)
  assert f'{path}, line 3: the path {entry!r}' in str(error.value)


def test_lfw_pair_paths_confines_each_image_to_the_root(tmp_path):
  # Pairs made in memory, past read_lfw_pairs' check: the join checks too.
  pairs = protocols.LfwPairs([('..', 1)], [('..', 2)], np.array([True]),
                             np.array([0]), np.array([9]), 'pairs.txt')
  with pytest.raises(files.UnsafePathError,
                     match=r'pairs.txt, line 9: .* leaves the root'):
    protocols.lfw_pair_paths(pairs, str(tmp_path), check_exists=False)
  with pytest.raises(files.UnsafePathError, match='is absolute'):
    protocols.lfw_image_path(str(tmp_path), '/etc', 1)


def test_read_lfw_pairs_names_the_line_of_invalid_utf8(tmp_path):
  path = tmp_path / 'pairs.txt'
  path.write_bytes(LFW_PAIRS.replace('Dean_Barker\t1\tAbel',
                                     'Dean_Barker\xff\t1\tAbel').encode(
                                         'latin-1'))
  with pytest.raises(files.DataFileError,
                     match=f'{path}, line 8: not UTF-8'):
    protocols.read_lfw_pairs(path)


def test_fuzzed_lfw_pairs_parse_consistently_or_name_the_file(tmp_path):
  root = str(tmp_path / 'lfw')

  def check(pairs):
    count = len(pairs.issame)
    assert count and len(pairs.first) == len(pairs.second) == count
    assert len(pairs.folds) == len(pairs.line_numbers) == count
    per_fold = np.bincount(pairs.folds)
    assert np.all(per_fold == per_fold[0]) and per_fold[0] % 2 == 0
    for fold in range(len(per_fold)):  # half matched then half mismatched
      same = pairs.issame[pairs.folds == fold]
      assert list(same) == [True] * (len(same) // 2) + [False] * (
          len(same) // 2)
    assert np.all(np.diff(pairs.line_numbers) > 0)
    for (name_a, number_a), (name_b, number_b), same in zip(
        pairs.first, pairs.second, pairs.issame):
      assert number_a >= 1 and number_b >= 1 and (name_a == name_b) == same
    paths, _, _ = protocols.lfw_pair_paths(pairs, root, check_exists=False)
    assert all(mutations.stays_under_any_root(os.path.relpath(p, root))
               for p in paths)

  path = tmp_path / 'pairs.txt'
  mutations.fuzz(path, LFW_PAIRS.encode(),
                 lambda: protocols.read_lfw_pairs(str(path)), check)


# ----------------------------------------------------------------------------
# YouTube Faces.
# ----------------------------------------------------------------------------

YTF_SPLITS = """split number, pair number, first name, second name, \
is physically the same, is the same
1, 1, Aaron_Eckhart/0, Aaron_Eckhart/1, 1, 1
1, 2, Aaron_Eckhart/0, Abel_Pacheco/2, 0, 0
2, 1, Abel_Pacheco/2, Abel_Pacheco/3, 0, 1
2, 2, Aaron_Eckhart/1, Abel_Pacheco/3, 1, 0
"""


def test_read_ytf_splits(tmp_path):
  path = write(tmp_path, 'splits.txt', YTF_SPLITS)
  folds, first, second, issame, line_numbers = protocols.read_ytf_splits(path)
  np.testing.assert_array_equal(folds, [1, 1, 2, 2])
  assert first == ['Aaron_Eckhart/0', 'Aaron_Eckhart/0', 'Abel_Pacheco/2',
                   'Aaron_Eckhart/1']
  assert second == ['Aaron_Eckhart/1', 'Abel_Pacheco/2', 'Abel_Pacheco/3',
                    'Abel_Pacheco/3']
  # The label is the last column, whatever the fifth says.
  np.testing.assert_array_equal(issame, [True, False, True, False])
  np.testing.assert_array_equal(line_numbers, [2, 3, 4, 5])


@pytest.mark.parametrize('text, line, match', [
    ('', None, 'empty'),
    (YTF_SPLITS.split('\n', 1)[0] + '\n\n', 1, 'no pair line'),
    ('1, 1, A/0, A/1, 1, 1\n', 1, 'header'),
    ('split number, pair number, first name, second name, is the same\n', 1,
     'header'),
    (_replace_line(YTF_SPLITS, 3, '1, 2, Aaron_Eckhart/0, 0, 0'), 3,
     '6 comma-separated'),
    (_replace_line(YTF_SPLITS, 3, 'one, 2, A/0, B/1, 0, 0'), 3, 'split'),
    (_replace_line(YTF_SPLITS, 3, '1, 2.5, A/0, B/1, 0, 0'), 3, 'pair'),
    (_replace_line(YTF_SPLITS, 3, '1, 2, Aaron_Eckhart, B/1, 0, 0'), 3,
     'video'),
    (_replace_line(YTF_SPLITS, 3, '1, 2, A/0, B/x, 0, 0'), 3, 'video'),
    (_replace_line(YTF_SPLITS, 3, '1, 2, A/0, B/1, 0, 2'), 3, '0 or 1'),
    (_replace_line(YTF_SPLITS, 5, '1, 2, A/0, B/1, 0, 0'), 5,
     r'split 1 pair 2 again \(first on line 3\)'),
])
def test_read_ytf_splits_errors_name_file_and_line(tmp_path, text, line,
                                                   match):
  path = write(tmp_path, 'splits.txt', text)
  with pytest.raises(ValueError, match=match) as error:
    protocols.read_ytf_splits(path)
  where = path if line is None else f'{path}, line {line}:'
  assert where in str(error.value)


def ytf_text(rows):
  """A splits file of the (split, pair) rows, all of the same two videos."""
  return YTF_SPLITS.split('\n', 1)[0] + '\n' + ''.join(
      f'{split}, {pair}, A/0, B/1, 0, 0\n' for split, pair in rows)


def test_read_ytf_splits_accepts_both_pair_numberings(tmp_path):
  across = ytf_text([(1, 1), (1, 2), (2, 3), (2, 4), (3, 5), (3, 6)])
  folds = protocols.read_ytf_splits(write(tmp_path, 'a.txt', across)).folds
  np.testing.assert_array_equal(folds, [1, 1, 2, 2, 3, 3])
  within = ytf_text([(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)])
  folds = protocols.read_ytf_splits(write(tmp_path, 'w.txt', within)).folds
  np.testing.assert_array_equal(folds, [1, 1, 2, 2, 3, 3])
  single = ytf_text([(1, 1), (1, 2), (1, 3)])
  assert len(protocols.read_ytf_splits(write(tmp_path, 's.txt', single))
             .folds) == 3


@pytest.mark.parametrize('rows, line, match', [
    # Truncated: the last split has fewer pairs than the first.
    ([(1, 1), (1, 2), (2, 1)], 4, 'the file ends after 1 pairs of split 2, '
     'but split 1 has 2'),
    ([(1, 1), (1, 2), (2, 3)], 4, 'the file ends after 1 pairs of split 2'),
    # A split shorter or longer than split 1 in the middle.
    ([(1, 1), (1, 2), (2, 1), (3, 1), (3, 2)], 5,
     'split 3 starts after 1 pairs of split 2, but split 1 has 2'),
    ([(1, 1), (2, 1), (2, 2)], 4, 'pair 2 of split 2, but split 1 has 1'),
    # Split numbers: from 1, without gaps, never back.
    ([(2, 1), (2, 2)], 2, 'split number 2 after split 0, expected 1'),
    ([(1, 1), (3, 1)], 3, 'split number 3 after split 1, expected 1 or 2'),
    ([(1, 1), (2, 1), (1, 2)], 4, 'split number 1 after split 2'),
    # Pair numbers: 1, 2, ... in order.
    ([(1, 2), (1, 3)], 2, r'pair number 2, expected 1 \(pair 1 of split 1'),
    ([(1, 1), (1, 3)], 3, 'pair number 3, expected 2'),
    ([(1, 1), (1, 2), (2, 2)], 4, 'pair number 2, expected 1 or 3'),
    ([(1, 1), (1, 2), (2, 1), (2, 3)], 5,
     'pair number 3, expected 2 .*within each split'),
    ([(1, 1), (1, 2), (2, 3), (2, 3)], 5, 'split 2 pair 3 again'),
    ([(1, 1), (1, 2), (2, 3), (2, 5)], 5,
     'pair number 5, expected 4 .*across the file'),
])
def test_read_ytf_splits_refuses_a_truncated_or_misnumbered_file(
    tmp_path, rows, line, match):
  path = write(tmp_path, 'splits.txt', ytf_text(rows))
  with pytest.raises(ValueError, match=match) as error:
    protocols.read_ytf_splits(path)
  assert f'{path}, line {line}:' in str(error.value)


@pytest.mark.parametrize('video', ['../0', '~root/0'])
def test_read_ytf_splits_refuses_videos_that_leave_the_root(tmp_path, video):
  path = write(tmp_path, 'splits.txt',
               _replace_line(YTF_SPLITS, 3, f'1, 2, A/0, {video}, 0, 0'))
  with pytest.raises(files.UnsafePathError) as error:
    protocols.read_ytf_splits(path)
  assert f'{path}, line 3: the path {video!r}' in str(error.value)


def test_ytf_video_frames_confines_the_video_to_the_root(tmp_path):
  root = tmp_path / 'frames'
  make_video(str(tmp_path), 'outside/0', ['1.1.jpg'])
  with pytest.raises(files.UnsafePathError, match='leaves the root'):
    protocols.ytf_video_frames(str(root), '../outside/0')


def test_read_ytf_splits_names_the_line_of_invalid_utf8(tmp_path):
  path = tmp_path / 'splits.txt'
  path.write_bytes(YTF_SPLITS.encode().replace(b'Abel_Pacheco/3',
                                               b'Ab\xe9l_Pacheco/3'))
  with pytest.raises(files.DataFileError,
                     match=f'{path}, line 4: not UTF-8'):
    protocols.read_ytf_splits(path)


def test_fuzzed_ytf_splits_parse_consistently_or_name_the_file(tmp_path):
  # 3 splits of 3 pairs, so that a lost or repeated line changes a count.
  valid = ytf_text([(split, pair) for split in (1, 2, 3)
                    for pair in (1, 2, 3)])

  def check(splits):
    folds, first, second, issame, line_numbers = splits
    count = len(folds)
    assert len(first) == len(second) == len(issame) == count
    assert len(line_numbers) == count and np.all(np.diff(line_numbers) > 0)
    assert folds[0] == 1 and set(np.diff(folds)) <= {0, 1}
    per_split = np.bincount(folds)[1:]
    assert np.all(per_split == per_split[0])
    for video in first + second:
      person, number = video.split('/')
      assert person and number.isdigit() and mutations.stays_under_any_root(video)

  path = tmp_path / 'splits.txt'
  mutations.fuzz(path, valid.encode(),
                 lambda: protocols.read_ytf_splits(str(path)), check)


def make_video(root, video, names):
  folder = os.path.join(root, *video.split('/'))
  os.makedirs(folder, exist_ok=True)
  for name in names:
    open(os.path.join(folder, name), 'wb').close()
  return folder


def test_ytf_video_frames_sorts_by_frame_number(tmp_path):
  root = str(tmp_path / 'aligned_images_DB')
  folder = make_video(root, 'Aaron_Eckhart/0', [
      'aligned_detect_0.100.jpg', 'aligned_detect_0.9.jpg',
      'aligned_detect_0.55.JPG', 'aligned_detect_0.10.jpg', 'notes.txt'])
  frames = protocols.ytf_video_frames(root, 'Aaron_Eckhart/0')
  assert frames == [os.path.join(folder, f'aligned_detect_0.{n}.jpg')
                    for n in (9, 10)] + [
                        os.path.join(folder, 'aligned_detect_0.55.JPG'),
                        os.path.join(folder, 'aligned_detect_0.100.jpg')]
  # Two of four, evenly spaced: the centres of two blocks of two.
  assert protocols.ytf_video_frames(root, 'Aaron_Eckhart/0', 2) == [
      frames[1], frames[3]]
  assert protocols.ytf_video_frames(root, 'Aaron_Eckhart/0', 10) == frames
  # frame_images_DB's names.
  root = str(tmp_path / 'frame_images_DB')
  folder = make_video(root, 'Abel_Pacheco/3', ['3.1200.jpg', '3.998.jpg'])
  assert protocols.ytf_video_frames(root, 'Abel_Pacheco/3') == [
      os.path.join(folder, '3.998.jpg'), os.path.join(folder, '3.1200.jpg')]


def test_ytf_video_frames_errors(tmp_path):
  root = str(tmp_path)
  with pytest.raises(FileNotFoundError, match='Nobody/0'):
    protocols.ytf_video_frames(root, 'Nobody/0')
  folder = make_video(root, 'Empty/1', ['readme.txt'])
  with pytest.raises(FileNotFoundError, match=folder):
    protocols.ytf_video_frames(root, 'Empty/1')
  make_video(root, 'Odd/0', ['1.5.jpg', 'cover.jpg'])
  with pytest.raises(ValueError, match='cover.jpg'):
    protocols.ytf_video_frames(root, 'Odd/0')


@hypothesis.given(st.integers(1, 300), st.integers(1, 300))
def test_evenly_spaced_indices(count, max_count):
  indices = protocols.evenly_spaced_indices(count, max_count)
  if max_count >= count:
    np.testing.assert_array_equal(indices, np.arange(count))
    return
  assert len(indices) == max_count
  assert indices[0] >= 0 and indices[-1] < count
  gaps = np.diff(indices)
  assert np.all(gaps >= 1)  # distinct, increasing
  assert len(gaps) == 0 or gaps.max() - gaps.min() <= 1  # evenly spaced
  # Centred: as many skipped before the first as after the last, +-1.
  assert abs(indices[0] - (count - 1 - indices[-1])) <= 1


def test_evenly_spaced_indices_rejects_zero():
  np.testing.assert_array_equal(protocols.evenly_spaced_indices(5), range(5))
  with pytest.raises(ValueError, match='max_count'):
    protocols.evenly_spaced_indices(5, 0)


def test_no_tensorflow_import():
  code = ('import sys\n'
          'import facejax.data, facejax.data.protocols\n'
          'import facejax.metrics.verification, facejax.metrics.video\n'
          'import facejax.metrics.plots\n'
          'assert "tensorflow" not in sys.modules\n'
          'assert "matplotlib" not in sys.modules\n')
  subprocess.run([sys.executable, '-c', code], check=True)
