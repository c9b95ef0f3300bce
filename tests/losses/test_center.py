"""Tests of center_loss (Wen et al., ECCV 2016) in facejax.losses.center.

The loss and the centre update are checked against float64 loops over the
batch and the classes written out below, with and without ``jit``; and the
properties that make the centres state rather than parameters: no gradient
into them, absent classes' centres kept bit for bit, and every present centre
moved toward the mean of its class in the batch.
"""
from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from facejax.losses import center
from tests.losses import brute_force

RTOL, ATOL = brute_force.RTOL, brute_force.ATOL
BATCH = 8
DIM = 4
CLASSES = 5

LAYOUTS = {
    # Classes 3 and 4 absent, class 0 three times.
    'some_absent': [0, 1, 2, 0, 1, 2, 0, 1],
    'all_present': [4, 0, 3, 1, 2, 3, 0, 4],
    'one_class': [2] * BATCH,
}


def _with_special_values(centers, labels):
  """Puts -0.0, a subnormal and a huge value in the absent classes' centres.

  Bit-identity of those rows is then a stronger check than equality.
  """
  centers = centers.copy()
  for j in range(CLASSES):
    if j not in labels:
      centers[j, :3] = [-0.0, 1e-40, 3e38]
  return centers


# ----------------------------------------------------------------------------
# Brute-force reference (float64, explicit loops).
# ----------------------------------------------------------------------------


def ref_center_loss(features, labels, centers, alpha=0.5):
  features = np.asarray(features, np.float64)
  centers = np.asarray(centers, np.float64)
  total = 0.0
  for i, label in enumerate(labels):
    for k in range(features.shape[1]):
      total += 0.5 * (features[i, k] - centers[label, k]) ** 2
  loss = total / len(labels)
  return loss, brute_force.center_update(features, labels, centers, alpha)


def ref_class_means(features, labels):
  means = {}
  for j in set(labels):
    members = [np.asarray(features[i], np.float64)
               for i, label in enumerate(labels) if label == j]
    means[j] = sum(members) / len(members)
  return means


# ----------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------

ALPHAS = (0.1, 0.5, 1.0)


def _loss_only(features, labels, centers, alpha=0.5):
  return center.center_loss(features, labels, centers, alpha)[0]


_LOSS_GRADS = jax.grad(_loss_only, argnums=(0, 2))
# Gradient of the new centres (a weighted sum of them) into the features.
_UPDATE_GRAD = jax.grad(
    lambda features, labels, centers, weights: jnp.sum(
        weights * center.center_loss(features, labels, centers)[1]))


class CenterLossTest(chex.TestCase):

  def center_loss(self, features, labels, centers, alpha=0.5):
    return self.variant(center.center_loss, static_argnames=('alpha',))(
        features, labels, centers, alpha=alpha)

  def assert_bit_identical(self, new_center, center_row, msg):
    self.assertTrue(np.array_equal(new_center, center_row), msg=msg)
    np.testing.assert_array_equal(new_center.view(np.uint32),
                                  center_row.view(np.uint32))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('some_absent', 'some_absent', 0.5),
      ('all_present_alpha_1', 'all_present', 1.0),
      ('one_class_alpha_0_1', 'one_class', 0.1))
  def test_matches_reference(self, layout, alpha):
    features = 2.0 * brute_force.gaussian(0, (BATCH, DIM))
    centers = brute_force.gaussian(1, (CLASSES, DIM))
    labels = np.array(LAYOUTS[layout], np.int32)
    loss, new_centers = self.center_loss(features, labels, centers, alpha)
    chex.assert_shape(loss, ())
    chex.assert_type(loss, jnp.float32)
    chex.assert_shape(new_centers, (CLASSES, DIM))
    chex.assert_type(new_centers, jnp.float32)
    expected_loss, expected_centers = ref_center_loss(features, labels,
                                                      centers, alpha)
    brute_force.assert_close(loss, expected_loss)
    brute_force.assert_close(new_centers, expected_centers)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(layout, layout) for layout in LAYOUTS])
  def test_absent_classes_are_bit_identical(self, layout):
    labels = np.array(LAYOUTS[layout], np.int32)
    centers = _with_special_values(brute_force.gaussian(2, (CLASSES, DIM)),
                                   labels)
    _, new_centers = self.center_loss(brute_force.gaussian(3, (BATCH, DIM)),
                                      labels, centers)
    new_centers = np.asarray(new_centers)
    for j in range(CLASSES):
      if j not in labels:
        self.assert_bit_identical(new_centers[j], centers[j], f'class {j}')
      else:
        self.assertFalse(np.array_equal(new_centers[j], centers[j]))

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradients(self):
    # d/dx_i = (x_i - c_{y_i}) / N and exactly nothing into the centres,
    # including where a feature sits on its centre (distance 0).
    labels = np.array(LAYOUTS['some_absent'], np.int32)
    features = brute_force.gaussian(4, (BATCH, DIM))
    centers = brute_force.gaussian(5, (CLASSES, DIM))
    features[3] = centers[labels[3]]
    grad_features, grad_centers = self.variant(
        _LOSS_GRADS, static_argnames=('alpha',))(features, labels, centers,
                                                 alpha=0.5)
    np.testing.assert_array_equal(np.asarray(grad_centers), 0.0)
    expected = np.zeros((BATCH, DIM))
    for i, label in enumerate(labels):
      for k in range(DIM):
        expected[i, k] = (float(features[i, k])
                          - float(centers[label, k])) / BATCH
    brute_force.assert_close(grad_features, expected)
    np.testing.assert_array_equal(np.asarray(grad_features)[3], 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_update_treats_features_as_constants(self):
    labels = np.array(LAYOUTS['all_present'], np.int32)
    grad = self.variant(_UPDATE_GRAD)(
        brute_force.gaussian(6, (BATCH, DIM)), labels,
        brute_force.gaussian(7, (CLASSES, DIM)),
        brute_force.gaussian(8, (CLASSES, DIM)))
    np.testing.assert_array_equal(np.asarray(grad), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.given(
      seed=st.integers(0, 2**32 - 1),
      labels=st.lists(st.integers(0, CLASSES - 1), min_size=BATCH,
                      max_size=BATCH),
      alpha=st.sampled_from(ALPHAS),
      start_at_mean=st.booleans())
  def test_update_moves_present_centres_toward_class_mean(
      self, seed, labels, alpha, start_at_mean):
    features = 2.0 * brute_force.gaussian(seed, (BATCH, DIM))
    centers = _with_special_values(
        brute_force.gaussian(seed + 1, (CLASSES, DIM)), labels)
    means = ref_class_means(features, labels)
    if start_at_mean:
      # One centre already at its class mean (up to float32 rounding).
      centers[labels[0]] = means[labels[0]]
    labels = np.array(labels, np.int32)
    _, new_centers = self.center_loss(features, labels, centers, alpha)
    new_centers = np.asarray(new_centers)
    for j in range(CLASSES):
      if j not in means:
        self.assert_bit_identical(new_centers[j], centers[j],
                                  f'absent class {j} moved')
        continue
      before = np.linalg.norm(centers[j].astype(np.float64) - means[j])
      after = np.linalg.norm(new_centers[j].astype(np.float64) - means[j])
      if before > 1e-3:
        self.assertLess(after, before, msg=f'class {j}')
      else:
        self.assertLessEqual(after, before + 1e-6, msg=f'class {j}')

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(max_examples=10)
  @hypothesis.given(seed=st.integers(0, 2**32 - 1),
                    order=st.permutations(range(BATCH)),
                    renaming=st.permutations(range(CLASSES)))
  def test_invariant_to_batch_order_and_class_names(self, seed, order,
                                                    renaming):
    features = brute_force.gaussian(seed, (BATCH, DIM))
    centers = brute_force.gaussian(seed + 1, (CLASSES, DIM))
    labels = np.array(LAYOUTS['some_absent'], np.int32)
    order = np.array(order)
    renaming = np.array(renaming)
    loss, new_centers = self.center_loss(features, labels, centers)
    # Shuffled batch.
    loss_p, new_centers_p = self.center_loss(features[order], labels[order],
                                             centers)
    np.testing.assert_allclose(float(loss_p), float(loss), rtol=RTOL)
    np.testing.assert_allclose(new_centers_p, new_centers, rtol=RTOL,
                               atol=ATOL)
    # Class j renamed renaming[j]: its centre moves to row renaming[j].
    renamed_centers = np.zeros_like(centers)
    renamed_centers[renaming] = centers
    loss_r, new_centers_r = self.center_loss(
        features, renaming[labels].astype(np.int32), renamed_centers)
    np.testing.assert_allclose(float(loss_r), float(loss), rtol=RTOL)
    np.testing.assert_allclose(np.asarray(new_centers_r)[renaming],
                               new_centers, rtol=RTOL, atol=ATOL)

  @chex.variants(with_jit=True, without_jit=True)
  def test_alpha_zero_keeps_every_centre(self):
    centers = brute_force.gaussian(9, (CLASSES, DIM))
    _, new_centers = self.center_loss(
        brute_force.gaussian(10, (BATCH, DIM)),
        np.array(LAYOUTS['all_present'], np.int32), centers, 0.0)
    np.testing.assert_array_equal(np.asarray(new_centers), centers)

  @chex.variants(with_jit=True)
  def test_out_of_range_label_under_jit_gives_nan_and_moves_nothing(self):
    # Under jit the label values are unknown at trace time: the documented
    # behaviour is a NaN loss (so a training loop stops), and the bad example
    # moves no centre (a gather would silently clamp it to class K - 1).
    labels = np.array(LAYOUTS['some_absent'], np.int32)
    labels[1] = CLASSES  # Was class 1, which keeps two other examples.
    labels[2] = -1  # Was class 2, which keeps one other example.
    features = brute_force.gaussian(11, (BATCH, DIM))
    centers = brute_force.gaussian(12, (CLASSES, DIM))
    loss, new_centers = self.center_loss(features, labels, centers)
    self.assertTrue(np.isnan(float(loss)))
    # The reference on the batch without the two bad rows.
    rows = [i for i in range(BATCH) if i not in (1, 2)]
    _, expected = ref_center_loss(features[rows], labels[rows], centers)
    brute_force.assert_close(new_centers, expected)

  def test_rejects_bad_arguments(self):
    features = jnp.zeros((BATCH, DIM))
    centers = jnp.zeros((CLASSES, DIM))
    labels = jnp.zeros((BATCH,), jnp.int32)
    with self.assertRaises(ValueError):
      center.center_loss(features, labels, jnp.zeros((CLASSES, DIM + 1)))
    with self.assertRaises(ValueError):
      center.center_loss(features, labels[:-1], centers)
    with self.assertRaises(ValueError):  # A label outside [0, K).
      center.center_loss(features, labels.at[2].set(CLASSES), centers)
    with self.assertRaises(TypeError):
      center.center_loss(features, labels.astype(jnp.float32), centers)
