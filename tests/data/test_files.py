"""Tests of facejax.data.files: confinement of listed paths, strict decoding.

Every reader of a list or protocol file goes through these functions, so
their refusals are tested here once: paths that leave their root, text that
is not UTF-8 (the line named), JSON that Python accepts but JSON does not.
"""
import os

import pytest

from facejax.data import files


@pytest.mark.parametrize('entry, problem', [
    ('/etc/passwd', 'is absolute'),
    ('\\\\server\\share', 'is absolute'),
    ('C:/x.jpg', 'is absolute'),
    ('C:\\x.jpg', 'is absolute'),
    ('~/x.jpg', 'is absolute'),
    ('~user/x.jpg', 'is absolute'),
    ('../x.jpg', 'leaves the root'),
    ('a/../../x.jpg', 'leaves the root'),
    ('a/b/../../../x.jpg', 'leaves the root'),
    ('..', 'leaves the root'),
    ('', 'is empty'),
    ('   ', 'is empty'),
    ('a\0b.jpg', 'holds a NUL byte'),
    ('.', 'names the root'),
    ('a/..', 'names the root'),
    ('./', 'names the root'),
])
def test_confine_refuses_entries_that_leave_the_root(tmp_path, entry,
                                                     problem):
  root = str(tmp_path / 'images')
  with pytest.raises(files.UnsafePathError) as error:
    files.confine(root, entry, source='list.txt', line=7)
  message = str(error.value)
  assert message.startswith('list.txt, line 7: ')
  assert problem in message and repr(entry) in message


def test_confine_refuses_a_path_that_is_not_a_string(tmp_path):
  with pytest.raises(files.UnsafePathError,
                     match=r'list.json, "path"\[2\]: a path must be a string'):
    files.confine(str(tmp_path), 3, source='list.json', key='"path"[2]')


def test_unsafe_path_error_is_a_value_error():
  # The documented type of every reader's "malformed file" error.
  assert issubclass(files.UnsafePathError, files.DataFileError)
  assert issubclass(files.DataFileError, ValueError)


def test_confine_without_a_source_names_the_root(tmp_path):
  with pytest.raises(files.UnsafePathError, match=f'^{tmp_path}: '):
    files.confine(str(tmp_path), '../x')


@pytest.mark.parametrize('entry, relative', [
    ('a.jpg', 'a.jpg'),
    ('Aaron_Eckhart/Aaron_Eckhart_0001.jpg',
     'Aaron_Eckhart/Aaron_Eckhart_0001.jpg'),
    ('375/37531198@N00/4174611825_0.jpg', '375/37531198@N00/4174611825_0.jpg'),
    ('./a/./b.jpg', 'a/b.jpg'),
    ('a//b.jpg', 'a/b.jpg'),
    ('a/../b.jpg', 'b.jpg'),  # stays under the root: lexically fine
    ('a/b/', 'a/b'),
    ('..a/b..', '..a/b..'),  # dots inside a name are not a parent folder
    ('a~/x', 'a~/x'),
])
def test_confine_accepts_nested_relative_paths(tmp_path, entry, relative):
  root = str(tmp_path / 'images')
  assert files.confine(root, entry) == os.path.join(
      root, *relative.split('/'))


def test_confine_accepts_a_relative_root():
  assert files.confine('images', 'a/b.jpg') == os.path.join('images', 'a',
                                                            'b.jpg')
  with pytest.raises(files.UnsafePathError,
                     match=r'leaves the root; .*\(root: images\)'):
    files.confine('images', '../other/b.jpg')


def test_read_text_lines_numbers_the_file_lines(tmp_path):
  path = tmp_path / 'list.txt'
  # A byte-order mark is dropped; blank lines keep their numbers.
  path.write_bytes(b'\xef\xbb\xbfa\r\n\r\n  \nb\nc')
  assert files.read_text_lines(path) == [(1, 'a'), (4, 'b'), (5, 'c')]
  assert files.read_text_lines(path, keep_blank=True) == [
      (1, 'a'), (2, ''), (3, '  '), (4, 'b'), (5, 'c')]


@pytest.mark.parametrize('content, line', [
    (b'\xff', 1),
    (b'ok\nok\nbad \xc3(\n', 3),
    (b'a\n\n\xed\xa0\x80\n', 3),  # an encoded surrogate is not UTF-8
    (b'a\nb\n\x80', 3),
])
def test_invalid_utf8_names_the_file_and_line(tmp_path, content, line):
  path = tmp_path / 'list.txt'
  path.write_bytes(content)
  for read in (files.read_text, files.read_text_lines, files.read_json):
    with pytest.raises(files.DataFileError,
                       match=f'list.txt, line {line}: not UTF-8'):
      read(path)


def test_a_folder_instead_of_a_file(tmp_path):
  for read in (files.read_text, files.read_text_lines, files.read_json):
    with pytest.raises(files.DataFileError, match='is a folder'):
      read(tmp_path)


def test_a_missing_file_is_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError):
    files.read_text_lines(tmp_path / 'absent.txt')


def test_read_json_parses_strict_json(tmp_path):
  path = tmp_path / 'list.json'
  path.write_bytes(b'\xef\xbb\xbf{"path": ["a/b.jpg"], "id": [0]}')
  assert files.read_json(path) == {'path': ['a/b.jpg'], 'id': [0]}


@pytest.mark.parametrize('text, match', [
    ('{"id": [NaN]}', 'NaN is not a number JSON allows'),
    ('{"id": [Infinity]}', 'Infinity is not a number JSON allows'),
    ('{"id": [-Infinity]}', '-Infinity is not a number JSON allows'),
    ('{\n  "id": [1,]\n}', r'list.json, line 2: not valid JSON'),
    ('{"id": ', 'list.json, line 1: not valid JSON'),
    ('', 'list.json, line 1: not valid JSON'),
    ('[' * 100_000, 'list.json: not valid JSON'),  # too deep to parse
])
def test_read_json_refuses_what_json_does_not_allow(tmp_path, text, match):
  path = tmp_path / 'list.json'
  path.write_text(text)
  with pytest.raises(files.DataFileError, match=match) as error:
    files.read_json(path)
  assert 'list.json' in str(error.value)


@pytest.mark.parametrize('entry', ['../x', '/abs', 'a/../..', '.', '', '~/x'])
def test_check_relative_refuses_what_confine_refuses_without_a_root(entry):
  # Readers check entries when they read a list, before the root is known.
  with pytest.raises(files.UnsafePathError, match=r'^list.txt, line 2: '):
    files.check_relative(entry, source='list.txt', line=2)


def test_check_relative_returns_the_normalised_entry():
  assert files.check_relative('a/./b/../c.jpg', source='l') == 'a/c.jpg'
