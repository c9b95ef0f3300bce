"""Tests of facejax.losses.distances and facejax.losses.reductions.

Every reference below is a plain float64 NumPy loop over rows / pairs; the
library (float32, Gram expansion, masked ``where`` tricks) must agree with it
to rtol=1e-5 (atol=1e-6 near 0), with and without ``jit``, and its gradients
must stay finite at the points where a naive square root or log-sum-exp is not
differentiable (coincident rows, zero vectors, empty masks).
"""
import math

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from facejax.losses import distances
from facejax.losses import reductions
from tests.losses import brute_force


# ----------------------------------------------------------------------------
# Brute-force references (float64, explicit loops).
# ----------------------------------------------------------------------------


def ref_norm(v):
  total = 0.0
  for value in np.asarray(v, np.float64):
    total += value * value
  return math.sqrt(total)


def ref_pairwise(x, y=None, squared=False):
  x = np.asarray(x, np.float64)
  y = x if y is None else np.asarray(y, np.float64)
  out = np.zeros((x.shape[0], y.shape[0]), np.float64)
  for i in range(x.shape[0]):
    for j in range(y.shape[0]):
      total = 0.0
      for k in range(x.shape[1]):
        total += (x[i, k] - y[j, k]) ** 2
      out[i, j] = total if squared else math.sqrt(total)
  return out


def ref_masked_mean(values, mask):
  values = np.asarray(values, np.float64).reshape(-1)
  mask = np.asarray(mask).reshape(-1)
  picked = [v for v, m in zip(values, mask) if m]
  return sum(picked) / len(picked) if picked else 0.0


def ref_masked_rows(values, mask, reduce, empty_value):
  """Applies ``reduce`` to the unmasked entries of every row (last axis)."""
  values = np.asarray(values, np.float64)
  out = np.zeros(values.shape[0], np.float64)
  for i in range(values.shape[0]):
    picked = [v for v, m in zip(values[i], mask[i]) if m]
    out[i] = reduce(picked) if picked else empty_value
  return out


def ref_logsumexp(picked):
  top = max(picked)
  return top + math.log(sum(math.exp(v - top) for v in picked))


# ----------------------------------------------------------------------------
# safe_sqrt, safe_norm, l2_normalize.
# ----------------------------------------------------------------------------


class SafeSqrtTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_is_sqrt_above_eps_and_zero_at_zero(self):
    x = np.array([0.0, 1e-6, 0.25, 2.0, 9.0, 1e4, 3.0, 7.5], np.float32)
    got = self.variant(distances.safe_sqrt)(x)
    chex.assert_type(got, jnp.float32)
    brute_force.assert_close(got, [math.sqrt(float(v)) for v in x])
    self.assertEqual(float(got[0]), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_is_zero_at_zero_and_exact_elsewhere(self):
    x = np.array([0.0, 1e-14, 0.25, 4.0, 1.0, 2.0, 9.0, 16.0], np.float32)
    grad = self.variant(jax.grad(lambda v: jnp.sum(distances.safe_sqrt(v))))(x)
    brute_force.assert_finite(grad)
    self.assertEqual(float(grad[0]), 0.0)
    self.assertEqual(float(grad[1]), 0.0)  # Below eps: value and slope 0.
    brute_force.assert_close(grad[2:],
                             [0.5 / math.sqrt(float(v)) for v in x[2:]])


class SafeNormTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_reference(self):
    x = brute_force.gaussian(0, (8, 4))
    got = self.variant(distances.safe_norm)(x)
    chex.assert_shape(got, (8,))
    chex.assert_type(got, jnp.float32)
    brute_force.assert_close(got, [ref_norm(row) for row in x])

  @chex.variants(with_jit=True, without_jit=True)
  def test_axis_and_keepdims(self):
    x = brute_force.gaussian(1, (8, 4))
    got = self.variant(
        lambda v: distances.safe_norm(v, axis=0, keepdims=True))(x)
    chex.assert_shape(got, (1, 4))
    brute_force.assert_close(got[0], [ref_norm(x[:, j]) for j in range(4)])

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_finite_at_zero_vector(self):
    x = np.zeros((8, 4), np.float32)
    x[1] = brute_force.gaussian(2, (4,))
    value, grad = self.variant(jax.value_and_grad(
        lambda v: jnp.sum(distances.safe_norm(v))))(x)
    brute_force.assert_finite((value, grad))
    np.testing.assert_array_equal(np.asarray(grad)[0], 0.0)
    np.testing.assert_array_equal(np.asarray(grad)[2], 0.0)
    brute_force.assert_close(grad[1], x[1].astype(np.float64) / ref_norm(x[1]))


class L2NormalizeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_reference_and_zero_maps_to_zero(self):
    x = brute_force.gaussian(3, (8, 4))
    x[2] = 0.0
    got = self.variant(distances.l2_normalize)(x)
    chex.assert_shape(got, x.shape)
    chex.assert_type(got, jnp.float32)
    expected = np.zeros(x.shape, np.float64)
    for i, row in enumerate(x):
      norm = ref_norm(row)
      if norm > 0:
        expected[i] = row.astype(np.float64) / norm
    brute_force.assert_close(got, expected)
    np.testing.assert_array_equal(np.asarray(got)[2], 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_finite_at_zero_vector(self):
    x = np.zeros((8, 4), np.float32)
    x[0] = brute_force.gaussian(4, (4,))
    grad = self.variant(jax.grad(
        lambda v: jnp.sum(distances.l2_normalize(v) * jnp.arange(4.0))))(x)
    brute_force.assert_finite(grad)


# ----------------------------------------------------------------------------
# pairwise_distances.
# ----------------------------------------------------------------------------


class PairwiseDistancesTest(chex.TestCase):

  def pairwise(self, x, y=None, squared=False):
    return self.variant(distances.pairwise_distances,
                        static_argnames=('squared',))(x, y, squared=squared)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('euclidean_8x4', False, 8, 4), ('squared_8x4', True, 8, 4),
      ('euclidean_16x3', False, 16, 3), ('squared_16x3', True, 16, 3))
  def test_self_distances_match_reference(self, squared, batch, dim):
    x = brute_force.gaussian(batch * dim, (batch, dim))
    got = self.pairwise(x, squared=squared)
    chex.assert_shape(got, (batch, batch))
    chex.assert_type(got, jnp.float32)
    brute_force.assert_close(got, ref_pairwise(x, squared=squared))
    # The diagonal is exactly 0, not round-off.
    np.testing.assert_array_equal(np.diag(np.asarray(got)), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('euclidean', False), ('squared', True))
  def test_cross_distances_match_reference(self, squared):
    x = brute_force.gaussian(10, (8, 4))
    y = brute_force.gaussian(11, (6, 4))
    got = self.pairwise(x, y, squared=squared)
    chex.assert_shape(got, (8, 6))
    brute_force.assert_close(got, ref_pairwise(x, y, squared=squared))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('euclidean', False), ('squared', True))
  def test_duplicate_rows_are_at_distance_zero(self, squared):
    # The smallest batch there is: one embedding, twice. Brute force gives
    # exactly 0 between the two copies.
    row = np.array([0.3, -1.04, 0.75], np.float32)
    x = np.stack([row, row])
    got = self.pairwise(x, squared=squared)
    brute_force.assert_close(got, ref_pairwise(x, squared=squared))

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(max_examples=15)
  @hypothesis.given(seed=st.integers(0, 2**32 - 1),
                    copies=st.lists(st.integers(0, 3), min_size=4, max_size=4))
  def test_batches_with_duplicate_rows_match_reference(self, seed, copies):
    # Rows 4..7 copy rows picked from 0..3: coincident embeddings, as a P x K
    # batch with repeated images has.
    base = brute_force.gaussian(seed, (4, 4))
    x = np.concatenate([base, base[copies]])
    got = self.pairwise(x)
    brute_force.assert_close(got, ref_pairwise(x))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('duplicates_euclidean', 'duplicates', False),
      ('duplicates_squared', 'duplicates', True),
      ('all_equal_euclidean', 'all_equal', False),
      ('all_equal_squared', 'all_equal', True),
      ('all_zero_euclidean', 'all_zero', False))
  def test_gradient_finite_at_coincident_rows(self, layout, squared):
    x = brute_force.gaussian(12, (8, 4))
    if layout == 'duplicates':
      x[3] = x[0]
      x[5] = x[0]
    elif layout == 'all_equal':
      x[:] = x[0]
    else:
      x[:] = 0.0
    weights = brute_force.gaussian(13, (8, 8))
    value, grad = self.variant(jax.value_and_grad(
        lambda v: jnp.sum(weights * distances.pairwise_distances(
            v, squared=squared))))(x)
    brute_force.assert_finite((value, grad))

  def test_rejects_bad_shapes(self):
    with self.assertRaises(ValueError):
      distances.pairwise_distances(jnp.zeros((3,)))
    with self.assertRaises(ValueError):
      distances.pairwise_distances(jnp.zeros((3, 2)), jnp.zeros((3, 4)))


# ----------------------------------------------------------------------------
# Masked reductions.
# ----------------------------------------------------------------------------


def _mask_with_empty_rows(seed, shape):
  mask = np.random.default_rng(seed).random(shape) < 0.5
  mask[0] = False  # An empty row.
  mask[1] = True  # A full row.
  return mask


class MaskedReductionsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_mean(self):
    values = brute_force.gaussian(20, (8, 8))
    mask = _mask_with_empty_rows(21, (8, 8))
    got = self.variant(reductions.masked_mean)(values, mask)
    chex.assert_shape(got, ())
    chex.assert_type(got, jnp.float32)
    brute_force.assert_close(got, ref_masked_mean(values, mask))
    empty = self.variant(reductions.masked_mean)(values, np.zeros_like(mask))
    self.assertEqual(float(empty), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('max', 'max'), ('min', 'min'))
  def test_masked_max_min(self, which):
    values = brute_force.gaussian(22, (8, 8))
    mask = _mask_with_empty_rows(23, (8, 8))
    fn = reductions.masked_max if which == 'max' else reductions.masked_min
    reduce = max if which == 'max' else min
    got = self.variant(lambda v, m: fn(v, m, empty_value=-7.0))(values, mask)
    chex.assert_shape(got, (8,))
    brute_force.assert_close(got, ref_masked_rows(values, mask, reduce, -7.0))

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_logsumexp(self):
    values = 3.0 * brute_force.gaussian(24, (8, 8))
    mask = _mask_with_empty_rows(25, (8, 8))
    got = self.variant(reductions.masked_logsumexp)(values, mask)
    chex.assert_shape(got, (8,))
    brute_force.assert_close(
        got, ref_masked_rows(values, mask, ref_logsumexp, 0.0))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('mean', 'mean'), ('max', 'max'), ('min', 'min'), ('lse', 'lse'))
  def test_no_gradient_into_masked_entries(self, which):
    # Masked-out entries hold values whose exp overflows float32: they must
    # neither leak a NaN nor receive a gradient.
    values = brute_force.gaussian(26, (8, 8))
    mask = _mask_with_empty_rows(27, (8, 8))
    values[~mask] = 1e3
    fn = {'mean': reductions.masked_mean, 'max': reductions.masked_max,
          'min': reductions.masked_min,
          'lse': reductions.masked_logsumexp}[which]
    value, grad = self.variant(
        jax.value_and_grad(lambda v: jnp.sum(fn(v, mask))))(values)
    brute_force.assert_finite((value, grad))
    np.testing.assert_array_equal(np.asarray(grad)[~mask], 0.0)

  def test_compute_dtype(self):
    f32 = jnp.zeros(2, jnp.float32)
    self.assertEqual(reductions.compute_dtype(f32), jnp.float32)
    self.assertEqual(
        reductions.compute_dtype(jnp.zeros(2, jnp.bfloat16)), jnp.float32)
    self.assertEqual(
        reductions.compute_dtype(jnp.zeros(2, jnp.int32)), jnp.float32)
