"""onnx_import: insightface-style ONNX graphs -> arcface_torch state dicts.

The fixtures are made here, never committed: tiny arcface_torch models
(``arcface_torch_models``), randomised, exported the way arcface_torch's
``torch2onnx.py`` exports the zoo models (opset 11, eval mode, batch dim
``'None'``), which fuses the batch norms after the convolutions. The proof
that the topology walk and the un-fusing are right: the recovered state dict,
loaded into a fresh torch model, reproduces onnxruntime on the same images.
"""
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from facejax.interop.errors import ConversionError
from facejax.interop.onnx_import import state_dict_from_onnx
from bench import arcface_torch_models

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
from onnx import helper  # noqa: E402  pylint: disable=g-import-not-at-top
from onnx import numpy_helper  # noqa: E402  pylint: disable=g-import-not-at-top

SIZE = 32
STAGE_UNITS = (1, 2, 1, 1)
BLOCKS = (1, 2, 2, 1)


def make_iresnet():
  return arcface_torch_models.IResNet(
      STAGE_UNITS, stage_features=(8, 8, 16, 16), stem_features=8,
      embedding_dim=16, image_size=SIZE)


def make_mobilefacenet():
  return arcface_torch_models.MobileFaceNet(
      embedding_dim=16, blocks=BLOCKS, scale=2, divisor=8, image_size=SIZE)


FAMILIES = {'iresnet': make_iresnet, 'mobilefacenet': make_mobilefacenet}


def export(net, path):
  """torch2onnx.py's export (plus the batch dim it renames to 'None')."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)  # the legacy exporter
    torch.onnx.export(
        net, torch.zeros(1, 3, SIZE, SIZE), str(path), input_names=['data'],
        output_names=['fc1'], keep_initializers_as_inputs=False,
        opset_version=11, dynamo=False, dynamic_axes={'data': {0: 'None'}})
  return path


def images(seed=0, count=4):
  """NHWC float32 in [-1, 1]: what (x - 127.5) / 127.5 gives."""
  return np.random.default_rng(seed).uniform(
      -1, 1, (count, SIZE, SIZE, 3)).astype(np.float32)


def run_onnx(path, nchw):
  options = ort.SessionOptions()
  options.log_severity_level = 3  # not the initializers-as-inputs warnings
  session = ort.InferenceSession(str(path), options,
                                 providers=['CPUExecutionProvider'])
  return session.run(None, {session.get_inputs()[0].name: nchw})[0]


def torch_embed(make, state_dict, images_nhwc):
  """Embeddings of a fresh model loaded with ``state_dict``; checks that
  only num_batches_tracked is missing and nothing is unexpected."""
  net = make().eval()
  result = net.load_state_dict(
      {key: torch.from_numpy(value) for key, value in state_dict.items()},
      strict=False)
  assert not result.unexpected_keys
  assert all(key.endswith('num_batches_tracked')
             for key in result.missing_keys)
  return arcface_torch_models.embed(net, images_nhwc)


def op_counts(model):
  counts = {}
  for node in model.graph.node:
    counts[node.op_type] = counts.get(node.op_type, 0) + 1
  return counts


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """family -> (path of the export, the randomised torch model)."""
  root = tmp_path_factory.mktemp('onnx_import')
  result = {}
  for seed, (family, make) in enumerate(FAMILIES.items()):
    net = arcface_torch_models.randomise(make(), seed=seed, image_size=SIZE)
    result[family] = (export(net, root / f'{family}.onnx'), net)
  return result


def torch1_style(path, out):
  """The export as a torch-1.x zoo file looks: every initializer named by a
  bare number ('685', ...), nodes named 'Op_i', and the node list reversed
  (the importer must not lean on names or order; onnxruntime is run on the
  original)."""
  model = onnx.load(str(path))
  names = {tensor.name: str(685 + index)
           for index, tensor in enumerate(model.graph.initializer)}
  for tensor in model.graph.initializer:
    tensor.name = names[tensor.name]
  for index, node in enumerate(model.graph.node):
    node.name = f'{node.op_type}_{index}'
    for position, name in enumerate(node.input):
      node.input[position] = names.get(name, name)
  nodes = list(model.graph.node)[::-1]
  del model.graph.node[:]
  model.graph.node.extend(nodes)
  onnx.save(model, str(out))
  return out


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_the_export_fuses_the_batch_norms_after_convolutions(exported,
                                                            family):
  model = onnx.load(str(exported[family][0]))
  counts = op_counts(model)
  # Left as nodes: IResNet's pre-activation bn1 of each unit, bn2 and
  # features; MobileFaceNet's last BatchNorm1d only.
  expected = sum(STAGE_UNITS) + 2 if family == 'iresnet' else 1
  assert counts['BatchNormalization'] == expected
  assert not any(tensor.name.endswith('running_var')
                 and 'conv' in tensor.name
                 for tensor in model.graph.initializer)
  assert any(tensor.name.startswith('onnx::Conv_')
             for tensor in model.graph.initializer)


@pytest.mark.parametrize('naming', ['torch2', 'torch1'])
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_state_dict_reproduces_onnxruntime(exported, tmp_path, family,
                                           naming):
  path, net = exported[family]
  source = path if naming == 'torch2' else torch1_style(
      path, tmp_path / 'numbers.onnx')
  state_dict, info = state_dict_from_onnx(source)
  expected_keys = {key for key in net.state_dict()
                   if not key.endswith('num_batches_tracked')}
  assert set(state_dict) == expected_keys
  assert all(value.dtype == np.float32 for value in state_dict.values())
  x = images(seed=1)
  reference = run_onnx(path, x.transpose(0, 3, 1, 2))
  difference = np.abs(torch_embed(FAMILIES[family], state_dict, x)
                      - reference).max()
  assert difference < 1e-5, difference
  counts = op_counts(onnx.load(str(path)))
  assert info['family'] == family
  assert info['input_name'] == 'data'
  assert info['input_shape'] == ['None', 3, SIZE, SIZE]
  assert info['fused_batch_norms'] == counts['Conv']
  assert info['folded'] == []
  assert info['embedding_dim'] == 16
  if family == 'iresnet':
    assert info['stage_units'] == STAGE_UNITS
  else:
    assert info['blocks'] == BLOCKS


def test_unfused_norms_are_identity_with_the_conv_bias(exported):
  """weight 1, bias b, statistics (0, 1 - 1e-5): sqrt(var + eps) = 1."""
  state_dict, _ = state_dict_from_onnx(exported['iresnet'][0])
  bias = {tensor.name: numpy_helper.to_array(tensor) for tensor in onnx.load(
      str(exported['iresnet'][0])).graph.initializer}
  np.testing.assert_array_equal(state_dict['bn1.weight'], 1)
  np.testing.assert_array_equal(state_dict['bn1.running_mean'], 0)
  np.testing.assert_array_equal(state_dict['bn1.running_var'],
                                np.float32(1 - 1e-5))
  assert any(np.array_equal(state_dict['bn1.bias'], value)
             for value in bias.values())
  # The norms left as nodes keep their statistics.
  np.testing.assert_array_equal(state_dict['bn2.running_var'],
                                bias['bn2.running_var'])


def test_gemm_with_transb_0_is_transposed(exported, tmp_path):
  path, net = exported['iresnet']
  model = onnx.load(str(path))
  gemm, = (node for node in model.graph.node if node.op_type == 'Gemm')
  for attribute in gemm.attribute:
    if attribute.name == 'transB':
      attribute.i = 0
  weight, = (t for t in model.graph.initializer if t.name == gemm.input[1])
  weight.CopyFrom(numpy_helper.from_array(
      np.ascontiguousarray(numpy_helper.to_array(weight).T), weight.name))
  onnx.save(model, str(tmp_path / 'transb0.onnx'))
  x = images(seed=2)
  reference = run_onnx(tmp_path / 'transb0.onnx', x.transpose(0, 3, 1, 2))
  state_dict, info = state_dict_from_onnx(tmp_path / 'transb0.onnx')
  np.testing.assert_array_equal(state_dict['fc.weight'],
                                net.fc.weight.detach().numpy())
  assert any('transB=0' in note for note in info['folded'])
  assert np.abs(torch_embed(make_iresnet, state_dict, x)
                - reference).max() < 1e-5


def test_flatten_as_a_computed_reshape(tmp_path):
  """``x.view(x.size(0), -1)`` exports as Shape/Gather/Unsqueeze/Concat/
  Reshape instead of Flatten."""

  class View(nn.Module):

    def forward(self, x):
      return x.view(x.size(0), -1)

  net = arcface_torch_models.randomise(make_mobilefacenet(), seed=3,
                                       image_size=SIZE)
  net.features.layers[1] = View()
  path = export(net, tmp_path / 'view.onnx')
  assert 'Reshape' in op_counts(onnx.load(str(path)))
  x = images(seed=3)
  state_dict, _ = state_dict_from_onnx(path)
  assert np.abs(torch_embed(make_mobilefacenet, state_dict, x)
                - run_onnx(path, x.transpose(0, 3, 1, 2))).max() < 1e-5


class MxnetGraph:
  """An mxnet-era IResNet graph built from an arcface_torch state dict:
  input normalisation nodes, convolutions without bias followed by their
  own BatchNormalization nodes with epsilon 2e-5, PReLU slopes (C, 1, 1),
  a Dropout in the head, initializers also listed as graph inputs."""

  def __init__(self, state_dict, stage_units, normalisation=(
      ('Sub', 127.5), ('Mul', 0.0078125)), stem_bias=None):
    self.state = state_dict
    self.nodes = []
    self.initializers = []
    x = 'data'
    for index, (op, value) in enumerate(normalisation):
      x = self.node(op, x, self.constant(f'normalisation{index}', value))
    x = self.conv(x, 'conv1', 1, bias=stem_bias)
    x = self.prelu(self.norm(x, 'bn1'), 'prelu')
    for stage, units in enumerate(stage_units, 1):
      for unit in range(units):
        prefix = f'layer{stage}.{unit}.'
        y = self.norm(x, prefix + 'bn1')
        y = self.prelu(self.norm(self.conv(y, prefix + 'conv1', 1),
                                 prefix + 'bn2'), prefix + 'prelu')
        y = self.norm(self.conv(y, prefix + 'conv2', 2 if unit == 0 else 1),
                      prefix + 'bn3')
        if unit == 0:
          x = self.norm(self.conv(x, prefix + 'downsample.0', 2),
                        prefix + 'downsample.1')
        x = self.node('Add', y, x)
    x = self.node('Dropout', self.norm(x, 'bn2'), ratio=0.4)
    x = self.node('Flatten', x, axis=1)
    x = self.node('Gemm', x, self.constant('fc.weight'),
                  self.constant('fc.bias'), transB=1)
    self.output = self.norm(x, 'features')

  def constant(self, name, value=None):
    value = self.state[name] if value is None else value
    self.initializers.append(numpy_helper.from_array(
        np.asarray(value, np.float32), name))
    return name

  def node(self, op, *inputs, **attributes):
    name = f'{op.lower()}{len(self.nodes)}'
    self.nodes.append(helper.make_node(op, list(inputs), [name], name=name,
                                       **attributes))
    return name

  def conv(self, x, key, stride, bias=None):
    weight = self.state[f'{key}.weight']
    inputs = [x, self.constant(f'{key}.weight')]
    if bias is not None:
      inputs.append(self.constant(f'{key}.bias', bias))
    kernel = weight.shape[-1]
    return self.node('Conv', *inputs, kernel_shape=[kernel, kernel],
                     strides=[stride, stride], pads=[kernel // 2] * 4)

  def norm(self, x, key):
    return self.node('BatchNormalization', x, *(
        self.constant(f'{key}.{field}')
        for field in ('weight', 'bias', 'running_mean', 'running_var')),
                     epsilon=2e-5)

  def prelu(self, x, key):
    slope = self.state[f'{key}.weight'].reshape(-1, 1, 1)
    return self.node('PRelu', x, self.constant(f'{key}.weight', slope))

  def save(self, path):
    data = helper.make_tensor_value_info('data', onnx.TensorProto.FLOAT,
                                         ['None', 3, SIZE, SIZE])
    output = helper.make_tensor_value_info(self.output,
                                           onnx.TensorProto.FLOAT, None)
    initializer_inputs = [
        helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                      list(tensor.dims))
        for tensor in self.initializers]
    graph = helper.make_graph(self.nodes, 'mxnet', [data] + initializer_inputs,
                              [output], self.initializers)
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid('', 11)])
    model.ir_version = 6
    onnx.save(model, str(path))
    return path


def test_mxnet_style_graph_is_folded_exactly(exported, tmp_path):
  """Raw pixels x in [0, 255] through the graph equal the imported state
  dict in torch on u = (x - 127.5) / 127.5."""
  net = exported['iresnet'][1]
  arrays = arcface_torch_models.state_dict_arrays(net)
  stem_bias = np.random.default_rng(4).normal(0, 0.1, 8)
  path = MxnetGraph(arrays, STAGE_UNITS,
                    stem_bias=stem_bias).save(tmp_path / 'mxnet.onnx')
  pixels = np.random.default_rng(5).uniform(
      0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
  reference = run_onnx(path, pixels.transpose(0, 3, 1, 2))
  state_dict, info = state_dict_from_onnx(path)
  assert info['fused_batch_norms'] == 0
  assert info['stage_units'] == STAGE_UNITS
  folded = ' '.join(info['folded'])
  assert "Sub 'sub0' (127.5), Mul 'mul1' (0.0078125)" in folded
  assert 'epsilon 2e-05' in folded and 'Dropout' in folded
  np.testing.assert_allclose(
      state_dict['conv1.weight'], arrays['conv1.weight'] * 127.5 / 128,
      rtol=1e-6)
  u = (pixels - 127.5) / 127.5
  difference = np.abs(torch_embed(make_iresnet, state_dict, u)
                      - reference).max()
  # Measured 2.3e-6; leaving the epsilons as they are gives 1.4e-4.
  assert difference < 2e-5, difference


def test_mxnet_style_normalisation_in_the_other_order(exported, tmp_path):
  """x / 127.5 - 1 is (x - 127.5) / 127.5: nothing left to fold."""
  arrays = arcface_torch_models.state_dict_arrays(exported['iresnet'][1])
  path = MxnetGraph(arrays, STAGE_UNITS, normalisation=(
      ('Div', 127.5), ('Sub', 1.0))).save(tmp_path / 'div.onnx')
  pixels = np.random.default_rng(6).uniform(
      0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
  state_dict, _ = state_dict_from_onnx(path)
  np.testing.assert_allclose(state_dict['conv1.weight'],
                             arrays['conv1.weight'], rtol=1e-6)
  assert np.abs(
      torch_embed(make_iresnet, state_dict, (pixels - 127.5) / 127.5)
      - run_onnx(path, pixels.transpose(0, 3, 1, 2))).max() < 2e-5


def test_mxnet_style_graph_with_another_mean_is_refused(exported, tmp_path):
  arrays = arcface_torch_models.state_dict_arrays(exported['iresnet'][1])
  path = MxnetGraph(arrays, STAGE_UNITS, normalisation=(
      ('Sub', 120.0), ('Mul', 0.0078125))).save(tmp_path / 'mean120.onnx')
  with pytest.raises(ConversionError, match=r"'sub0' \(Sub\).*120"):
    state_dict_from_onnx(path)


def test_truncated_file_is_refused(exported, tmp_path):
  data = exported['iresnet'][0].read_bytes()
  path = tmp_path / 'truncated.onnx'
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(ConversionError, match='truncated.onnx'):
    state_dict_from_onnx(path)


def test_external_data_is_refused(exported, tmp_path):
  model = onnx.load(str(exported['mobilefacenet'][0]))
  path = tmp_path / 'external.onnx'
  onnx.save_model(model, str(path), save_as_external_data=True,
                  all_tensors_to_one_file=True, location='weights.bin',
                  size_threshold=0)
  with pytest.raises(ConversionError, match='external data'):
    state_dict_from_onnx(path)


def test_unknown_op_is_refused_by_name(exported, tmp_path):
  model = onnx.load(str(exported['iresnet'][0]))
  prelu = [node for node in model.graph.node if node.op_type == 'PRelu'][2]
  for node in model.graph.node:
    for position, name in enumerate(node.input):
      if name == prelu.output[0]:
        node.input[position] = 'inserted_out'
  model.graph.node.append(helper.make_node(
      'Relu', [prelu.output[0]], ['inserted_out'], name='inserted_relu'))
  onnx.save(model, str(tmp_path / 'relu.onnx'))
  with pytest.raises(ConversionError, match=r"'inserted_relu' \(Relu\)"):
    state_dict_from_onnx(tmp_path / 'relu.onnx')


def test_non_face_model_is_refused_at_its_first_unplaceable_node(tmp_path):
  net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * SIZE * SIZE, 5)).eval()
  path = export(net, tmp_path / 'other.onnx')
  relu, = (node for node in onnx.load(str(path)).graph.node
           if node.op_type == 'Relu')
  with pytest.raises(ConversionError,
                     match=rf"'{relu.name}' \(Relu\) cannot be placed"):
    state_dict_from_onnx(path)


def test_residual_group_in_the_stem_slot_is_refused(tmp_path):
  """get_mbf_large puts a Residual group where layers.1 is."""
  net = make_mobilefacenet()
  net.layers[1] = arcface_torch_models.Residual(16, 2, 16)
  path = export(net.eval(), tmp_path / 'large.onnx')
  with pytest.raises(ConversionError, match=r'\(Conv\) starts a Residual '
                     'group.*layers.1'):
    state_dict_from_onnx(path)


def test_two_outputs_are_refused(exported, tmp_path):
  model = onnx.load(str(exported['iresnet'][0]))
  extra = model.graph.node[0].output[0]
  model.graph.output.append(helper.make_tensor_value_info(
      extra, onnx.TensorProto.FLOAT, None))
  onnx.save(model, str(tmp_path / 'two.onnx'))
  with pytest.raises(ConversionError, match='one input and one output'):
    state_dict_from_onnx(tmp_path / 'two.onnx')


def test_importing_the_module_does_not_import_onnx():
  code = ('import sys; import facejax.interop.onnx_import; '
          'assert "onnx" not in sys.modules, "onnx imported"')
  subprocess.run([sys.executable, '-c', code], check=True,
                 cwd=pathlib.Path(__file__).parents[2])


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_end_to_end_through_from_arcface_torch(exported, family):
  """ONNX -> arcface_torch keys -> facejax: the facejax model reproduces
  onnxruntime."""
  # Imported here: the other tests do not need jax or facejax.models.
  from facejax.interop import arcface_torch  # pylint: disable=import-outside-toplevel
  path, _ = exported[family]
  model, variables = arcface_torch.from_arcface_torch(
      state_dict_from_onnx(path)[0])
  x = images(seed=7)
  embeddings = np.asarray(model.apply(variables, x, train=False))
  difference = np.abs(embeddings
                      - run_onnx(path, x.transpose(0, 3, 1, 2))).max()
  assert difference < 1e-5, difference
