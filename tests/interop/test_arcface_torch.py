"""arcface_torch state dicts -> facejax: the imported model computes what
PyTorch computes, on random weights with randomised batch norms and PReLU
slopes (bench/arcface_torch_models.py)."""
import functools

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from facejax import models  # noqa: E402
from facejax.interop import ConversionError  # noqa: E402
from facejax.interop import arcface_torch  # noqa: E402
from facejax.interop import from_arcface_torch  # noqa: E402
from bench import arcface_torch_models as reference  # noqa: E402

SIZE = 32
# case -> a tiny torch net in arcface_torch's layout (32x32 input).
TINY = {
    'iresnet': lambda: reference.IResNet(
        (1, 2, 1, 1), (8, 8, 16, 16), 8, 16, SIZE),
    # insightface's "mbf": scale 2, a grouped (not depthwise) stem conv.
    'mbf_scale2': lambda: reference.MobileFaceNet(
        16, (1, 2, 2, 1), scale=2, divisor=8, image_size=SIZE),
    'mbf_scale1': lambda: reference.MobileFaceNet(
        16, (1, 2, 2, 1), scale=1, divisor=8, image_size=SIZE),
}


@functools.lru_cache(maxsize=None)
def tiny_net(case, seed=0):
  return reference.randomise(TINY[case](), seed, SIZE)


def images(size, count=4, seed=0):
  return np.random.default_rng(seed).uniform(
      -1, 1, (count, size, size, 3)).astype(np.float32)


def embed(model, variables, x):
  return np.asarray(jax.jit(model.apply)(variables, x))


def cosine(a, b):
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1)
                              * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize('case', sorted(TINY))
def test_imported_model_equals_pytorch(case):
  net = tiny_net(case)
  x = images(SIZE)
  model, variables = from_arcface_torch(reference.state_dict_arrays(net))
  expected = reference.embed(net, x)
  assert np.abs(expected).max() > 0.5  # not a trivially small output
  np.testing.assert_allclose(embed(model, variables, x), expected,
                             atol=1e-5, rtol=0)


def test_architecture_is_read_off_the_keys_and_shapes():
  conversion = arcface_torch.convert(
      reference.state_dict_arrays(tiny_net('iresnet')))
  assert conversion.name == 'iresnet'  # no registered depth has (1,2,1,1)
  assert conversion.kwargs == dict(
      stage_units=(1, 2, 1, 1), stage_features=(8, 8, 16, 16),
      stem_features=8, embedding_dim=16)
  assert conversion.image_size == SIZE
  mbf = arcface_torch.convert(reference.state_dict_arrays(
      tiny_net('mbf_scale2')))
  assert mbf.name == 'mobilefacenet'
  assert mbf.kwargs['stem_groups'] == 8 and mbf.kwargs['stem_features'] == 16
  assert mbf.kwargs['output_norm_scale']
  paper = arcface_torch.convert(reference.state_dict_arrays(
      tiny_net('mbf_scale1')))
  assert paper.kwargs['stem_groups'] == 0  # depthwise, as in the paper


def test_released_architectures_get_their_registered_names():
  # Names from the full-size state dicts' keys and shapes alone (eval_shape
  # inside convert: no full-size compute).
  for units, name in ((2, 2, 2, 2), 'iresnet18'), ((3, 13, 30, 3),
                                                   'iresnet100'):
    arrays = reference.state_dict_arrays(reference.IResNet(units))
    assert arcface_torch.convert(arrays).name == name
  mbf = reference.state_dict_arrays(reference.MobileFaceNet())
  conversion = arcface_torch.convert(mbf)
  assert conversion.name == 'mobilefacenet_mbf'
  assert conversion.image_size == 112
  registered = models.get('mobilefacenet_mbf')
  assert registered.stem_groups == 64 and registered.stem_features == 128


def test_full_size_iresnet50_equals_pytorch_and_the_naive_fc_mapping_fails():
  net = reference.randomise(reference.IResNet((3, 4, 14, 3)), seed=1,
                            calibration_batches=1)
  arrays = reference.state_dict_arrays(net)
  x = images(112, count=2)
  expected = reference.embed(net, x)
  model, variables = from_arcface_torch(arrays)
  apply = jax.jit(model.apply)
  np.testing.assert_allclose(np.asarray(apply(variables, x)), expected,
                             atol=1e-4, rtol=0)
  # The flatten-order trap: torch flattens NCHW, facejax NHWC. Loading
  # fc.weight with a plain transpose gives unrelated embeddings.
  naive = jax.tree.map(lambda v: v, variables)
  naive['params']['head']['dense']['kernel'] = arrays['fc.weight'].T
  wrong = np.asarray(apply(naive, x))
  assert np.all(np.abs(cosine(wrong, expected)) < 0.2), cosine(wrong,
                                                                expected)


def test_module_prefix_is_ignored():
  arrays = reference.state_dict_arrays(tiny_net('iresnet'))
  prefixed = {f'module.{key}': value for key, value in arrays.items()}
  plain = arcface_torch.convert(arrays).variables
  wrapped = arcface_torch.convert(prefixed).variables
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(wrapped)):
    np.testing.assert_array_equal(a, b)


def test_torch_tensors_are_accepted_as_they_are():
  net = tiny_net('mbf_scale1')
  x = images(SIZE)
  model, variables = from_arcface_torch(net.state_dict())
  np.testing.assert_allclose(embed(model, variables, x),
                             reference.embed(net, x), atol=1e-5, rtol=0)


def test_an_output_scale_other_than_one_is_folded_exactly():
  net = reference.randomise(TINY['iresnet'](), 3, SIZE)
  with torch.no_grad():
    net.features.weight.copy_(torch.linspace(0.5, 1.5, 16))
  x = images(SIZE)
  conversion = arcface_torch.convert(reference.state_dict_arrays(net))
  assert any('features.weight' in note for note in conversion.notes)
  model = models.get(conversion.name, **conversion.kwargs)
  np.testing.assert_allclose(embed(model, conversion.variables, x),
                             reference.embed(net, x), atol=1e-5, rtol=0)


def test_arch_names_the_structure():
  net = reference.randomise(reference.IResNet(
      (2, 2, 2, 2), (8, 8, 16, 16), 8, 16, SIZE), 0, SIZE)
  arrays = reference.state_dict_arrays(net)
  conversion = arcface_torch.convert(arrays, arch='iresnet18')
  assert conversion.name == 'iresnet18'
  model = models.get(conversion.name, **conversion.kwargs)
  x = images(SIZE)
  np.testing.assert_allclose(embed(model, conversion.variables, x),
                             reference.embed(net, x), atol=1e-5, rtol=0)
  with pytest.raises(ConversionError, match=r'weights of iresnet34 are not '
                     r'in the state dict, the first [a-z_]+/stage1/unit2/'):
    arcface_torch.convert(arrays, arch='iresnet34')
  with pytest.raises(ConversionError, match='is a MobileFaceNet, but the '
                     'state dict is an arcface_torch IResNet'):
    arcface_torch.convert(arrays, arch='mobilefacenet')
  with pytest.raises(ConversionError, match="unknown model 'resnet50'"):
    arcface_torch.convert(arrays, arch='resnet50')


def test_iresnet100_weights_with_arch_iresnet50_name_the_first_extra_key():
  arrays = reference.state_dict_arrays(reference.IResNet((3, 13, 30, 3)))
  with pytest.raises(ConversionError,
                     match=r"key 'layer2\.4\.bn1\.weight' has no place in "
                     r'iresnet50'):
    arcface_torch.convert(arrays, arch='iresnet50')


def test_unknown_architecture_names_the_first_key_it_cannot_place():
  arrays = {'features.0.weight': np.ones((8, 3, 3, 3), np.float32),
            'features.1.weight': np.ones((8,), np.float32),
            'classifier.weight': np.ones((10, 8), np.float32)}
  with pytest.raises(ConversionError, match="key 'features.0.weight' has "
                     'no place'):
    arcface_torch.convert(arrays)


def test_a_shape_mismatch_names_the_key_and_both_shapes():
  arrays = reference.state_dict_arrays(tiny_net('iresnet'))
  arrays['layer2.1.prelu.weight'] = arrays['layer2.1.prelu.weight'][:5]
  with pytest.raises(ConversionError,
                     match=r"key 'layer2\.1\.prelu\.weight': shape \(5,\) "
                     r'gives \(5,\) for params/stage2/unit1/prelu/'
                     r'negative_slope, which is \(8,\)'):
    arcface_torch.convert(arrays)


def test_a_missing_weight_is_named():
  arrays = reference.state_dict_arrays(tiny_net('iresnet'))
  del arrays['layer3.0.downsample.1.running_var']
  with pytest.raises(ConversionError, match='stage3/unit0/shortcut_norm/var'):
    arcface_torch.convert(arrays)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_non_finite_weights_are_refused(value):
  arrays = reference.state_dict_arrays(tiny_net('iresnet'))
  arrays['fc.bias'] = arrays['fc.bias'].copy()
  arrays['fc.bias'][3] = value
  with pytest.raises(ConversionError, match="key 'fc.bias': holds NaN"):
    arcface_torch.convert(arrays)


def test_an_empty_state_dict_is_refused():
  with pytest.raises(ConversionError, match='no weights'):
    arcface_torch.convert({})
