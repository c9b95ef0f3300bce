"""IJB-B / IJB-C protocol files, as insightface and NIST distribute them.

insightface's prepared layout (``<root>/meta`` and ``<root>/loose_crop``),
``t`` being ``ijbc`` or ``ijbb``:

* ``meta/{t}_face_tid_mid.txt``: ``image template media`` per line, one line
  per image of ``loose_crop/``;
* ``meta/{t}_name_5pts_score.txt``: ``image x1 y1 ... x5 y5 score``: the five
  landmarks (left eye, right eye, nose, mouth corners, as in the image) and
  the detector's score ("faceness"), line for line with the file above;
* ``meta/{t}_template_pair_label.txt``: ``template template label`` (1 for a
  genuine pair), the 1:1 protocol.

NIST's 1:N protocol, CSVs with a header naming ``TEMPLATE_ID`` and
``SUBJECT_ID`` among their columns, also in ``meta/``:
``{t}_1N_probe_mixed.csv`` and the two galleries, ``{t}_1N_gallery_G1.csv``
/ ``_G2`` (IJB-C) or ``_S1`` / ``_S2`` (IJB-B). They are optional: without
them the job reports 1:1 only.

Every reader is strict: a malformed line, a template the 1:1 or 1:N files
name that no image has, an image missing from ``loose_crop/`` or an image
path leaving it are :class:`facejax.data.files.DataFileError` naming the
file and line. The pair file (15.7M lines for IJB-C) is parsed with numpy in
one pass; only a file that fails that is re-read line by line to name the
bad line.
"""

import dataclasses
import os

import numpy as np

from facejax.data import files

TARGETS = {'IJBC': ('ijbc', ('G1', 'G2')), 'IJBB': ('ijbb', ('S1', 'S2'))}


@dataclasses.dataclass
class Protocol:
  """One IJB target's images and protocols.

  Attributes:
    target: 'IJBC' or 'IJBB'.
    image_paths: (N,) paths under ``loose_crop/``.
    templates, medias: (N,) int64, each image's template and media.
    landmarks: (N, 5, 2) float32 (x, y) in the loose crop.
    detector_scores: (N,) float32 faceness.
    pairs: (P, 2) int64 template pairs of the 1:1 protocol.
    labels: (P,) bool, True for a genuine pair.
    probes: (templates, subjects) of the 1:N probe set, or None.
    galleries: {'G1': (templates, subjects), ...}, empty without 1:N files.
  """
  target: str
  image_paths: np.ndarray
  templates: np.ndarray
  medias: np.ndarray
  landmarks: np.ndarray
  detector_scores: np.ndarray
  pairs: np.ndarray
  labels: np.ndarray
  probes: tuple = None
  galleries: dict = dataclasses.field(default_factory=dict)


def _fields(path, expected):
  """[(line number, fields)] with exactly ``expected`` fields each."""
  rows = []
  for number, line in files.read_text_lines(path):
    fields = line.split()
    if len(fields) != expected:
      raise files.DataFileError(
          f'{files.where(path, number)}: {len(fields)} fields, expected '
          f'{expected}: {line.strip()[:80]!r}')
    rows.append((number, fields))
  if not rows:
    raise files.DataFileError(f'{path}: no lines')
  return rows


def _number(path, number, text, kind, what):
  try:
    return kind(text)
  except ValueError:
    raise files.DataFileError(
        f'{files.where(path, number)}: {what} {text!r} is not '
        f'{"an integer" if kind is int else "a number"}') from None


def read_face_tid_mid(path):
  """(image names, templates, medias) of ``{t}_face_tid_mid.txt``."""
  rows = _fields(path, 3)
  names = [files.check_relative(fields[0], source=path, line=number)
           for number, fields in rows]
  templates = np.array([_number(path, n, f[1], int, 'template')
                        for n, f in rows], np.int64)
  medias = np.array([_number(path, n, f[2], int, 'media')
                     for n, f in rows], np.int64)
  return names, templates, medias


def read_5pts_score(path):
  """(image names, landmarks (N, 5, 2), scores (N,)) of
  ``{t}_name_5pts_score.txt``."""
  rows = _fields(path, 12)
  names = [files.check_relative(fields[0], source=path, line=number)
           for number, fields in rows]
  values = np.array([[_number(path, n, text, float, 'value')
                      for text in fields[1:]] for n, fields in rows],
                    np.float64)
  if not np.all(np.isfinite(values)):
    line = rows[int(np.argmax(~np.all(np.isfinite(values), axis=1)))][0]
    raise files.DataFileError(f'{files.where(path, line)}: a value is not '
                              'finite')
  return (names, values[:, :10].reshape(-1, 5, 2).astype(np.float32),
          values[:, 10].astype(np.float32))


def _tokens_per_line(text):
  """The number of whitespace-separated fields on each line of ``text``
  (vectorised: the pair file has millions of lines)."""
  data = np.frombuffer(text.encode('utf-8'), np.uint8)
  newline = data == ord('\n')
  blank = newline | (data == ord(' ')) | (data == ord('\t')) | (
      data == ord('\r'))
  starts = ~blank & np.r_[True, blank[:-1]]
  line = np.cumsum(newline) - newline  # the line each byte is on
  return np.bincount(line[starts], minlength=int(newline.sum()) + 1)


def read_pairs(path):
  """(pairs (P, 2) int64, labels (P,) bool) of
  ``{t}_template_pair_label.txt``, parsed in one numpy pass."""
  text = files.read_text(path)
  counts = _tokens_per_line(text)
  if np.any((counts != 0) & (counts != 3)) or not counts.any():
    _fields(path, 3)  # names the first bad line
  try:
    table = np.array(text.split(), dtype=np.int64).reshape(-1, 3)
  except ValueError:
    for number, fields in _fields(path, 3):  # name the first bad value
      for value in fields:
        _number(path, number, value, int, 'value')
    raise
  labels = table[:, 2]
  bad = np.flatnonzero((labels != 0) & (labels != 1))
  if len(bad):
    number = _nonblank_line(path)(bad[0])
    raise files.DataFileError(f'{files.where(path, number)}: label '
                              f'{labels[bad[0]]}, expected 0 or 1')
  return table[:, :2], labels.astype(bool)


def read_nist_templates(path):
  """(templates, subjects, lines) of a NIST 1:N CSV (``TEMPLATE_ID`` and
  ``SUBJECT_ID`` columns; one row per image, so templates repeat: each
  template once, in first-seen order, with the line it was first seen on).
  """
  lines = files.read_text_lines(path)
  if not lines:
    raise files.DataFileError(f'{path}: empty')
  header = [name.strip().upper() for name in lines[0][1].split(',')]
  try:
    template_column = header.index('TEMPLATE_ID')
    subject_column = header.index('SUBJECT_ID')
  except ValueError:
    raise files.DataFileError(
        f'{files.where(path, lines[0][0])}: the header names no TEMPLATE_ID '
        f'and SUBJECT_ID columns: {lines[0][1][:80]!r}') from None
  subject_of, line_of = {}, {}
  for number, line in lines[1:]:
    fields = line.split(',')
    if len(fields) < len(header):
      raise files.DataFileError(
          f'{files.where(path, number)}: {len(fields)} columns, the header '
          f'has {len(header)}')
    template = _number(path, number, fields[template_column].strip(), int,
                       'TEMPLATE_ID')
    subject = _number(path, number, fields[subject_column].strip(), int,
                      'SUBJECT_ID')
    line_of.setdefault(template, number)
    if subject_of.setdefault(template, subject) != subject:
      raise files.DataFileError(
          f'{files.where(path, number)}: template {template} has subject '
          f'{subject} here and {subject_of[template]} before')
  if not subject_of:
    raise files.DataFileError(f'{path}: no rows after the header')
  templates = np.array(list(subject_of), np.int64)
  return (templates, np.array([subject_of[t] for t in templates], np.int64),
          [line_of[t] for t in templates])


def _check_known(templates, known, path, line_of):
  """Names the first row of ``templates`` (in file order) holding a
  template with no image; ``line_of(row)`` is that row's line number."""
  rows = np.asarray(templates).reshape(len(templates), -1)
  unknown = ~np.isin(rows, known)
  if np.any(unknown):
    row = int(np.argmax(unknown.any(axis=1)))
    value = rows[row][unknown[row]][0]
    raise files.DataFileError(
        f'{files.where(path, line_of(row))}: template {value}, which no '
        'image of the face_tid_mid file has')


def _nonblank_line(path):
  """row -> line number of the row-th non-blank line (read on demand: only
  an error needs it)."""
  return lambda row: files.read_text_lines(path)[row][0]


def open_protocol(root, target='IJBC', check_images=True):
  """The :class:`Protocol` of ``target`` under ``root``.

  Raises:
    FileNotFoundError: a required file (named) is missing.
    DataFileError: malformed or inconsistent files (naming file and line),
      or an image missing from ``loose_crop/`` (naming the image and the
      face_tid_mid line).
  """
  if target not in TARGETS:
    raise ValueError(f'target {target!r}: one of {", ".join(TARGETS)}')
  prefix, gallery_names = TARGETS[target]
  meta = os.path.join(root, 'meta')
  tid_mid = os.path.join(meta, f'{prefix}_face_tid_mid.txt')
  five_points = os.path.join(meta, f'{prefix}_name_5pts_score.txt')
  pair_file = os.path.join(meta, f'{prefix}_template_pair_label.txt')
  for required in (tid_mid, five_points, pair_file):
    if not os.path.exists(required):
      raise FileNotFoundError(f'{required}: missing (insightface\'s IJB '
                              'layout: meta/ and loose_crop/ under --root)')
  names, templates, medias = read_face_tid_mid(tid_mid)
  landmark_names, landmarks, scores = read_5pts_score(five_points)
  if len(landmark_names) != len(names):
    raise files.DataFileError(
        f'{five_points}: {len(landmark_names)} lines, {tid_mid} has '
        f'{len(names)}')
  for index, (name, other) in enumerate(zip(names, landmark_names)):
    if name != other:
      raise files.DataFileError(
          f'{files.where(five_points, index + 1)}: image {other!r}, but '
          f'line {index + 1} of {tid_mid} is {name!r}')
  crops = os.path.join(root, 'loose_crop')
  paths = [files.confine(crops, name, source=tid_mid, line=index + 1)
           for index, name in enumerate(names)]
  if check_images:
    for index, path in enumerate(paths):
      if not os.path.isfile(path):
        raise files.DataFileError(
            f'{files.where(tid_mid, index + 1)}: image {names[index]!r} is '
            f'not in {crops}')
  pairs, labels = read_pairs(pair_file)
  _check_known(pairs, templates, pair_file, _nonblank_line(pair_file))
  protocol = Protocol(target, np.array(paths), templates, medias, landmarks,
                      scores, pairs, labels)
  probe_file = os.path.join(meta, f'{prefix}_1N_probe_mixed.csv')
  if os.path.exists(probe_file):
    probe_templates, probe_subjects, lines = read_nist_templates(probe_file)
    _check_known(probe_templates, templates, probe_file, lines.__getitem__)
    protocol.probes = (probe_templates, probe_subjects)
    for name in gallery_names:
      gallery_file = os.path.join(meta, f'{prefix}_1N_gallery_{name}.csv')
      if not os.path.exists(gallery_file):
        raise FileNotFoundError(f'{gallery_file}: missing (the 1:N probe '
                                'file is there, so its galleries must be)')
      gallery, subjects, lines = read_nist_templates(gallery_file)
      _check_known(gallery, templates, gallery_file, lines.__getitem__)
      protocol.galleries[name] = (gallery, subjects)
  return protocol


def write_protocol(root, protocol, prefix='ijbc'):
  """Writes ``protocol``'s meta files under ``root/meta`` in insightface's
  and NIST's layouts (the images themselves are the caller's: their paths
  must lie under ``root/loose_crop``). For synthetic sets and tests."""
  meta = os.path.join(root, 'meta')
  os.makedirs(meta, exist_ok=True)
  crops = os.path.join(root, 'loose_crop')
  names = [os.path.relpath(path, crops) for path in protocol.image_paths]
  with open(os.path.join(meta, f'{prefix}_face_tid_mid.txt'), 'w',
            encoding='utf-8') as f:
    for name, template, media in zip(names, protocol.templates,
                                     protocol.medias):
      f.write(f'{name} {template} {media}\n')
  with open(os.path.join(meta, f'{prefix}_name_5pts_score.txt'), 'w',
            encoding='utf-8') as f:
    for name, points, score in zip(names, protocol.landmarks,
                                   protocol.detector_scores):
      values = ' '.join(f'{v:.2f}' for v in np.asarray(points).reshape(-1))
      f.write(f'{name} {values} {score:.6f}\n')
  with open(os.path.join(meta, f'{prefix}_template_pair_label.txt'), 'w',
            encoding='utf-8') as f:
    for (first, second), label in zip(protocol.pairs, protocol.labels):
      f.write(f'{first} {second} {int(label)}\n')
  csvs = {}
  if protocol.probes is not None:
    csvs['probe_mixed'] = protocol.probes
  csvs.update({f'gallery_{name}': value
               for name, value in protocol.galleries.items()})
  image_of = {}
  for name, template in zip(names, protocol.templates):
    image_of.setdefault(int(template), []).append(name)
  for suffix, (templates, subjects) in csvs.items():
    with open(os.path.join(meta, f'{prefix}_1N_{suffix}.csv'), 'w',
              encoding='utf-8') as f:
      f.write('TEMPLATE_ID,SUBJECT_ID,FILENAME\n')
      for template, subject in zip(templates, subjects):
        for name in image_of.get(int(template), ['none.jpg']):
          f.write(f'{template},{subject},{name}\n')
