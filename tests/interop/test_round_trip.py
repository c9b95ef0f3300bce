"""facejax -> ONNX -> facejax: ``to_onnx`` then ``from_onnx`` gives the
same embeddings.

facejax's exporter writes every eval-mode batch norm as an Add/Mul/Add
chain of constants and flattens NHWC maps behind a Transpose; the importer
reads both by topology (see :mod:`facejax.interop.onnx_import`). The models
are the shapes that ``arcface_torch.convert`` infers from tiny arcface_torch
models, so the imported model has the same architecture. Every parameter
and statistic is perturbed, so no norm is an identity and a mistake in any
of them shows.
"""
import jax
import numpy as np
import pytest

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

# pylint: disable=g-import-not-at-top,wrong-import-position
import facejax.interop
from facejax import models
from tests.interop.test_onnx_export import perturbed
from tests.models import zoo

SIZE = 32
_PAPER_BOTTLENECKS = ((2, 8, 3, 2), (4, 16, 1, 2), (2, 16, 2, 1),
                      (4, 16, 1, 2), (2, 16, 1, 1))
CASES = {
    'iresnet': dict(
        name='iresnet', stage_units=(1, 2, 1, 1),
        stage_features=(8, 8, 16, 16), stem_features=8, embedding_dim=16),
    # insightface's MBF layout: a grouped second stem conv.
    'mobilefacenet_mbf': dict(
        name='mobilefacenet', embedding_dim=16, stem_features=16,
        stem_groups=8, expanded_features=64,
        bottlenecks=((1, 16, 3, 2), (2, 32, 1, 2), (1, 32, 2, 1),
                     (2, 32, 1, 2), (1, 32, 1, 1)),
        output_norm_scale=True),
    # The paper's layout (arcface_torch's get_mbf, scale 1).
    'mobilefacenet_paper': dict(
        name='mobilefacenet', embedding_dim=16, stem_features=8,
        stem_groups=0, expanded_features=64, bottlenecks=_PAPER_BOTTLENECKS,
        output_norm_scale=True),
    # Without a learned output scale the export's Mul holds
    # rsqrt(var + eps) alone; it imports as that scale (arcface_torch's
    # MobileFaceNet always has one), so only the architecture name differs.
    'mobilefacenet_paper_unscaled': dict(
        name='mobilefacenet', embedding_dim=16, stem_features=8,
        stem_groups=0, expanded_features=64, bottlenecks=_PAPER_BOTTLENECKS,
        output_norm_scale=False),
}


def session_output(path, images):
  session = ort.InferenceSession(str(path),
                                 providers=['CPUExecutionProvider'])
  return session.run(None, {'data': images.transpose(0, 3, 1, 2)})[0]


def assert_close(got, expected, atol):
  """Max abs difference within ``atol``, relative where the embeddings
  are large (IResNet's are tens, and float32 rounding scales with them)."""
  assert got.shape == expected.shape
  scale = max(1.0, float(np.abs(expected).max()))
  difference = float(np.abs(got - expected).max())
  assert difference <= atol * scale, (difference, scale)


@pytest.mark.parametrize('case', sorted(CASES))
def test_export_then_import_gives_the_same_embeddings(case, tmp_path):
  kwargs = dict(CASES[case])
  model = models.get(kwargs.pop('name'), **kwargs)
  shape = (3, SIZE, SIZE, 3)
  variables = perturbed(zoo.init(model, shape))
  images = zoo.images(shape, seed=2)
  expected = np.asarray(zoo.apply(model, variables, images))

  path = facejax.interop.to_onnx(model, variables, tmp_path / 'out.onnx',
                                 SIZE)
  assert_close(session_output(path, images), expected, 1e-4)

  imported, imported_variables = facejax.interop.from_onnx(path)
  assert type(imported) is type(model)
  assert_close(np.asarray(zoo.apply(imported, imported_variables, images)),
               expected, 1e-5)

  again = facejax.interop.to_onnx(imported, imported_variables,
                                  tmp_path / 'again.onnx', SIZE)
  assert_close(session_output(again, images), expected, 1e-4)


def rewrite_norms(path, variant):
  """The export with each norm's first Add(x, -mean) written as
  Sub(x, mean) (``'sub'``), or dropped with the mean moved into the last
  Add's constant, b + m * c (``'no_mean'``): forms the importer reads too.
  The nodes are found here by the exporter's names; the importer never
  looks at names."""
  model = onnx.load(str(path))
  graph = model.graph
  tensors = {tensor.name: tensor for tensor in graph.initializer}
  value = lambda name: onnx.numpy_helper.to_array(tensors[name])

  def store(name, array):
    tensors[name].CopyFrom(onnx.numpy_helper.from_array(
        np.asarray(array, np.float32), name))

  readers = {name: node for node in graph.node for name in node.input}
  count = 0
  for node in list(graph.node):
    if node.op_type != 'Add' or not node.input[1].endswith('mean_negated'):
      continue
    count += 1
    if variant == 'sub':
      node.op_type = 'Sub'
      store(node.input[1], -value(node.input[1]))
      continue
    mul = readers[node.output[0]]
    add = readers[mul.output[0]]
    store(add.input[1], value(add.input[1])
          + value(mul.input[1]) * value(node.input[1]))
    mul.input[0] = node.input[0]
    graph.node.remove(node)
  onnx.save(model, str(path))
  return path, count


@pytest.mark.parametrize('variant', ['sub', 'no_mean'])
@pytest.mark.parametrize('case', ['iresnet', 'mobilefacenet_paper'])
def test_norms_as_sub_or_without_a_mean_are_read(case, variant, tmp_path):
  kwargs = dict(CASES[case])
  model = models.get(kwargs.pop('name'), **kwargs)
  shape = (3, SIZE, SIZE, 3)
  variables = perturbed(zoo.init(model, shape), seed=3)
  images = zoo.images(shape, seed=4)
  path, count = rewrite_norms(facejax.interop.to_onnx(
      model, variables, tmp_path / 'out.onnx', SIZE), variant)
  norms = len(jax.tree_util.tree_leaves(variables['batch_stats'])) // 2
  assert count == norms
  expected = session_output(path, images)
  imported, imported_variables = facejax.interop.from_onnx(path)
  assert_close(np.asarray(zoo.apply(imported, imported_variables, images)),
               expected, 1e-5)
