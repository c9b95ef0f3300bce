"""Tests of LMLE (Huang et al., CVPR 2016) in facejax.losses.lmle.

triple_header_hinge_loss and quintuplet_indices are checked against float64
brute-force loops over anchors written out below, with and without ``jit``:
values, the ``valid`` mask (0 when empty), finite gradients at coincident
embeddings, invariances, dtypes and shapes. The embeddings are random
Gaussians, so no two candidate distances tie and the reference's choice of
quintuplet members is unambiguous.
"""

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from facejax.losses import lmle
from tests.losses import brute_force

RTOL = brute_force.RTOL
BATCH = 8
DIM = 4

# Class 0 has clusters {0, 1}, {2, 3} and the singleton {4}; class 1 has
# {5, 6} and the singleton {7}. Cluster ids are numbered per class, so class
# 0's cluster 0 and class 1's cluster 0 are different clusters.
LABELS = [0, 0, 0, 0, 0, 1, 1, 1]
CLUSTERS = [0, 0, 1, 1, 2, 0, 0, 1]


# ----------------------------------------------------------------------------
# Brute-force references (float64, explicit loops).
# ----------------------------------------------------------------------------


def ref_triple_header(anchor, p_plus, p_minus, p_minus_minus, negative,
                      margins=(0.2, 0.2, 0.2), valid=None):
  g1, g2, g3 = margins
  per_anchor = []
  for i in range(len(anchor)):
    if valid is not None and not valid[i]:
      continue
    d_plus = brute_force.squared_distance(anchor[i], p_plus[i])
    d_minus = brute_force.squared_distance(anchor[i], p_minus[i])
    d_minus_minus = brute_force.squared_distance(anchor[i], p_minus_minus[i])
    d_negative = brute_force.squared_distance(anchor[i], negative[i])
    per_anchor.append(max(0.0, g1 + d_plus - d_minus)
                      + max(0.0, g2 + d_minus - d_minus_minus)
                      + max(0.0, g3 + d_minus_minus - d_negative))
  return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def ref_quintuplets(embeddings, labels, clusters):
  """(p_plus, p_minus, p_minus_minus, negative, valid) lists, by loops."""
  batch = len(labels)
  picks = [[], [], [], []]
  valid = []
  for a in range(batch):
    distance = [brute_force.squared_distance(embeddings[a], embeddings[j])
                for j in range(batch)]
    same_cluster = [j for j in range(batch) if j != a
                    and labels[j] == labels[a] and clusters[j] == clusters[a]]
    other_cluster = [j for j in range(batch) if labels[j] == labels[a]
                     and clusters[j] != clusters[a]]
    same_class = [j for j in range(batch) if j != a and labels[j] == labels[a]]
    other_class = [j for j in range(batch) if labels[j] != labels[a]]
    ok = bool(same_cluster and other_cluster and same_class and other_class)
    valid.append(ok)
    if not ok:
      for members in picks:
        members.append(a)
      continue
    picks[0].append(max(same_cluster, key=lambda j: distance[j]))
    picks[1].append(min(other_cluster, key=lambda j: distance[j]))
    picks[2].append(max(same_class, key=lambda j: distance[j]))
    picks[3].append(min(other_class, key=lambda j: distance[j]))
  return (*picks, valid)


# ----------------------------------------------------------------------------
# triple_header_hinge_loss.
# ----------------------------------------------------------------------------

_LOSS = lmle.triple_header_hinge_loss
_LOSS_AND_GRAD = jax.value_and_grad(lmle.triple_header_hinge_loss,
                                    argnums=(0, 1, 2, 3, 4))


def _five(seed):
  # Squared distances of these Gaussians are around 8 +- 4, so with gaps of
  # 0.2 .. 2 some hinge terms are active and some are not.
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((BATCH, DIM)).astype(np.float32)
          for _ in range(5)]


class TripleHeaderHingeLossTest(chex.TestCase):

  def loss(self, members, margins, valid=None):
    return self.variant(_LOSS, static_argnames=('margins',))(
        *members, margins=margins, valid=valid)

  def loss_and_grad(self, members, margins, valid=None):
    return self.variant(_LOSS_AND_GRAD, static_argnames=('margins',))(
        *members, margins=margins, valid=valid)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('default_gaps', (0.2, 0.2, 0.2)), ('unequal_gaps', (0.5, 1.0, 2.0)))
  def test_matches_reference(self, margins):
    members = _five(0)
    got = self.loss(members, margins)
    chex.assert_shape(got, ())
    chex.assert_type(got, jnp.float32)
    brute_force.assert_close(got, ref_triple_header(*members, margins=margins))

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(max_examples=10)
  @hypothesis.given(seed=st.integers(0, 2**32 - 1),
                    valid=st.lists(st.booleans(), min_size=BATCH,
                                   max_size=BATCH))
  def test_matches_reference_with_valid_mask(self, seed, valid):
    # Includes the empty mask, which must give 0.
    members = _five(seed)
    valid = np.array(valid)
    got = self.loss(members, (0.2, 0.2, 0.2), valid)
    brute_force.assert_close(got, ref_triple_header(*members, valid=valid))

  @chex.variants(with_jit=True, without_jit=True)
  def test_empty_mask_gives_zero_value_and_gradient(self):
    value, grads = self.loss_and_grad(_five(1), (0.2, 0.2, 0.2),
                                      np.zeros(BATCH, bool))
    self.assertEqual(float(value), 0.0)
    for grad in grads:
      np.testing.assert_array_equal(np.asarray(grad), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('all_five_coincide', 'all'), ('anchor_is_negative', 'negative'),
      ('all_zero', 'zero'))
  def test_gradient_finite_at_coincident_embeddings(self, layout):
    members = _five(2)
    if layout == 'all':
      members = [members[0]] * 5
    elif layout == 'negative':
      members[4] = members[0]
    else:
      members = [np.zeros_like(members[0])] * 5
    value, grads = self.loss_and_grad(members, (0.2, 0.2, 0.2),
                                      np.ones(BATCH, bool))
    brute_force.assert_finite((value, grads))

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_matches_finite_differences(self):
    members = _five(3)
    valid = np.array([True, False] * (BATCH // 2))
    _, grads = self.loss_and_grad(members, (0.2, 0.2, 0.2), valid)
    expected_grads = brute_force.central_differences(
        lambda *five: ref_triple_header(*five, valid=valid), *members)
    for grad, expected in zip(grads, expected_grads, strict=True):
      brute_force.assert_close(grad, expected, rtol=1e-4, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_invariant_to_quintuplet_order(self):
    members = _five(4)
    valid = np.array([True, True, False, True, False, True, True, True])
    order = np.random.default_rng(5).permutation(BATCH)
    base = self.loss(members, (0.2, 0.2, 0.2), valid)
    permuted = self.loss([x[order] for x in members], (0.2, 0.2, 0.2),
                         valid[order])
    np.testing.assert_allclose(float(permuted), float(base), rtol=RTOL)

  def test_rejects_bad_arguments(self):
    members = [jnp.zeros((BATCH, DIM))] * 5
    with self.assertRaises(ValueError):
      _LOSS(*members[:4], jnp.zeros((BATCH, DIM + 1)))
    with self.assertRaises(ValueError):
      _LOSS(*members, margins=(0.2, 0.2))


# ----------------------------------------------------------------------------
# quintuplet_indices.
# ----------------------------------------------------------------------------


class QuintupletIndicesTest(chex.TestCase):

  def assert_matches_reference(self, embeddings, labels, clusters):
    got = self.variant(lmle.quintuplet_indices)(
        embeddings, np.asarray(labels, np.int32),
        np.asarray(clusters, np.int32))
    self.assertIsInstance(got, lmle.Quintuplets)
    expected = ref_quintuplets(embeddings, labels, clusters)
    for name, member, reference in zip(got._fields, got, expected):
      chex.assert_shape(member, (BATCH,))
      np.testing.assert_array_equal(np.asarray(member), reference,
                                    err_msg=name)
    return got

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_reference(self):
    got = self.assert_matches_reference(
        brute_force.gaussian(10, (BATCH, DIM)), LABELS, CLUSTERS)
    # The fixture has valid and invalid anchors (the singleton clusters).
    np.testing.assert_array_equal(
        np.asarray(got.valid), [True] * 4 + [False] + [True] * 2 + [False])
    chex.assert_type(got.valid, bool)
    for member in got[:4]:
      self.assertTrue(jnp.issubdtype(member.dtype, jnp.integer))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('one_class', [0] * BATCH, CLUSTERS),
      ('one_cluster_per_class', LABELS, [0] * BATCH),
      ('all_singletons', LABELS, list(range(BATCH))),
      # Global cluster ids shared across classes: 0 in class 0 and 0 in
      # class 1 are still different clusters.
      ('global_ids_shared_across_classes', [0, 1, 0, 1, 0, 1, 0, 1],
       [0, 0, 0, 0, 1, 1, 1, 1]))
  def test_degenerate_layouts(self, labels, clusters):
    self.assert_matches_reference(
        brute_force.gaussian(11, (BATCH, DIM)), labels, clusters)

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.given(
      seed=st.integers(0, 2**32 - 1),
      labels=st.lists(st.integers(0, 2), min_size=BATCH, max_size=BATCH),
      clusters=st.lists(st.integers(0, 2), min_size=BATCH, max_size=BATCH))
  def test_matches_reference_for_any_assignment(self, seed, labels,
                                                clusters):
    self.assert_matches_reference(
        brute_force.gaussian(seed, (BATCH, DIM)), labels, clusters)

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(max_examples=10)
  @hypothesis.given(seed=st.integers(0, 2**32 - 1),
                    order=st.permutations(range(BATCH)),
                    renaming=st.permutations(range(5)))
  def test_lmle_loss_invariant_to_batch_order_and_label_names(
      self, seed, order, renaming):
    # The whole LMLE step (sample quintuplets, gather, loss) does not depend
    # on the order of the batch or on the names of classes and clusters.
    embeddings = brute_force.gaussian(seed, (BATCH, DIM))
    labels = np.array(LABELS, np.int32)
    clusters = np.array(CLUSTERS, np.int32)
    renaming = np.array(renaming, np.int32)
    order = np.array(order)
    step = self.variant(_lmle_step)
    base = step(embeddings, labels, clusters)
    permuted = step(embeddings[order], labels[order], clusters[order])
    renamed = step(embeddings, renaming[labels], renaming[::-1][clusters])
    np.testing.assert_allclose(float(permuted), float(base), rtol=RTOL)
    np.testing.assert_allclose(float(renamed), float(base), rtol=RTOL)

  @chex.variants(with_jit=True, without_jit=True)
  def test_lmle_step_matches_reference_and_has_finite_gradient(self):
    embeddings = brute_force.gaussian(12, (BATCH, DIM))
    embeddings[3] = embeddings[2]  # Coincident members of one cluster.
    value, grad = self.variant(jax.value_and_grad(_lmle_step))(
        embeddings, np.array(LABELS, np.int32), np.array(CLUSTERS, np.int32))
    brute_force.assert_finite((value, grad))
    p_plus, p_minus, p_minus_minus, negative, valid = ref_quintuplets(
        embeddings, LABELS, CLUSTERS)
    brute_force.assert_close(value, ref_triple_header(
        embeddings, embeddings[p_plus], embeddings[p_minus],
        embeddings[p_minus_minus], embeddings[negative], valid=valid))

  def test_rejects_bad_shapes(self):
    embeddings = jnp.zeros((BATCH, DIM))
    labels = jnp.zeros((BATCH,), jnp.int32)
    with self.assertRaises(ValueError):
      lmle.quintuplet_indices(embeddings, labels, labels[:-1])
    with self.assertRaises(ValueError):
      lmle.quintuplet_indices(embeddings[0], labels, labels)


def _lmle_step(embeddings, labels, clusters):
  quintuplets = lmle.quintuplet_indices(embeddings, labels, clusters)
  members = [embeddings[index] for index in quintuplets[:4]]
  return lmle.triple_header_hinge_loss(embeddings, *members,
                                       valid=quintuplets.valid)
