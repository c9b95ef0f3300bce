"""eval.extract's image list: relative paths confined to the root, UTF-8."""
import os

import pytest

from eval import extract
from facejax.data import files


def test_a_list_names_images_under_the_root(tmp_path):
  listing = tmp_path / 'list.txt'
  listing.write_text('# faces\nid_0/a.png\n\n  id_1/./b.png  # kept\n')
  root = str(tmp_path / 'images')
  assert extract.image_paths(str(listing), root) == [
      os.path.join(root, 'id_0', 'a.png'), os.path.join(root, 'id_1',
                                                        'b.png')]
  # Without --root, the list's folder.
  assert extract.image_paths(str(listing))[0] == os.path.join(
      str(tmp_path), 'id_0', 'a.png')


@pytest.mark.parametrize('entry, problem', [
    ('../secret.png', 'leaves the root'),
    ('id_0/../../secret.png', 'leaves the root'),
    ('/etc/passwd', 'is absolute'),
    ('~/secret.png', 'is absolute'),
])
def test_a_list_entry_outside_the_root_is_refused(tmp_path, entry, problem):
  listing = tmp_path / 'list.txt'
  listing.write_text(f'id_0/a.png\n{entry}\n')
  with pytest.raises(files.UnsafePathError) as error:
    extract.image_paths(str(listing), str(tmp_path / 'images'))
  assert f'{listing}, line 2: the path {entry!r} {problem}' in str(
      error.value)


def test_a_list_that_is_not_utf8_names_the_line(tmp_path):
  listing = tmp_path / 'list.txt'
  listing.write_bytes(b'id_0/a.png\nid_0/\xe9.png\n')
  with pytest.raises(files.DataFileError,
                     match=f'{listing}, line 2: not UTF-8'):
    extract.image_paths(str(listing))


def test_the_job_reports_a_refused_entry(tmp_path, capsys):
  listing = tmp_path / 'list.txt'
  listing.write_text('../secret.png\n')
  assert extract.main(['--checkpoint', str(tmp_path), '--images',
                       str(listing), '--out', str(tmp_path / 'out')]) == 1
  assert 'list.txt, line 1: the path' in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()


def test_a_folder_gives_its_images_sorted(tmp_path):
  for name in ('b/2.png', 'a/1.JPG', 'a/notes.txt'):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes(b'')
  assert extract.image_paths(str(tmp_path)) == [
      str(tmp_path / 'a' / '1.JPG'), str(tmp_path / 'b' / '2.png')]
