"""insightface arcface_torch backbones -> facejax models, exactly.

arcface_torch (insightface's PyTorch training code) saves a backbone as its
``state_dict``. Its IResNet and MobileFaceNet ("mbf") compute what facejax's
``IResNet`` and ``MobileFaceNet`` compute, name for name, so an import is a
table of key patterns (``_IRESNET_RULES``, ``_MOBILEFACENET_RULES``) and
four layout changes:

* conv kernels: torch (O, I / groups, kh, kw) -> flax (kh, kw, I / groups,
  O);
* the embedding layer: torch flattens NCHW maps, facejax NHWC ones, so the
  rows of the dense kernel are permuted:
  ``W.reshape(E, C, H, W).transpose(2, 3, 1, 0).reshape(H * W * C, E)``.
  A plain transpose gives embeddings with cosine near 0 to the right ones;
* batch norms: weight -> scale, bias -> bias, running_mean / running_var ->
  the ``batch_stats`` mean / var; ``num_batches_tracked`` is dropped;
* IResNet's last BatchNorm1d (``features``) has its weight frozen at 1 in
  arcface_torch and facejax has no scale there. A weight other than 1 is
  folded exactly for inference: with ``z = W x + c`` and
  ``y = g (z - m) / sqrt(v + eps) + b``, scaling ``W``, ``c`` and ``m`` by
  ``g`` (``v`` unchanged) gives the same ``y``. (In train mode a batch norm
  re-normalises ``g z``, so fine-tuning such a fold loses ``g``; the
  conversion notes say when it happened.) MobileFaceNet learns that scale,
  and facejax's ``MobileFaceNet(output_norm_scale=True)`` keeps it.

The architecture (IResNet-18/34/50/100/200 or any other units per stage;
MobileFaceNet of any scale whose second stem block is a grouped conv) and
its sizes (widths, embedding size, input size) are read off the keys and
shapes. Given ``arch`` (a name of :mod:`facejax.models`), the units per
stage or block layout come from that name instead, and a checkpoint that
does not fit it is refused, naming the first key that has no place.
"""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np

from facejax import models
from facejax.interop.errors import ConversionError

_BATCH_NORM_FIELDS = {
    'weight': ('params', 'scale'),
    'bias': ('params', 'bias'),
    'running_mean': ('batch_stats', 'mean'),
    'running_var': ('batch_stats', 'var'),
}

# (key pattern, facejax module path as a format string of the groups, kind)
# where kind is 'conv', 'prelu', 'norm', 'dense_kernel', 'dense_bias' or
# 'output_norm'. Groups named ``s``/``u`` are 1-based stages / 0-based units.
_IRESNET_RULES = (
    (r'conv1\.weight', 'stem/conv', 'conv'),
    (r'bn1\.(?P<f>\w+)', 'stem/norm', 'norm'),
    (r'prelu\.weight', 'stem/prelu', 'prelu'),
    (r'layer(?P<s>\d+)\.(?P<u>\d+)\.bn(?P<k>[123])\.(?P<f>\w+)',
     'stage{s}/unit{u}/norm{k}', 'norm'),
    (r'layer(?P<s>\d+)\.(?P<u>\d+)\.conv(?P<k>[12])\.weight',
     'stage{s}/unit{u}/conv{k}', 'conv'),
    (r'layer(?P<s>\d+)\.(?P<u>\d+)\.prelu\.weight', 'stage{s}/unit{u}/prelu',
     'prelu'),
    (r'layer(?P<s>\d+)\.(?P<u>\d+)\.downsample\.0\.weight',
     'stage{s}/unit{u}/shortcut_conv', 'conv'),
    (r'layer(?P<s>\d+)\.(?P<u>\d+)\.downsample\.1\.(?P<f>\w+)',
     'stage{s}/unit{u}/shortcut_norm', 'norm'),
    (r'bn2\.(?P<f>\w+)', 'head/input_norm', 'norm'),
    (r'fc\.weight', 'head/dense', 'dense_kernel'),
    (r'fc\.bias', 'head/dense', 'dense_bias'),
    (r'features\.(?P<f>\w+)', 'head/output_norm', 'output_norm'),
)

# arcface_torch's MobileFaceNet: ``layers.0`` the stem, ``layers.1`` the
# grouped stem conv, ``layers.2/4/6`` a strided DepthWise block each and
# ``layers.3/5/7`` Residual groups; facejax numbers its bottleneck rows as
# the paper's Table 1 does: row 0 = layers.2 + layers.3, row 1 = layers.4,
# row 2 = layers.5, row 3 = layers.6, row 4 = layers.7.
_MBF_BLOCK_PARTS = ('expand', 'depthwise', 'project')
_CONV_BLOCK_PARTS = ('conv', 'norm', 'prelu')
_MBF_STRIDED_ROWS = {'2': 0, '4': 1, '6': 3}
_MBF_RESIDUAL_ROWS = {'3': (0, 1), '5': (2, 0), '7': (4, 0)}
_MBF_ROW_STRIDES = (2, 2, 1, 2, 1)
_MOBILEFACENET_RULES = (
    (r'layers\.0\.layers\.(?P<k>[012])\.(?P<f>\w+)', 'stem/{k}', 'block'),
    (r'layers\.1\.layers\.(?P<k>[012])\.(?P<f>\w+)', 'stem_depthwise/{k}',
     'block'),
    (r'layers\.(?P<row>[246])\.layers\.(?P<j>[012])\.layers\.(?P<k>[012])'
     r'\.(?P<f>\w+)', 'bottleneck{row}_0/{j}/{k}', 'block'),
    (r'layers\.(?P<group>[357])\.layers\.(?P<i>\d+)\.layers\.(?P<j>[012])'
     r'\.layers\.(?P<k>[012])\.(?P<f>\w+)', 'bottleneck{row}_{i}/{j}/{k}',
     'block'),
    (r'conv_sep\.layers\.(?P<k>[012])\.(?P<f>\w+)', 'expand/{k}', 'block'),
    (r'features\.layers\.0\.layers\.(?P<k>[01])\.(?P<f>\w+)', 'gdconv/{k}',
     'block'),
    (r'features\.layers\.2\.weight', 'head/dense', 'dense_kernel'),
    (r'features\.layers\.3\.(?P<f>\w+)', 'head/output_norm', 'norm'),
)

_FAMILIES = {'iresnet': _IRESNET_RULES, 'mobilefacenet': _MOBILEFACENET_RULES}

Conversion = collections.namedtuple(
    'Conversion', 'name kwargs image_size variables notes')
Conversion.__doc__ = """An imported backbone.

Attributes:
  name, kwargs: ``facejax.models.get(name, **kwargs)`` builds it.
  image_size: the input side it was trained at (112 for the released ones).
  variables: ``{'params', 'batch_stats'}`` as float32 jax arrays.
  notes: what the conversion did beyond renaming (folds), for the record.
"""


def as_arrays(state_dict):
  """The state dict's entries as float32 numpy arrays, ``module.`` stripped
  (DataParallel and DistributedDataParallel add it), counters dropped."""
  arrays = {}
  for key, value in state_dict.items():
    key = str(key)
    if key.endswith('num_batches_tracked'):
      continue
    if hasattr(value, 'detach'):  # a torch tensor
      value = value.detach().cpu().float().numpy()
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
      raise ConversionError(f'key {key!r}: {array.dtype} values, expected '
                            'floating-point weights')
    if not np.all(np.isfinite(array)):
      raise ConversionError(f'key {key!r}: holds NaN or infinite values')
    arrays[key[len('module.'):] if key.startswith('module.') else key] = (
        array.astype(np.float32))
  if not arrays:
    raise ConversionError('the state dict holds no weights')
  return arrays


def _match(rules, key):
  for pattern, path, kind in rules:
    found = re.fullmatch(pattern, key)
    if found:
      return found.groupdict(), path, kind
  return None


def family_of(arrays):
  """'iresnet' or 'mobilefacenet', from the keys.

  Raises:
    ConversionError: the keys fit neither; names the first key that has no
      place in the family it resembles most.
  """
  placed = {name: [key for key in arrays if _match(rules, key) is None]
            for name, rules in _FAMILIES.items()}
  for name in ('mobilefacenet', 'iresnet'):
    if not placed[name] and any(_match(_FAMILIES[name][0:1], key)
                                for key in arrays):
      return name
  closest = min(placed, key=lambda name: len(placed[name]))
  raise ConversionError(
      'not an arcface_torch IResNet or MobileFaceNet state dict: key '
      f'{placed[closest][0]!r} has no place in a{"n" * (closest[0] == "i")} '
      f'{closest} ({len(placed[closest])} of {len(arrays)} keys unplaced)')


def _require(arrays, key, family):
  if key not in arrays:
    raise ConversionError(f'no {key!r} in the state dict of this {family}')
  return arrays[key]


def _spatial_side(inputs, channels, key):
  side = int(round((inputs / channels) ** 0.5))
  if side * side * channels != inputs:
    raise ConversionError(f'key {key!r}: {inputs} inputs are not a square '
                          f'map of {channels} channels')
  return side


def _iresnet_shapes(arrays):
  """(kwargs, image_size) of an arcface_torch IResNet state dict."""
  stages = collections.defaultdict(set)
  for key in arrays:
    found = re.match(r'layer(\d+)\.(\d+)\.', key)
    if found:
      stages[int(found.group(1))].add(int(found.group(2)))
  if sorted(stages) != list(range(1, len(stages) + 1)) or not stages:
    raise ConversionError(f'IResNet stages {sorted(stages)}: expected '
                          'layer1, layer2, ... with no gap')
  stage_units = tuple(max(stages[s]) + 1 for s in sorted(stages))
  stage_features = tuple(
      int(_require(arrays, f'layer{s}.0.conv1.weight', 'IResNet').shape[0])
      for s in sorted(stages))
  fc = _require(arrays, 'fc.weight', 'IResNet')
  side = _spatial_side(fc.shape[1], stage_features[-1], 'fc.weight')
  kwargs = dict(
      stage_units=stage_units, stage_features=stage_features,
      stem_features=int(_require(arrays, 'conv1.weight', 'IResNet').shape[0]),
      embedding_dim=int(fc.shape[0]))
  return kwargs, side * 2 ** len(stage_units)


def _mobilefacenet_shapes(arrays):
  """(kwargs, image_size) of an arcface_torch MobileFaceNet state dict."""
  family = 'MobileFaceNet'
  stem = _require(arrays, 'layers.0.layers.0.weight', family)
  stem_features = int(stem.shape[0])
  second = _require(arrays, 'layers.1.layers.0.weight', family)
  stem_groups = stem_features // int(second.shape[1])
  units = collections.defaultdict(set)
  for key in arrays:
    found = re.match(r'layers\.([357])\.layers\.(\d+)\.', key)
    if found:
      units[found.group(1)].add(int(found.group(2)))
  repeats = [1, 1, 1, 1, 1]
  for group, (row, offset) in _MBF_RESIDUAL_ROWS.items():
    repeats[row] = offset + (max(units[group]) + 1 if units[group] else 0)
  first_units = {0: 'layers.2', 1: 'layers.4', 2: 'layers.5.layers.0',
                 3: 'layers.6', 4: 'layers.7.layers.0'}
  bottlenecks = []
  for row, prefix in first_units.items():
    if not repeats[row]:
      raise ConversionError(f'MobileFaceNet row {row} has no blocks '
                            f'({prefix} is missing)')
    expand_key = f'{prefix}.layers.0.layers.0.weight'
    expand = _require(arrays, expand_key, family)
    project = _require(arrays, f'{prefix}.layers.2.layers.0.weight', family)
    hidden, inputs = int(expand.shape[0]), int(expand.shape[1])
    if hidden % inputs:
      raise ConversionError(
          f'key {expand_key!r}: expands {inputs} channels to {hidden}, not '
          'a whole multiple, which facejax MobileFaceNet cannot express')
    bottlenecks.append((hidden // inputs, int(project.shape[0]),
                        repeats[row], _MBF_ROW_STRIDES[row]))
  dense = _require(arrays, 'features.layers.2.weight', family)
  gdconv = _require(arrays, 'features.layers.0.layers.0.weight', family)
  kwargs = dict(
      embedding_dim=int(dense.shape[0]), bottlenecks=tuple(bottlenecks),
      stem_features=stem_features,
      stem_groups=0 if stem_groups == stem_features else stem_groups,
      expanded_features=int(_require(
          arrays, 'conv_sep.layers.0.weight', family).shape[0]),
      output_norm_scale=True)
  return kwargs, int(gdconv.shape[-1]) * 16


_SHAPES = {'iresnet': _iresnet_shapes, 'mobilefacenet': _mobilefacenet_shapes}
_CLASSES = {'iresnet': 'IResNet', 'mobilefacenet': 'MobileFaceNet'}
# The attributes a name of facejax.models fixes for its family: an ``arch``
# takes these from the name, the sizes from the state dict.
_STRUCTURE = {'iresnet': ('stage_units',),
              'mobilefacenet': ('bottlenecks', 'stem_groups')}


def _plain(value):
  """Lists and tuples alike (a config read back from JSON has lists)."""
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def _name_for(family, kwargs):
  """The :mod:`facejax.models` name whose defaults are this architecture
  (any embedding size), else the family's own name (``iresnet``,
  ``mobilefacenet``), the keyword arguments saying the rest."""
  for name in models.names():
    model = models.get(name)
    if name != family and type(model).__name__ == _CLASSES[family] and all(
        _plain(getattr(model, key)) == _plain(value)
        for key, value in kwargs.items() if key != 'embedding_dim'):
      return name
  return family


def _facejax_path(family, groups, path, kind):
  """The module path (tuple) and kind of one key's rule, resolved."""
  if family == 'mobilefacenet':
    if 'group' in groups:
      row, offset = _MBF_RESIDUAL_ROWS[groups['group']]
      groups = dict(groups, row=row, i=int(groups['i']) + offset)
    elif 'row' in groups:
      groups = dict(groups, row=_MBF_STRIDED_ROWS[groups['row']])
    if 'j' in groups:
      groups['j'] = _MBF_BLOCK_PARTS[int(groups['j'])]
    if kind == 'block':
      part = _CONV_BLOCK_PARTS[int(groups['k'])]
      groups['k'] = part
      kind = part
  return tuple(path.format(**groups).split('/')), kind


def _leaf(kind, field, array, dense_channels):
  """(collection, leaf name, value) of one key, in facejax's layout."""
  if kind == 'conv':
    return 'params', 'kernel', array.transpose(2, 3, 1, 0)
  if kind == 'prelu':
    return 'params', 'negative_slope', array.reshape(-1)
  if kind == 'dense_kernel':
    out, inputs = array.shape
    side = _spatial_side(inputs, dense_channels, 'dense')
    return 'params', 'kernel', array.reshape(
        out, dense_channels, side, side).transpose(2, 3, 1, 0).reshape(
            inputs, out)
  if kind == 'dense_bias':
    return 'params', 'bias', array
  collection, name = _BATCH_NORM_FIELDS[field]
  return collection, name, array


def _fold_output_scale(arrays, notes):
  """IResNet: fold a ``features.weight`` other than 1 (see the module
  docstring); returns the arrays without it."""
  arrays = dict(arrays)
  scale = arrays.pop('features.weight', None)
  if scale is None or np.all(scale == 1):
    return arrays
  arrays['fc.weight'] = arrays['fc.weight'] * scale[:, None]
  if 'fc.bias' in arrays:
    arrays['fc.bias'] = arrays['fc.bias'] * scale
  if 'features.running_mean' in arrays:
    arrays['features.running_mean'] = arrays['features.running_mean'] * scale
  notes.append('features.weight (not 1) folded into fc and the running '
               'mean: exact for inference; in train mode the batch norm '
               're-normalises it away')
  return arrays


def convert(state_dict, arch=None):
  """An arcface_torch state dict as a :class:`Conversion`.

  Args:
    state_dict: key -> array (numpy or torch), as
      ``backbone.state_dict()``; a ``module.`` prefix is ignored.
    arch: a name of :mod:`facejax.models` (``'iresnet50'``,
      ``'mobilefacenet'``, ...), or None to infer it from the keys.

  Raises:
    ConversionError: unknown architecture, a key with no place in the model,
      a facejax parameter with no key for it, or a shape mismatch (each
      message names the key).
  """
  arrays = as_arrays(state_dict)
  notes = []
  family = family_of(arrays)
  kwargs, image_size = _SHAPES[family](arrays)
  name = _name_for(family, kwargs)
  if arch is not None:
    try:
      named = models.get(arch)
    except KeyError as e:
      raise ConversionError(e.args[0]) from None
    if type(named).__name__ != _CLASSES[family]:
      raise ConversionError(
          f'--arch {arch} is a {type(named).__name__}, but the state dict '
          f'is an arcface_torch {_CLASSES[family]} (key '
          f'{next(iter(arrays))!r})')
    name = arch
    for attribute in _STRUCTURE[family]:
      kwargs[attribute] = getattr(named, attribute)
  if family == 'iresnet':
    arrays = _fold_output_scale(arrays, notes)
    dense_channels = kwargs['stage_features'][-1]
  else:
    dense_channels = kwargs['expanded_features']
  model = models.get(name, **kwargs)
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, image_size, image_size, 3)))
  expected = {tuple(str(getattr(k, 'key', k)) for k in path): leaf
              for path, leaf in jax.tree_util.tree_flatten_with_path(
                  abstract)[0]}
  rules = _FAMILIES[family]
  values = {}
  for key, array in arrays.items():
    groups, path, kind = _match(rules, key)
    module, kind = _facejax_path(family, groups, path, kind)
    field = groups.get('f')
    if kind in ('norm', 'output_norm') and field not in _BATCH_NORM_FIELDS:
      raise ConversionError(f'key {key!r}: unknown batch-norm field '
                            f'{field!r}')
    collection, leaf_name, value = _leaf(kind, field, array, dense_channels)
    target = (collection,) + module + (leaf_name,)
    if target not in expected:
      raise ConversionError(f'key {key!r} has no place in {name} '
                            f'({"/".join(target)} does not exist)')
    if tuple(value.shape) != tuple(expected[target].shape):
      raise ConversionError(
          f'key {key!r}: shape {tuple(array.shape)} gives '
          f'{tuple(value.shape)} for {"/".join(target)}, which is '
          f'{tuple(expected[target].shape)} in {name}')
    values[target] = value
  missing = [path for path in expected if path not in values]
  if missing:
    raise ConversionError(f'{len(missing)} weights of {name} are not in the '
                          f'state dict, the first {"/".join(missing[0])}')
  variables = {}
  for path, value in values.items():
    node = variables
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = jnp.asarray(value)
  return Conversion(name, kwargs, image_size, variables, notes)


def from_arcface_torch(state_dict, arch=None):
  """(model, variables) of an arcface_torch backbone's state dict.

  See :func:`convert` for the arguments and errors; the model computes in
  float32 (``model.apply(variables, images)`` on NHWC images normalised as
  (x - 127.5) / 127.5, RGB, the ArcFace 112x112 crop).
  """
  conversion = convert(state_dict, arch)
  return (models.get(conversion.name, **conversion.kwargs),
          conversion.variables)
