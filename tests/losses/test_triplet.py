"""Tests of the triplet family in facejax.losses.triplet.

batch_hard_triplet_loss, batch_all_triplet_loss and lifted_structure_loss are
checked against float64 brute-force loops over anchors / triplets written out
below (Hermans, Beyer, Leibe 2017), with and without ``jit``, and for the
properties every metric loss of the library promises: 0 (never NaN) when no
anchor has both a positive and a negative, finite gradients at coincident
embeddings, invariance to the order of the batch and to the naming of the
identities, and a float32 scalar for float32 inputs.
"""
import functools
import math

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from facejax.losses import triplet
from tests.losses import brute_force

RTOL, ATOL = brute_force.RTOL, brute_force.ATOL
BATCH = 8
DIM = 4

LAYOUTS = {
    # P x K: four identities, two images each.
    'pk': [0, 0, 1, 1, 2, 2, 3, 3],
    # Two singletons (anchors without a positive) and a big identity.
    'imbalanced': [0, 0, 0, 0, 1, 1, 2, 3],
    # Non-contiguous identity values in scrambled order.
    'scrambled': [5, 2, 5, 9, 2, 2, 7, 5],
}


# ----------------------------------------------------------------------------
# Brute-force references (float64, explicit loops).
# ----------------------------------------------------------------------------


# Scaled so that the embeddings are clearly not unit vectors.
_gaussian = functools.partial(brute_force.gaussian, scale=1.5)

def ref_distances(embeddings, squared):
  """D[a, b] for every pair, one pair at a time."""
  embeddings = np.asarray(embeddings, np.float64)
  batch, dim = embeddings.shape
  out = np.zeros((batch, batch))
  for a in range(batch):
    for b in range(batch):
      total = 0.0
      for k in range(dim):
        total += (embeddings[a, k] - embeddings[b, k]) ** 2
      out[a, b] = total if squared else math.sqrt(total)
  return out


def ref_batch_hard(embeddings, labels, margin=0.2, soft=False, squared=False):
  distance = ref_distances(embeddings, squared)
  batch = len(labels)
  per_anchor = []
  for a in range(batch):
    positives = [distance[a, p] for p in range(batch)
                 if p != a and labels[p] == labels[a]]
    negatives = [distance[a, n] for n in range(batch)
                 if labels[n] != labels[a]]
    if not positives or not negatives:
      continue
    gap = max(positives) - min(negatives)
    if soft:
      per_anchor.append(math.log1p(math.exp(gap)))
    else:
      per_anchor.append(max(0.0, margin + gap))
  return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def ref_batch_all(embeddings, labels, margin=0.2, squared=False,
                  nonzero_only=True):
  distance = ref_distances(embeddings, squared)
  batch = len(labels)
  losses = []
  for a in range(batch):
    for p in range(batch):
      if p == a or labels[p] != labels[a]:
        continue
      for n in range(batch):
        if labels[n] == labels[a]:
          continue
        loss = max(0.0, margin + distance[a, p] - distance[a, n])
        if nonzero_only and loss <= 0.0:
          continue
        losses.append(loss)
  return sum(losses) / len(losses) if losses else 0.0


def ref_lifted(embeddings, labels, margin=1.0):
  distance = ref_distances(embeddings, squared=False)
  batch = len(labels)
  per_anchor = []
  for a in range(batch):
    positives = [distance[a, p] for p in range(batch)
                 if p != a and labels[p] == labels[a]]
    negatives = [distance[a, n] for n in range(batch)
                 if labels[n] != labels[a]]
    if not positives or not negatives:
      continue
    positive_term = math.log(sum(math.exp(d) for d in positives))
    negative_term = math.log(sum(math.exp(margin - d) for d in negatives))
    per_anchor.append(max(0.0, positive_term + negative_term))
  return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


# ----------------------------------------------------------------------------
# The losses under test, each with its static hyper-parameters and reference.
# Tests reuse these configurations (and one (BATCH, DIM) shape) so that jit
# and eager dispatch hit their compilation caches.
# ----------------------------------------------------------------------------

LOSSES = {
    'batch_hard': (triplet.batch_hard_triplet_loss, ref_batch_hard,
                   dict(margin=0.2, soft=False, squared=False)),
    'batch_hard_soft': (triplet.batch_hard_triplet_loss, ref_batch_hard,
                        dict(margin=0.2, soft=True, squared=False)),
    'batch_all': (triplet.batch_all_triplet_loss, ref_batch_all,
                  dict(margin=0.2, squared=False, nonzero_only=True)),
    'batch_all_every_triplet_squared': (
        triplet.batch_all_triplet_loss, ref_batch_all,
        dict(margin=0.2, squared=True, nonzero_only=False)),
    'lifted': (triplet.lifted_structure_loss, ref_lifted, dict(margin=1.0)),
}
# The configurations whose gradients are tested (every code path: hinge and
# softplus, max/min and log-sum-exp, non-squared distances).
GRADIENT_LOSSES = ('batch_hard', 'batch_hard_soft', 'batch_all', 'lifted')
# One value_and_grad per function, built once, so that jit caches it.
_VALUE_AND_GRAD = {
    fn: jax.value_and_grad(fn)
    for fn in (triplet.batch_hard_triplet_loss, triplet.batch_all_triplet_loss,
               triplet.lifted_structure_loss)}


def _named(*names):
  return [(name, name) for name in names]


class TripletTestCase(chex.TestCase):
  """Runs a loss through ``self.variant`` with its hyper-parameters static."""

  def loss(self, fn, embeddings, labels, **kwargs):
    variant = self.variant(fn, static_argnames=tuple(kwargs))
    return variant(embeddings, labels, **kwargs)

  def loss_and_grad(self, fn, embeddings, labels, **kwargs):
    variant = self.variant(_VALUE_AND_GRAD[fn], static_argnames=tuple(kwargs))
    return variant(embeddings, labels, **kwargs)

  def assert_matches_reference(self, fn, reference, seed, layout, **kwargs):
    """fn on a Gaussian batch with a layout's labels, against the reference.

    Returns:
      The reference value.
    """
    embeddings = _gaussian(seed, (BATCH, DIM))
    labels = np.array(LAYOUTS[layout], np.int32)
    got = self.loss(fn, embeddings, labels, **kwargs)
    expected = reference(embeddings, labels, **kwargs)
    brute_force.assert_close(got, expected)
    return expected


class BatchHardTest(TripletTestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('pk_hinge', 'pk', 0.2, False, False),
      ('pk_soft', 'pk', 0.2, True, False),
      ('imbalanced_hinge_squared', 'imbalanced', 0.5, False, True),
      # The soft margin ignores ``margin``: the reference does too.
      ('scrambled_soft_squared_other_margin', 'scrambled', 0.7, True, True),
      ('scrambled_hinge_wide_margin', 'scrambled', 3.0, False, False))
  def test_matches_reference(self, layout, margin, soft, squared):
    expected = self.assert_matches_reference(
        triplet.batch_hard_triplet_loss, ref_batch_hard, 1, layout,
        margin=margin, soft=soft, squared=squared)
    self.assertGreater(expected, 0.0)  # The test batch is not a trivial one.


class BatchAllTest(TripletTestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('pk_nonzero', 'pk', 0.2, False, True),
      ('pk_every_triplet', 'pk', 0.2, False, False),
      ('imbalanced_nonzero_squared', 'imbalanced', 0.5, True, True),
      ('scrambled_every_triplet_squared', 'scrambled', 0.2, True, False))
  def test_matches_reference(self, layout, margin, squared, nonzero_only):
    self.assert_matches_reference(
        triplet.batch_all_triplet_loss, ref_batch_all, 2, layout,
        margin=margin, squared=squared, nonzero_only=nonzero_only)

  def test_reference_batches_have_easy_and_hard_triplets(self):
    # Sanity of the data above: BA and BA!=0 differ on it, so the
    # ``nonzero_only`` switch is really exercised.
    embeddings = _gaussian(2, (BATCH, DIM))
    for layout in LAYOUTS.values():
      for squared in (False, True):
        self.assertGreater(
            ref_batch_all(embeddings, layout, 0.2, squared),
            ref_batch_all(embeddings, layout, 0.2, squared,
                          nonzero_only=False))

  @chex.variants(with_jit=True, without_jit=True)
  def test_all_triplets_easy_gives_zero(self):
    # Identities far apart: every triplet has zero loss, so BA!=0 averages
    # over nothing and must give 0, not NaN.
    labels = np.array(LAYOUTS['pk'], np.int32)
    embeddings = (0.01 * _gaussian(3, (BATCH, DIM))
                  + 100.0 * np.eye(DIM, dtype=np.float32)[labels])
    value, grad = self.loss_and_grad(
        triplet.batch_all_triplet_loss, embeddings, labels,
        **LOSSES['batch_all'][2])
    self.assertEqual(float(value), 0.0)
    np.testing.assert_array_equal(np.asarray(grad), 0.0)
    fn, _, kwargs = LOSSES['batch_all_every_triplet_squared']
    self.assertEqual(float(self.loss(fn, embeddings, labels, **kwargs)), 0.0)


class LiftedStructureTest(TripletTestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('pk', 'pk', 1.0), ('imbalanced', 'imbalanced', 1.0),
      ('scrambled_small_margin', 'scrambled', 0.3))
  def test_matches_reference(self, layout, margin):
    expected = self.assert_matches_reference(
        triplet.lifted_structure_loss, ref_lifted, 4, layout, margin=margin)
    self.assertGreater(expected, 0.0)


class TripletFamilyTest(TripletTestCase):
  """Properties shared by the three losses."""

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(max_examples=15)
  @hypothesis.given(
      seed=st.integers(0, 2**32 - 1),
      labels=st.lists(st.integers(0, 3), min_size=BATCH, max_size=BATCH))
  def test_matches_reference_for_any_label_assignment(self, seed, labels):
    # Includes one identity, all-distinct identities and singletons.
    embeddings = _gaussian(seed, (BATCH, DIM))
    labels = np.array(labels, np.int32)
    for name, (fn, reference, kwargs) in LOSSES.items():
      got = self.loss(fn, embeddings, labels, **kwargs)
      expected = reference(embeddings, labels, **kwargs)
      np.testing.assert_allclose(float(got), expected, rtol=RTOL, atol=ATOL,
                                 err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_named(*LOSSES))
  @hypothesis.settings(max_examples=10)
  @hypothesis.given(seed=st.integers(0, 2**32 - 1))
  def test_matches_reference_with_duplicate_rows(self, name, seed):
    # A P x K batch in which each identity's two images are one image twice:
    # D(a, p) = 0 for every anchor's only positive.
    fn, reference, kwargs = LOSSES[name]
    labels = np.array(LAYOUTS['pk'], np.int32)
    embeddings = _gaussian(seed, (BATCH // 2, DIM))[labels]
    got = self.loss(fn, embeddings, labels, **kwargs)
    brute_force.assert_close(got, reference(embeddings, labels, **kwargs))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('one_identity', [3] * BATCH), ('all_distinct', list(range(BATCH))))
  def test_no_valid_anchor_gives_zero_value_and_gradient(self, labels):
    labels = np.array(labels, np.int32)
    embeddings = _gaussian(6, (BATCH, DIM))
    embeddings[-1] = embeddings[0]  # And coincident rows, for good measure.
    for name in GRADIENT_LOSSES:
      fn, _, kwargs = LOSSES[name]
      value, grad = self.loss_and_grad(fn, embeddings, labels, **kwargs)
      chex.assert_shape(value, ())
      self.assertEqual(float(value), 0.0, msg=name)
      np.testing.assert_array_equal(np.asarray(grad), 0.0, err_msg=name)
    fn, _, kwargs = LOSSES['batch_all_every_triplet_squared']
    self.assertEqual(float(self.loss(fn, embeddings, labels, **kwargs)), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_batch_of_one_gives_zero(self):
    embeddings = _gaussian(6, (1, DIM))
    labels = np.zeros((1,), np.int32)
    for fn in _VALUE_AND_GRAD:
      value = self.loss(fn, embeddings, labels)
      chex.assert_shape(value, ())
      self.assertEqual(float(value), 0.0, msg=fn.__name__)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('duplicate_rows', 'duplicates'), ('all_rows_equal', 'all_equal'),
      ('all_rows_zero', 'all_zero'))
  def test_gradient_finite_at_coincident_embeddings(self, layout):
    embeddings = _gaussian(7, (BATCH, DIM))
    if layout == 'duplicates':
      embeddings[1] = embeddings[0]  # Same identity.
      embeddings[2] = embeddings[0]  # Different identity.
      embeddings[7] = embeddings[6]
    elif layout == 'all_equal':
      embeddings[:] = embeddings[0]
    else:
      embeddings[:] = 0.0
    labels = np.array(LAYOUTS['pk'], np.int32)
    for name in GRADIENT_LOSSES:
      fn, _, kwargs = LOSSES[name]
      value, grad = self.loss_and_grad(fn, embeddings, labels, **kwargs)
      brute_force.assert_finite((value, grad))
      self.assertGreaterEqual(float(value), 0.0, msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_named(*GRADIENT_LOSSES))
  def test_gradient_matches_finite_differences(self, name):
    # Away from ties and hinge kinks the losses are smooth: their float32
    # gradient must match central differences of the float64 reference.
    fn, reference, kwargs = LOSSES[name]
    embeddings = _gaussian(8, (BATCH, DIM))
    labels = np.array(LAYOUTS['scrambled'], np.int32)
    _, grad = self.loss_and_grad(fn, embeddings, labels, **kwargs)
    [expected] = brute_force.central_differences(
        lambda e: reference(e, labels, **kwargs), embeddings)
    self.assertGreater(np.abs(expected).max(), 1e-2)
    brute_force.assert_close(grad, expected, rtol=1e-4, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(max_examples=10)
  @hypothesis.given(seed=st.integers(0, 2**32 - 1),
                    order=st.permutations(range(BATCH)),
                    renaming=st.permutations(range(10)))
  def test_invariant_to_batch_order_and_label_names(self, seed, order,
                                                    renaming):
    embeddings = _gaussian(seed, (BATCH, DIM))
    labels = np.array(LAYOUTS['scrambled'], np.int32)
    order = np.array(order)
    renamed = np.array(renaming, np.int32)[labels]
    for name, (fn, _, kwargs) in LOSSES.items():
      base = float(self.loss(fn, embeddings, labels, **kwargs))
      permuted = float(self.loss(fn, embeddings[order], labels[order],
                                 **kwargs))
      relabelled = float(self.loss(fn, embeddings, renamed, **kwargs))
      np.testing.assert_allclose(permuted, base, rtol=RTOL, atol=ATOL,
                                 err_msg=name)
      np.testing.assert_allclose(relabelled, base, rtol=RTOL, atol=ATOL,
                                 err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_named(*LOSSES))
  def test_float32_scalar(self, name):
    fn, _, kwargs = LOSSES[name]
    embeddings = _gaussian(9, (BATCH, DIM))
    value = self.loss(fn, embeddings, np.array(LAYOUTS['pk'], np.int32),
                      **kwargs)
    chex.assert_shape(value, ())
    chex.assert_type(value, jnp.float32)

  def test_rejects_bad_shapes(self):
    for fn in _VALUE_AND_GRAD:
      with self.assertRaises(ValueError):
        fn(jnp.zeros((4, 3)), jnp.zeros((5,), jnp.int32))
      with self.assertRaises(ValueError):
        fn(jnp.zeros((4,)), jnp.zeros((4,), jnp.int32))
