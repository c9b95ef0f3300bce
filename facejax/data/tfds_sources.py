"""Loads tensorflow-datasets' ``lfw`` and ``celeb_a`` offline.

:func:`load` returns a ``tf.data.Dataset`` of the builder's dict examples
and never touches the network unless asked to (``allow_download=True``):

1. If the dataset is prepared in ``data_dir`` (``<data_dir>/<name>/<version>``
   holds its ``dataset_info.json``), it is read from there.
2. Otherwise, if the manual directory holds the original files the builder
   downloads, under the names below, it is prepared from them first:

   * ``lfw``: ``lfw.tgz`` (the ``lfw/<Name>/<Name>_0001.jpg`` tree of 250x250
     JPEGs; the archive tensorflow-datasets fetches from figshare, the same as
     scikit-learn's).
   * ``celeb_a``: ``img_align_celeba.zip`` (``img_align_celeba/000001.jpg``
     ..., 218x178 JPEGs), ``list_eval_partition.txt``,
     ``list_attr_celeba.txt``, ``list_landmarks_align_celeba.txt`` and
     ``identity_CelebA.txt``: the builder reads all five.

   :func:`source_files` lists them with their URLs, sizes and sha256, read
   from the builder's own ``checksums.tsv``.
3. Otherwise it raises :class:`SourceFilesNotFoundError`, which names the
   files, the manual directory and the data directory it checked.

**How tensorflow-datasets is made to use the local files.** In 4.9.10 the
``DownloadManager`` already looks for every URL's file in its manual
directory before it downloads (``_get_manually_downloaded_path``): when
``<manual_dir>/<filename>`` exists, where ``filename`` is the fourth column of
the builder's ``checksums.tsv``, it takes that file as the download, hashes it
and compares it with the registered size and sha256 (a mismatch raises its
``NonMatchingChecksumError``). So preparing is the public
``builder.download_and_prepare(download_config=DownloadConfig(
manual_dir=..., try_download_gcs=False))``; the archive is extracted (lfw)
into a temporary directory under ``<data_dir>/downloads`` that is removed
afterwards. This module checks that every file is there before it calls
tensorflow-datasets (so nothing is downloaded for a missing one) and checks
the sha256 itself first, to fail with an error that names the file.

``verify_checksums=False`` (for files that are not the published ones, such
as test fixtures) is the one place that relies on tensorflow-datasets'
internals: for that call the builder's ``_make_download_manager`` is wrapped
so that the manager's expected ``UrlInfo`` for each local file (its private
``_url_infos``) is the file's own size and sha256. If a later
tensorflow-datasets changes those, ``verify_checksums=False`` raises a
``RuntimeError`` saying so; the default path does not use them.

The default data directory is tensorflow-datasets': ``$TFDS_DATA_DIR`` (read
when called) or ``~/tensorflow_datasets``; the default manual directory is
tensorflow-datasets' too, ``<data_dir>/downloads/manual``.

tensorflow-datasets 4.9.10 imports ``importlib_resources`` when it looks for
a builder's ``checksums.tsv`` but declares it only for Python < 3.9, so
facejax lists it among its own dependencies.

tensorflow and tensorflow_datasets are imported inside the functions:
importing this module imports neither.
"""
import collections
import contextlib
import os
import shutil
import tempfile

from facejax.data import files

SUPPORTED_DATASETS = ('lfw', 'celeb_a')

SourceFile = collections.namedtuple('SourceFile', 'filename url size sha256')
SourceFile.__doc__ = """One file that a builder downloads.

Attributes:
  filename: the name the file must have in the manual directory.
  url: where tensorflow-datasets downloads it from.
  size: its size in bytes, as registered by tensorflow-datasets.
  sha256: its sha256, hex, as registered by tensorflow-datasets.
"""


class SourceFilesNotFoundError(FileNotFoundError):
  """The dataset is not prepared and its source files are not all present.

  Attributes:
    name: the dataset.
    missing: the :class:`SourceFile` s not found in ``manual_dir``.
    manual_dir: the manual directory checked.
    data_dir: the data directory checked.
  """

  def __init__(self, message, name, missing, manual_dir, data_dir):
    super().__init__(message)
    self.name = name
    self.missing = missing
    self.manual_dir = manual_dir
    self.data_dir = data_dir


class ChecksumMismatchError(ValueError):
  """A file's sha256 is not the one tensorflow-datasets registers for it.

  Attributes:
    path: the file.
    expected_sha256: the registered sha256.
    actual_sha256: the file's sha256.
  """

  def __init__(self, message, path, expected_sha256, actual_sha256):
    super().__init__(message)
    self.path = path
    self.expected_sha256 = expected_sha256
    self.actual_sha256 = actual_sha256


def _check_name(name):
  if name not in SUPPORTED_DATASETS:
    raise ValueError(
        f'unsupported dataset {name!r}: this module loads '
        f'{", ".join(repr(n) for n in SUPPORTED_DATASETS)}')


def _import_tfds():
  import tensorflow_datasets  # pylint: disable=g-import-not-at-top
  return tensorflow_datasets


def default_data_dir():
  """Returns tensorflow-datasets' default data directory, read now.

  ``$TFDS_DATA_DIR`` when set, else ``~/tensorflow_datasets``.
  tensorflow-datasets reads the variable once, when it is imported; this reads
  it at every call.
  """
  return os.environ.get(
      'TFDS_DATA_DIR',
      os.path.join(os.path.expanduser('~'), 'tensorflow_datasets'))


def _resolve_data_dir(data_dir):
  if data_dir is None:
    return default_data_dir()
  return os.path.expanduser(os.fspath(data_dir))


def _resolve_manual_dir(manual_dir, data_dir):
  if manual_dir is None:
    return os.path.join(data_dir, 'downloads', 'manual')
  return os.path.expanduser(os.fspath(manual_dir))


def source_files(name):
  """Lists the files the builder downloads, as registered in its checksums.

  Args:
    name: ``'lfw'`` or ``'celeb_a'``.

  Returns:
    A list of :class:`SourceFile`, sorted by file name.

  Raises:
    ValueError: an unsupported ``name``.
  """
  _check_name(name)
  tfds = _import_tfds()
  url_infos = tfds.builder_cls(name).url_infos or {}
  return sorted(
      (SourceFile(filename=info.filename, url=url, size=int(info.size),
                  sha256=info.checksum)
       for url, info in url_infos.items()),
      key=lambda source: source.filename or '')



def _verify(name, source, path):
  """Raises ChecksumMismatchError when ``path`` is not the registered file."""
  actual = files.sha256_of_file(path)
  if actual != source.sha256:
    size = os.path.getsize(path)
    raise ChecksumMismatchError(
        f'{path}: sha256 {actual} ({size} bytes) is not the sha256 '
        f'{source.sha256} ({source.size} bytes) that tensorflow-datasets '
        f'registers for {name}\'s {source.filename} ({source.url}): the file '
        'is truncated, corrupt or another release of it. Download it again, '
        'or pass verify_checksums=False to prepare the dataset from it '
        'anyway.', path, source.sha256, actual)


def _missing_files_error(name, builder, sources, missing, manual_dir):
  data_path = os.fspath(builder.data_path)
  listing = '\n'.join(
      f'  {source.filename}'
      f'{"  (missing)" if source in missing else "  (found)"}: {source.url} '
      f'({source.size} bytes, sha256 {source.sha256})'
      for source in sources)
  return SourceFilesNotFoundError(
      f'{name} {builder.version} is not prepared in the data directory '
      f'{builder.data_dir_root} (no {data_path}{os.sep}dataset_info.json), '
      f'and the manual directory {manual_dir} lacks '
      f'{", ".join(source.filename for source in missing)}. To prepare it '
      f'without the network, put these files, under exactly these names, in '
      f'{manual_dir} (or pass manual_dir= the directory that holds them):\n'
      f'{listing}\n'
      'or pass allow_download=True to let tensorflow-datasets download the '
      'missing ones.', name, missing, manual_dir, builder.data_dir_root)


@contextlib.contextmanager
def _accepting_local_files(builder, local_url_infos):
  """Makes ``builder``'s download manager expect the local files' checksums.

  Relies on tensorflow-datasets 4.9.x internals: ``DatasetBuilder.
  _make_download_manager`` and ``DownloadManager._url_infos``, the
  ``{url: UrlInfo}`` the manager validates downloads and manual files against.

  Args:
    builder: the dataset builder.
    local_url_infos: ``{url: UrlInfo}`` of the local files.

  Yields:
    Nothing; the builder is restored on exit.
  """
  make_download_manager = getattr(builder, '_make_download_manager', None)
  if make_download_manager is None:
    raise RuntimeError(
        'verify_checksums=False needs DatasetBuilder._make_download_manager, '
        'which this tensorflow-datasets does not have: use the published '
        'files with verify_checksums=True')

  def make_accepting_download_manager(*args, **kwargs):
    download_manager = make_download_manager(*args, **kwargs)
    expected = getattr(download_manager, '_url_infos', None)
    if not isinstance(expected, dict):
      raise RuntimeError(
          'verify_checksums=False needs DownloadManager._url_infos, which '
          'this tensorflow-datasets does not have: use the published files '
          'with verify_checksums=True')
    expected.update(local_url_infos)
    return download_manager

  builder._make_download_manager = make_accepting_download_manager
  try:
    yield
  finally:
    del builder._make_download_manager


@contextlib.contextmanager
def _temporary_extract_dir(data_dir):
  downloads = os.path.join(data_dir, 'downloads')
  os.makedirs(downloads, exist_ok=True)
  extract_dir = tempfile.mkdtemp(prefix='extracted.tmp.', dir=downloads)
  try:
    yield extract_dir
  finally:
    shutil.rmtree(extract_dir, ignore_errors=True)


def prepare(name, data_dir=None, manual_dir=None, verify_checksums=True,
            allow_download=False):
  """Returns the builder of ``name``, prepared from local files if need be.

  Args:
    name: ``'lfw'`` or ``'celeb_a'``.
    data_dir: tensorflow-datasets' data directory; default
      :func:`default_data_dir`.
    manual_dir: the directory holding the original files (see
      :func:`source_files`); default ``<data_dir>/downloads/manual``. Read
      only when the dataset is not prepared in ``data_dir``.
    verify_checksums: check each local file's sha256 against the one
      tensorflow-datasets registers for it. Turn off only for files known
      to differ from the published ones (test fixtures).
    allow_download: let tensorflow-datasets download the files missing from
      ``manual_dir`` (the files present there are still used).

  Returns:
    The prepared ``tfds.core.DatasetBuilder``.

  Raises:
    ValueError: an unsupported ``name``.
    SourceFilesNotFoundError: the dataset is not prepared, files are missing
      from ``manual_dir`` and ``allow_download`` is false.
    ChecksumMismatchError: a local file's sha256 is not the registered one
      and ``verify_checksums`` is true.
  """
  _check_name(name)
  tfds = _import_tfds()
  data_dir = _resolve_data_dir(data_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  manual_dir = _resolve_manual_dir(manual_dir, data_dir)
  sources = source_files(name)
  local_paths = {source: os.path.join(manual_dir, source.filename)
                 for source in sources}
  missing = [source for source in sources
             if not os.path.isfile(local_paths[source])]
  if missing and not allow_download:
    raise _missing_files_error(name, builder, sources, missing, manual_dir)
  present = [source for source in sources if source not in missing]
  if verify_checksums:
    for source in present:
      _verify(name, source, local_paths[source])
    accepting = contextlib.nullcontext()
  else:
    compute_url_info = tfds.download.checksums.compute_url_info
    accepting = _accepting_local_files(
        builder, {source.url: compute_url_info(local_paths[source])
                  for source in present})
  with _temporary_extract_dir(data_dir) as extract_dir, accepting:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir, extract_dir=extract_dir,
            try_download_gcs=False))
  return builder


def builder_info(name, data_dir=None):
  """Returns the ``tfds.core.DatasetInfo`` of ``name`` in ``data_dir``.

  Its splits and example counts are filled in when the dataset is prepared
  there. Prepares nothing and touches no network.

  Args:
    name: ``'lfw'`` or ``'celeb_a'``.
    data_dir: tensorflow-datasets' data directory; default
      :func:`default_data_dir`.

  Raises:
    ValueError: an unsupported ``name``.
  """
  _check_name(name)
  tfds = _import_tfds()
  return tfds.builder(name, data_dir=_resolve_data_dir(data_dir)).info


def load(name, split, data_dir=None, manual_dir=None, shuffle_files=False,
         read_config=None, verify_checksums=True, allow_download=False):
  """Returns a split of ``name`` as a ``tf.data.Dataset`` of dict examples.

  Reads the dataset prepared in ``data_dir``; when it is not prepared there,
  prepares it first from the original files in ``manual_dir``
  (:func:`prepare`). No network unless ``allow_download``.

  ``lfw`` has the split ``'train'``, examples ``{'image': uint8 [250, 250,
  3], 'label': string (the person's name)}``. ``celeb_a`` has ``'train'``,
  ``'validation'`` and ``'test'``, examples ``{'image': uint8 [218, 178, 3],
  'attributes': {40 names: bool}, 'landmarks': {10 names: int64},
  'identity': {'Identity_No': int64}}``.

  Args:
    name: ``'lfw'`` or ``'celeb_a'``.
    split: a tensorflow-datasets split, e.g. ``'train'`` or
      ``'train[:10%]'``.
    data_dir: tensorflow-datasets' data directory; default
      :func:`default_data_dir`.
    manual_dir: the directory holding the original files; default
      ``<data_dir>/downloads/manual``.
    shuffle_files: shuffle the order of the dataset's shard files.
    read_config: an optional ``tfds.ReadConfig``.
    verify_checksums: see :func:`prepare`.
    allow_download: see :func:`prepare`.

  Returns:
    The ``tf.data.Dataset``.

  Raises:
    ValueError: an unsupported ``name``.
    SourceFilesNotFoundError: see :func:`prepare`.
    ChecksumMismatchError: see :func:`prepare`.
  """
  builder = prepare(name, data_dir=data_dir, manual_dir=manual_dir,
                    verify_checksums=verify_checksums,
                    allow_download=allow_download)
  return builder.as_dataset(split=split, shuffle_files=shuffle_files,
                            read_config=read_config)
