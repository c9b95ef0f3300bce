"""Weights of insightface's ONNX recognition models, under arcface_torch's keys.

insightface's model zoo ships its recognition backbones as ONNX files:
buffalo_l's ``w600k_r50.onnx`` (IResNet-50), antelopev2's ``glintr100.onnx``
(IResNet-100), buffalo_s's ``w600k_mbf.onnx`` (MobileFaceNet). They are
arcface_torch backbones exported by arcface_torch's ``torch2onnx.py`` (opset
11, eval mode, one input ``data`` of shape ``['None', 3, 112, 112]`` holding
pixels already normalised to (x - 127.5) / 127.5). Two properties of such an
export defeat an import by name:

* the exporter fuses every batch norm that directly follows a convolution into
  that convolution's weight and bias, so those batch norms are gone;
* the fused convolution tensors and the PReLU slopes get anonymous initializer
  names (``onnx::Conv_269`` from torch 2.x, bare numbers such as ``'685'`` in
  the torch-1.x zoo files).

So this module matches by topology. It follows the graph forwards from its
input and never looks at node order or names:

* input normalisation nodes, if any (below), then the stem: Conv, PRelu;
* IResNet: one unit at a time, BatchNormalization (bn1), Conv (conv1), PRelu,
  Conv (conv2), and an Add whose other input is the unit input itself or a
  strided 1x1 Conv of it (downsample). A unit with a downsample starts a new
  stage, which recovers ``stage_units``. Then the head: BatchNormalization
  (bn2), Flatten, Gemm (fc), BatchNormalization (features);
* MobileFaceNet: the grouped stem conv (``layers.1``), then one "depthwise"
  unit at a time (1x1 Conv, PRelu, depthwise 3x3 Conv, PRelu, 1x1 Conv, plus
  an Add of the unit input when residual). The non-residual units are
  ``layers.2/4/6``; the residual ones after each fill the Residual groups
  ``layers.3/5/7``. A 1x1 Conv with PRelu followed by a depthwise Conv without
  one is ``conv_sep`` and the GDC, then Flatten, Gemm or MatMul, and the
  BatchNorm1d. ``get_mbf_large``, whose ``layers.1`` is a Residual group, is
  refused.

Every node must be placed; the first one that cannot be is named in the
ConversionError, and so is every convolution whose attributes (kernel,
stride, padding, groups) differ from arcface_torch's module at that place,
because the weights would load there but compute something else.

Un-fusing: each fused Conv(W, b) becomes arcface_torch's pair of a conv with
weight W and a batch norm with weight 1, bias b, running_mean 0 and
running_var 1 - 1e-5. With the epsilon 1e-5 that arcface_torch and facejax
use, sqrt(var + eps) = 1, so the pair computes W * x + b exactly. Every
conv of both layouts has a batch norm after it, so a conv bias always has a
place: in that norm's bias when fused, in its running mean when not.

Older, mxnet-era graphs are read too: unfused BatchNormalization nodes after
the convolutions (a conv bias there is folded into the running mean),
BatchNormalization epsilons other than 1e-5 (mxnet's 2e-5, absorbed into
running_var, exact), Dropout and Identity nodes (no-ops in inference), and
input normalisation nodes. A graph that computes (x - 127.5) * s on raw
pixels x, where the facejax model receives u = (x - 127.5) / 127.5, sees
u * 127.5 * s, so the factor 127.5 * s is folded into the first conv's weight
per input channel. That is exact, zero padding included: a zero in either
normalisation stands for the pixel value 127.5. A mean other than 127.5 is
refused, because the fold would then be wrong at the zero-padded border.

facejax's own exports (:mod:`facejax.interop.onnx_export`) are read the
same way, by topology. Their convolutions have no bias and each eval-mode
batch norm is a chain of per-channel constants, ``Add(-mean)`` (or
``Sub(mean)``, or nothing for a zero mean), ``Mul(m)``, ``Add(b)``: wherever
a BatchNormalization may stand, such a chain is read as the norm with weight
m, bias b, running_mean the subtracted constant and running_var 1 - 1e-5,
exact for the same reason as the un-fusing below (m already holds
scale / sqrt(var + eps); IResNet's scale-free output norm thus gets a
``features.weight`` other than 1, which arcface_torch's import folds into
fc exactly). facejax flattens NHWC maps, so its head has a
``Transpose(perm=[0, 2, 3, 1])`` before the flatten; the linear weight's
rows are then in (H, W, C) order and are put back into torch's (C, H, W)
order. So facejax -> ONNX -> facejax gives the same embeddings.

Caveat: the imported weights are exact for inference only. Each un-fused
batch norm is "scale 1, bias b, statistics (0, 1)", not the batch norm the
model was trained with. Fine-tuning in train mode re-normalises with batch
statistics, so those norms change the function unless they are frozen (or
the model is fine-tuned in eval mode).

``onnx`` is an optional extra (``pip install 'facejax[onnx]'``): it is
imported only when ``state_dict_from_onnx`` runs.
"""
import collections

import numpy as np

from facejax.interop.errors import ConversionError

# The batch-norm epsilon of arcface_torch and of facejax: every norm in the
# returned state dict is meant for it.
EPSILON = 1e-5
# The pixel value that the facejax model's input normalisation maps to 0.
PIXEL_MEAN = 127.5
# No-ops in inference: removed before the walk.
_PASSTHROUGH = ('Identity', 'Dropout')
# Input normalisation nodes that can be folded into the first conv.
_NORMALISATION = ('Sub', 'Mul', 'Div')
# Per-channel affine ops that make up a batch norm in facejax's exports.
_AFFINE = ('Add', 'Sub', 'Mul')
# The Transpose that facejax's exports put before the head's flatten.
_NCHW_TO_NHWC = [0, 2, 3, 1]
# Nodes that may compute a Reshape's target shape from the tensor's Shape
# (``x.view(x.size(0), -1)`` in an export).
_SHAPE_OPS = ('Shape', 'Gather', 'Unsqueeze', 'Squeeze', 'Concat', 'Slice',
              'Cast')


def state_dict_from_onnx(path):
  """The weights of an arcface_torch ONNX export, under arcface_torch's keys.

  Args:
    path: an ``.onnx`` file holding an arcface_torch IResNet or MobileFaceNet
      (insightface's ``w600k_r50.onnx``, ``glintr100.onnx``,
      ``w600k_mbf.onnx``), an mxnet-era graph of the same structure, or
      facejax's own export of such a model (``to_onnx``).

  Returns:
    ``(state_dict, info)``. ``state_dict`` maps the keys of arcface_torch's
    ``state_dict()`` (without ``num_batches_tracked``) to float32 numpy
    arrays. Every batch norm in it is meant for epsilon 1e-5. ``info`` has
    ``input_name``, ``input_shape`` (a dim without a size is its name, e.g.
    ``'None'``), ``family`` (``'iresnet'`` or ``'mobilefacenet'``),
    ``fused_batch_norms`` (how many were rebuilt from conv biases),
    ``folded`` (a description of each other rewrite: input normalisation,
    epsilons, conv and linear biases, skipped no-op nodes),
    ``embedding_dim``, and ``stage_units`` (IResNet) or ``blocks`` and
    ``stem_groups`` (MobileFaceNet, as arcface_torch's ``get_mbf`` takes
    them).

  Raises:
    ConversionError: a file that is not a readable ONNX model, weights stored
      as external data, or a graph that is not one of the two families (the
      message names the first node that could not be placed, or the node
      whose attributes or constants have no exact equivalent).
    ImportError: ``onnx`` is not installed.
  """
  onnx, numpy_helper = _import_onnx()
  graph = _Graph(_load(onnx, path), onnx, numpy_helper, str(path))
  return _Walker(graph).walk()


def _import_onnx():
  try:
    import onnx  # pylint: disable=g-import-not-at-top
    from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(
        "Reading ONNX models needs the onnx package: pip install "
        "'facejax[onnx]'") from error
  return onnx, numpy_helper


def _load(onnx, path):
  """The ModelProto, without its external data (refused later, by name)."""
  try:
    model = onnx.load(str(path), load_external_data=False)
  except OSError:
    raise
  except Exception as error:  # pylint: disable=broad-except
    # protobuf's DecodeError for a truncated or non-ONNX file, and whatever
    # else the parser raises: none of them names the file.
    raise ConversionError(
        f'{path}: not a readable ONNX model (truncated or another format?): '
        f'{type(error).__name__}: {error}') from error
  if not model.graph.node:
    raise ConversionError(f'{path}: the ONNX model has no graph nodes')
  return model


class _Node:
  """A graph node with its inputs seen through the removed no-op nodes."""

  def __init__(self, proto, index, onnx):
    self.index = index
    self.name = proto.name
    self.op = proto.op_type
    self.inputs = list(proto.input)
    self.outputs = list(proto.output)
    self.attrs = {attribute.name: onnx.helper.get_attribute_value(attribute)
                  for attribute in proto.attribute}

  def __str__(self):
    name = self.name or f'<unnamed, output {self.outputs[0]!r}>'
    return f'node {name!r} ({self.op})'


class _Graph:
  """An ONNX graph indexed for the walk: constants, producers, consumers."""

  def __init__(self, model, onnx, numpy_helper, path):
    self.path = path
    self._onnx = onnx
    self._numpy_helper = numpy_helper
    graph = model.graph
    if len(graph.sparse_initializer):
      raise ConversionError(f'{path}: sparse initializers are not supported')
    self.constants = {tensor.name: self._array(tensor)
                      for tensor in graph.initializer}
    nodes = [_Node(proto, index, onnx)
             for index, proto in enumerate(graph.node)]
    for node in nodes:
      if node.op == 'Constant':
        self.constants[node.outputs[0]] = self._constant(node)
    self.skipped = []
    alias = self._passthrough_aliases(nodes)

    def resolve(name):
      while name in alias:
        name = alias[name]
      return name

    self.nodes = [node for node in nodes
                  if node.op != 'Constant' and node.op not in _PASSTHROUGH]
    self.consumers = collections.defaultdict(list)
    for node in self.nodes:
      node.inputs = [resolve(name) for name in node.inputs]
      for name in dict.fromkeys(node.inputs):
        if name:
          self.consumers[name].append(node)
    inputs = [value for value in graph.input
              if value.name not in self.constants]
    if len(inputs) != 1 or len(graph.output) != 1:
      raise ConversionError(
          f'{path}: expected one input and one output, found inputs '
          f'{[value.name for value in inputs]} and outputs '
          f'{[value.name for value in graph.output]}')
    self.input = inputs[0]
    self.output = resolve(graph.output[0].name)

  def fail(self, node, why):
    """A ConversionError naming the file and ``node`` (None: the graph)."""
    return ConversionError(f'{self.path}: {node or "the graph"} {why}')

  def constant(self, name, node, what):
    """The constant (initializer or Constant node) ``name``, read by
    ``node``: anything computed is refused."""
    if name not in self.constants:
      raise self.fail(node, f'has a {what} {name!r} that is not a constant')
    return self.constants[name]

  def weight(self, name, node, what):
    return np.asarray(self.constant(name, node, what), np.float32)

  def _array(self, tensor):
    if (tensor.data_location == self._onnx.TensorProto.EXTERNAL
        or len(tensor.external_data)):
      raise ConversionError(
          f'{self.path}: tensor {tensor.name!r} is stored as external data. '
          'Read the model with onnx.load(path) next to its data files and '
          'save it as one file (onnx.save(model, new_path)) first.')
    return self._numpy_helper.to_array(tensor)

  def _constant(self, node):
    (key, value), = node.attrs.items()
    if key == 'value':
      return self._array(value)
    if key in ('value_float', 'value_floats'):
      return np.asarray(value, np.float32)
    if key in ('value_int', 'value_ints'):
      return np.asarray(value, np.int64)
    raise self.fail(node, f'holds a {key} constant, which has no use here')

  def _passthrough_aliases(self, nodes):
    """output -> input of each Identity and inference-mode Dropout node."""
    alias = {}
    used = {name for node in nodes for name in node.inputs}
    for node in nodes:
      if node.op not in _PASSTHROUGH:
        continue
      if node.op == 'Dropout':
        if len(node.outputs) > 1 and node.outputs[1] in used:
          raise self.fail(node, 'has its mask output read by another node')
        if (len(node.inputs) > 2 and node.inputs[2]
            and np.any(self.constants.get(node.inputs[2], True))):
          raise self.fail(node, 'may run in training mode (training_mode '
                          'is not a constant False)')
      alias[node.outputs[0]] = node.inputs[0]
      self.skipped.append(f'{node} skipped (a no-op in inference)')
    return alias


class _Block:
  """A Conv, its batch norm (rebuilt when fused) and its PRelu, if any."""

  def __init__(self, conv, weight, norm, prelu, out):
    self.conv = conv
    self.weight = weight
    self.norm = norm
    self.prelu = prelu
    self.out = out
    self.kernel = tuple(weight.shape[2:])
    self.stride = tuple(conv.attrs.get('strides', (1, 1)))
    self.pads = tuple(conv.attrs.get('pads', (0, 0, 0, 0)))
    self.groups = conv.attrs.get('group', 1)


class _Walker:
  """One forward walk of the graph, filling the state dict as it goes."""

  def __init__(self, graph):
    self.graph = graph
    self.state = {}
    self.placed = set()
    self.fused = 0
    self.affine_norms = 0
    self.folded = []
    self.epsilons = collections.Counter()

  def walk(self):
    graph = self.graph
    info = {'input_name': graph.input.name,
            'input_shape': _shape(graph.input)}
    t, scale = self._input_normalisation(graph.input.name)
    stem = self._block(self._sole(t, 'Conv', 'the input'), prelu=True)
    if scale is not None:
      self._fold_input_scale(stem, scale)
    readers = graph.consumers[stem.out]
    if any(self._starts_norm(node) for node in readers):
      info.update(family='iresnet', **self._iresnet(stem))
    else:
      info.update(family='mobilefacenet', **self._mobilefacenet(stem))
    for node in graph.nodes:
      if node.index not in self.placed:
        raise graph.fail(node, 'is not part of an arcface_torch IResNet or '
                         'MobileFaceNet graph')
    for epsilon, count in sorted(self.epsilons.items()):
      self.folded.append(f'batch-norm epsilon {epsilon:g} of {count} norms '
                         f'absorbed into running_var (for epsilon '
                         f'{EPSILON:g})')
    if self.affine_norms:
      self.folded.append(
          f'{self.affine_norms} batch norms read from Add/Mul/Add chains of '
          'per-channel constants (facejax\'s export) as weight m, bias b, '
          f'running_mean -c and running_var {1 - EPSILON:g}')
    info.update(fused_batch_norms=self.fused,
                folded=self.folded + graph.skipped)
    return self.state, info

  # Graph navigation.

  def _take(self, node):
    self.placed.add(node.index)
    return node

  def _readers(self, tensor, where):
    """The nodes reading ``tensor``; refuses the end of the graph."""
    readers = self.graph.consumers[tensor]
    if tensor == self.graph.output or not readers:
      raise ConversionError(f'{self.graph.path}: the graph ends after '
                            f'{where}')
    return readers

  def _sole(self, tensor, ops, where):
    """The one node reading ``tensor``, whose op must be in ``ops``."""
    ops = (ops,) if isinstance(ops, str) else ops
    readers = self._readers(tensor, where)
    wrong = [node for node in readers if node.op not in ops] or readers[1:]
    if wrong:
      raise self.graph.fail(wrong[0], f'cannot be placed after {where} '
                            f'(expected one {" or ".join(ops)} there)')
    return self._take(readers[0])

  def _other_input(self, add, tensor):
    """The other input of a two-input Add reading ``tensor``."""
    if len(add.inputs) != 2 or tensor not in add.inputs:
      raise self.graph.fail(add, f'is not a residual sum of {tensor!r}')
    first, second = add.inputs
    return second if first == tensor else first

  # Input normalisation.

  def _input_normalisation(self, tensor):
    """Follows Sub/Mul/Div by constants from the input: (the normalised
    tensor, the per-channel factor to fold into the first conv or None)."""
    scale = np.ones(3)
    shift = np.zeros(3)  # the nodes compute scale * x + shift
    nodes = []
    while True:
      readers = self.graph.consumers[tensor]
      if len(readers) != 1 or readers[0].op not in _NORMALISATION:
        break
      node = self._take(readers[0])
      if len(node.inputs) != 2 or tensor not in node.inputs:
        raise self.graph.fail(node, 'is not an operation on the input alone')
      data_first = node.inputs[0] == tensor
      other = node.inputs[1] if data_first else node.inputs[0]
      value = _channels(self.graph.weight(other, node, 'operand'),
                        self.graph, node)
      if node.op == 'Mul':
        scale, shift = scale * value, shift * value
      elif not data_first:
        raise self.graph.fail(node, 'has the input as its second operand '
                              '(only x - c and x / c can be folded)')
      elif node.op == 'Sub':
        shift = shift - value
      else:
        scale, shift = scale / value, shift / value
      nodes.append((node, value))
      tensor = node.outputs[0]
    if not nodes:
      return tensor, None
    if np.any(scale == 0):
      raise self.graph.fail(nodes[-1][0], 'multiplies the input by 0')
    mean = -shift / scale
    if not np.allclose(mean, PIXEL_MEAN, rtol=1e-6, atol=0):
      node, value = next(((n, v) for n, v in nodes if n.op == 'Sub'),
                         nodes[0])
      raise self.graph.fail(
          node, f'normalises the input with the constant {_show(value)}, '
          f'i.e. around the pixel value {_show(mean)}, not {PIXEL_MEAN}: '
          'folding that into the first conv is not exact at its zero-padded '
          'border')
    described = ', '.join(f'{node.op} {node.name!r} ({_show(value)})'
                          for node, value in nodes)
    self.folded.append(f'input normalisation {described} folded into the '
                       'first conv weight as the factor '
                       f'{_show(scale * PIXEL_MEAN)} per input channel')
    return tensor, scale * PIXEL_MEAN

  def _fold_input_scale(self, stem, factor):
    if stem.weight.shape[1] != 3 or stem.groups != 1:
      raise self.graph.fail(stem.conv, 'is not a 3-channel first conv')
    stem.weight = (stem.weight * factor[None, :, None, None]).astype(
        np.float32)

  # Blocks.

  def _block(self, conv, prelu):
    """Conv -> [BatchNormalization or affine chain] -> [PRelu]; ``prelu``
    True (required), False (forbidden) or None (optional)."""
    graph = self.graph
    if len(conv.inputs) < 2:
      raise graph.fail(conv, 'has no weight')
    weight = graph.weight(conv.inputs[1], conv, 'weight')
    if weight.ndim != 4:
      raise graph.fail(conv, f'has a {weight.ndim - 2}-D kernel')
    bias = (graph.weight(conv.inputs[2], conv, 'bias')
            if len(conv.inputs) > 2 and conv.inputs[2] else None)
    if conv.attrs.get('auto_pad', b'NOTSET') not in (b'NOTSET', 'NOTSET'):
      raise graph.fail(conv, 'uses auto_pad; only explicit pads are read')
    if any(d != 1 for d in conv.attrs.get('dilations', (1, 1))):
      raise graph.fail(conv, 'is dilated')
    out = conv.outputs[0]
    readers = graph.consumers[out]
    if (len(readers) == 1 and out != graph.output
        and self._starts_norm(readers[0])):
      norm, norm_node, out = self._norm_at(readers[0], 4, weight.shape[0])
      if bias is not None:  # BN(y + b) is BN(y) with running_mean - b
        norm['running_mean'] = norm['running_mean'] - bias
        self.folded.append(f'the bias of {conv} folded into the running '
                           f'mean of {norm_node}')
    else:
      channels = weight.shape[0]
      if bias is None:
        bias = np.zeros(channels, np.float32)
      norm = {'weight': np.ones(channels, np.float32), 'bias': bias,
              'running_mean': np.zeros(channels, np.float32),
              'running_var': np.full(channels, 1 - EPSILON, np.float32)}
      self.fused += 1
    _check_channels(norm, weight.shape[0], graph, conv)
    slope = None
    readers = graph.consumers[out]
    if prelu or (prelu is None and len(readers) == 1
                 and readers[0].op == 'PRelu' and out != graph.output):
      node = self._sole(out, 'PRelu', str(conv))
      slope = self._slope(node, weight.shape[0])
      out = node.outputs[0]
    return _Block(conv, weight, norm, slope, out)

  def _expect(self, block, role, kernel, stride, groups=1):
    """Refuses a conv whose attributes differ from arcface_torch's
    ``role`` module: its weights would load there and compute something
    else. ``groups`` 'depthwise' means one group per channel."""
    pad = kernel // 2 if kernel == 3 else 0
    channels = block.weight.shape[0]
    if groups == 'depthwise':
      groups = channels
      if block.weight.shape[1] != 1:
        raise self.graph.fail(block.conv, f'is {role}, which is depthwise, '
                              f'but has {block.groups} groups')
    expected = ((kernel, kernel), (stride, stride), (pad,) * 4)
    found = (block.kernel, block.stride, block.pads)
    if found != expected or (groups is not None and block.groups != groups):
      raise self.graph.fail(
          block.conv, f'is {role} but has kernel {block.kernel}, stride '
          f'{block.stride}, pads {block.pads}, groups {block.groups}; '
          f'arcface_torch has kernel {expected[0]}, stride {expected[1]}, '
          f'pads {expected[2]}, groups {groups}')

  def _norm(self, node):
    """A BatchNormalization's statistics, for epsilon 1e-5."""
    graph = self.graph
    if node.attrs.get('spatial', 1) != 1:
      raise graph.fail(node, 'is not spatial (spatial=0)')
    if len(node.inputs) != 5:
      raise graph.fail(node, 'does not have 5 inputs')
    if any(graph.consumers[name] for name in node.outputs[1:] if name):
      raise graph.fail(node, 'has its training outputs read')
    weight, bias, mean, var = (
        graph.weight(name, node, what) for name, what in zip(
            node.inputs[1:], ('scale', 'bias', 'mean', 'variance')))
    norm = {'weight': weight, 'bias': bias, 'running_mean': mean,
            'running_var': var}
    epsilon = float(node.attrs.get('epsilon', EPSILON))
    if np.float32(epsilon) != np.float32(EPSILON):
      # (var + e) = (var + e - 1e-5) + 1e-5: the same norm for epsilon 1e-5.
      adjusted = var.astype(np.float64) + epsilon - EPSILON
      if np.any(adjusted <= 0):
        raise graph.fail(node, f'has epsilon {epsilon:g} and a variance '
                         f'{float(var.min()):g} that becomes <= 0 for '
                         f'epsilon {EPSILON:g}')
      norm['running_var'] = adjusted.astype(np.float32)
      self.epsilons[epsilon] += 1
    return norm

  def _starts_norm(self, node):
    """Whether ``node`` is a BatchNormalization or starts an affine chain
    (nothing is taken)."""
    return (node.op == 'BatchNormalization'
            or self._affine_chain(node) is not None)

  def _norm_at(self, node, rank, channels=None):
    """The batch norm starting at ``node``, taken: (its statistics for
    epsilon 1e-5, the node to name in messages, its output). ``rank``:
    the data's rank (4 for maps, 2 after the linear layer), which says
    where a chain's constants must put the channels; ``channels``: the
    count, if known, for scalar constants."""
    if node.op == 'BatchNormalization':
      return self._norm(self._take(node)), node, node.outputs[0]
    chain = self._affine_chain(node)
    for part in chain:
      self._take(part)
    return self._chain_norm(chain, rank, channels), chain[-1], (
        chain[-1].outputs[0])

  def _norm_after(self, tensor, where, rank, channels=None):
    """The batch norm that is the one reader of ``tensor``, taken (as
    :meth:`_norm_at`)."""
    readers = self._readers(tensor, where)
    if len(readers) != 1 or not self._starts_norm(readers[0]):
      raise self.graph.fail(
          readers[-1], f'cannot be placed after {where} (expected one '
          'BatchNormalization, or an Add/Mul/Add chain of per-channel '
          'constants, there)')
    return self._norm_at(readers[0], rank, channels)

  def _affine_chain(self, node):
    """The nodes ``[Add(c) or Sub(c)], Mul(m), Add(b)`` by constants, each
    the only reader of the one before, starting at ``node``; else None.

    That is how facejax's export writes an eval-mode batch norm: the
    running statistics and the scale folded into per-channel constants.
    Residual sums never match: they add two computed tensors.
    """
    chain = []
    if node.op in ('Add', 'Sub'):
      if self._affine_operands(node) is None:
        return None
      chain.append(node)
      node = self._next_in_chain(node)
    for op in ('Mul', 'Add'):
      if (node is None or node.op != op
          or self._affine_operands(node) is None):
        return None
      chain.append(node)
      node = self._next_in_chain(node) if op == 'Mul' else None
    return chain

  def _affine_operands(self, node):
    """(data, constant) names of an Add/Sub/Mul of a tensor and a constant
    (for Sub, the constant second: x - c), else None."""
    if node.op not in _AFFINE or len(node.inputs) != 2:
      return None
    first, second = node.inputs
    constants = self.graph.constants
    if second in constants and first not in constants:
      return first, second
    if node.op != 'Sub' and first in constants and second not in constants:
      return second, first
    return None

  def _next_in_chain(self, node):
    """The one reader of ``node``'s output, reading it as its data; None
    if there are others, or the output is the graph's."""
    out = node.outputs[0]
    readers = self.graph.consumers[out]
    if out == self.graph.output or len(readers) != 1:
      return None
    operands = self._affine_operands(readers[0])
    return readers[0] if operands and operands[0] == out else None

  def _chain_norm(self, chain, rank, channels):
    """An affine chain's batch norm: y = m (x + c) + b is a norm with
    weight m, bias b, running_mean -c (c for a Sub) and running_var
    1 - 1e-5, because sqrt(1 - 1e-5 + 1e-5) = 1."""
    graph = self.graph
    values = []
    for node in chain:
      value = graph.weight(self._affine_operands(node)[1], node, 'constant')
      shape = (1,) * (rank - value.ndim) + value.shape
      per_channel = value.size in (1, shape[1])  # all other dims are 1
      if value.ndim > rank or not per_channel:
        raise graph.fail(node, f'has a constant of shape {value.shape}, '
                         f'not one value per channel of its rank-{rank} '
                         'input')
      values.append(value.reshape(-1))
    sizes = {value.size for value in values} - {1}
    if len(sizes) > 1 or (channels is not None and sizes - {channels}):
      raise graph.fail(chain[-1], 'has per-channel constants of sizes '
                       f'{sorted(sizes)}, expected {channels or "one size"}')
    count = sizes.pop() if sizes else channels
    if count is None:
      raise graph.fail(chain[0], 'starts a batch-norm chain of scalars, '
                       'whose channel count is unknown here')
    values = [np.broadcast_to(value, (count,)).astype(np.float32)
              for value in values]
    mean = np.zeros(count, np.float32)
    if len(chain) == 3:
      mean = values[0] if chain[0].op == 'Sub' else -values[0]
    self.affine_norms += 1
    return {'weight': values[-2], 'bias': values[-1], 'running_mean': mean,
            'running_var': np.full(count, 1 - EPSILON, np.float32)}

  def _slope(self, node, channels):
    """A PRelu's slopes as (C,): ONNX stores them as (C, 1, 1)."""
    slope = self.graph.weight(node.inputs[1], node, 'slope')
    if slope.size == 1:
      return np.full(channels, slope.reshape(()), np.float32)
    if (slope.ndim < 3 or slope.shape[-3] != channels
        or slope.size != channels):
      raise self.graph.fail(node, f'has slopes of shape {slope.shape}, not '
                            f'one per channel of {channels}')
    return slope.reshape(channels)

  # IResNet.

  def _iresnet(self, stem):
    """Stem, units (a downsample starts a stage), head."""
    self._expect(stem, 'the stem conv1', 3, 1)
    self._put_block('conv1', 'bn1', 'prelu', stem)
    tensor, stage_units = stem.out, []
    while len(self._readers(tensor, 'the stem or a unit')) > 1:
      unit, tensor = self._unit(tensor, len(stage_units) + 1)
      if unit['downsample'] is not None:
        stage_units.append(0)
      elif not stage_units:
        raise self.graph.fail(unit['conv1'].conv, 'starts the first stage '
                              'but its unit has no downsample')
      prefix = f'layer{len(stage_units)}.{stage_units[-1]}.'
      stage_units[-1] += 1
      self._put_norm(prefix + 'bn1', unit['bn1'])
      self._put_block(prefix + 'conv1', prefix + 'bn2', prefix + 'prelu',
                      unit['conv1'])
      self._put_block(prefix + 'conv2', prefix + 'bn3', None, unit['conv2'])
      if unit['downsample'] is not None:
        self._put_block(prefix + 'downsample.0', prefix + 'downsample.1',
                        None, unit['downsample'])
    if not stage_units:
      raise ConversionError(f'{self.graph.path}: no residual unit after the '
                            'stem')
    bn2, _, tensor = self._norm_after(tensor, 'the last unit', 4)
    self._put_norm('bn2', bn2)
    embedding_dim = self._head(tensor, 'fc', 'features', bias=True,
                               channels=bn2['weight'].shape[0])
    return {'stage_units': tuple(stage_units), 'embedding_dim': embedding_dim}

  def _unit(self, tensor, stage):
    """bn1 -> conv1 -> PRelu -> conv2, + the input or its downsample:
    (the parts, the unit's output)."""
    graph = self.graph
    readers = graph.consumers[tensor]
    norms = [node for node in readers if self._starts_norm(node)]
    others = [node for node in readers if node not in norms]
    if len(norms) != 1 or len(others) != 1:
      wrong = ([node for node in others if node.op not in ('Conv', 'Add')]
               or others[1:] or norms[1:])
      raise graph.fail(wrong[0], f'cannot be placed: a unit input {tensor!r} '
                       'is read by its bn1 and its shortcut only')
    bn1, bn1_node, bn1_out = self._norm_at(norms[0], 4)
    conv1 = self._block(self._sole(bn1_out, 'Conv', str(bn1_node)),
                        prelu=True)
    conv2 = self._block(self._sole(conv1.out, 'Conv', str(conv1.conv)),
                        prelu=False)
    add = self._sole(conv2.out, 'Add', str(conv2.conv))
    shortcut = self._other_input(add, conv2.out)
    downsample = None
    if shortcut != tensor:
      if others[0].op != 'Conv':
        raise graph.fail(others[0], 'cannot be placed as a unit\'s shortcut '
                         '(expected the downsample Conv or the Add)')
      downsample = self._block(self._take(others[0]), prelu=False)
      if downsample.out != shortcut:
        raise graph.fail(add, 'does not add the unit\'s downsample')
      self._expect(downsample, f'the downsample of stage {stage}', 1, 2)
    elif others[0] is not add:
      raise graph.fail(others[0], 'cannot be placed: it reads a unit input '
                       'whose shortcut is the identity')
    self._expect(conv1, 'a unit\'s conv1', 3, 1)
    self._expect(conv2, 'a unit\'s conv2', 3, 1 if downsample is None else 2)
    return ({'bn1': bn1, 'conv1': conv1, 'conv2': conv2,
             'downsample': downsample}, add.outputs[0])

  # MobileFaceNet.

  def _mobilefacenet(self, stem):
    """Stem, grouped stem conv, DepthWise units, conv_sep, GDC, head."""
    graph = self.graph
    readers = self._readers(stem.out, str(stem.conv))
    if any(node.op == 'Add' for node in readers):
      first = next((node for node in readers if node.op != 'Add'), readers[0])
      raise graph.fail(first, 'starts a Residual group where arcface_torch '
                       'has the grouped stem conv layers.1 (get_mbf_large, '
                       'blocks[0] > 1), which is not supported')
    layer1 = self._block(self._sole(stem.out, 'Conv', 'the stem PRelu'),
                         prelu=True)
    self._expect(stem, 'the stem conv layers.0', 3, 2)
    self._expect(layer1, 'the grouped stem conv layers.1', 3, 1, groups=None)
    self._put_block(*_conv_block_keys('layers.0'), stem)
    self._put_block(*_conv_block_keys('layers.1'), layer1)
    tensor, blocks = layer1.out, [1]
    while True:
      unit = self._depthwise_unit(tensor)
      if 'gdc' in unit:
        break
      if not unit['residual']:
        if len(blocks) == 4:
          raise graph.fail(unit['expand'].conv, 'starts a fourth '
                           'non-residual DepthWise unit (arcface_torch has '
                           'three: layers.2, 4 and 6)')
        prefix = f'layers.{2 * len(blocks)}'
        blocks.append(0)
      elif len(blocks) == 1:
        raise graph.fail(unit['expand'].conv, 'starts a residual DepthWise '
                         'unit before layers.2')
      else:
        prefix = f'layers.{2 * len(blocks) - 1}.layers.{blocks[-1]}'
        blocks[-1] += 1
      for index, part in enumerate(('expand', 'depthwise', 'project')):
        self._put_block(*_conv_block_keys(f'{prefix}.layers.{index}'),
                        unit[part])
      tensor = unit['out']
    if len(blocks) != 4:
      raise graph.fail(unit['conv_sep'].conv, f'follows {len(blocks) - 1} '
                       'non-residual DepthWise units; arcface_torch has three')
    self._put_block(*_conv_block_keys('conv_sep'), unit['conv_sep'])
    self._put_block(*_conv_block_keys('features.layers.0'), unit['gdc'])
    embedding_dim = self._head(unit['gdc'].out, 'features.layers.2',
                               'features.layers.3', bias=False,
                               channels=unit['gdc'].weight.shape[0])
    return {'blocks': tuple(blocks), 'stem_groups': layer1.groups,
            'embedding_dim': embedding_dim}

  def _depthwise_unit(self, tensor):
    """1x1 Conv, PRelu, depthwise 3x3 Conv, PRelu, 1x1 Conv [+ tensor].

    conv_sep is also a 1x1 Conv with a PRelu, but the conv after it (the
    GDC) has none: then the result is {'conv_sep', 'gdc'} instead.
    """
    graph = self.graph
    readers = self._readers(tensor, 'a DepthWise unit')
    convs = [node for node in readers if node.op == 'Conv']
    adds = [node for node in readers if node.op == 'Add']
    if len(convs) != 1 or len(adds) > 1 or len(readers) != 1 + len(adds):
      wrong = ([node for node in readers if node.op not in ('Conv', 'Add')]
               or convs[1:] or adds[1:] or readers)
      raise graph.fail(wrong[0], f'cannot be placed after {tensor!r} '
                       '(expected a DepthWise unit\'s 1x1 Conv, and its Add '
                       'if residual)')
    expand = self._block(self._take(convs[0]), prelu=True)
    middle = self._block(self._sole(expand.out, 'Conv', str(expand.conv)),
                         prelu=None)
    if middle.prelu is None:
      if adds:
        raise graph.fail(adds[0], 'cannot be placed: it sums the input of '
                         'conv_sep')
      return self._conv_sep_and_gdc(expand, middle)
    residual = bool(adds)
    project = self._block(self._sole(middle.out, 'Conv', str(middle.conv)),
                          prelu=False)
    self._expect(expand, 'a DepthWise unit\'s 1x1 expansion', 1, 1)
    self._expect(middle, 'a DepthWise unit\'s depthwise conv', 3,
                 1 if residual else 2, groups='depthwise')
    self._expect(project, 'a DepthWise unit\'s 1x1 projection', 1, 1)
    out = project.out
    if residual:
      add = self._take(adds[0])
      if self._other_input(add, tensor) != project.out:
        raise graph.fail(add, 'does not sum a DepthWise unit with its input')
      out = add.outputs[0]
    return {'expand': expand, 'depthwise': middle, 'project': project,
            'residual': residual, 'out': out}

  def _conv_sep_and_gdc(self, conv_sep, gdc):
    self._expect(conv_sep, 'conv_sep', 1, 1)
    if (gdc.weight.shape[1] != 1 or gdc.groups != gdc.weight.shape[0]
        or gdc.stride != (1, 1) or gdc.pads != (0, 0, 0, 0)
        or gdc.kernel[0] != gdc.kernel[1]):
      raise self.graph.fail(
          gdc.conv, 'is the GDC but is not a square depthwise conv with '
          f'stride 1 and no padding (kernel {gdc.kernel}, stride '
          f'{gdc.stride}, pads {gdc.pads}, groups {gdc.groups})')
    return {'conv_sep': conv_sep, 'gdc': gdc}

  # Head.

  def _head(self, tensor, fc, features, bias, channels):
    """[Transpose] -> Flatten -> Gemm/MatMul -> batch norm -> the graph
    output: the embedding size. ``bias``: whether arcface_torch's fc has
    one (a bias where it has none is folded into the following norm's
    mean); ``channels``: of the flattened maps."""
    graph = self.graph
    flat, nhwc = self._flatten(tensor)
    weight, fc_bias, tensor = self._linear(flat)
    if nhwc:
      weight = self._nchw_rows(weight, channels, graph.consumers[flat][0])
    norm, norm_node, out = self._norm_after(tensor, 'the linear layer', 2,
                                            weight.shape[0])
    if out != graph.output:
      readers = graph.consumers[out]
      raise graph.fail(readers[0] if readers else norm_node,
                       'cannot be placed after the embedding norm')
    _check_channels(norm, weight.shape[0], graph, norm_node)
    self.state[f'{fc}.weight'] = _owned(weight)
    if bias:
      self.state[f'{fc}.bias'] = _owned(
          fc_bias if fc_bias is not None else np.zeros(weight.shape[0]))
    elif fc_bias is not None:  # BN(y + c) is BN(y) with running_mean - c
      norm['running_mean'] = norm['running_mean'] - fc_bias
      self.folded.append('the linear layer\'s bias folded into the running '
                         f'mean of {norm_node}')
    self._put_norm(features, norm)
    return int(weight.shape[0])

  def _flatten(self, tensor):
    """[Transpose to NHWC], then Flatten(axis 1) or a Reshape to 2-D with a
    constant or computed shape (``x.view(x.size(0), -1)``): (the flattened
    tensor, whether it was transposed)."""
    graph = self.graph
    readers = self._readers(tensor, 'the last norm')
    nhwc = len(readers) == 1 and readers[0].op == 'Transpose'
    if nhwc:  # facejax's export: its models flatten NHWC maps
      node = self._take(readers[0])
      perm = list(node.attrs.get('perm', ()))
      if perm != _NCHW_TO_NHWC:
        raise graph.fail(node, f'transposes by {perm} before the flatten; '
                         f'only {_NCHW_TO_NHWC} (NCHW -> NHWC) is read')
      tensor = node.outputs[0]
      readers = self._readers(tensor, str(node))
    flatten = [node for node in readers if node.op in ('Flatten', 'Reshape')
               and node.inputs[0] == tensor]
    if len(flatten) != 1:
      raise graph.fail(readers[0], 'cannot be placed before the linear '
                       'layer (expected a Flatten there)')
    node = self._take(flatten[0])
    if node.op == 'Flatten':
      if node.attrs.get('axis', 1) != 1:
        raise graph.fail(node, 'does not flatten to (batch, features)')
      shape_nodes = []
    else:
      shape_nodes = self._shape_subgraph(node.inputs[1], tensor, node)
    for reader in readers:
      if reader is not node and reader not in shape_nodes:
        raise graph.fail(reader, 'cannot be placed next to the flatten')
    for shape_node in shape_nodes:
      self._take(shape_node)
    return node.outputs[0], nhwc

  def _nchw_rows(self, weight, channels, node):
    """A linear weight (E, H * W * C) that reads NHWC-flattened maps, with
    its columns in torch's NCHW flatten order (E, C * H * W): the same
    layer for the maps before the Transpose."""
    out, inputs = weight.shape
    if inputs % channels:
      raise self.graph.fail(node, f'reads {inputs} features, not a whole '
                            f'number of maps of {channels} channels')
    return weight.reshape(out, inputs // channels, channels).transpose(
        0, 2, 1).reshape(out, inputs)

  def _shape_subgraph(self, shape, tensor, reshape):
    """The nodes computing a Reshape's target shape: none for a constant
    of two entries, else Shape/Gather/... nodes reading only ``tensor``."""
    graph = self.graph
    if shape in graph.constants:
      if np.asarray(graph.constants[shape]).shape != (2,):
        raise graph.fail(reshape, 'does not reshape to two dimensions')
      return []
    producers = {name: node for node in graph.nodes for name in node.outputs}
    nodes, pending = [], [shape]
    while pending:
      name = pending.pop()
      if name in graph.constants or name == tensor:
        continue
      node = producers.get(name)
      if node is None or node.op not in _SHAPE_OPS:
        raise graph.fail(node or reshape, 'cannot be placed in the '
                         'computation of a flattening shape')
      if node not in nodes:
        nodes.append(node)
        pending.extend(name for name in node.inputs if name)
    return nodes

  def _linear(self, tensor):
    """Gemm, or MatMul [+ Add of a constant]: (weight (E, K) as in torch's
    Linear, bias or None, output)."""
    graph = self.graph
    node = self._sole(tensor, ('Gemm', 'MatMul'), 'the flatten')
    if node.inputs[0] != tensor:
      raise graph.fail(node, 'multiplies the features from the left')
    weight = graph.weight(node.inputs[1], node, 'weight')
    if weight.ndim != 2:
      raise graph.fail(node, f'has a weight of shape {weight.shape}')
    bias, out = None, node.outputs[0]
    if node.op == 'Gemm':
      if node.attrs.get('transA', 0):
        raise graph.fail(node, 'has transA=1')
      if not node.attrs.get('transB', 0):  # (K, E): torch's Linear is (E, K)
        weight = weight.T
        self.folded.append(f'{node} has transB=0: its weight is transposed')
      alpha = node.attrs.get('alpha', 1.0)
      if alpha != 1.0:
        weight = weight * np.float32(alpha)
        self.folded.append(f'{node}: alpha {alpha:g} folded into the weight')
      if len(node.inputs) > 2 and node.inputs[2]:
        bias = graph.weight(node.inputs[2], node, 'bias') * np.float32(
            node.attrs.get('beta', 1.0))
    else:
      weight = weight.T  # MatMul multiplies by (K, E)
      readers = graph.consumers[out]
      # An Add that starts a whole Add/Mul/Add chain is the norm's mean,
      # not a bias (facejax's MobileFaceNet export: its dense has none).
      if (len(readers) == 1 and readers[0].op == 'Add' and out != graph.output
          and len(self._affine_chain(readers[0]) or ()) != 3):
        add = self._take(readers[0])
        bias = graph.weight(self._other_input(add, out), add, 'bias')
        out = add.outputs[0]
    if bias is not None:
      if bias.size == 1:
        bias = np.full(weight.shape[0], bias.reshape(()), np.float32)
      elif bias.size != weight.shape[0]:
        raise graph.fail(node, f'has a bias of shape {bias.shape} for '
                         f'{weight.shape[0]} outputs')
      bias = bias.reshape(-1).astype(np.float32)
    return weight, bias, out

  # The state dict.

  def _put_norm(self, prefix, norm):
    for key, value in norm.items():
      self.state[f'{prefix}.{key}'] = _owned(value)

  def _put_block(self, conv, norm, prelu, block):
    """A block under its conv, norm and PReLU keys (the PReLU key only
    where arcface_torch has one and the graph a PRelu)."""
    self.state[f'{conv}.weight'] = _owned(block.weight)
    self._put_norm(norm, block.norm)
    if block.prelu is not None:
      self.state[f'{prelu}.weight'] = _owned(block.prelu)


def _owned(value):
  """A writable, C-contiguous float32 copy: onnx's arrays may view the
  read-only model bytes, which torch.from_numpy warns about."""
  return np.array(value, np.float32, order='C')


def _conv_block_keys(prefix):
  """arcface_torch ConvBlock: Sequential(conv, batch norm[, PReLU])."""
  return f'{prefix}.layers.0', f'{prefix}.layers.1', f'{prefix}.layers.2'


def _channels(value, graph, node):
  """A normalisation constant as 3 per-channel values: a scalar, or shape
  (3, 1, 1) / (1, 3, 1, 1), which broadcast over the NCHW channel axis."""
  value = np.asarray(value, np.float64)
  if value.size == 1:
    return np.full(3, value.reshape(()))
  if value.size == 3 and value.ndim >= 3 and value.shape[-3] == 3:
    return value.reshape(3)
  raise graph.fail(node, f'has a constant of shape {value.shape}, not one '
                   'value or one per input channel')


def _check_channels(norm, channels, graph, node):
  for key, value in norm.items():
    if value.shape != (channels,):
      raise graph.fail(node, f'has a batch-norm {key} of shape {value.shape}'
                       f' for {channels} channels')


def _shape(value_info):
  """Input dims: sizes, or the dim's name (insightface's 'None')."""
  return [dim.dim_value if dim.HasField('dim_value')
          else (dim.dim_param or None)
          for dim in value_info.type.tensor_type.shape.dim]


def _show(value):
  """A constant in a message: one number when all its values are equal."""
  value = np.asarray(value, np.float64).reshape(-1)
  if np.all(value == value[0]):
    return f'{value[0]:g}'
  return '[' + ', '.join(f'{v:g}' for v in value) + ']'
