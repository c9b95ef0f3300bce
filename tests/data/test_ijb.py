"""IJB protocol readers: insightface's meta files and NIST's 1:N CSVs, read
back exactly, and every malformed or inconsistent file named."""
import os

import numpy as np
import pytest

from facejax.data import files
from facejax.data import ijb


def make_protocol(root, with_1n=True):
  """A small protocol written to ``root`` (empty image files)."""
  crops = os.path.join(root, 'loose_crop')
  os.makedirs(crops, exist_ok=True)
  rng = np.random.default_rng(0)
  templates = np.repeat(np.arange(1, 7), 3)
  medias = np.repeat(np.arange(100, 112), 3)[::2][:18]
  paths = []
  for index in range(18):
    path = os.path.join(crops, f'{index + 1}.jpg')
    open(path, 'wb').close()
    paths.append(path)
  protocol = ijb.Protocol(
      'IJBC', np.array(paths), templates, medias,
      rng.uniform(0, 100, (18, 5, 2)).round(2).astype(np.float32),
      rng.uniform(0.5, 1, 18).round(6).astype(np.float32),
      np.array([[1, 2], [3, 4], [5, 6], [1, 1]]),
      np.array([False, True, False, True]))
  if with_1n:
    protocol.probes = (np.array([1, 2, 3]), np.array([10, 20, 30]))
    protocol.galleries = {'G1': (np.array([4, 5]), np.array([10, 40])),
                          'G2': (np.array([6]), np.array([20]))}
  ijb.write_protocol(root, protocol)
  return protocol


def test_protocol_reads_back_exactly(tmp_path):
  written = make_protocol(str(tmp_path))
  read = ijb.open_protocol(str(tmp_path), 'IJBC')
  assert list(read.image_paths) == list(written.image_paths)
  for name in ('templates', 'medias', 'pairs', 'labels', 'landmarks',
               'detector_scores'):
    np.testing.assert_array_equal(getattr(read, name),
                                  getattr(written, name), err_msg=name)
  for got, expected in zip(read.probes, written.probes):
    np.testing.assert_array_equal(got, expected)
  assert sorted(read.galleries) == ['G1', 'G2']
  np.testing.assert_array_equal(read.galleries['G1'][1], [10, 40])


def test_without_1n_files_the_protocol_is_1to1_only(tmp_path):
  make_protocol(str(tmp_path), with_1n=False)
  protocol = ijb.open_protocol(str(tmp_path), 'IJBC')
  assert protocol.probes is None and protocol.galleries == {}


def meta(tmp_path, name):
  return os.path.join(tmp_path, 'meta', name)


def rewrite(path, edit):
  lines = open(path, encoding='utf-8').read().splitlines()
  edit(lines)
  open(path, 'w', encoding='utf-8').write('\n'.join(lines) + '\n')


@pytest.mark.parametrize('file_name,edit,message', [
    ('ijbc_face_tid_mid.txt', lambda l: l.__setitem__(2, '3.jpg 1'),
     r'face_tid_mid\.txt, line 3: 2 fields, expected 3'),
    ('ijbc_face_tid_mid.txt', lambda l: l.__setitem__(4, '5.jpg x 101'),
     r"line 5: template 'x' is not an integer"),
    ('ijbc_face_tid_mid.txt', lambda l: l.__setitem__(0, '../up.jpg 1 100'),
     r'line 1.*\.\.'),
    ('ijbc_name_5pts_score.txt', lambda l: l.__setitem__(
        1, l[1].replace('2.jpg', '9.jpg')),
     r"5pts_score\.txt, line 2: image '9\.jpg', but line 2 of"),
    ('ijbc_name_5pts_score.txt', lambda l: l.__setitem__(
        3, l[3].rsplit(' ', 1)[0] + ' nan'), r'line 4: a value is not finite'),
    ('ijbc_template_pair_label.txt', lambda l: l.__setitem__(1, '3 4'),
     r'pair_label\.txt, line 2: 2 fields'),
    ('ijbc_template_pair_label.txt', lambda l: l.__setitem__(2, '5 6 7'),
     r'pair_label\.txt, line 3: label 7, expected 0 or 1'),
    ('ijbc_template_pair_label.txt', lambda l: l.__setitem__(3, '1 99 1'),
     r'pair_label\.txt, line 4: template 99, which no image'),
    ('ijbc_1N_gallery_G1.csv', lambda l: l.append('77,10,x.jpg'),
     r'gallery_G1\.csv, line \d+: template 77, which no image'),
    ('ijbc_1N_probe_mixed.csv', lambda l: l.__setitem__(0, 'A,B,C'),
     r'probe_mixed\.csv, line 1: the header names no TEMPLATE_ID'),
    ('ijbc_1N_probe_mixed.csv', lambda l: l.append('1,99,1.jpg'),
     r'line \d+: template 1 has subject 99 here and 10 before'),
])
def test_malformed_files_are_named_with_the_line(tmp_path, file_name, edit,
                                                 message):
  make_protocol(str(tmp_path))
  rewrite(meta(tmp_path, file_name), edit)
  with pytest.raises(files.DataFileError, match=message):
    ijb.open_protocol(str(tmp_path), 'IJBC')


def test_a_missing_image_is_named_with_its_line(tmp_path):
  make_protocol(str(tmp_path))
  os.remove(os.path.join(tmp_path, 'loose_crop', '7.jpg'))
  with pytest.raises(files.DataFileError, match=r"line 7: image '7\.jpg' "
                     'is not in'):
    ijb.open_protocol(str(tmp_path), 'IJBC')


def test_missing_files_and_targets(tmp_path):
  with pytest.raises(FileNotFoundError, match='ijbc_face_tid_mid.txt: '
                     'missing'):
    ijb.open_protocol(str(tmp_path), 'IJBC')
  make_protocol(str(tmp_path))
  os.remove(meta(tmp_path, 'ijbc_1N_gallery_G2.csv'))
  with pytest.raises(FileNotFoundError, match='gallery_G2.csv: missing'):
    ijb.open_protocol(str(tmp_path), 'IJBC')
  with pytest.raises(ValueError, match="target 'IJBA'"):
    ijb.open_protocol(str(tmp_path), 'IJBA')


def test_ijbb_uses_its_own_prefix_and_galleries(tmp_path):
  protocol = make_protocol(str(tmp_path / 'x'))
  protocol.galleries = {'S1': protocol.galleries['G1'],
                        'S2': protocol.galleries['G2']}
  root = str(tmp_path / 'b')
  os.makedirs(os.path.join(root, 'loose_crop'))
  protocol.image_paths = np.array([
      os.path.join(root, 'loose_crop', os.path.basename(p))
      for p in protocol.image_paths])
  for path in protocol.image_paths:
    open(path, 'wb').close()
  ijb.write_protocol(root, protocol, prefix='ijbb')
  read = ijb.open_protocol(root, 'IJBB')
  assert sorted(read.galleries) == ['S1', 'S2']


def test_a_large_pair_file_parses_in_one_pass(tmp_path):
  rng = np.random.default_rng(1)
  table = np.c_[rng.integers(1, 500, (20000, 2)), rng.integers(0, 2, 20000)]
  path = str(tmp_path / 'pairs.txt')
  np.savetxt(path, table, fmt='%d')
  pairs, labels = ijb.read_pairs(path)
  np.testing.assert_array_equal(pairs, table[:, :2])
  np.testing.assert_array_equal(labels, table[:, 2] == 1)
