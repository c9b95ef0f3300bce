"""The MegaFace devkit's files: feature files, JSON image lists, noise lists.

Pure numpy and the standard library. What the devkit (``devkit/experiments/
run_experiment.py`` and its ``Identification`` / ``FuseResults`` binaries)
reads, as found in public copies of ``run_experiment.py``, of insightface's
MegaFace scripts (``src/megaface/gen_megaface.py``, ``remove_noises.py``,
the noise lists) and of the OpenCV-matrix reader ``matio.py`` that MegaFace
evaluation code copies (the devkit's binaries themselves are closed):

**Feature files.** One file per image, named ``<image path><file ending>``
under a feature root: ``run_experiment.py`` builds
``os.path.join(feature_root, path + file_ending)`` for every ``path`` of its
JSON lists, and takes the file ending (``'_LBP_100x100.bin'`` in its help,
``'_<algo>.bin'`` in insightface's ``run.sh``) on its command line; the
algorithm name is the ending without its leading ``_`` and its extension.
Each file holds one OpenCV matrix, as ``matio.py`` (``read_mat`` /
``write_mat``) reads and writes it::

    int32 rows, int32 cols, int32 row stride in bytes, int32 OpenCV type
    rows * stride bytes of row-major data

all little-endian (``struct`` ``'iiii'`` on x86). The type is ``CV_32F = 5``
(float32, ``stride = 4 * cols``); ``matio.py`` also maps ``CV_64F = 6``,
which the feature files never use. A feature vector of dimension d is a
d x 1 column: insightface's ``gen_megaface.py`` (``write_bin``) writes
``struct.pack('4i', d, 1, 4, 5)`` then d float32 values, which is the same
header (stride 4 = 1 column x 4 bytes). :func:`write_feature` writes that;
:func:`read_feature` accepts any rows x cols float32 matrix and checks the
header against the file's length.

**Image lists** (``devkit/templatelists``). JSON objects of parallel lists:
``facescrub_features_list.json`` has ``"path"`` (image paths relative to
the FaceScrub root, ``<Name>/<file>``) and ``"id"`` (the identity of each
image); the distractor lists
``megaface_features_list.json_<size>_<set>`` (sizes 10 ... 1,000,000, set
1 ... ``--num_sets``) have ``"path"`` (``<a>/<b>/<photo>_<face>.jpg``).
``run_experiment.py`` rewrites them with ``json.dump(..., sort_keys=True,
indent=4)``, as :func:`write_image_list` does.

**Noise lists** (insightface, ``src/megaface/facescrub_noises.txt`` and
``megaface_noises.txt``, used by the ArcFace paper's "cleaned" MegaFace):
plain text, one image per line, after a first line that is a comment
starting with ``#``. ``facescrub_noises.txt`` names 605 FaceScrub images by
file name only (``Aaron_Eckhart_136.png``); ``megaface_noises.txt`` names
719 distractors by path relative to the MegaFace root
(``375/37531198@N00/4174611825_0.jpg``). insightface's ``remove_noises.py``
also accepts ``<anything>\\t<name>`` lines (it keeps the second field).

**Untrusted lists.** A list's ``"path"`` entries name the files read (and,
for ``eval.megaface --write-features``, written) under a root, so each must
stay under it (:func:`facejax.data.files.confine`): an absolute entry or
one that climbs out with ``..`` is refused, naming the list and the entry's
index, when the list is read and again when a path is made
(:func:`feature_path`). The lists are decoded as strict UTF-8 JSON; their
structure (an object of lists of equal lengths, string paths, identities
that are non-negative integers or names) is checked, and feature files with
NaN or infinite values are refused.
"""

import json
import os
import struct

import numpy as np

from facejax.data import files

CV_32F = 5
CV_64F = 6
HEADER = struct.Struct('<4i')  # rows, cols, row stride in bytes, type
_CV_TYPE_NAMES = {0: 'CV_8U', 1: 'CV_8S', 2: 'CV_16U', 3: 'CV_16S',
                  4: 'CV_32S', CV_32F: 'CV_32F', CV_64F: 'CV_64F'}


def file_ending(suffix):
  """The devkit's file ending for an algorithm name: ``'_<suffix>.bin'``.

  ``run_experiment.py`` takes this as its ``file_ending`` argument.

  Raises:
    ValueError: ``suffix`` is empty, or already starts with ``_`` or ends
      with ``.bin`` (which would double them).
  """
  if not suffix or suffix.startswith('_') or suffix.endswith('.bin'):
    raise ValueError(f'algorithm suffix {suffix!r} must be a bare name such '
                     "as 'facejax' (the file ending adds '_' and '.bin')")
  return f'_{suffix}.bin'


def feature_path(root, image_path, suffix):
  """``<root>/<image_path>_<suffix>.bin``: where the devkit looks for a feature.

  Args:
    root: the feature root passed to ``run_experiment.py`` (the FaceScrub or
      the MegaFace one).
    image_path: a ``"path"`` entry of the devkit's JSON lists, relative.
    suffix: the algorithm name, e.g. ``'facejax'`` (see :func:`file_ending`).

  Raises:
    facejax.data.files.UnsafePathError: ``image_path`` would leave ``root``
      (absolute, or climbing out with ``..``).
  """
  return files.confine(root, image_path + file_ending(suffix))


def write_feature(path, vector):
  """Writes one feature file (float32 OpenCV matrix), creating its folder.

  Args:
    path: the file to write.
    vector: a (d,) vector, written as a d x 1 matrix (the header insightface
      and the devkit write: ``d, 1, 4, CV_32F``), or a (rows, cols) matrix.

  Raises:
    ValueError: ``vector`` is empty, not 1-D or 2-D, or not finite.
  """
  matrix = np.asarray(vector)
  if matrix.ndim == 1:
    matrix = matrix[:, None]
  if matrix.ndim != 2 or matrix.size == 0:
    raise ValueError(f'{path}: a feature must be a non-empty vector or '
                     f'matrix, got shape {np.shape(vector)}')
  if not np.all(np.isfinite(matrix)):
    raise ValueError(f'{path}: the feature has NaN or infinite values')
  rows, cols = matrix.shape
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  with open(path, 'wb') as f:
    f.write(HEADER.pack(rows, cols, 4 * cols, CV_32F))
    f.write(np.ascontiguousarray(matrix, dtype='<f4').tobytes())


def read_feature(path):
  """Reads one feature file: the float32 values, flattened to (rows * cols,).

  Raises:
    ValueError (naming the file): shorter than its header, a type other than
      ``CV_32F``, non-positive sizes, a stride other than ``4 * cols``, a
      length other than ``16 + rows * stride`` bytes, a NaN or infinite
      value (its row and column named), or a folder.
    FileNotFoundError: no such file.
  """
  if os.path.isdir(path):
    raise files.DataFileError(f'{path}: is a folder, expected a feature '
                              'file')
  with open(path, 'rb') as f:
    data = f.read()
  if len(data) < HEADER.size:
    raise ValueError(f'{path}: {len(data)} bytes, shorter than the '
                     f'{HEADER.size}-byte header of a MegaFace feature file')
  rows, cols, stride, cv_type = HEADER.unpack_from(data)
  if cv_type != CV_32F:
    name = _CV_TYPE_NAMES.get(cv_type, 'unknown')
    raise ValueError(f'{path}: OpenCV type {cv_type} ({name}); MegaFace '
                     f'feature files are float32 (CV_32F = {CV_32F})')
  if rows <= 0 or cols <= 0:
    raise ValueError(f'{path}: header gives {rows} x {cols} values')
  if stride != 4 * cols:
    raise ValueError(f'{path}: row stride {stride} bytes, expected '
                     f'4 x {cols} columns = {4 * cols}')
  expected = HEADER.size + rows * stride
  if len(data) != expected:
    raise ValueError(f'{path}: {len(data)} bytes, but its header '
                     f'({rows} x {cols} float32) needs {expected}')
  values = np.frombuffer(data, dtype='<f4', offset=HEADER.size).astype(
      np.float32)
  _check_finite(values, cols, path)
  return values


def _check_finite(values, cols, path):
  """A NaN or infinite value would score as garbage: refuse the file."""
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    row, column = divmod(int(bad[0]), cols)
    raise files.DataFileError(
        f'{path}: {values[bad[0]]} at row {row}, column {column} (from 0; '
        f'{bad.size} non-finite values in all); a feature must be finite')


def read_features(paths):
  """Reads feature files into an (n, d) float32 array, in the given order.

  Raises:
    ValueError: a file is invalid (see :func:`read_feature`) or has another
      dimension than the first one (naming both files); no paths.
  """
  paths = list(paths)
  if not paths:
    raise ValueError('read_features needs at least one path')
  first = read_feature(paths[0])
  features = np.empty((len(paths), first.size), np.float32)
  features[0] = first
  for row, path in enumerate(paths[1:], 1):
    vector = read_feature(path)
    if vector.size != first.size:
      raise ValueError(f'{path}: dimension {vector.size}, but {paths[0]} has '
                       f'{first.size}')
    features[row] = vector
  return features


def distractor_list_name(size, set_index=1):
  """``megaface_features_list.json_<size>_<set>``, a devkit distractor list."""
  return f'megaface_features_list.json_{size}_{set_index}'


def _read_json_lists(path, keys):
  """The lists under ``keys`` of a devkit JSON list, their structure checked.

  Raises:
    FileNotFoundError: no such file.
    facejax.data.files.DataFileError (naming the file, and the key or entry):
      not UTF-8 JSON, not an object, a key missing or not a list, lists of
      different lengths, a ``"path"`` entry that is not a string or leaves
      its root.
  """
  content = files.read_json(path)
  if not isinstance(content, dict):
    raise files.DataFileError(f'{path}: expected a JSON object with keys '
                              f'{list(keys)}, got {type(content).__name__}')
  lists = []
  for key in keys:
    if key not in content or not isinstance(content[key], list):
      raise files.DataFileError(f'{path}: no list under the key {key!r} '
                                f'(keys: {sorted(content)})')
    lists.append(content[key])
  if len({len(entries) for entries in lists}) > 1:
    sizes = ', '.join(f'{key}: {len(entries)}'
                      for key, entries in zip(keys, lists))
    raise files.DataFileError(f'{path}: lists of different lengths '
                              f'({sizes})')
  _check_paths(lists[0], path)
  return lists


def _check_paths(entries, path):
  """Each ``"path"`` entry is a string that stays under its root."""
  for index, entry in enumerate(entries):
    if not isinstance(entry, str):
      raise files.DataFileError(f'{path}: "path" entries must be strings; '
                                f'"path"[{index}] is {entry!r}')
    files.check_relative(entry, source=path, key=f'"path"[{index}]')


def _check_ids(ids, path):
  """Identities: non-negative integers (not booleans, not floats) or names.

  The devkit groups probes by equal ids, so a float, a boolean or a
  negative number is a damaged list, and integers mixed with names could
  make ``1`` and ``"1"`` one identity.
  """
  for index, identity in enumerate(ids):
    integer = isinstance(identity, int) and not isinstance(identity, bool)
    if not ((integer and identity >= 0) or (
        isinstance(identity, str) and identity.strip())):
      raise files.DataFileError(
          f'{path}, "id"[{index}]: an identity must be a non-negative '
          f'integer or a non-empty name, got {identity!r}')
  kinds = {type(identity).__name__ for identity in ids}
  if len(kinds) > 1:
    raise files.DataFileError(f'{path}: "id" mixes integers and names; '
                              'use one kind')


def read_distractor_list(path):
  """A devkit distractor list: its ``"path"`` entries, in order.

  Raises:
    ValueError (naming the file): not UTF-8 JSON, no ``"path"`` list of
      strings, or an entry that would leave its root (absolute, ``..``).
    FileNotFoundError: no such file.
  """
  return _read_json_lists(path, ('path',))[0]


def read_probe_list(path):
  """The devkit's FaceScrub list: (``"path"`` entries, ``"id"`` entries).

  Raises:
    ValueError (naming the file): not UTF-8 JSON, a key missing, lists of
      different lengths, a path as :func:`read_distractor_list` refuses, or
      an id that is not a non-negative integer or a non-empty name.
    FileNotFoundError: no such file.
  """
  paths, ids = _read_json_lists(path, ('path', 'id'))
  _check_ids(ids, path)
  return paths, ids


def write_image_list(path, image_paths, ids=None):
  """Writes a devkit JSON list (``sort_keys=True, indent=4``, as the devkit).

  Args:
    path: the file to write.
    image_paths: the ``"path"`` entries.
    ids: the ``"id"`` entries of a probe (FaceScrub) list; None for a
      distractor list.

  Raises:
    ValueError: ``ids`` is not as long as ``image_paths``.
  """
  content = {'path': [str(p) for p in image_paths]}
  if ids is not None:
    ids = [i.item() if isinstance(i, np.generic) else i for i in ids]
    if len(ids) != len(content['path']):
      raise ValueError(f'{path}: {len(ids)} ids for '
                       f'{len(content["path"])} paths')
    content['id'] = ids
  with open(path, 'w') as f:
    json.dump(content, f, sort_keys=True, indent=4)


def read_noise_list(path):
  """The image names of a noise list (insightface's format, see above).

  Lines starting with ``#`` and blank lines are skipped; surrounding
  whitespace is stripped; a line with a tab keeps its second field (as
  insightface's ``remove_noises.py``).

  Returns:
    A set of names: file names (FaceScrub) or relative paths (MegaFace).

  Raises:
    FileNotFoundError: no such file.
    facejax.data.files.DataFileError: a folder, or not UTF-8 (line named).
  """
  names = set()
  for _, line in files.read_text_lines(path):
    line = line.strip()
    if line.startswith('#'):
      continue
    fields = line.split('\t')
    names.add(fields[1].strip() if len(fields) > 1 else line)
  return names


def noise_mask(image_paths, noise_names):
  """Which images of a list are noise: a boolean mask, True to drop.

  A name with a ``/`` (a MegaFace path) matches a path equal to it or ending
  in ``/<name>``; a name without one (a FaceScrub file name) matches any path
  whose file name it is. The mask can be passed as ``probe_exclude`` /
  ``distractor_exclude`` to
  :func:`facejax.metrics.identification.megaface_evaluate`.
  """
  paths = [str(p).replace(os.sep, '/') for p in image_paths]
  file_names = {name for name in noise_names if '/' not in name}
  relative = {name.strip('/') for name in noise_names if '/' in name}
  mask = np.zeros(len(paths), bool)
  for row, image_path in enumerate(paths):
    if image_path.rsplit('/', 1)[-1] in file_names:
      mask[row] = True
      continue
    parts = image_path.strip('/').split('/')
    mask[row] = any('/'.join(parts[i:]) in relative
                    for i in range(len(parts)))
  return mask
