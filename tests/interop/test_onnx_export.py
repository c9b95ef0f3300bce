"""onnx_export: every backbone as an insightface-style ONNX file, checked by
running it in onnxruntime against the flax model."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

# pylint: disable=g-import-not-at-top,wrong-import-position
from facejax import models
from facejax.interop import errors
from facejax.interop import onnx_export
from tests.models import zoo

BATCH = 3  # not the traced batch: the file's batch must be symbolic


def perturbed(variables, seed=1):
  """Every leaf moved randomly (variances kept positive), so that the batch
  norms, PReLU slopes and biases all matter and none is an identity."""
  rng = np.random.default_rng(seed)

  def move(path, leaf):
    leaf = np.asarray(leaf)
    noise = rng.standard_normal(leaf.shape).astype(leaf.dtype)
    if jax.tree_util.keystr(path[-1:], simple=True) == 'var':
      return leaf * np.exp(0.3 * noise)
    return leaf + 0.2 * (leaf.std() or 1.0) * noise

  return jax.tree_util.tree_map_with_path(move, variables)


def session(path):
  return ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])


def check_against_flax(model, variables, path, shape):
  """onnxruntime on NCHW images == model.apply on the same NHWC images."""
  images = zoo.images((BATCH,) + tuple(shape[1:]), seed=2)
  expected = np.asarray(zoo.apply(model, variables, images))
  got, = session(path).run(None, {'data': images.transpose(0, 3, 1, 2)})
  assert got.shape == expected.shape and got.dtype == np.float32
  scale = max(1.0, float(np.abs(expected).max()))
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize('case', sorted(zoo.TINY))
def test_matches_flax(case, tmp_path):
  model, shape, _ = zoo.build(case)
  variables = perturbed(zoo.init(model, shape))
  path = onnx_export.to_onnx(model, variables, tmp_path / f'{case}.onnx',
                             shape[1:3])
  check_against_flax(model, variables, path, shape)


def test_mbf_grouped_stem(tmp_path):
  """mobilefacenet_mbf's grouped (not depthwise) stem and output scale."""
  model = models.get(
      'mobilefacenet', embedding_dim=16, stem_features=8, stem_groups=4,
      expanded_features=16, bottlenecks=((2, 8, 2, 2), (2, 16, 1, 2)),
      output_norm_scale=True)
  shape = (2, 32, 32, 3)
  variables = perturbed(zoo.init(model, shape))
  path = onnx_export.to_onnx(model, variables, tmp_path / 'mbf.onnx', 32)
  groups = {a.i for n in onnx.load(path).graph.node if n.op_type == 'Conv'
            for a in n.attribute if a.name == 'group'}
  assert 4 in groups
  check_against_flax(model, variables, path, shape)


@pytest.mark.parametrize('case', ['iresnet18', 'deepid2'])
def test_insightface_conventions(case, tmp_path):
  """What insightface's ArcFaceONNX reads: one input 'data' [N, 3, H, W]
  with N symbolic, input_size = (W, H), one output [N, D]; deepid2 is
  55x47, so H and W are not swapped or squared."""
  model, shape, dim = zoo.build(case)
  height, width = shape[1:3]
  size = height if height == width else (height, width)
  path = onnx_export.to_onnx(model, zoo.init(model, shape),
                             str(tmp_path / 'model.onnx'), size)
  assert path == str(tmp_path / 'model.onnx')

  file = onnx.load(path)
  onnx.checker.check_model(file)
  assert [o.version for o in file.opset_import] == [13]
  graph_input, = file.graph.input  # the weights are initializers only
  assert graph_input.name == 'data'
  assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
  dims = graph_input.type.tensor_type.shape.dim
  assert dims[0].dim_param and not dims[0].HasField('dim_value')
  assert [d.dim_value for d in dims[1:]] == [3, height, width]
  # ArcFaceONNX's test for an mxnet file that normalises its input itself
  # (it would then feed raw pixels): node names starting Sub and Mul.
  first = [node.name for node in file.graph.node[:8]]
  assert not (any(n.startswith(('Sub', '_minus')) for n in first)
              and any(n.startswith(('Mul', '_mul')) for n in first))
  graph_output, = file.graph.output
  assert graph_output.name == 'fc1'
  assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT

  runtime = session(path)
  inputs, outputs = runtime.get_inputs(), runtime.get_outputs()
  assert len(inputs) == 1 and len(outputs) == 1
  input_shape = inputs[0].shape
  assert isinstance(input_shape[0], str)
  assert tuple(input_shape[2:4][::-1]) == (width, height)  # ArcFaceONNX
  assert input_shape[1] == 3
  assert isinstance(outputs[0].shape[0], str) and outputs[0].shape[1] == dim
  for batch in (1, 5):
    out, = runtime.run(None, {'data': np.zeros((batch, 3, height, width),
                                               np.float32)})
    assert out.shape == (batch, dim)


def test_graph_is_lean(tmp_path):
  """Layouts are tracked, not transposed around every Conv (one Transpose,
  before the flattening Reshape), and PReLU is one PRelu node."""
  model, shape, _ = zoo.build('iresnet18')
  path = onnx_export.to_onnx(model, zoo.init(model, shape),
                             tmp_path / 'model.onnx', 32)
  ops = [node.op_type for node in onnx.load(path).graph.node]
  assert ops.count('Transpose') == 1
  assert ops.count('PRelu') == 5 and 'Where' not in ops
  assert 'Sub' not in ops  # x - mean is x + (-mean), foldable into a Conv


def test_names_and_opset(tmp_path):
  model, shape, dim = zoo.build('sphereface20_bn')
  path = onnx_export.to_onnx(model, zoo.init(model, shape),
                             tmp_path / 'model.onnx', 32, opset=17,
                             input_name='images', output_name='embedding')
  file = onnx.load(path)
  assert [o.version for o in file.opset_import] == [17]
  runtime = session(path)
  assert [i.name for i in runtime.get_inputs()] == ['images']
  out, = runtime.run(['embedding'],
                     {'images': np.zeros((2, 3, 32, 32), np.float32)})
  assert out.shape == (2, dim)


def primitives(jaxpr):
  """The primitives of a jaxpr and of the jaxprs nested in it."""
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for param in eqn.params.values():
      nested = getattr(param, 'jaxpr', param)
      if hasattr(nested, 'eqns'):
        names |= primitives(nested)
  return names


class _Neighbours(nn.Module):
  """Primitives no backbone uses yet but the translator claims: padding,
  strided slices, dilated convolutions, sum pools, reductions, a
  batch-dimension contraction, broadcasts to k * N, and elementwise ops."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = jnp.pad(x, ((0, 0), (1, 2), (2, 1), (0, 0)), constant_values=0.5)
    # (Indexing like x[:, 1:-1, ::2] is a gather under a symbolic batch.)
    x = jax.lax.slice(x, (0, 1, 0, 0), (x.shape[0], x.shape[1] - 1,
                                        x.shape[2], x.shape[3]), (1, 1, 2, 1))
    x = nn.Conv(4, (3, 3), kernel_dilation=2, padding=((1, 1), (2, 0)))(x)
    x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding='SAME')
    x = jnp.transpose(x, (0, 2, 1, 3))
    x = jnp.tanh(x) + jax.nn.sigmoid(x) * jnp.exp(-jnp.abs(x))
    x = x / (1.0 + jnp.sqrt(x ** 2 + 1.0)) + jnp.log(1.0 + x ** 2) - x ** 3
    x = nn.gelu(jax.lax.clamp(-0.5, x, 0.7), approximate=False)  # erfc
    x = x + jax.scipy.special.erf(x)
    x = jnp.minimum(x, 0.3) - jnp.mean(x, axis=(1, 2), keepdims=True)
    peak = jnp.max(x, axis=(1, 2))
    gram = jnp.einsum('bhwc,bhwd->bcd', x, x).reshape(x.shape[0], -1)
    y = nn.Dense(6)(x.reshape(x.shape[0], -1))
    y = jnp.concatenate([y, peak, gram, jnp.squeeze(jnp.expand_dims(
        jax.lax.slice_in_dim(y, 0, 2, axis=1), 1), 1),
                         jnp.ones((2 * x.shape[0], 3)).reshape(-1, 6)], 1)
    return jnp.where(y > 0.1, y, 0.1 * y)


def test_translates_neighbour_primitives(tmp_path):
  model = _Neighbours()
  shape = (2, 16, 20, 3)
  variables = perturbed(zoo.init(model, shape))
  used = primitives(jax.make_jaxpr(lambda v, x: model.apply(v, x))(
      variables, jnp.zeros(shape)).jaxpr)
  assert {'pad', 'slice', 'reduce_window_sum', 'reduce_sum', 'reduce_max',
          'clamp', 'erf', 'erfc', 'integer_pow', 'squeeze',
          'select_n'} <= used, used
  path = onnx_export.to_onnx(model, variables, tmp_path / 'toy.onnx',
                             shape[1:3])
  check_against_flax(model, variables, path, shape)


class _Cumulative(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(4)(jax.lax.cumsum(x, axis=1).reshape(x.shape[0], -1))


class _Transposed(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = nn.ConvTranspose(2, (3, 3), strides=(2, 2))(x)
    return x.reshape(x.shape[0], -1)


@pytest.mark.parametrize('module, refused', [
    (_Cumulative(), "'cumsum'"), (_Transposed(), 'lhs_dilation')])
def test_refuses_what_it_cannot_translate(module, refused, tmp_path):
  shape = (1, 8, 8, 3)
  variables = zoo.init(module, shape)
  path = tmp_path / 'refused.onnx'
  with pytest.raises(errors.ConversionError, match=refused) as raised:
    onnx_export.to_onnx(module, variables, path, 8)
  assert type(module).__name__ in str(raised.value)
  assert not path.exists()


def test_refuses_bad_arguments(tmp_path):
  model, shape, _ = zoo.build('vgg_face')
  variables = zoo.init(model, shape)
  with pytest.raises(ValueError, match='image_size'):
    onnx_export.to_onnx(model, variables, tmp_path / 'm.onnx', (32, 32, 3))
  with pytest.raises(ValueError, match='opset'):
    onnx_export.to_onnx(model, variables, tmp_path / 'm.onnx', 32, opset=11)
