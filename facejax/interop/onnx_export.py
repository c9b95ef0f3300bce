"""Any facejax backbone as an ONNX file in insightface's conventions.

    onnx_export.to_onnx(model, variables, 'r50.onnx', image_size=112)

The file is what insightface's ``ArcFaceONNX`` (and arcface_torch's
``torch2onnx``) produce: one float32 input ``data`` of shape [N, 3, H, W]
(NCHW, N symbolic with dim_param 'None', H and W fixed), already normalised
as (x - 127.5) / 127.5 by the caller, and one float32 output [N, D], the
embedding before L2 normalisation. Weights are initializers.

Why a converter of our own (measured, not assumed): jax2onnx (every release
0.14 to 0.17.1) pins orbax-checkpoint < 0.11.37, older than the 0.12.8 we
depend on, and an optional extra must never downgrade a core dependency;
``jax.experimental.jax2tf`` in jax 0.10 ignores ``native_serialization=False``
and emits a single ``XlaCallModule`` (StableHLO) op, which tf2onnx 1.17
cannot convert ("pass1 convert failed for name: XlaCallModule").

How: the model's eval-mode apply is traced with ``jax.make_jaxpr`` over a
symbolic batch dimension, and each jaxpr equation is translated into ONNX
nodes. Nothing is specific to one architecture:

* Call-like equations (``jit``, ``custom_jvp_call``, ``custom_vjp_call``,
  ``remat``) are inlined.
* Constant folding: an equation whose inputs are all constants (weights,
  literals, earlier folded values) and whose output shape is static is
  evaluated at conversion time by binding the primitive on the concrete
  arrays, i.e. with jax itself, so a folded value is bit for bit what the
  model computes. Batch norm's scale * rsqrt(var + eps) becomes one
  initializer; the one-hot patch filters of locally connected layers
  (iota/eq) become one constant kernel. Only constants a node reads become
  initializers, named after the variables they come from.
* Layout: a convolution or a max/sum pool reads its dimension numbers and
  runs in ONNX's N, C, spatial order; constant kernels are transposed to
  OIHW here. Every run-time value carries the permutation it is stored in
  (the NCHW input holds the NHWC images), elementwise ops run in their
  inputs' layout and a jaxpr transpose only relabels, so a Transpose is
  emitted only where an op needs the jaxpr's own layout (before the
  flattening Reshape of an iresnet: one in the whole graph).
* Batch norm's x - mean is written x + (-mean) (the same IEEE result), so
  that onnxruntime folds the Add, Mul, Add that follow a Conv into it.
* The symbolic batch: a shape that holds it (a Reshape to (b, 512), an
  Expand to (b, ...)) is built at run time from Shape(data); dims that are
  integer multiples k * b are supported.
* PReLU, which jax writes as Where(x >= 0, x, slope * x), becomes one PRelu
  node (a peephole pass on the finished graph).
* ``dot_general``: MatMul for a Dense layer ([..., K] @ [K, E]), Einsum for
  anything else (batch dimensions of the locally connected layers).

Primitives translated (others raise ``ConversionError`` naming the
primitive, the model and where in it): add sub mul div max min pow, neg exp
log sqrt rsqrt abs tanh logistic erf erfc (as 1 - erf) sign floor ceil sin
cos square integer_pow, eq ne ge gt le lt, not and or (bool), select_n,
clamp, convert_element_type, copy, broadcast_in_dim, reshape, squeeze,
transpose, concatenate, pad (no interior or negative padding), slice
(static bounds), reduce_sum reduce_max reduce_min, dot_general,
conv_general_dilated (no lhs dilation, batch_group_count 1),
reduce_window_max (MaxPool) and reduce_window_sum (AveragePool counting the
padding, times the window size; no window dilation), plus iota and anything
else whose inputs are all constants (folded). Not translated: gather and
scatter (numpy-style indexing under a symbolic batch traces to gather; use
``lax.slice``), control flow (cond, while, scan), random numbers.

Limits: opset 13 or newer (default 13: onnxruntime and TensorRT both read
it); one protobuf, so models under 2 GB (iresnet200 is about 260 MB); the
output must be [N, D]. The file's IR version is the lowest the
opset allows (7 for opset 13), which any onnxruntime that knows the opset
reads.
"""

import itertools
import os

import jax
from jax import export
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

from facejax.interop.errors import ConversionError

DEFAULT_OPSET = 13
# insightface's recognition files (arcface_torch's torch2onnx) name the
# symbolic batch 'None'.
BATCH_DIM_PARAM = 'None'

# Equations whose computation is a nested jaxpr, under one of these params.
_CALL_PARAMS = ('jaxpr', 'call_jaxpr', 'fun_jaxpr')
_CALL_PRIMITIVES = frozenset((
    'jit', 'pjit', 'closed_call', 'core_call', 'custom_jvp_call',
    'custom_vjp_call', 'custom_vjp_call_jaxpr', 'remat', 'checkpoint'))
_UNARY = {
    'neg': 'Neg', 'exp': 'Exp', 'log': 'Log', 'sqrt': 'Sqrt', 'abs': 'Abs',
    'tanh': 'Tanh', 'logistic': 'Sigmoid', 'erf': 'Erf', 'sign': 'Sign',
    'floor': 'Floor', 'ceil': 'Ceil', 'sin': 'Sin', 'cos': 'Cos'}
_BINARY = {
    'add': 'Add', 'mul': 'Mul', 'div': 'Div', 'max': 'Max',
    'min': 'Min', 'pow': 'Pow', 'eq': 'Equal', 'ge': 'GreaterOrEqual',
    'gt': 'Greater', 'le': 'LessOrEqual', 'lt': 'Less'}
# Folding these keeps the constant's name.
_RELAYOUTS = frozenset((
    'reshape', 'broadcast_in_dim', 'transpose', 'squeeze',
    'convert_element_type', 'copy', 'copy_p'))
_BOOLEAN = {'not': 'Not', 'and': 'And', 'or': 'Or'}
_REDUCE = {'reduce_sum': 'ReduceSum', 'reduce_max': 'ReduceMax',
           'reduce_min': 'ReduceMin'}
# insightface's ArcFaceONNX takes a file whose first 8 nodes include names
# starting with both Sub and Mul for an mxnet export that normalises its
# input itself, and then feeds it raw pixels: no node name starts so.
_MXNET_NORMALISATION_NAMES = ('Sub', 'Mul', '_minus', '_mul')
# Small constants are deduplicated by value (the scalars of every ReLU and
# PReLU), larger ones by identity.
_DEDUPLICATE_SIZE = 64


def to_onnx(model, variables, path, image_size, *, opset=DEFAULT_OPSET,
            output_name='fc1', input_name='data'):
  """Writes ``model`` (eval mode: ``model.apply(variables, images,
  train=False)``) as ONNX at ``path``; returns ``path``.

  Args:
    model: a facejax backbone (any flax module taking NHWC images normalised
      as (x - 127.5) / 127.5 and a ``train`` keyword, returning [N, D]).
    variables: its variables (``{'params': ..., 'batch_stats': ...}``).
    path: where to write the ``.onnx`` file.
    image_size: the input's spatial size, an int (square) or (height,
      width); the file's H and W are fixed, as the parameters of
      locally connected and flattening layers fit one size only.
    opset: the ONNX opset (13 or newer).
    output_name, input_name: the graph's output and input names.

  Raises:
    ConversionError: the model uses a primitive (or a form of one) that has
      no exact ONNX translation here, or does not return [N, D].
    ValueError: bad image_size, opset or names.
  """
  import onnx  # pylint: disable=import-outside-toplevel
  height, width = _image_size(image_size)
  if not DEFAULT_OPSET <= opset <= onnx.defs.onnx_opset_version():
    raise ValueError(f'opset must be in [{DEFAULT_OPSET}, '
                     f'{onnx.defs.onnx_opset_version()}], got {opset}')
  if input_name == output_name:
    raise ValueError(f'input and output need different names, both are '
                     f'{input_name!r}')
  model_name = type(model).__name__

  leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(variables)
  leaves = [np.asarray(leaf) for _, leaf in leaves_with_paths]
  leaf_names = [jax.tree_util.keystr(key_path, simple=True, separator='/')
                for key_path, _ in leaves_with_paths]
  batch, = export.symbolic_shape('b')
  spec = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                          variables)
  try:
    closed = jax.make_jaxpr(
        lambda v, x: model.apply(v, x, train=False))(abstract, spec)
  except jax_core.InconclusiveDimensionOperation as e:
    raise ConversionError(
        f'{model_name}: the model cannot be traced with a symbolic batch '
        f'size (its Python code depends on the batch size): {e}') from e
  assert len(closed.jaxpr.invars) == len(leaves) + 1

  converter = _Converter(onnx, model_name, opset, input_name, output_name,
                         batch)
  for leaf, name in zip(leaves, leaf_names):
    # The module's path, without the collection ('params', 'batch_stats').
    converter.name_constant(leaf, name, '/'.join(name.split('/')[1:-1]))
  # The NCHW input holds the NHWC images in the layout (0, 3, 1, 2).
  images = _Tensor(input_name, (0, 3, 1, 2))
  outputs = converter.run(closed.jaxpr, closed.consts, leaves + [images])
  out_aval = closed.jaxpr.outvars[0].aval
  if (len(outputs) != 1 or len(out_aval.shape) != 2
      or not _same_dim(out_aval.shape[0], batch)
      or not _is_static(out_aval.shape[1])):
    raise ConversionError(
        f'{model_name}: an embedding model returns one [N, D] array, got '
        f'{[v.aval.str_short() for v in closed.jaxpr.outvars]}')
  result = outputs[0]
  if isinstance(result, np.ndarray):
    raise ConversionError(f'{model_name}: the output does not depend on the '
                          f'input images')
  if out_aval.dtype != np.float32:
    result = converter.emit('Cast', [result], 'output',
                            to=onnx.TensorProto.FLOAT)
  graph = converter.graph(result, (height, width), out_aval.shape[1])
  opset_ids = [onnx.helper.make_opsetid('', opset)]
  onnx_model = onnx.helper.make_model(
      graph, opset_imports=opset_ids, producer_name='facejax',
      ir_version=onnx.helper.find_min_ir_version_for(opset_ids),
      doc_string=f'facejax {model_name}: input {input_name} [N, 3, {height}, '
                 f'{width}] normalised as (x - 127.5) / 127.5, output '
                 f'{output_name} the embedding before L2 normalisation.')
  onnx.checker.check_model(onnx_model)
  onnx.save(onnx_model, os.fspath(path))
  return path


def _image_size(image_size):
  if isinstance(image_size, (int, np.integer)):
    image_size = (image_size, image_size)
  image_size = tuple(image_size)
  if (len(image_size) != 2
      or not all(isinstance(s, (int, np.integer)) and s > 0
                 for s in image_size)):
    raise ValueError(f'image_size must be a positive int or (height, width), '
                     f'got {image_size!r}')
  return tuple(int(s) for s in image_size)


def _is_static(dim):
  return not export.is_symbolic_dim(dim)


def _same_dim(a, b):
  """Whether two (possibly symbolic) dims are provably equal."""
  if _is_static(a) and _is_static(b):
    return a == b
  try:
    return bool(a == b)
  except jax_core.InconclusiveDimensionOperation:
    return False


def _is_one(dim):
  return _is_static(dim) and dim == 1


def _inverse(perm):
  return tuple(int(i) for i in np.argsort(perm))


def _identity(perm):
  return perm is None or tuple(perm) == tuple(range(len(perm)))


class _Tensor(str):
  """The name of an ONNX tensor that holds a jaxpr value ``v`` laid out as
  ``transpose(v, perm)``: the NCHW output of a Conv holds an NHWC value.

  Layouts are followed lazily: elementwise ops run in their inputs' layout
  and a jaxpr transpose only relabels, so a chain of convolutions, batch
  norms and activations needs no Transpose; one is emitted only where an op
  needs the jaxpr's own layout (a Reshape, a MatMul) or another one.
  """

  def __new__(cls, name, perm=None):
    tensor = super().__new__(cls, name)
    tensor.perm = None if _identity(perm) else tuple(int(p) for p in perm)
    return tensor


class _Converter:
  """Translates jaxpr equations into ONNX nodes and initializers.

  A jaxpr value is either a numpy array (a constant: a weight, a literal or
  a folded result) or a str (an ONNX tensor computed at run time; a
  ``_Tensor`` when not in the jaxpr's layout). Constants become initializers
  only when a node reads them.
  """

  def __init__(self, onnx, model_name, opset, input_name, output_name,
               batch):
    self.onnx, self.model_name, self.opset = onnx, model_name, opset
    self.input_name, self.output_name = input_name, output_name
    self.batch_symbol = batch
    self.nodes = []
    self.initializers = {}  # name -> numpy array
    # Names for constants (the variables' paths, inherited by the values
    # folded or transposed from them); the arrays are kept so that their
    # ids stay theirs.
    self._constant_names = {}  # id(array) -> (name, module path, array)
    self._by_identity = {}  # id(array) -> (initializer name, array)
    self._by_value = {}  # (dtype, shape, bytes) -> initializer name
    self._relaid = {}  # (name, from perm, to perm) -> name
    self._transposed = {}  # (id(array), perm) -> (array, transposed value)
    self._counter = itertools.count()
    self._names = {input_name, output_name}  # reserved
    self._batch = None
    self._scope = ''
    self._where = ''

  # Naming and emission.

  def _fresh(self, hint):
    base = f'{self._scope}/{hint}' if self._scope else hint
    name = base
    while name in self._names:
      name = f'{base}_{next(self._counter)}'
    self._names.add(name)
    return name

  def name_constant(self, array, name, module=''):
    if name and id(array) not in self._constant_names:
      self._constant_names[id(array)] = (name, module, array)

  def constant_module(self, array):
    entry = self._constant_names.get(id(array))
    return entry[1] if entry else None

  def constant_name(self, array):
    entry = self._constant_names.get(id(array))
    return entry[0] if entry else None

  def emit(self, op, inputs, hint=None, outputs=1, **attributes):
    """Appends a node reading ``inputs`` in the jaxpr's layout (plain str
    names as they are); returns its output name (names if outputs > 1)."""
    inputs = [self.tensor(x) for x in inputs]
    names = [self._fresh(hint or op) for _ in range(outputs)]
    self.nodes.append(self.onnx.helper.make_node(
        op, inputs, names, name=names[0], **attributes))
    return names[0] if outputs == 1 else names

  def tensor(self, value, perm=None):
    """The ONNX name of ``value`` laid out as transpose(value, perm)
    (the jaxpr's layout by default), making an initializer of a constant."""
    if isinstance(value, str):
      have = getattr(value, 'perm', None)
      rank = len(perm if perm is not None else have or ())
      have = have or tuple(range(rank))
      want = tuple(perm) if perm is not None else tuple(range(rank))
      if have == want:
        return str(value)
      key = (str(value), have, want)
      if key not in self._relaid:
        inverse = _inverse(have)
        self._relaid[key] = self.emit(
            'Transpose', [str(value)], 'Transpose',
            perm=[inverse[w] for w in want])
      return self._relaid[key]
    value = self.transpose(np.asarray(value), perm)
    if value.size <= _DEDUPLICATE_SIZE:
      key = (value.dtype.str, value.shape, value.tobytes())
      if key not in self._by_value:
        self._by_value[key] = self._add_initializer(
            value, self.constant_name(value) or 'const')
      return self._by_value[key]
    if id(value) not in self._by_identity:
      name = self._add_initializer(value, self.constant_name(value) or 'const')
      self._by_identity[id(value)] = (name, value)
    return self._by_identity[id(value)][0]

  def _add_initializer(self, value, hint):
    name = hint
    while name in self._names:
      name = f'{hint}_{next(self._counter)}'
    self._names.add(name)
    self.initializers[name] = value
    return name

  def int64(self, values):
    return np.asarray(values, np.int64)

  def transpose(self, x, perm):
    """transpose(x, perm): done here for a constant (keeping its name),
    a relabelling of the layout for a run-time value (no node)."""
    if perm is None or _identity(perm) or (
        isinstance(x, np.ndarray) and x.ndim != len(perm)):
      return x
    perm = tuple(int(p) for p in perm)
    if isinstance(x, np.ndarray):
      key = (id(x), perm)
      if key not in self._transposed:
        transposed = np.ascontiguousarray(np.transpose(x, perm))
        self.name_constant(transposed, self.constant_name(x),
                           self.constant_module(x))
        self._transposed[key] = (x, transposed)
      return self._transposed[key][1]
    have = getattr(x, 'perm', None) or tuple(range(len(perm)))
    inverse = _inverse(perm)
    return _Tensor(str(x), [inverse[h] for h in have])

  def negated(self, array):
    """-array, once per constant (keeping its name)."""
    key = (id(array), 'negated')
    if key not in self._transposed:
      negated = -array
      name = self.constant_name(array)
      self.name_constant(negated, name and f'{name}_negated',
                         self.constant_module(array))
      self._transposed[key] = (array, negated)
    return self._transposed[key][1]

  def onnx_dtype(self, dtype):
    return self.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

  # The symbolic batch.

  def batch(self):
    """[1] int64 tensor holding N, read once from the input's shape."""
    if self._batch is None:
      scope, self._scope = self._scope, ''
      shape = self.emit('Shape', [self.input_name], 'input_shape')
      self._batch = self.emit('Slice', [shape, self.int64([0]),
                                        self.int64([1])], 'batch_size')
      self._scope = scope
    return self._batch

  def _multiple_of_batch(self, dim):
    """k for a dim that is k * b, else a ConversionError."""
    k = dim // self.batch_symbol
    if not _is_static(k) or not _same_dim(dim, k * self.batch_symbol):
      raise self.error(f'the dimension {dim} is not a multiple of the batch')
    return int(k)

  def shape(self, dims, allow_minus_one=False):
    """An int64 shape tensor for dims that may hold k * b.

    With ``allow_minus_one`` (Reshape), a single symbolic dim becomes -1 and
    the shape stays a constant.
    """
    symbolic = [i for i, d in enumerate(dims) if not _is_static(d)]
    if not symbolic:
      return self.int64(dims)
    if allow_minus_one and len(symbolic) == 1:
      return self.int64([-1 if i in symbolic else d
                         for i, d in enumerate(dims)])
    pieces, static = [], []
    for d in dims:
      if _is_static(d):
        static.append(d)
        continue
      if static:
        pieces.append(self.int64(static))
        static = []
      k = self._multiple_of_batch(d)
      pieces.append(self.batch() if k == 1 else
                    self.emit('Mul', [self.batch(), self.int64([k])], 'dim'))
    if static:
      pieces.append(self.int64(static))
    return pieces[0] if len(pieces) == 1 else self.emit(
        'Concat', pieces, 'shape', axis=0)

  # Jaxprs.

  def error(self, message):
    where = f' (at {self._where})' if self._where else ''
    return ConversionError(f'{self.model_name}{where}: {message}')

  def run(self, jaxpr, consts, args):
    """Translates ``jaxpr`` applied to ``args``; returns its output values."""
    env = {}

    def read(atom):
      if isinstance(atom, jax_core.Literal):
        return np.asarray(atom.val, dtype=atom.aval.dtype)
      return env[atom]

    for var, const in zip(jaxpr.constvars, consts):
      env[var] = np.asarray(const)
    for var, arg in zip(jaxpr.invars, args):
      env[var] = arg
    for eqn in jaxpr.eqns:
      outputs = self.equation(eqn, [read(atom) for atom in eqn.invars])
      for var, value in zip(eqn.outvars, outputs):
        if not isinstance(var, jax_core.DropVar):
          env[var] = value
    return [read(atom) for atom in jaxpr.outvars]

  def equation(self, eqn, inputs):
    name = eqn.primitive.name
    stack = str(eqn.source_info.name_stack)
    scope, where = self._scope, self._where
    self._scope = stack or scope
    self._where = stack or where
    try:
      sub = self._sub_jaxpr(eqn)
      if sub is not None:
        sub_jaxpr, sub_consts = sub
        return self.run(sub_jaxpr, sub_consts, inputs)
      if (all(isinstance(x, np.ndarray) for x in inputs)
          and all(all(_is_static(d) for d in v.aval.shape)
                  for v in eqn.outvars)):
        return self.fold(eqn, inputs)
      translate = _TRANSLATIONS.get(name)
      if translate is None:
        raise self.error(
            f"the primitive '{name}' has no ONNX translation (translated: "
            f'{", ".join(sorted(_TRANSLATIONS))}; constant inputs are '
            f'folded)')
      return translate(self, eqn, inputs)
    finally:
      self._scope, self._where = scope, where

  def _sub_jaxpr(self, eqn):
    if eqn.primitive.name not in _CALL_PRIMITIVES:
      return None
    for key in _CALL_PARAMS:
      sub = eqn.params.get(key)
      if sub is None:
        continue
      if isinstance(sub, jax_core.ClosedJaxpr):
        return sub.jaxpr, sub.consts
      if isinstance(sub, jax_core.Jaxpr):
        return sub, []
    raise self.error(f"'{eqn.primitive.name}' without a nested jaxpr")

  def fold(self, eqn, inputs):
    """Evaluates an all-constant equation with jax: exactly the model's
    arithmetic, at conversion time."""
    results = eqn.primitive.bind(*inputs, **eqn.params)
    if not eqn.primitive.multiple_results:
      results = [results]
    results = [np.asarray(r) for r in results]
    # A relayout of one named constant keeps its name; a computation is
    # named by the module its inputs share and the primitive.
    named = [x for x in inputs if self.constant_name(x)]
    if (len(named) == 1 and len(inputs) == 1
        and eqn.primitive.name in _RELAYOUTS):
      name, module = self.constant_name(named[0]), self.constant_module(
          named[0])
    elif named:
      paths = [self.constant_module(x).split('/') for x in named]
      module = '/'.join(os.path.commonprefix(paths))
      name = f'{module}/{eqn.primitive.name}' if module else None
    else:
      name = module = None
    for result in results:
      self.name_constant(result, name, module)
    return results

  def _fuse_prelu(self):
    """Where(x >= 0, x, slope * x), a PReLU (or leaky ReLU) as jax writes
    it, becomes PRelu(x, slope): the same values (at x = 0 both give x),
    one node instead of three, the op TensorRT and insightface's files use.
    The comparison and the product are left to the dead-node pass."""
    producers = {out: node for node in self.nodes for out in node.output}
    for i, node in enumerate(self.nodes):
      if node.op_type != 'Where':
        continue
      condition, x, other = node.input
      compare, product = producers.get(condition), producers.get(other)
      if (compare is None or product is None
          or compare.op_type not in ('GreaterOrEqual', 'Greater')
          or product.op_type != 'Mul' or compare.input[0] != x
          or list(product.input).count(x) != 1):
        continue
      zero = self.initializers.get(compare.input[1])
      slope, = [name for name in product.input if name != x]
      if (zero is None or zero.size != 1 or zero.item() != 0
          or slope not in self.initializers):
        continue
      self.nodes[i] = self.onnx.helper.make_node(
          'PRelu', [x, slope], list(node.output), name=node.name)

  def graph(self, result, image_size, embedding_dim):
    """The ONNX graph: live nodes only, the result renamed to the output
    name (reserved, so no other tensor has it)."""
    helper, output_name = self.onnx.helper, self.output_name
    result = self.tensor(result)
    if result == self.input_name:
      self.emit('Identity', [result], 'output')
      self.nodes[-1].output[0] = output_name
    else:
      for node in self.nodes:
        for i, name in enumerate(node.output):
          if name == result:
            node.output[i] = output_name
        for i, name in enumerate(node.input):
          if name == result:
            node.input[i] = output_name

    self._fuse_prelu()
    live, nodes = {output_name}, []
    for node in reversed(self.nodes):
      if any(name in live for name in node.output):
        nodes.append(node)
        live.update(node.input)
    nodes.reverse()
    for node in nodes:
      if node.name.startswith(_MXNET_NORMALISATION_NAMES):
        node.name = f'facejax/{node.name}'
    initializers = [self.onnx.numpy_helper.from_array(value, name)
                    for name, value in self.initializers.items()
                    if name in live]
    height, width = image_size
    inputs = [helper.make_tensor_value_info(
        self.input_name, self.onnx.TensorProto.FLOAT,
        [BATCH_DIM_PARAM, 3, height, width])]
    outputs = [helper.make_tensor_value_info(
        output_name, self.onnx.TensorProto.FLOAT,
        [BATCH_DIM_PARAM, embedding_dim])]
    return helper.make_graph(nodes, self.model_name, inputs, outputs,
                             initializer=initializers)


# Translations: (converter, eqn, input values) -> output values.


def _elementwise(translate):
  """Runs an elementwise translation in the layout of its first run-time
  input that is not in the jaxpr's (full-rank constants are transposed
  here, scalars broadcast as they are)."""
  def wrapped(cv, eqn, inputs):
    rank = len(eqn.outvars[0].aval.shape)
    perm = next((x.perm for x in inputs
                 if getattr(x, 'perm', None) and len(x.perm) == rank), None)
    laid = [x if len(v.aval.shape) != rank else
            cv.transpose(x, perm) if isinstance(x, np.ndarray) else
            cv.tensor(x, perm) for x, v in zip(inputs, eqn.invars)]
    return [_Tensor(y, perm) if isinstance(y, str) else y
            for y in translate(cv, eqn, laid)]
  return wrapped


def _unary(op):
  def translate(cv, eqn, inputs):
    return [cv.emit(op, inputs)]
  return translate


def _binary(op):
  def translate(cv, eqn, inputs):
    return [cv.emit(op, inputs)]
  return translate


def _sub(cv, eqn, inputs):
  """x - c as x + (-c) for a float constant c (the same IEEE result): a
  batch norm's (x - mean) * scale + bias is then Add, Mul, Add with
  constants, which onnxruntime folds into the preceding Conv."""
  x, y = inputs
  if isinstance(y, np.ndarray) and np.issubdtype(y.dtype, np.floating):
    negated = cv.negated(y)
    return [cv.emit('Add', [x, negated], 'Sub')]
  return [cv.emit('Sub', inputs)]


def _boolean(op):
  def translate(cv, eqn, inputs):
    if any(v.aval.dtype != np.bool_ for v in eqn.invars):
      raise cv.error(f"'{eqn.primitive.name}' of non-boolean values "
                     f'(bitwise) has no ONNX translation')
    return [cv.emit(op, inputs)]
  return translate


def _ne(cv, eqn, inputs):
  return [cv.emit('Not', [cv.emit('Equal', inputs)], 'NotEqual')]


def _alias(cv, eqn, inputs):
  return [inputs[0]]


def _rsqrt(cv, eqn, inputs):
  return [cv.emit('Reciprocal', [cv.emit('Sqrt', inputs)], 'Rsqrt')]


def _erfc(cv, eqn, inputs):
  """1 - Erf(x) (ONNX has no Erfc): within an ulp of 1 of erfc, so exact
  GELU's x * erfc(-x / sqrt 2) / 2 is off by at most |x| * 6e-8."""
  one = np.asarray(1, eqn.invars[0].aval.dtype)
  return [cv.emit('Sub', [one, cv.emit('Erf', inputs)], 'Erfc')]


def _square(cv, eqn, inputs):
  return [cv.emit('Mul', [inputs[0], inputs[0]], 'Square')]


def _integer_pow(cv, eqn, inputs):
  x, y = inputs[0], eqn.params['y']
  if y == 1:
    return [x]
  if y == 2:
    return [cv.emit('Mul', [x, x], 'Square')]
  return [cv.emit('Pow', [x, np.asarray(y, eqn.invars[0].aval.dtype)])]


def _clamp(cv, eqn, inputs):
  low, x, high = inputs
  return [cv.emit('Min', [cv.emit('Max', [x, low]), high], 'Clamp')]


def _select_n(cv, eqn, inputs):
  """select_n(pred, *cases) picks cases[pred]: Where(pred, case1, case0)
  for a boolean, a chain of Where(pred == i) for an integer index."""
  pred, cases = inputs[0], inputs[1:]
  if eqn.invars[0].aval.dtype == np.bool_:
    return [cv.emit('Where', [pred, cases[1], cases[0]], 'Select')]
  result = cases[0]
  dtype = eqn.invars[0].aval.dtype
  for i, case in enumerate(cases[1:], 1):
    chosen = cv.emit('Equal', [pred, np.asarray(i, dtype)])
    result = cv.emit('Where', [chosen, case, result], 'Select')
  return [result]


def _convert_element_type(cv, eqn, inputs):
  dtype = eqn.params['new_dtype']
  if np.dtype(dtype) == eqn.invars[0].aval.dtype:
    return [inputs[0]]
  return [cv.emit('Cast', inputs, to=cv.onnx_dtype(dtype))]


def _broadcast_in_dim(cv, eqn, inputs):
  """Unsqueeze to the target rank, then Expand where a dim grows (Expand
  broadcasts, so a dim already the right size is given as 1)."""
  if len(inputs) != 1:
    raise cv.error('broadcast_in_dim with dynamic shape operands')
  shape, dims = eqn.params['shape'], eqn.params['broadcast_dimensions']
  operand_shape = eqn.invars[0].aval.shape
  x = inputs[0]
  new_axes = [i for i in range(len(shape)) if i not in dims]
  if new_axes and isinstance(x, np.ndarray):
    x = np.expand_dims(x, new_axes)
  elif new_axes:
    x = cv.emit('Unsqueeze', [x, cv.int64(new_axes)])
  expand = []
  for i, d in enumerate(shape):
    if i in dims and _same_dim(operand_shape[dims.index(i)], d):
      expand.append(1)
    else:
      expand.append(d)
  if not all(_is_one(d) for d in expand):
    x = cv.emit('Expand', [x, cv.shape(expand)])
  return [x]


def _reshape(cv, eqn, inputs):
  if eqn.params.get('dimensions') is not None:
    raise cv.error('reshape with dimensions (a transposing reshape)')
  if len(inputs) != 1:
    raise cv.error('reshape with dynamic shape operands')
  new_sizes = eqn.params['new_sizes']
  if tuple(new_sizes) == tuple(eqn.invars[0].aval.shape):
    return [inputs[0]]
  return [cv.emit('Reshape', [inputs[0], cv.shape(new_sizes, True)])]


def _squeeze(cv, eqn, inputs):
  return [cv.emit('Squeeze', [inputs[0],
                              cv.int64(eqn.params['dimensions'])])]


def _transpose(cv, eqn, inputs):
  return [cv.transpose(inputs[0], eqn.params['permutation'])]


def _concatenate(cv, eqn, inputs):
  return [cv.emit('Concat', inputs, axis=int(eqn.params['dimension']))]


def _pad(cv, eqn, inputs):
  x, value = inputs
  config = eqn.params['padding_config']
  if any(interior or low < 0 or high < 0 for low, high, interior in config):
    raise cv.error(f'pad with interior or negative padding {config}')
  if not any(low or high for low, high, _ in config):
    return [x]
  pads = [low for low, _, _ in config] + [high for _, high, _ in config]
  return [cv.emit('Pad', [x, cv.int64(pads), value], mode='constant')]


def _slice(cv, eqn, inputs):
  shape = eqn.invars[0].aval.shape
  starts, limits = eqn.params['start_indices'], eqn.params['limit_indices']
  strides = eqn.params['strides'] or (1,) * len(shape)
  axes, onnx_starts, ends, steps = [], [], [], []
  for axis, (size, start, limit, stride) in enumerate(
      zip(shape, starts, limits, strides)):
    if _is_static(start) and start == 0 and stride == 1 and _same_dim(
        limit, size):
      continue
    if not (_is_static(start) and _is_static(limit) and _is_static(stride)):
      raise cv.error(f'slice with symbolic bounds on axis {axis}')
    axes.append(axis)
    onnx_starts.append(start)
    ends.append(limit)
    steps.append(stride)
  if not axes:
    return [inputs[0]]
  return [cv.emit('Slice', [inputs[0], cv.int64(onnx_starts),
                            cv.int64(ends), cv.int64(axes),
                            cv.int64(steps)])]


def _reduce(op):
  def translate(cv, eqn, inputs):
    axes = [int(a) for a in eqn.params['axes']]
    if not axes:
      return [inputs[0]]
    if op == 'ReduceSum' or cv.opset >= 18:
      return [cv.emit(op, [inputs[0], cv.int64(axes)], keepdims=0)]
    return [cv.emit(op, inputs, axes=axes, keepdims=0)]
  return translate


def _cast_to_result(cv, eqn, inputs):
  """Inputs cast to the result's dtype (a preferred_element_type)."""
  dtype = eqn.outvars[0].aval.dtype
  return [x if v.aval.dtype == dtype else
          (x.astype(dtype) if isinstance(x, np.ndarray) else
           cv.emit('Cast', [x], to=cv.onnx_dtype(dtype)))
          for x, v in zip(inputs, eqn.invars)]


def _dot_general(cv, eqn, inputs):
  """MatMul for [..., K] @ [K, E] (a Dense layer, the kernel transposed if
  it is [E, K]); Einsum for any other contraction."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = (
      eqn.params['dimension_numbers'])
  lhs, rhs = _cast_to_result(cv, eqn, inputs)
  lhs_rank = len(eqn.invars[0].aval.shape)
  rhs_rank = len(eqn.invars[1].aval.shape)
  if (not lhs_batch and rhs_rank == 2 and tuple(lhs_contract) == (
      lhs_rank - 1,) and tuple(rhs_contract) in ((0,), (1,))):
    if tuple(rhs_contract) == (1,):
      rhs = cv.transpose(rhs, (1, 0))
    return [cv.emit('MatMul', [lhs, rhs])]
  letters = iter('abcdefghijklmnopqrstuvwxyz')
  lhs_letters = [next(letters) for _ in range(lhs_rank)]
  rhs_letters = [None] * rhs_rank
  for l, r in zip(tuple(lhs_contract) + tuple(lhs_batch),
                  tuple(rhs_contract) + tuple(rhs_batch)):
    rhs_letters[r] = lhs_letters[l]
  rhs_letters = [x or next(letters) for x in rhs_letters]
  out = ([lhs_letters[i] for i in lhs_batch]
         + [x for i, x in enumerate(lhs_letters)
            if i not in lhs_batch and i not in lhs_contract]
         + [x for i, x in enumerate(rhs_letters)
            if i not in rhs_batch and i not in rhs_contract])
  equation = f'{"".join(lhs_letters)},{"".join(rhs_letters)}->{"".join(out)}'
  return [cv.emit('Einsum', [lhs, rhs], equation=equation)]


def _conv_general_dilated(cv, eqn, inputs):
  """Conv on the input laid out as its lhs_spec (N, C, spatial), a Transpose
  only if it is not already; the output is left in out_spec's layout. A
  constant kernel is transposed to OI(spatial) here."""
  params = eqn.params
  if any(d != 1 for d in params['lhs_dilation']):
    raise cv.error(f'conv_general_dilated with lhs_dilation '
                   f'{params["lhs_dilation"]} (a transposed convolution)')
  if params['batch_group_count'] != 1:
    raise cv.error('conv_general_dilated with batch_group_count '
                   f'{params["batch_group_count"]}')
  padding = params['padding']
  if isinstance(padding, str) or any(
      low < 0 or high < 0 for low, high in padding):
    raise cv.error(f'conv_general_dilated with padding {padding}')
  lhs_spec, rhs_spec, out_spec = params['dimension_numbers']
  lhs, rhs = _cast_to_result(cv, eqn, inputs)
  x = cv.tensor(lhs, lhs_spec)
  kernel = cv.tensor(rhs, rhs_spec)
  kernel_shape = [int(eqn.invars[1].aval.shape[d]) for d in rhs_spec[2:]]
  y = cv.emit('Conv', [x, kernel],
              kernel_shape=kernel_shape,
              strides=[int(s) for s in params['window_strides']],
              pads=[int(low) for low, _ in padding]
              + [int(high) for _, high in padding],
              dilations=[int(d) for d in params['rhs_dilation']],
              group=int(params['feature_group_count']))
  return [_Tensor(y, out_spec)]


def _reduce_window(op):
  """MaxPool (pads are -inf in both), or AveragePool counting the padding,
  times the window size, for a sum; the first two dims with a trivial
  window and no padding serve as N and C (a layout, as for Conv)."""
  def translate(cv, eqn, inputs):
    params = eqn.params
    window, strides = params['window_dimensions'], params['window_strides']
    padding, dilation = params['padding'], params['window_dilation']
    if any(d != 1 for d in params['base_dilation']):
      raise cv.error(f'{eqn.primitive.name} with base_dilation '
                     f'{params["base_dilation"]}')
    if op == 'AveragePool' and any(d != 1 for d in dilation):
      raise cv.error(f'{eqn.primitive.name} with window_dilation {dilation}')
    if any(low < 0 or high < 0 for low, high in padding):
      raise cv.error(f'{eqn.primitive.name} with padding {padding}')
    trivial = [i for i in range(len(window))
               if window[i] == 1 and strides[i] == 1 and dilation[i] == 1
               and tuple(padding[i]) == (0, 0)]
    if len(trivial) < 2 or len(window) < 3:
      raise cv.error(f'{eqn.primitive.name} needs two dims outside the '
                     f'window (batch and channels), got window {window}')
    perm = trivial[:2] + [i for i in range(len(window))
                          if i not in trivial[:2]]
    spatial = perm[2:]
    attributes = dict(
        kernel_shape=[int(window[i]) for i in spatial],
        strides=[int(strides[i]) for i in spatial],
        pads=[int(padding[i][0]) for i in spatial]
        + [int(padding[i][1]) for i in spatial])
    if op == 'MaxPool':
      attributes['dilations'] = [int(dilation[i]) for i in spatial]
    else:
      attributes['count_include_pad'] = 1
    y = cv.emit(op, [cv.tensor(inputs[0], perm)], **attributes)
    if op == 'AveragePool':
      size = int(np.prod([window[i] for i in spatial]))
      y = cv.emit('Mul', [y, np.asarray(size, eqn.outvars[0].aval.dtype)],
                  'WindowSum')
    return [_Tensor(y, perm)]
  return translate


_TRANSLATIONS = {
    **{name: _elementwise(_unary(op)) for name, op in _UNARY.items()},
    **{name: _elementwise(_binary(op)) for name, op in _BINARY.items()},
    **{name: _elementwise(_boolean(op)) for name, op in _BOOLEAN.items()},
    **{name: _elementwise(translate) for name, translate in (
        ('sub', _sub), ('ne', _ne), ('rsqrt', _rsqrt), ('erfc', _erfc),
        ('square', _square), ('integer_pow', _integer_pow),
        ('clamp', _clamp), ('select_n', _select_n),
        ('convert_element_type', _convert_element_type))},
    **{name: _reduce(op) for name, op in _REDUCE.items()},
    'copy': _alias,
    'copy_p': _alias,
    'broadcast_in_dim': _broadcast_in_dim,
    'reshape': _reshape,
    'squeeze': _squeeze,
    'transpose': _transpose,
    'concatenate': _concatenate,
    'pad': _pad,
    'slice': _slice,
    'dot_general': _dot_general,
    'conv_general_dilated': _conv_general_dilated,
    'reduce_window_max': _reduce_window('MaxPool'),
    'reduce_window_sum': _reduce_window('AveragePool'),
}
