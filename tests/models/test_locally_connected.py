"""LocallyConnected2D against an explicit loop over output locations.

Parameters and inputs are drawn with numpy (shapes from ``jax.eval_shape``):
compiling JAX's random-number kernels dominates test time on small CPUs.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.models import counting
from facejax.models import locally_connected


def reference(x, kernel, bias, kernel_size, strides, pads, sharing=(1, 1)):
  """Every output location: its own patch times its own filter, plus bias."""
  kh, kw = kernel_size
  x = np.pad(x, ((0, 0), *pads, (0, 0)))
  out_h = (x.shape[1] - kh) // strides[0] + 1
  out_w = (x.shape[2] - kw) // strides[1] + 1
  out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]), np.float64)
  for i in range(out_h):
    for j in range(out_w):
      region = (i // sharing[0], j // sharing[1])
      patch = x[:, i * strides[0]:i * strides[0] + kh,
                j * strides[1]:j * strides[1] + kw, :]
      out[:, i, j] = np.einsum('nuvc,uvco->no', patch, kernel[region])
      if bias is not None:
        out[:, i, j] += bias[region]
  return out


def build(features=5, kernel_size=(3, 2), **kwargs):
  return locally_connected.LocallyConnected2D(
      features, kernel_size, precision=jax.lax.Precision.HIGHEST, **kwargs)


def random_input(shape=(2, 9, 8, 3), seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def random_variables(model, x, seed=1):
  """Standard-normal parameters of the shapes ``model.init`` makes."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda leaf: rng.standard_normal(leaf.shape).astype(np.float32), shapes)


def as_float64(variables):
  return {name: np.asarray(value, np.float64)
          for name, value in variables['params'].items()}


# Every case under jit; without jit, one case per padding and stride.
@pytest.mark.parametrize('padding, stride, pads, jit', [
    ('VALID', 1, ((0, 0), (0, 0)), True),
    ('VALID', 1, ((0, 0), (0, 0)), False),
    ('VALID', 2, ((0, 0), (0, 0)), True),
    # SAME with a 3x2 window: height pads (1, 1); width pads (0, 1) at
    # stride 1 and (0, 0) at stride 2 (8 is even).
    ('SAME', 1, ((1, 1), (0, 1)), True),
    ('SAME', 2, ((1, 1), (0, 0)), True),
    ('SAME', 2, ((1, 1), (0, 0)), False),
    (((2, 0), 1), 2, ((2, 0), (1, 1)), True),
])
def test_matches_explicit_per_location_loop(padding, stride, pads, jit):
  model = build(strides=stride, padding=padding)
  x = random_input()
  variables = random_variables(model, x)
  apply = jax.jit(model.apply) if jit else model.apply
  out = apply(variables, x)
  params = as_float64(variables)
  expected = reference(x.astype(np.float64), params['kernel'], params['bias'],
                       (3, 2), (stride, stride), pads)
  chex.assert_shape(out, expected.shape)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_same_padding_keeps_the_size_and_halves_it_at_stride_two():
  x = random_input()
  for stride, size in ((1, (9, 8)), (2, (5, 4))):
    model = build(strides=stride, padding='SAME')
    out = jax.eval_shape(lambda: model.init_with_output(  # noqa: B023
        jax.random.PRNGKey(0), x)[0])
    assert out.shape == (2, *size, 5)


def test_every_location_has_its_own_filter():
  model = build()
  x = random_input()
  variables = random_variables(model, x)
  # Output 7x7 (VALID 3x2 on 9x8): one (3, 2, 3, 5) filter and 5 biases each.
  chex.assert_shape(variables['params']['kernel'], (7, 7, 3, 2, 3, 5))
  chex.assert_shape(variables['params']['bias'], (7, 7, 5))
  kernel = np.asarray(variables['params']['kernel']).reshape(49, -1)
  assert len(np.unique(kernel[:, 0])) == 49
  # Changing one location's filter changes that location's output only.
  changed = jax.tree_util.tree_map(np.array, variables)
  changed['params']['kernel'][3, 4] += 1.0
  delta = np.abs(model.apply(changed, x) - model.apply(variables, x))
  assert np.all(delta[:, 3, 4] > 0)
  delta[:, 3, 4] = 0
  assert np.all(delta == 0)


def test_region_sharing_matches_the_loop_and_shrinks_the_parameters():
  model = build(padding='SAME', weight_sharing=(4, 3))
  x = random_input()
  variables = random_variables(model, x)
  # 9x8 outputs in 4x3 regions: ceil(9 / 4) x ceil(8 / 3) = 3x3 filters.
  chex.assert_shape(variables['params']['kernel'], (3, 3, 3, 2, 3, 5))
  chex.assert_shape(variables['params']['bias'], (3, 3, 5))
  params = as_float64(variables)
  expected = reference(x.astype(np.float64), params['kernel'], params['bias'],
                       (3, 2), (1, 1), ((1, 1), (0, 1)), sharing=(4, 3))
  np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-5,
                             atol=1e-5)


def test_without_bias():
  model = build(4, 3, use_bias=False)
  x = random_input()
  variables = random_variables(model, x)
  assert set(variables['params']) == {'kernel'}
  expected = reference(x.astype(np.float64), as_float64(variables)['kernel'],
                       None, (3, 3), (1, 1), ((0, 0), (0, 0)))
  np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-4,
                             atol=1e-4)


def test_bfloat16_compute_with_float32_parameters():
  model = build(dtype=jnp.bfloat16)
  x = random_input()
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  chex.assert_type(shapes['params']['kernel'], jnp.float32)
  variables = random_variables(model, x)
  out = model.apply(variables, x)
  chex.assert_type(out, jnp.bfloat16)
  exact = build().apply(variables, x)
  np.testing.assert_allclose(np.asarray(out, np.float32), exact, rtol=0.05,
                             atol=0.1)


def test_initial_filters_have_fan_in_variance():
  model = locally_connected.LocallyConnected2D(
      64, 3, kernel_init=locally_connected.local_kernel_init(2.0, 'normal'))
  x = random_input((1, 12, 12, 32))
  # An rbg key: threefry kernels compile slowly on small CPUs.
  variables = jax.jit(model.init)(jax.random.key(1, impl='rbg'), x)
  kernel = variables['params']['kernel']
  chex.assert_shape(kernel, (10, 10, 3, 3, 32, 64))
  np.testing.assert_allclose(np.var(kernel), 2.0 / (3 * 3 * 32), rtol=0.05)
  np.testing.assert_allclose(np.var(kernel[4, 7]), 2.0 / (3 * 3 * 32),
                             rtol=0.1)
  np.testing.assert_array_equal(variables['params']['bias'], 0)


def test_multiply_accumulates_formula_and_count_macs():
  model = build(strides=2, padding='SAME')
  x = random_input((3, 9, 8, 3))
  out = jax.eval_shape(lambda: model.init_with_output(
      jax.random.PRNGKey(0), x)[0])
  assert out.shape == (3, 5, 4, 5)
  expected = 3 * 5 * 4 * 3 * 2 * 3 * 5  # batch * out_h * out_w * kh*kw*in*out
  assert model.multiply_accumulates(x, out) == expected
  assert counting.count_macs(model, x.shape) == expected // 3


def test_rejects_inputs_too_small_and_bad_padding():
  with pytest.raises(ValueError, match='too small'):
    jax.eval_shape(build().init, jax.random.PRNGKey(0),
                   random_input((1, 2, 2, 3)))
  with pytest.raises(ValueError, match='padding'):
    jax.eval_shape(build(padding='CIRCULAR').init, jax.random.PRNGKey(0),
                   random_input())
