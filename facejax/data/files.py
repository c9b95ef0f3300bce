"""Untrusted files: the one place that confines paths and decodes text.

Every reader of a list, protocol or manifest file (LFW ``pairs.txt``,
YouTube Faces ``splits.txt``, CelebA's lists, MegaFace's JSON lists, the
TFRecords ``dataset.json``, landmarks files, ``eval.extract``'s image list)
and every writer that names its outputs after such entries
(``eval.megaface --write-features``) goes through these functions, so the
rules hold in one place:

* **Confinement.** A path taken from a file is joined to its root with
  :func:`confine`, which refuses an absolute entry, an entry with ``..``
  that leaves the root, a NUL byte or an empty entry, with an
  :class:`UnsafePathError` naming the file, the line (or key) and the entry.
  The check is lexical on the normalised path (``os.path.normpath``), so a
  symbolic link that the owner of the root placed inside it is still
  followed: the threat is the list file's content, not the root's owner.
* **Text.** :func:`read_text_lines` and :func:`read_json` decode UTF-8 (an
  optional byte-order mark is dropped) and turn a decoding or syntax error
  into a :class:`DataFileError` naming the file and the line, instead of a
  ``UnicodeDecodeError`` or ``JSONDecodeError`` that names neither.

Both error types are ``ValueError``s, the documented type of every reader's
"this file is malformed" error.

Pure python: no numpy, no tensorflow.
"""
import hashlib
import json
import os


class DataFileError(ValueError):
  """A data, list, protocol or manifest file that is malformed or damaged.

  The message names the file and, where there is one, the line, record or
  key.
  """


class UnsafePathError(DataFileError):
  """A path taken from a file would leave the root it must stay under."""


def where(path, line=None, key=None):
  """``'path, line 3'`` / ``'path, key "shards"'``: the prefix of messages."""
  text = str(path)
  if line is not None:
    text += f', line {line}'
  if key is not None:
    text += f', {key}'
  return text


def check_relative(entry, *, source=None, line=None, key=None):
  """``entry`` normalised, refusing one that could leave any root.

  The root-independent half of :func:`confine`, for readers that check a
  list file's entries when they read it, before the root they will be
  joined to is known.

  Args:
    entry: the relative path as written in the file (``/`` separated).
    source: the file the entry was read from, for the message.
    line: the entry's line in ``source`` (1-based), if it has one.
    key: where else in ``source`` the entry is (e.g. ``'shards[2].file'``).

  Returns:
    ``os.path.normpath(entry)``, which neither is absolute nor starts with
    ``..``.

  Raises:
    UnsafePathError: ``entry`` is not a string, is empty, holds a NUL byte,
      is absolute (also ``~user`` or a Windows drive), names the root itself
      (``.``, ``a/..``) or climbs out of it with ``..``.
  """
  origin = where(source if source is not None else '<no file>', line, key)
  if not isinstance(entry, str):
    raise UnsafePathError(f'{origin}: a path must be a string, got '
                          f'{entry!r}')
  normalised = os.path.normpath(entry) if entry.strip() else ''
  problem = None
  if not normalised:
    problem = 'is empty'
  elif '\0' in entry:
    problem = 'holds a NUL byte'
  elif (os.path.isabs(entry) or entry.startswith(('/', '\\', '~'))
        or entry[1:3] in (':/', ':\\')):
    problem = 'is absolute'
  elif normalised == os.curdir:
    problem = 'names the root itself'
  elif normalised == os.pardir or normalised.startswith(os.pardir + os.sep):
    problem = 'leaves the root'
  if problem is not None:
    raise UnsafePathError(f'{origin}: the path {entry!r} {problem}; paths '
                          'in this file must be relative and stay under '
                          'their root')
  return normalised


def confine(root, entry, *, source=None, line=None, key=None):
  """``root/entry`` normalised, refusing an ``entry`` that leaves ``root``.

  Args:
    root: the folder the entry must stay under.
    entry: the relative path as written in the file (``/`` separated).
    source: the file the entry was read from, for the message (default: the
      root).
    line: the entry's line in ``source`` (1-based), if it has one.
    key: where else in ``source`` the entry is (e.g. ``'shards[2].file'``).

  Returns:
    The joined, normalised path (a string).

  Raises:
    UnsafePathError: as :func:`check_relative`, the message naming ``root``.
  """
  try:
    relative = check_relative(entry, source=source if source is not None
                              else root, line=line, key=key)
  except UnsafePathError as error:
    raise UnsafePathError(f'{error} (root: {root})') from None
  return os.path.join(root, relative)


def _decode(data, path):
  """``data`` (bytes) as UTF-8 text; DataFileError naming the line."""
  if data.startswith(b'\xef\xbb\xbf'):
    data = data[3:]
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as error:
    line = data.count(b'\n', 0, error.start) + 1
    raise DataFileError(
        f'{where(path, line)}: not UTF-8 text (byte {error.start}: '
        f'{data[error.start:error.start + 1]!r})') from None


def _read_bytes(path):
  """The file's bytes; a folder or a missing file named as such."""
  if os.path.isdir(path):
    raise DataFileError(f'{path}: is a folder, expected a file')
  with open(path, 'rb') as f:
    return f.read()


def read_text(path):
  """The whole UTF-8 text file (byte-order mark dropped).

  Raises:
    FileNotFoundError: no such file.
    DataFileError: a folder, or bytes that are not UTF-8 (naming the line).
  """
  return _decode(_read_bytes(path), path)


def read_text_lines(path, keep_blank=False):
  """[(line number, text)] of a UTF-8 text file, 1-based.

  Line ends are removed; blank (whitespace-only) lines are left out unless
  ``keep_blank``, but the numbers stay those of the file.

  Raises:
    FileNotFoundError: no such file.
    DataFileError: a folder, or bytes that are not UTF-8 (naming the line).
  """
  lines = read_text(path).splitlines()
  return [(number, line) for number, line in enumerate(lines, 1)
          if keep_blank or line.strip()]


def _refuse_constant(name):
  raise ValueError(f'{name} is not a number JSON allows')


def read_json(path):
  """The parsed JSON document of a UTF-8 file.

  ``NaN`` and ``Infinity``, which Python's parser accepts but JSON does not,
  are refused.

  Raises:
    FileNotFoundError: no such file.
    DataFileError: a folder, not UTF-8, or not valid JSON (naming the line
      and column).
  """
  text = read_text(path)
  try:
    return json.loads(text, parse_constant=_refuse_constant)
  except json.JSONDecodeError as error:
    raise DataFileError(f'{where(path, error.lineno)}: not valid JSON '
                        f'({error.msg}, column {error.colno})') from None
  except (ValueError, RecursionError) as error:
    raise DataFileError(f'{path}: not valid JSON ({error})') from None


def sha256_of_file(path, block_bytes=1 << 20):
  """The SHA-256 hex digest of the file's bytes, read a block at a time."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while block := f.read(block_bytes):
      digest.update(block)
  return digest.hexdigest()
