"""Inputs and shared tests for the angular-margin softmax losses.

test_margin.py (ArcFace, CosFace, ...) and test_sphereface.py (A-Softmax)
check losses of one signature, ``loss(embeddings (N, D), weights (D, C),
labels (N,))``, on the same kinds of batch: random ones with chosen angles
between each embedding and its class column, and extreme ones whose target
angles are exactly or nearly 0 and pi. This module builds those batches
(float64 numpy, independent of facejax) and holds ``AngularLossTestCase``,
the tests the two files have in common.

``AngularLossTestCase`` is not collected from here (this is not a test
module): a test module subclasses it and sets its class attributes.
"""
import math

import chex
import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np

from tests.losses import brute_force

# Examples, embedding dimension, classes. test_labels.py uses them too, so
# that the eagerly compiled primitives are shared when the files run together.
N, D, C = 8, 5, 7

# What the rows of the 'random_columns' extreme batch are.
EXTREME_ROWS = ('theta = 0 (x = 1.5 W_y)', 'theta = 0 (x = 0.3 W_y)',
                'theta = pi (x = -0.7 W_y)', 'theta = pi (x = -2 W_y)',
                'theta = 1e-4', 'theta = 1e-4',
                'theta = pi - 1e-4', 'theta = pi - 1e-4')


def unit(v):
  return v / np.linalg.norm(v)


def at_angle(direction, angle, rng):
  """A unit vector at ``angle`` from ``direction`` (float64)."""
  u = unit(np.asarray(direction, np.float64))
  r = rng.normal(size=u.shape)
  r = unit(r - np.dot(r, u) * u)
  return math.cos(angle) * u + math.sin(angle) * r


def problem(seed, angles=None):
  """Random float32 (embeddings, weights, labels) with chosen target angles.

  Args:
    seed: seeds the weights, labels, directions and feature norms.
    angles: the (N,) angles between each embedding and its class column. By
      default they spread over [0.15, pi - 0.15], so that every batch has
      examples on both sides of every margin's threshold theta*.

  Returns:
    embeddings (N, D) with norms in [0.5, 3], weights (D, C) with column norms
    of various sizes, and int32 labels (N,).
  """
  rng = np.random.default_rng(seed)
  weights = rng.normal(size=(D, C)) * rng.uniform(0.5, 2.0, size=(1, C))
  labels = rng.integers(0, C, size=N)
  if angles is None:
    angles = (rng.permutation(np.linspace(0.15, math.pi - 0.15, N))
              + rng.uniform(-0.05, 0.05, size=N))
  embeddings = np.stack([
      at_angle(weights[:, labels[i]], angles[i], rng) for i in range(N)])
  embeddings *= rng.uniform(0.5, 3.0, size=(N, 1))
  return (embeddings.astype(np.float32), weights.astype(np.float32),
          labels.astype(np.int32))


def extreme_problems(near_norm=1.0, coincident_centres=True, seed=0):
  """Batches whose target angles are exactly or nearly 0 and pi.

  Args:
    near_norm: the norm of the rows at 1e-4 from 0 and pi (rows 4 to 7 of
      'random_columns', see ``EXTREME_ROWS``).
    coincident_centres: whether to add the 'coincident_centres' batch, whose
      class columns 0, 1 and 2 are equal or opposite (the angles between
      centres that inter_loss takes).
    seed: seeds the weights, labels and directions.

  Returns:
    {case: (embeddings, weights, labels)}, float32 and int32.
  """
  rng = np.random.default_rng(seed)
  weights = rng.normal(size=(D, C)) * rng.uniform(0.5, 2.0, size=(1, C))
  labels = rng.integers(0, C, size=N).astype(np.int32)
  columns = weights.T[labels]
  near = [near_norm * at_angle(columns[i], angle, rng) for i, angle in
          zip(range(4, 8), (1e-4, 1e-4, math.pi - 1e-4, math.pi - 1e-4))]
  x = np.concatenate([columns[:2] * [[1.5], [0.3]],
                      columns[2:4] * [[-0.7], [-2.0]], np.stack(near)])
  problems = {'random_columns': (x, weights, labels)}
  # Basis-vector classes: the cosines are exactly +1 and -1 in float32.
  basis_weights = np.array(weights)
  basis_weights[:, :D] = 2.0 * np.eye(D)
  basis_labels = np.arange(N, dtype=np.int32) % D
  sign = np.where(np.arange(N) % 2 == 0, 1.0, -1.0)[:, None]
  problems['exact_plus_minus_one'] = (
      3.0 * sign * np.eye(D)[basis_labels], basis_weights, basis_labels)
  if coincident_centres:
    centre_weights = np.array(weights)
    centre_weights[:, 1] = centre_weights[:, 0]
    centre_weights[:, 2] = -centre_weights[:, 0]
    centre_labels = np.arange(N, dtype=np.int32) % 3
    problems['coincident_centres'] = (
        centre_weights.T[centre_labels], centre_weights, centre_labels)
  return {name: (np.asarray(x, np.float32), np.asarray(w, np.float32), y)
          for name, (x, w, y) in problems.items()}


def describe_bad_rows(case, grad_x):
  """The rows of an extreme batch whose gradient is not finite."""
  bad = np.flatnonzero(~np.all(np.isfinite(grad_x), axis=1))
  if case == 'random_columns':
    return [f'row {i}: {EXTREME_ROWS[i]}' for i in bad]
  return [f'row {i}' for i in bad]


class AngularLossTestCase(chex.TestCase):
  """Tests every angular-margin loss passes, against a brute-force reference.

  A subclass sets these class attributes (the functions as ``staticmethod``s,
  so that ``self.variant`` jits one function object, compiled once):

    all_losses: (x, W, y) -> {name: loss}, every configuration under test.
    all_gradients: (x, W, y) -> {name: (d loss / dx, d loss / dW)} for the
      names in ``gradient_cases``.
    references: (x, W, y) -> {name: float64 brute-force loss}, the same names
      as ``all_losses``.
    gradient_cases: the names whose gradients must be finite at the extremes.
    extreme_problems: () -> {case: (x, W, y)}, see ``extreme_problems``.
    extreme_atol: the absolute tolerance of the losses at the extremes.
    keeps_feature_norm: whether the loss depends on the embedding norms (as
      SphereFace's does) rather than normalising them away.
    min_any_angle: hypothesis draws target angles in
      [min_any_angle, pi - min_any_angle].

  and defines ``assert_scaling_invariances``.
  """

  all_losses = None
  all_gradients = None
  references = None
  gradient_cases = ()
  extreme_problems = None
  extreme_atol = None
  keeps_feature_norm = False
  min_any_angle = None

  def assert_all_close(self, losses, expected, rtol=1e-5, atol=1e-5,
                       what=''):
    self.assertEqual(set(losses), set(expected))
    for name in expected:
      brute_force.assert_close(losses[name], expected[name], rtol=rtol,
                               atol=atol, err_msg=f'{name} {what}')

  def assert_scaling_invariances(self, losses_fn, x, w, y, rng, expected):
    """Checks what scaling x and the columns of w does to the losses."""
    raise NotImplementedError

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_brute_force(self):
    losses_fn = self.variant(self.all_losses)
    for seed in (0, 1, 2):
      x, w, y = problem(seed)
      losses = losses_fn(x, w, y)
      for name, loss in losses.items():
        self.assertEqual(loss.shape, (), name)
        self.assertEqual(loss.dtype, jnp.float32, name)
      self.assert_all_close(losses, self.references(x, w, y),
                            what=f'seed {seed}')

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_brute_force_for_any_angles(self):
    """Hypothesis draws a seed, target angles and any kept feature norms."""
    losses_fn = self.variant(self.all_losses)
    angles = hnp.arrays(np.float64, (N,), elements=st.floats(
        self.min_any_angle, math.pi - self.min_any_angle))
    norms = (hnp.arrays(np.float64, (N,), elements=st.floats(0.1, 4.0))
             if self.keeps_feature_norm else st.none())

    @hypothesis.settings(max_examples=10)
    @hypothesis.given(angles=angles, norms=norms,
                      seed=st.integers(0, 2**31 - 1))
    def check(angles, norms, seed):
      x, w, y = problem(seed, angles=angles)
      if norms is not None:
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)
             * norms[:, None]).astype(np.float32)
      self.assert_all_close(losses_fn(x, w, y), self.references(x, w, y))

    check()

  @chex.variants(with_jit=True, without_jit=True)
  def test_finite_gradients_at_zero_and_pi(self):
    losses_fn = self.variant(self.all_losses)
    gradients_fn = self.variant(self.all_gradients)
    for case, (x, w, y) in self.extreme_problems().items():
      losses = losses_fn(x, w, y)
      gradients = gradients_fn(x, w, y)
      for name in self.gradient_cases:
        grad_x, grad_w = gradients[name]
        what = f'{name} at {case}'
        self.assertTrue(np.isfinite(losses[name]), f'{what}: {losses[name]}')
        self.assertTrue(
            np.all(np.isfinite(grad_x)),
            f'{what}: d/dx {grad_x} {describe_bad_rows(case, grad_x)}')
        self.assertTrue(np.all(np.isfinite(grad_w)), f'{what}: d/dW {grad_w}')
      # The values at the extremes still follow the spec.
      self.assert_all_close(losses, self.references(x, w, y), rtol=1e-4,
                            atol=self.extreme_atol, what=f'at {case}')

  @chex.variants(with_jit=True, without_jit=True)
  def test_invariances(self):
    losses_fn = self.variant(self.all_losses)
    rng = np.random.default_rng(11)
    x, w, y = problem(4)
    expected = jax.tree.map(float, losses_fn(x, w, y))
    # Batch order.
    order = rng.permutation(N)
    self.assert_all_close(losses_fn(x[order], w, y[order]), expected,
                          what='batch order')
    # Class order: permute the columns of W and relabel accordingly.
    perm = rng.permutation(C)
    new_label = np.argsort(perm).astype(np.int32)
    self.assert_all_close(losses_fn(x, w[:, perm], new_label[y]), expected,
                          what='class permutation')
    self.assert_scaling_invariances(losses_fn, x, w, y, rng, expected)
