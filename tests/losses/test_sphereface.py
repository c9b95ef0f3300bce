"""Property tests for facejax/losses/sphereface.py: A-Softmax (SphereFace).

Covers sphereface_loss, sphereface_psi (and its _chebyshev_cosine_multiple)
and sphereface_lambda. The losses are compared with a brute-force reference
written below in float64 numpy with explicit Python loops over examples and
classes, under and outside ``jit`` (``chex.variants``). Hyperparameters are
static (bound with ``functools.partial``); all the configurations are
evaluated by one function so that ``jit`` compiles once per input signature.
The inputs and the tests shared with test_margin.py (``AngularLossTestCase``)
are in angular_problems.py.
"""
import functools
import math

import chex
import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np

from facejax.losses import softmax
from facejax.losses import sphereface
from tests.losses import angular_problems
from tests.losses import brute_force

N, C = angular_problems.N, angular_problems.C

# ---------------------------------------------------------------------------
# Brute-force references: float64, explicit loops, math.* only.
# ---------------------------------------------------------------------------


_assert_close = functools.partial(brute_force.assert_close, atol=1e-5)


def _psi_reference(theta, m):
  """psi(theta) = (-1)^k cos(m theta) - 2k on [k pi/m, (k+1) pi/m]."""
  k = min(int(math.floor(m * theta / math.pi)), m - 1)
  return (-1.0) ** k * math.cos(m * theta) - 2.0 * k


def _sphereface_reference(embeddings, weights, labels, m, lam):
  x = np.asarray(embeddings, np.float64)
  cosines = brute_force.cosines(x, weights)
  num_examples, dim = x.shape
  logits = []
  for i in range(num_examples):
    x_norm = math.sqrt(sum(x[i, k] ** 2 for k in range(dim)))
    row = []
    for j, cosine in enumerate(cosines[i]):
      if j == int(labels[i]):
        psi = _psi_reference(brute_force.acos(cosine), m)
        row.append(x_norm * (lam * cosine + psi) / (1.0 + lam))
      else:
        row.append(x_norm * cosine)
    logits.append(row)
  return brute_force.cross_entropy(logits, labels)


# ---------------------------------------------------------------------------
# The configurations under test.
# ---------------------------------------------------------------------------

_CONFIGS = {  # name -> (m, lam); 'defaults' calls sphereface_loss(x, W, y).
    'defaults': (4, 5.0),
    'm4_lam0': (4, 0.0),
    'm3_lam0': (3, 0.0),
    'm2_lam1': (2, 1.0),
    'm1_lam0': (1, 0.0),
    'm1_lam5': (1, 5.0),
}
_LOSSES = {
    name: (sphereface.sphereface_loss if name == 'defaults' else
           functools.partial(sphereface.sphereface_loss, m=m, lam=lam))
    for name, (m, lam) in _CONFIGS.items()
}
_GRADIENT_CASES = ('defaults', 'm3_lam0')


def _all_losses(embeddings, weights, labels):
  return {name: fn(embeddings, weights, labels) for name, fn in _LOSSES.items()}


def _all_gradients(embeddings, weights, labels):
  return {name: jax.grad(_LOSSES[name], argnums=(0, 1))(
      embeddings, weights, labels) for name in _GRADIENT_CASES}


def _references(embeddings, weights, labels):
  return {name: _sphereface_reference(embeddings, weights, labels, m, lam)
          for name, (m, lam) in _CONFIGS.items()}


# ---------------------------------------------------------------------------
# psi and the Chebyshev polynomials, on one grid of theta in [0, pi].
# ---------------------------------------------------------------------------

# 3600 steps: every piece boundary k pi / m, m = 1..6, is a grid point.
GRID_THETAS = np.linspace(0.0, math.pi, 3601)
# Exactly 1 and -1 at the ends.
GRID_COSINES = np.cos(GRID_THETAS).astype(np.float32)
_PSI_MARGINS = (1, 2, 3, 4, 5, 6)


def _all_psi(cosines):
  return {m: sphereface.sphereface_psi(cosines, m) for m in _PSI_MARGINS}


class PsiTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_spec_on_a_grid(self):
    all_psi = self.variant(_all_psi)(jnp.asarray(GRID_COSINES))
    for m in _PSI_MARGINS:
      self.assertEqual(all_psi[m].dtype, jnp.float32)
      expected = [_psi_reference(brute_force.acos(c), m) for c in GRID_COSINES]
      _assert_close(all_psi[m], expected, atol=2e-5, err_msg=f'm = {m}')

  @chex.variants(with_jit=True, without_jit=True)
  def test_non_increasing_from_one_to_one_minus_2m(self):
    all_psi = self.variant(_all_psi)(jnp.asarray(GRID_COSINES))
    for m in _PSI_MARGINS:
      psi = np.asarray(all_psi[m])
      steps = np.diff(psi)
      self.assertLessEqual(
          steps.max(), 0.0,
          f'm = {m}: psi increases at theta = {GRID_THETAS[1:][steps > 0][:5]}')
      self.assertAlmostEqual(float(psi[0]), 1.0, delta=1e-6)
      self.assertAlmostEqual(float(psi[-1]), 1.0 - 2.0 * m, delta=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_continuous_at_piece_boundaries(self):
    all_psi = self.variant(_all_psi)(jnp.asarray(GRID_COSINES))
    step = GRID_THETAS[1] - GRID_THETAS[0]
    for m in _PSI_MARGINS:
      psi = np.asarray(all_psi[m], np.float64)
      for k in range(1, m):
        i = (len(GRID_THETAS) - 1) * k // m
        self.assertAlmostEqual(GRID_THETAS[i], k * math.pi / m, delta=1e-12)
        # psi(k pi / m) = 1 - 2k from both pieces, and psi is flat there
        # (d psi / d theta = 0): a grid step away it moves by at most
        # (m step)^2 / 2. A jump between the pieces would be of order 1.
        bound = (m * step) ** 2 / 2 + 1e-5
        what = f'm = {m}, k = {k}'
        self.assertAlmostEqual(psi[i], 1.0 - 2.0 * k, delta=1e-5, msg=what)
        self.assertAlmostEqual(psi[i - 1], 1.0 - 2.0 * k, delta=bound,
                               msg=what)
        self.assertAlmostEqual(psi[i + 1], 1.0 - 2.0 * k, delta=bound,
                               msg=what)

  def test_matches_spec_for_any_angles(self):
    @hypothesis.given(
        thetas=hnp.arrays(np.float64, (64,), elements=st.floats(0.0, math.pi)),
        m=st.sampled_from(_PSI_MARGINS))
    def check(thetas, m):
      thetas = np.sort(thetas)
      cosines = np.cos(thetas).astype(np.float32)
      psi = np.asarray(sphereface.sphereface_psi(jnp.asarray(cosines), m))
      self.assertLessEqual(np.diff(psi).max(), 0.0)
      expected = [_psi_reference(brute_force.acos(c), m) for c in cosines]
      _assert_close(psi, expected, atol=2e-5)

    check()

  def test_chebyshev_is_cosine_of_multiple_angle(self):
    cosines = jnp.asarray(GRID_COSINES)
    for m in range(7):
      values = np.asarray(sphereface._chebyshev_cosine_multiple(  # pylint: disable=protected-access
          cosines, m))
      expected = [math.cos(m * brute_force.acos(c)) for c in GRID_COSINES]
      _assert_close(values, expected, atol=1e-5, err_msg=f'm = {m}')
      # A polynomial: exact at the ends, T_m(1) = 1, T_m(-1) = (-1)^m.
      self.assertEqual(values[0], 1.0)
      self.assertEqual(values[-1], (-1.0) ** m)


class LambdaScheduleTest(chex.TestCase):

  @staticmethod
  def reference(step, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0):
    return max(lambda_min, base * (1.0 + gamma * step) ** (-power))

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_formula(self):
    steps = [0, 1, 2, 10, 100, 1000, 1655, 1700, 10000, 10**6]
    schedules = {
        'defaults': (sphereface.sphereface_lambda, {}),
        'custom': (functools.partial(sphereface.sphereface_lambda, base=500.0,
                                     gamma=0.05, power=2.0, lambda_min=1.5),
                   dict(base=500.0, gamma=0.05, power=2.0, lambda_min=1.5)),
    }
    for name, (fn, kwargs) in schedules.items():
      schedule = self.variant(fn)
      for step in steps:
        _assert_close(schedule(jnp.asarray(step, jnp.int32)),
                      self.reference(step, **kwargs), rtol=1e-5, atol=0.0,
                      err_msg=f'{name} at step {step}')

  def test_monotone_bounded_schedule(self):
    @hypothesis.given(
        base=st.floats(1.0, 1e4), gamma=st.floats(1e-3, 1.0),
        power=st.floats(0.1, 3.0), lambda_min=st.floats(0.0, 10.0),
        step=st.integers(0, 10**6))
    def check(base, gamma, power, lambda_min, step):
      values = [float(sphereface.sphereface_lambda(s, base, gamma, power,
                                                   lambda_min))
                for s in (step, step + 1, 2 * step + 7)]
      _assert_close(values[0],
                    self.reference(step, base, gamma, power, lambda_min),
                    rtol=1e-5, atol=1e-6)
      self.assertGreaterEqual(min(values), lambda_min * (1 - 1e-6))
      self.assertGreaterEqual(values[0] * (1 + 1e-6), values[1])
      self.assertGreaterEqual(values[1] * (1 + 1e-6), values[2])

    check()
    self.assertEqual(float(sphereface.sphereface_lambda(0)), 1000.0)
    self.assertEqual(float(sphereface.sphereface_lambda(10**7)), 5.0)


# ---------------------------------------------------------------------------
# The loss.
# ---------------------------------------------------------------------------


class SphereFaceLossTest(angular_problems.AngularLossTestCase):
  """The shared angular-loss tests (see there) and SphereFace's own."""

  all_losses = staticmethod(_all_losses)
  all_gradients = staticmethod(_all_gradients)
  references = staticmethod(_references)
  gradient_cases = _GRADIENT_CASES
  # The rows near 0 and pi of norm 2; no inter_loss, so no coincident centres.
  extreme_problems = staticmethod(functools.partial(
      angular_problems.extreme_problems, near_norm=2.0,
      coincident_centres=False))
  extreme_atol = 1e-4
  keeps_feature_norm = True
  min_any_angle = 0.05

  def assert_scaling_invariances(self, losses_fn, x, w, y, rng, expected):
    # W columns are normalised: their scale does not matter ...
    column_scale = rng.uniform(0.1, 10.0, size=(1, C)).astype(np.float32)
    self.assert_all_close(losses_fn(x, w * column_scale, y), expected,
                          what='scaling W columns')
    # ... but the feature norm is kept: scaling x changes the loss, as the
    # reference says.
    scaled = (2.5 * x).astype(np.float32)
    scaled_losses = losses_fn(scaled, w, y)
    self.assert_all_close(scaled_losses, _references(scaled, w, y),
                          what='scaled features')
    self.assertGreater(abs(float(scaled_losses['defaults'])
                           - expected['defaults']), 1e-2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_m1_lam0_is_softmax_of_norm_times_cosine(self):
    losses_fn = self.variant(_all_losses)
    x, w, y = angular_problems.problem(6)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    logits = np.zeros((N, C))
    for i in range(N):
      for j in range(C):
        logits[i, j] = (np.dot(x64[i], w64[:, j])
                        / np.linalg.norm(w64[:, j]))  # = ||x|| cos
    expected = float(softmax.softmax_cross_entropy(
        jnp.asarray(logits.astype(np.float32)), y))
    losses = losses_fn(x, w, y)
    # With m = 1, psi = cos on all of [0, pi], so lam does not matter either.
    for name in ('m1_lam0', 'm1_lam5'):
      _assert_close(losses[name], expected, err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_close_to_float32(self):
    losses_fn = self.variant(_all_losses)
    x, w, y = angular_problems.problem(5)
    full = losses_fn(x, w, y)
    loss_fn = self.variant(_LOSSES['m4_lam0'])
    half = loss_fn(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16),
                   y)
    self.assertEqual(half.dtype, jnp.float32)
    np.testing.assert_allclose(half, full['m4_lam0'], rtol=2e-2)
