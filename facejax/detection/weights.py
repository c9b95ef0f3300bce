"""MTCNN's released weights, from the ``mtcnn`` package, as Flax parameters.

The weights are Zhang et al.'s Caffe model (MIT, (c) 2016 Kaipeng Zhang),
converted by davidsandberg/facenet and shipped inside the MIT-licensed
``mtcnn`` wheel on PyPI (``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``).
facejax does not copy them: :func:`load_params` finds the installed
package's files with ``importlib.util.find_spec`` (which does not import the
package: importing it imports tensorflow, which GPU hosts lack), reads them
with :func:`facejax.detection.joblib_arrays.read_array_list` (a restricted
unpickler, never ``joblib.load``), converts them and caches the result as an
``.npz`` (read back with ``allow_pickle=False``) under
``$XDG_CACHE_HOME/facejax`` (default ``~/.cache/facejax``), named by the
SHA-256 of the three source files, so a changed package is converted anew.

**Layout.** Each file is the list of the package's Keras model's
``get_weights()``, in the order of :data:`KERAS_LAYOUT`. Keras kernels are
already (kH, kW, in, out) like Flax's, and the package re-laid the Caffe
weights for ordinary (not transposed) images, so the conversion only renames
and reshapes the PReLU slopes ((1, 1, C) -> (C,)); the dense layers keep the
W-major flatten (see :mod:`facejax.detection.nets`). Note the package's
Keras names: its ``conv4-1`` / ``fc5-1`` / ``fc6-1`` are the box regressors,
where the Caffe model's ``conv4-1`` is the classifier; the table maps by
position and shape, not by those names.
"""
import hashlib
import importlib.util
import os
import tempfile

import numpy as np

from facejax.detection import joblib_arrays

NETS = ('pnet', 'rnet', 'onet')

# Per network, the Keras get_weights() order: (Flax path, Keras shape).
KERAS_LAYOUT = {
    'pnet': (
        ('conv1/kernel', (3, 3, 3, 10)), ('conv1/bias', (10,)),
        ('conv1/prelu/negative_slope', (1, 1, 10)),
        ('conv2/kernel', (3, 3, 10, 16)), ('conv2/bias', (16,)),
        ('prelu2/negative_slope', (1, 1, 16)),
        ('conv3/kernel', (3, 3, 16, 32)), ('conv3/bias', (32,)),
        ('prelu3/negative_slope', (1, 1, 32)),
        ('box_regressor/kernel', (1, 1, 32, 4)), ('box_regressor/bias', (4,)),
        ('classifier/kernel', (1, 1, 32, 2)), ('classifier/bias', (2,)),
    ),
    'rnet': (
        ('conv1/kernel', (3, 3, 3, 28)), ('conv1/bias', (28,)),
        ('conv1/prelu/negative_slope', (1, 1, 28)),
        ('conv2/kernel', (3, 3, 28, 48)), ('conv2/bias', (48,)),
        ('prelu2/negative_slope', (1, 1, 48)),
        ('conv3/kernel', (2, 2, 48, 64)), ('conv3/bias', (64,)),
        ('prelu3/negative_slope', (1, 1, 64)),
        ('dense4/kernel', (576, 128)), ('dense4/bias', (128,)),
        ('prelu4/negative_slope', (128,)),
        ('box_regressor/kernel', (128, 4)), ('box_regressor/bias', (4,)),
        ('classifier/kernel', (128, 2)), ('classifier/bias', (2,)),
    ),
    'onet': (
        ('conv1/kernel', (3, 3, 3, 32)), ('conv1/bias', (32,)),
        ('conv1/prelu/negative_slope', (1, 1, 32)),
        ('conv2/kernel', (3, 3, 32, 64)), ('conv2/bias', (64,)),
        ('prelu2/negative_slope', (1, 1, 64)),
        ('conv3/kernel', (3, 3, 64, 64)), ('conv3/bias', (64,)),
        ('prelu3/negative_slope', (1, 1, 64)),
        ('conv4/kernel', (2, 2, 64, 128)), ('conv4/bias', (128,)),
        ('prelu4/negative_slope', (1, 1, 128)),
        ('dense5/kernel', (1152, 256)), ('dense5/bias', (256,)),
        ('prelu5/negative_slope', (256,)),
        ('box_regressor/kernel', (256, 4)), ('box_regressor/bias', (4,)),
        ('landmark_regressor/kernel', (256, 10)),
        ('landmark_regressor/bias', (10,)),
        ('classifier/kernel', (256, 2)), ('classifier/bias', (2,)),
    ),
}

_INSTALL_HINT = ('MTCNN\'s weights come from the mtcnn package: pip install '
                 'mtcnn (facejax reads its weight files only; its code and '
                 'tensorflow are not needed)')


class WeightsError(RuntimeError):
  """The ``mtcnn`` package or its weight files are missing or unusable."""


def package_weight_files():
  """{net: path} of the installed ``mtcnn`` package's weight files.

  Found without importing the package.

  Raises:
    WeightsError: the package is not installed, or a file is missing.
  """
  spec = importlib.util.find_spec('mtcnn')
  if spec is None or not spec.submodule_search_locations:
    raise WeightsError(f'the mtcnn package is not installed. {_INSTALL_HINT}')
  folder = os.path.join(list(spec.submodule_search_locations)[0], 'assets',
                        'weights')
  files = {net: os.path.join(folder, f'{net}.lz4') for net in NETS}
  missing = [path for path in files.values() if not os.path.isfile(path)]
  if missing:
    raise WeightsError(f'the mtcnn package has no weight file '
                       f'{", ".join(missing)}; reinstall it. {_INSTALL_HINT}')
  return files


def cache_dir():
  """``$XDG_CACHE_HOME/facejax``, or ``~/.cache/facejax``."""
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'facejax')


def _sha256(paths):
  digest = hashlib.sha256()
  for path in paths:
    with open(path, 'rb') as f:
      digest.update(hashlib.sha256(f.read()).digest())
  return digest.hexdigest()


def keras_to_flax(net, arrays, source='arrays'):
  """One network's Keras ``get_weights()`` list as a Flax params dict.

  Args:
    net: 'pnet', 'rnet' or 'onet'.
    arrays: the list, in :data:`KERAS_LAYOUT` order.
    source: what the list came from, for messages.

  Returns:
    ``{'params': {layer: {name: float32 array}}}``.

  Raises:
    WeightsError: a different number of arrays or a shape that does not
      match the layout (the message names the first one).
  """
  layout = KERAS_LAYOUT[net]
  if len(arrays) != len(layout):
    raise WeightsError(f'{source}: {len(arrays)} arrays, but {net} has '
                       f'{len(layout)} in the mtcnn package\'s layout')
  params = {}
  for index, ((path, shape), array) in enumerate(zip(layout, arrays)):
    if tuple(array.shape) != shape:
      raise WeightsError(f'{source}: array {index} ({net} {path}) has shape '
                         f'{tuple(array.shape)}, expected {shape}')
    value = np.asarray(array, np.float32)
    if path.endswith('negative_slope'):
      value = value.reshape(-1)
    _set(params, path, value)
  return {'params': params}


def _set(tree, path, value):
  """``tree[a][b]...[z] = value`` for ``path`` 'a/b/.../z'."""
  *modules, name = path.split('/')
  for module in modules:
    tree = tree.setdefault(module, {})
  tree[name] = value


def _flatten(tree, prefix=''):
  """{'a/b/c': leaf} of a nested dict."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}/'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _unflatten(arrays):
  variables = {net: {'params': {}} for net in NETS}
  for key, value in arrays.items():
    net, path = key.split('/', 1)
    _set(variables[net]['params'], path, value)
  return variables


def _converted_shapes():
  """{'net/layer/name': shape} of what :func:`keras_to_flax` returns."""
  return {f'{net}/{path}': ((int(np.prod(shape)),)
                            if path.endswith('negative_slope') else shape)
          for net in NETS for path, shape in KERAS_LAYOUT[net]}


def _read_cache(path):
  """The cached variables, or None when absent or not what we wrote."""
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
  except (OSError, ValueError, EOFError):
    return None
  shapes = {key: value.shape for key, value in arrays.items()}
  if shapes != _converted_shapes() or any(
      value.dtype != np.float32 for value in arrays.values()):
    return None
  return _unflatten(arrays)


def _write_cache(path, variables):
  """Writes atomically; a cache that cannot be written is skipped."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path),
                                         suffix='.npz.tmp')
    with os.fdopen(handle, 'wb') as f:
      np.savez(f, **{key.replace('/params/', '/', 1): value
                     for key, value in _flatten(variables).items()})
    os.replace(temporary, path)
  except OSError:
    pass


def load_params(files=None, cache=True):
  """{'pnet', 'rnet', 'onet'} -> Flax variables of the released MTCNN.

  Args:
    files: {net: path} of joblib weight files in the ``mtcnn`` package's
      layout; default :func:`package_weight_files`.
    cache: read and write the converted arrays under :func:`cache_dir`.

  Raises:
    WeightsError: the package is missing or a file has the wrong layout.
    facejax.detection.joblib_arrays.UnsafePickleError: a file asks for more
      than numpy arrays (nothing of it is run).
    pickle.UnpicklingError: a file is truncated or corrupt.
  """
  files = package_weight_files() if files is None else files
  paths = [files[net] for net in NETS]
  cached = os.path.join(cache_dir(), f'mtcnn-{_sha256(paths)}.npz')
  if cache:
    variables = _read_cache(cached)
    if variables is not None:
      return variables
  variables = {net: keras_to_flax(net, joblib_arrays.read_array_list(path),
                                  source=path)
               for net, path in zip(NETS, paths)}
  if cache:
    _write_cache(cached, variables)
  return variables
