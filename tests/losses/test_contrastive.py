"""Tests of contrastive_loss (DeepID2, Sun et al. 2014) in facejax.losses.

The loss is checked against a float64 loop over the pairs written out below,
with and without ``jit``, for boolean and 0/1 ``same`` flags; its gradient
against central differences of that reference, and for finiteness where the
two features of a pair coincide (same and different pairs); plus symmetry,
invariance to the order of the pairs, dtype and shape.
"""

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from facejax.losses import contrastive
from tests.losses import brute_force

RTOL = brute_force.RTOL
PAIRS = 8
DIM = 4
SAME = [True, False, True, False, False, True, False, False]


def _pair(seed, scale=0.5):
  # With scale 0.5 the pair distances are around 1.4 +- 0.5: different pairs
  # fall on both sides of a margin of 1 to 2.
  rng = np.random.default_rng(seed)
  return [(scale * rng.standard_normal((PAIRS, DIM))).astype(np.float32)
          for _ in range(2)]


# ----------------------------------------------------------------------------
# Brute-force reference (float64, explicit loops).
# ----------------------------------------------------------------------------


def ref_contrastive(f1, f2, same, margin=1.0):
  total = 0.0
  for i in range(len(same)):
    distance = brute_force.distance(f1[i], f2[i])
    if same[i]:
      total += 0.5 * distance ** 2
    else:
      total += 0.5 * max(0.0, margin - distance) ** 2
  return total / len(same)


# ----------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------

_LOSS = contrastive.contrastive_loss
_LOSS_AND_GRAD = jax.value_and_grad(contrastive.contrastive_loss,
                                    argnums=(0, 1))


class ContrastiveLossTest(chex.TestCase):

  def loss(self, f1, f2, same, margin=1.0):
    return self.variant(_LOSS, static_argnames=('margin',))(
        f1, f2, same, margin=margin)

  def loss_and_grad(self, f1, f2, same, margin=1.0):
    return self.variant(_LOSS_AND_GRAD, static_argnames=('margin',))(
        f1, f2, same, margin=margin)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('bool_margin_1', np.bool_, 1.0), ('int_margin_1', np.int32, 1.0),
      ('bool_margin_2', np.bool_, 2.0))
  def test_matches_reference(self, same_dtype, margin):
    f1, f2 = _pair(0)
    same = np.array(SAME).astype(same_dtype)
    got = self.loss(f1, f2, same, margin)
    chex.assert_shape(got, ())
    chex.assert_type(got, jnp.float32)
    brute_force.assert_close(got, ref_contrastive(f1, f2, SAME, margin))

  def test_fixture_has_active_and_inactive_push_terms(self):
    # Sanity of the data: at margin 1 some different pairs are inside the
    # margin (pushed) and some outside (zero loss).
    f1, f2 = _pair(0)
    inside = [brute_force.distance(f1[i], f2[i]) < 1.0
              for i in range(PAIRS) if not SAME[i]]
    self.assertTrue(any(inside))
    self.assertFalse(all(inside))

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.given(seed=st.integers(0, 2**32 - 1),
                    same=st.lists(st.booleans(), min_size=PAIRS,
                                  max_size=PAIRS))
  def test_matches_reference_for_any_pairing(self, seed, same):
    f1, f2 = _pair(seed)
    got = self.loss(f1, f2, np.array(same))
    brute_force.assert_close(got, ref_contrastive(f1, f2, same))

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_matches_finite_differences(self):
    f1, f2 = _pair(1)
    same = np.array(SAME)
    _, grads = self.loss_and_grad(f1, f2, same)
    expected_grads = brute_force.central_differences(
        lambda a, b: ref_contrastive(a, b, SAME), f1, f2)
    for grad, expected in zip(grads, expected_grads, strict=True):
      brute_force.assert_close(grad, expected, rtol=1e-4, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('some_pairs_coincide', 'some'), ('every_pair_coincides', 'all'),
      ('all_zero', 'zero'))
  def test_gradient_finite_when_f1_equals_f2(self, layout):
    f1, f2 = _pair(2)
    if layout == 'some':
      f2[:4] = f1[:4]  # Pairs 0 and 2 are same pairs, 1 and 3 different.
    elif layout == 'all':
      f2 = f1.copy()
    else:
      f1 = np.zeros_like(f1)
      f2 = np.zeros_like(f1)
    value, (grad1, grad2) = self.loss_and_grad(f1, f2, np.array(SAME))
    brute_force.assert_finite((value, grad1, grad2))
    # Where f1 == f2 in a same pair, the loss is at its minimum: gradient 0.
    coincide = [i for i in range(PAIRS) if SAME[i]
                and np.array_equal(f1[i], f2[i])]
    self.assertNotEmpty(coincide)
    np.testing.assert_array_equal(np.asarray(grad1)[coincide], 0.0)
    np.testing.assert_array_equal(np.asarray(grad2)[coincide], 0.0)
    brute_force.assert_close(value, ref_contrastive(f1, f2, SAME))

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(max_examples=10)
  @hypothesis.given(seed=st.integers(0, 2**32 - 1),
                    order=st.permutations(range(PAIRS)))
  def test_symmetric_and_invariant_to_pair_order(self, seed, order):
    f1, f2 = _pair(seed)
    same = np.array(SAME)
    order = np.array(order)
    base = float(self.loss(f1, f2, same))
    np.testing.assert_allclose(float(self.loss(f2, f1, same)), base,
                               rtol=RTOL)
    np.testing.assert_allclose(
        float(self.loss(f1[order], f2[order], same[order])), base, rtol=RTOL)

  def test_rejects_bad_shapes(self):
    f = jnp.zeros((PAIRS, DIM))
    with self.assertRaises(ValueError):
      _LOSS(f, jnp.zeros((PAIRS, DIM + 1)), jnp.zeros(PAIRS, bool))
    with self.assertRaises(ValueError):
      _LOSS(f, f, jnp.zeros(PAIRS - 1, bool))
