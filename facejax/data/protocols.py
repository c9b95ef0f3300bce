"""Verification protocol files: LFW's pairs.txt and YouTube Faces' splits.txt.

Pure python and numpy (no tensorflow): these readers give the pairs, their
labels and folds in the form facejax.metrics.verification.evaluate takes,
and the image paths to embed.

LFW (Huang et al. 2007, "Labeled Faces in the Wild"), ``pairs.txt``: fields
are separated by whitespace (tabs in the official files). The first line is
``<folds> <pairs per fold>`` (View 2: ``10 300``); then, for each fold in
turn, ``pairs per fold`` matched lines ``name n1 n2`` followed by as many
mismatched lines ``name1 n1 name2 n2``. ``pairsDevTrain.txt`` and
``pairsDevTest.txt`` (View 1) have a single number N on the first line: N
matched then N mismatched lines, one fold. Image numbers start at 1; image
``n`` of ``name`` is ``<root>/<name>/<name>_<n as %04d>.jpg``. Blank lines
are skipped (line numbers in errors are those of the file).

YouTube Faces (Wolf, Hassner, Maoz, CVPR 2011), ``splits.txt``: comma
separated values with a header line

  split number, pair number, first name, second name, is physically the
  same, is the same

then 5,000 lines such as ``1, 1, Aaron_Eckhart/0, Aaron_Eckhart/1, 1, 1``:
10 splits of 500 pairs (250 same, 250 different), in order: the split
numbers run from 1 without a gap and every split has as many pairs; the
pair numbers count 1, 2, ... either within each split or across the file
(both numberings are accepted, one per file). A video is
``<person>/<video number>``, a folder of frames under ``frame_images_DB``
or ``aligned_images_DB``. The benchmark's label is the last column ("is the
same"); the fifth is checked (0 or 1) but not returned. Fields are
stripped of spaces.

Both files are untrusted: they are decoded as UTF-8 and every name in them
must stay under the image root it is joined to
(:func:`facejax.data.files.confine`), checked when the file is read (naming
its line) and again when a path is made.
"""
import os
import re
from typing import NamedTuple

import numpy as np

from facejax.data import files

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
_DIGITS = re.compile(r'[0-9]+')
# The frame number: the digits just before the extension, as in
# aligned_detect_0.555.jpg and 0.555.jpg (frame 555).
_FRAME_NUMBER = re.compile(r'([0-9]+)\.[A-Za-z]+$')


class LfwPairs(NamedTuple):
  """The pairs of an LFW pairs file, in file order.

  Attributes:
    first, second: lists of (name, image number) tuples.
    issame: (N,) bool, True for the matched pairs.
    folds: (N,) int fold ids, 0 to folds - 1.
    line_numbers: (N,) int, each pair's line in the file (1-based).
    path: the pairs file, for messages.
  """
  first: list
  second: list
  issame: np.ndarray
  folds: np.ndarray
  line_numbers: np.ndarray
  path: str


class YtfSplits(NamedTuple):
  """The pairs of a YouTube Faces splits file, in file order.

  Attributes:
    folds: (N,) int split numbers as written (1 to 10).
    first, second: lists of videos, ``<person>/<video number>``.
    issame: (N,) bool, the last column ("is the same").
    line_numbers: (N,) int, each pair's line in the file (1-based).
  """
  folds: np.ndarray
  first: list
  second: list
  issame: np.ndarray
  line_numbers: np.ndarray


def _natural_number(field, path, line_number, what):
  if not _DIGITS.fullmatch(field):
    raise ValueError(f'{path}, line {line_number}: {what} must be a '
                     f'non-negative integer, got {field!r}')
  return int(field)


def read_lfw_pairs(path):
  """Reads an LFW ``pairs.txt`` (or View 1 ``pairsDev*.txt``), checking it.

  Returns:
    LfwPairs.

  Raises:
    ValueError naming the file and line: a header that is not one or two
    positive integers; a line without 3 (matched) or 4 (mismatched) fields;
    image numbers that are not integers >= 1; a matched line in a
    mismatched block or the reverse; a mismatched pair naming one person
    twice; a name that would leave the image root (``..``, an absolute
    path); more or fewer pair lines than the header announces.
    FileNotFoundError: no such file.
  """
  lines = files.read_text_lines(path)
  if not lines:
    raise ValueError(f'{path}: empty; expected a header line '
                     f'"<folds> <pairs per fold>" or "<pairs>"')
  header_line, header = lines[0]
  fields = header.split()
  if len(fields) not in (1, 2) or not all(
      _DIGITS.fullmatch(field) and int(field) > 0 for field in fields):
    raise ValueError(f'{path}, line {header_line}: the header must be '
                     f'"<folds> <pairs per fold>" or "<pairs>" (positive '
                     f'integers), got {header.strip()!r}')
  num_folds, per_fold = (1, int(fields[0])) if len(fields) == 1 else (
      int(fields[0]), int(fields[1]))
  expected = 2 * num_folds * per_fold
  first, second, issame, folds, line_numbers = [], [], [], [], []
  for index, (line_number, line) in enumerate(lines[1:]):
    where = f'{path}, line {line_number}'
    if index >= expected:
      raise ValueError(f'{where}: more pair lines than the {expected} the '
                       f'header (line {header_line}: {num_folds} folds of '
                       f'{per_fold} matched + {per_fold} mismatched) '
                       f'announces')
    fold, position = divmod(index, 2 * per_fold)
    matched_block = position < per_fold
    fields = line.split()
    if len(fields) not in (3, 4):
      raise ValueError(f'{where}: expected 3 fields "name n1 n2" or 4 fields '
                       f'"name1 n1 name2 n2", got {len(fields)}: '
                       f'{line.strip()!r}')
    if (len(fields) == 3) != matched_block:
      kind = 'matched' if len(fields) == 3 else 'mismatched'
      block = 'matched' if matched_block else 'mismatched'
      raise ValueError(
          f'{where}: a {kind} pair ({len(fields)} fields) in the {block} '
          f'block of fold {fold + 1} (pair {position % per_fold + 1} of '
          f'{per_fold})')
    if matched_block:
      name_a, number_a, number_b = fields
      name_b = name_a
    else:
      name_a, number_a, name_b, number_b = fields
      if name_a == name_b:
        raise ValueError(f'{where}: a mismatched pair names {name_a!r} '
                         f'twice')
    number_a = _natural_number(number_a, path, line_number, 'an image number')
    number_b = _natural_number(number_b, path, line_number, 'an image number')
    if not number_a or not number_b:
      raise ValueError(f'{where}: image numbers start at 1, got '
                       f'{line.strip()!r}')
    for name, number in ((name_a, number_a), (name_b, number_b)):
      files.check_relative(_lfw_relative_path(name, number), source=path,
                           line=line_number)
    first.append((name_a, number_a))
    second.append((name_b, number_b))
    issame.append(matched_block)
    folds.append(fold)
    line_numbers.append(line_number)
  if len(first) < expected:
    last_line = lines[-1][0]
    raise ValueError(f'{path}, line {last_line}: the file ends after '
                     f'{len(first)} pair lines, but the header (line '
                     f'{header_line}: {num_folds} folds of {per_fold} matched '
                     f'+ {per_fold} mismatched) announces {expected}')
  return LfwPairs(first, second, np.array(issame, bool),
                  np.array(folds, np.int64), np.array(line_numbers, np.int64),
                  str(path))


def _lfw_relative_path(name, number, extension='jpg'):
  return f'{name}/{name}_{number:04d}.{extension}'


def lfw_image_path(root, name, number, extension='jpg', *, source=None,
                   line=None):
  """``<root>/<name>/<name>_<number as %04d>.<extension>``.

  Args:
    root, name, number, extension: as above.
    source, line: the pairs file and line the name comes from, for the
      message of the error below.

  Raises:
    facejax.data.files.UnsafePathError: the path would leave ``root``.
  """
  return files.confine(root, _lfw_relative_path(name, number, extension),
                       source=source, line=line)


def lfw_pair_paths(pairs, root, check_exists=True, extension='jpg'):
  """The images of LfwPairs, each listed once, and the pairs' indices.

  Args:
    pairs: LfwPairs from :func:`read_lfw_pairs`.
    root: the LFW folder holding one folder per person.
    check_exists: check that every image is a file.
    extension: of the image files.

  Returns:
    (paths, first_index, second_index): the distinct image paths in order of
    first appearance (first then second image of each pair, in file order),
    and (N,) int arrays with paths[first_index[i]] and paths[second_index[i]]
    the images of pair i.

  Raises:
    FileNotFoundError naming the pairs file, the pair's line and the
    missing path, when ``check_exists``;
    facejax.data.files.UnsafePathError (a ValueError) naming them, for a
    path that would leave ``root``.
  """
  index_of_path, paths = {}, []
  first_index = np.empty(len(pairs.first), np.int64)
  second_index = np.empty(len(pairs.first), np.int64)
  for pair, (image_a, image_b) in enumerate(zip(pairs.first, pairs.second)):
    for image, indices in ((image_a, first_index), (image_b, second_index)):
      path = lfw_image_path(root, *image, extension=extension,
                            source=pairs.path,
                            line=int(pairs.line_numbers[pair]))
      if path not in index_of_path:
        if check_exists and not os.path.isfile(path):
          raise FileNotFoundError(
              f'{pairs.path}, line {pairs.line_numbers[pair]}: no image '
              f'{path}')
        index_of_path[path] = len(paths)
        paths.append(path)
      indices[pair] = index_of_path[path]
  return paths, first_index, second_index


_YTF_HEADER = ('"split number, pair number, first name, second name, is '
               'physically the same, is the same"')


def read_ytf_splits(path):
  """Reads YouTube Faces' ``splits.txt`` (format in the module doc).

  The header line must have the 6 fields (its words are not checked); each
  following line needs 6 fields: split and pair numbers (integers), two
  videos ``<person>/<video number>`` and two labels 0 or 1. The numbering
  is checked as the format defines it, so that a truncated or reordered
  file is not scored: split numbers start at 1 and go up by one, every split
  has as many pairs, and pair numbers count 1, 2, ... within each split or
  across the file. A (split, pair) appearing twice is an error.

  Returns:
    YtfSplits (folds, first, second, issame, line_numbers), which unpacks as
    that tuple.

  Raises:
    ValueError naming the file and line (also for a video that would leave
    the frame root: ``..``, an absolute path); FileNotFoundError: no such
    file.
  """
  lines = files.read_text_lines(path)
  if not lines:
    raise ValueError(f'{path}: empty; expected the header {_YTF_HEADER}')
  header_line, header = lines[0]
  header_fields = [field.strip() for field in header.split(',')]
  if len(header_fields) != 6 or _DIGITS.fullmatch(header_fields[0]):
    raise ValueError(f'{path}, line {header_line}: expected the header '
                     f'{_YTF_HEADER}, got {header.strip()!r}')
  if len(lines) == 1:
    raise ValueError(f'{path}, line {header_line}: no pair line after the '
                     'header')
  folds, first, second, issame, line_numbers = [], [], [], [], []
  seen = {}
  numbering = _YtfNumbering(path)
  for line_number, line in lines[1:]:
    split, pair, video_a, video_b, same = _ytf_row(path, line_number, line)
    if (split, pair) in seen:
      raise ValueError(f'{path}, line {line_number}: split {split} pair '
                       f'{pair} again (first on line {seen[split, pair]})')
    seen[split, pair] = line_number
    numbering.check(split, pair, line_number)
    folds.append(split)
    first.append(video_a)
    second.append(video_b)
    issame.append(same)
    line_numbers.append(line_number)
  numbering.finish(lines[-1][0])
  return YtfSplits(np.array(folds, np.int64), first, second,
                   np.array(issame, bool), np.array(line_numbers, np.int64))


def _ytf_row(path, line_number, line):
  """(split, pair, first video, second video, is the same) of a pair line."""
  where = files.where(path, line_number)
  fields = [field.strip() for field in line.split(',')]
  if len(fields) != 6:
    raise ValueError(f'{where}: expected 6 comma-separated fields, got '
                     f'{len(fields)}: {line.strip()!r}')
  split = _natural_number(fields[0], path, line_number, 'the split number')
  pair = _natural_number(fields[1], path, line_number, 'the pair number')
  for video in fields[2:4]:
    person, _, number = video.partition('/')
    if not person or not _DIGITS.fullmatch(number):
      raise ValueError(f'{where}: a video must be "<person>/<video '
                       f'number>", got {video!r}')
    files.check_relative(video, source=path, line=line_number)
  for label in fields[4:]:
    if label not in ('0', '1'):
      raise ValueError(f'{where}: the labels must be 0 or 1, got '
                       f'{fields[4]!r} and {fields[5]!r}')
  return split, pair, fields[2], fields[3], fields[5] == '1'


class _YtfNumbering:
  """Checks, pair line by pair line, the numbering of a splits file.

  Split numbers start at 1 and go up by one; every split has as many pairs
  as split 1; pair numbers count from 1 within each split, or across the
  file: the first pair of split 2 tells which, and the rest must follow.
  """

  def __init__(self, path):
    self.path = path
    self.split = 0  # the current split; 0 before the first pair line
    self.in_split = 0  # pair lines of the current split so far
    self.total = 0  # pair lines so far
    self.per_split = None  # split 1's pair count, once it is complete
    self.restarts = None  # numbered within each split? Known in split 2.

  def check(self, split, pair, line_number):
    """Raises a ValueError naming the line if it breaks the numbering."""
    where = files.where(self.path, line_number)
    if split == self.split + 1:
      if self.split:
        self._split_complete(where, f'split {split} starts')
      self.split, self.in_split = split, 0
    elif split != self.split:
      expected = ('1' if not self.split else
                  f'{self.split} or {self.split + 1}')
      raise ValueError(f'{where}: split number {split} after split '
                       f'{self.split}, expected {expected} (splits are '
                       'numbered 1, 2, ... in order)')
    self.in_split += 1
    self.total += 1
    if self.split > 1 and self.in_split > self.per_split:
      raise ValueError(f'{where}: pair {self.in_split} of split {split}, but '
                       f'split 1 has {self.per_split}; every split has as '
                       'many pairs')
    expected = self._expected_pair(pair)
    if pair != expected:
      raise ValueError(f'{where}: pair number {pair}, expected {expected} '
                       f'(pair {self.in_split} of split {split}; pairs are '
                       f'numbered 1, 2, ... {self._scheme()})')

  def finish(self, last_line):
    """At the end of the file: the last split must be complete."""
    if self.split:
      self._split_complete(files.where(self.path, last_line),
                           'the file ends')

  def _expected_pair(self, pair):
    """The pair number this line needs (or, where the first pair of split 2
    does not fit either numbering, the text of both choices)."""
    if self.split == 1:
      return self.total
    if self.restarts is None:  # the first pair of split 2
      if pair not in (1, self.total):
        return f'1 or {self.total}'
      self.restarts = pair == 1
    return self.in_split if self.restarts else self.total

  def _scheme(self):
    if self.restarts is None:
      return 'within each split or across the file'
    return 'within each split' if self.restarts else 'across the file'

  def _split_complete(self, where, event):
    if self.split == 1:
      self.per_split = self.in_split
    elif self.in_split != self.per_split:
      raise ValueError(f'{where}: {event} after {self.in_split} pairs of '
                       f'split {self.split}, but split 1 has '
                       f'{self.per_split}; every split has as many pairs '
                       '(a truncated or edited file?)')


def evenly_spaced_indices(count, max_count=None):
  """Up to ``max_count`` of range(count), evenly spaced and deterministic.

  With k = max_count < count, index i (0 <= i < k) is the centre of the
  i-th of k equal blocks, floor((2 i + 1) count / (2 k)): distinct, in
  increasing order. With max_count None or >= count, all of range(count).

  Returns:
    (min(count, max_count),) int64 array.
  """
  if max_count is None or max_count >= count:
    return np.arange(count, dtype=np.int64)
  if max_count < 1:
    raise ValueError(f'max_count must be at least 1 (or None), got '
                     f'{max_count}')
  return (2 * np.arange(max_count, dtype=np.int64) + 1) * count // (
      2 * max_count)


def ytf_video_frames(root, video, max_frames=None):
  """The frame images of a YouTube Faces video, in frame order.

  Args:
    root: ``frame_images_DB`` or ``aligned_images_DB`` (a folder per person,
      in it a folder per video number).
    video: ``<person>/<video number>`` as in splits.txt.
    max_frames: keep this many frames, evenly spaced
      (:func:`evenly_spaced_indices`); None keeps all.

  Returns:
    A list of paths of the image files (.jpg, .jpeg, .png, .bmp, any case)
    in ``<root>/<person>/<video number>/``, sorted by frame number: the
    digits just before the extension (``aligned_detect_0.555.jpg`` and
    ``0.555.jpg`` are frame 555), not lexicographically; then by name.

  Raises:
    FileNotFoundError naming the folder when it is absent or holds no frame
    image; ValueError naming an image whose name has no frame number, or
    (facejax.data.files.UnsafePathError) a video that would leave
    ``root``.
  """
  folder = files.confine(root, video)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'no folder {folder} for video {video!r}')
  frames = []
  for name in os.listdir(folder):
    if not name.lower().endswith(IMAGE_EXTENSIONS):
      continue
    match = _FRAME_NUMBER.search(name)
    if not match:
      raise ValueError(f'{os.path.join(folder, name)}: no frame number '
                       f'before the extension')
    frames.append((int(match.group(1)), name))
  if not frames:
    raise FileNotFoundError(f'no frame image ({", ".join(IMAGE_EXTENSIONS)}) '
                            f'in {folder} for video {video!r}')
  frames.sort()
  keep = evenly_spaced_indices(len(frames), max_frames)
  return [os.path.join(folder, frames[k][1]) for k in keep]
