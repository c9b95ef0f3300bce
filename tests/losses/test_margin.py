"""Property tests for facejax/losses/margin.py: angular-margin softmax losses.

Covers margin_softmax_loss (ArcFace, CosFace, insightface's combined margin and
the multiplicative angle m1), arcface_loss, cosface_loss, margin_target_cosine,
angle_from_cosine, and the ArcFace paper's intra_loss (L5) and inter_loss (L6).

Every loss is compared with a brute-force reference written below in float64
numpy with explicit Python loops over examples and classes, under and outside
``jit`` (``chex.variants``). Hyperparameters are static: they are bound with
``functools.partial``, and all the configurations are evaluated by one
function (``_all_losses``), so that ``jit`` compiles once per input signature
for the whole file instead of once per loss and test. The inputs and the
tests shared with test_sphereface.py (``AngularLossTestCase``) are in
angular_problems.py.
"""
import functools
import math
import os
import subprocess
import sys

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from facejax.losses import margin
from facejax.losses import softmax
from tests.losses import angular_problems
from tests.losses import brute_force

N, C = angular_problems.N, angular_problems.C
SCALE = 32.0

# ---------------------------------------------------------------------------
# Brute-force references: float64, explicit loops, math.* only.
# ---------------------------------------------------------------------------


_assert_close = functools.partial(brute_force.assert_close, atol=1e-5)


def _target_cosine_reference(cosine, m1, m2, m3):
  """The spec's psi: cos(m1 theta + m2) - m3, with the monotone continuation."""
  theta = brute_force.acos(cosine)
  # insightface's fallback, where it steps down (cos m2 + m2 sin m2 >= 1).
  if m1 == 1.0 and math.cos(m2) + m2 * math.sin(m2) >= 1.0:
    if theta > math.pi - m2:
      return cosine - m2 * math.sin(math.pi - m2) - m3
    return math.cos(theta + m2) - m3
  threshold = (math.pi - m2) / m1
  if theta > threshold:
    return cosine - math.cos(threshold) - 1.0 - m3
  return math.cos(m1 * theta + m2) - m3


def _margin_softmax_reference(embeddings, weights, labels, scale, m1, m2, m3):
  cosines = brute_force.cosines(embeddings, weights)
  logits = []
  for i in range(cosines.shape[0]):
    row = []
    for j in range(cosines.shape[1]):
      if j == int(labels[i]):
        row.append(scale * _target_cosine_reference(cosines[i, j], m1, m2, m3))
      else:
        row.append(scale * cosines[i, j])
    logits.append(row)
  return brute_force.cross_entropy(logits, labels)


def _intra_reference(embeddings, weights, labels, scale):
  """L5 = L2 + 1/(pi N) sum_i theta_{y_i}."""
  cosines = brute_force.cosines(embeddings, weights)
  num_examples, num_classes = cosines.shape
  logits = [[scale * cosines[i, j] for j in range(num_classes)]
            for i in range(num_examples)]
  angle_sum = 0.0
  for i in range(num_examples):
    angle_sum += brute_force.acos(cosines[i, int(labels[i])])
  return (brute_force.cross_entropy(logits, labels)
          + angle_sum / (math.pi * num_examples))


def _inter_reference(embeddings, weights, labels, scale):
  """L6 = L2 - 1/(pi N (C-1)) sum_i sum_{j != y_i} arccos(W_y^T W_j)."""
  cosines = brute_force.cosines(embeddings, weights)
  num_examples, num_classes = cosines.shape
  w = np.asarray(weights, np.float64)
  logits = [[scale * cosines[i, j] for j in range(num_classes)]
            for i in range(num_examples)]
  centre_sum = 0.0
  for i in range(num_examples):
    y = int(labels[i])
    for j in range(num_classes):
      if j == y:
        continue
      dot = sum(w[k, y] * w[k, j] for k in range(w.shape[0]))
      norm_y = math.sqrt(sum(w[k, y] ** 2 for k in range(w.shape[0])))
      norm_j = math.sqrt(sum(w[k, j] ** 2 for k in range(w.shape[0])))
      centre_sum += brute_force.acos(dot / (norm_y * norm_j))
  return (brute_force.cross_entropy(logits, labels)
          - centre_sum / (math.pi * num_examples * (num_classes - 1)))


def _insightface_arcface_target(cosine, m):
  """arcface_torch's ArcFace target logit, transcribed (easy_margin=False)."""
  cos_m, sin_m = math.cos(m), math.sin(m)
  theta = math.cos(math.pi - m)
  sinmm = math.sin(math.pi - m) * m
  sine = math.sqrt(max(0.0, 1.0 - cosine * cosine))
  cos_theta_m = cosine * cos_m - sine * sin_m
  return cos_theta_m if cosine > theta else cosine - sinmm


# ---------------------------------------------------------------------------
# The losses under test (static hyperparameters) and their references.
# ---------------------------------------------------------------------------

_MARGINS = {  # (m1, m2, m3)
    'arcface': (1.0, 0.5, 0.0),
    'cosface': (1.0, 0.0, 0.35),
    'combined': (1.0, 0.3, 0.2),
    'multiplicative': (1.35, 0.0, 0.0),
    'multiplicative_2': (2.0, 0.0, 0.0),
    'multiplicative_additive': (1.35, 0.3, 0.1),
}

# name -> (loss under test with static hyperparameters, brute-force reference).
_CASES = {
    'arcface': (
        functools.partial(margin.arcface_loss, scale=SCALE, margin=0.5),
        functools.partial(_margin_softmax_reference, scale=SCALE, m1=1.0,
                          m2=0.5, m3=0.0)),
    'defaults': (  # ArcFace: scale 64, m1 = 1, m2 = 0.5, m3 = 0
        margin.margin_softmax_loss,
        functools.partial(_margin_softmax_reference, scale=64.0, m1=1.0,
                          m2=0.5, m3=0.0)),
    'cosface': (  # at another scale
        functools.partial(margin.cosface_loss, scale=16.0, margin=0.35),
        functools.partial(_margin_softmax_reference, scale=16.0, m1=1.0,
                          m2=0.0, m3=0.35)),
    'no_margin': (
        functools.partial(margin.arcface_loss, scale=SCALE, margin=0.0),
        functools.partial(_margin_softmax_reference, scale=SCALE, m1=1.0,
                          m2=0.0, m3=0.0)),
    'intra': (functools.partial(margin.intra_loss, scale=SCALE),
              functools.partial(_intra_reference, scale=SCALE)),
    'inter': (functools.partial(margin.inter_loss, scale=SCALE),
              functools.partial(_inter_reference, scale=SCALE)),
}
for _name in ('combined', 'multiplicative', 'multiplicative_2'):
  _m1, _m2, _m3 = _MARGINS[_name]
  _CASES[_name] = (
      functools.partial(margin.margin_softmax_loss, scale=SCALE, m1=_m1,
                        m2=_m2, m3=_m3),
      functools.partial(_margin_softmax_reference, scale=SCALE, m1=_m1,
                        m2=_m2, m3=_m3))

_GRADIENT_CASES = ('arcface', 'cosface', 'combined', 'multiplicative', 'intra',
                   'inter')


# All the losses in one function (and their gradients in another): jit then
# compiles once per input signature instead of once per loss and test.
def _all_losses(embeddings, weights, labels):
  return {name: fn(embeddings, weights, labels)
          for name, (fn, _) in _CASES.items()}


def _all_gradients(embeddings, weights, labels):
  return {name: jax.grad(_CASES[name][0], argnums=(0, 1))(
      embeddings, weights, labels) for name in _GRADIENT_CASES}


_BFLOAT16_CASES = ('arcface', 'combined', 'intra', 'inter')


def _bfloat16_losses(embeddings, weights, labels):
  return {name: _CASES[name][0](embeddings, weights, labels)
          for name in _BFLOAT16_CASES}


def _references(embeddings, weights, labels):
  return {name: reference(embeddings, weights, labels)
          for name, (_, reference) in _CASES.items()}


# ---------------------------------------------------------------------------
# angle_from_cosine and margin_target_cosine, on one grid of theta in [0, pi].
# ---------------------------------------------------------------------------

GRID_THETAS = np.linspace(0.0, math.pi, 4001)
# Exactly 1 and -1 at the ends.
GRID_COSINES = np.cos(GRID_THETAS).astype(np.float32)

# (m1, m2, m3) for margin_target_cosine: the losses' margins and a few more.
_TARGET_MARGINS = dict(
    _MARGINS,
    arcface_0_2=(1.0, 0.2, 0.0),
    arcface_0_3=(1.0, 0.3, 0.0),
    arcface_0_8=(1.0, 0.8, 0.0),
    multiplicative_3=(3.0, 0.0, 0.0),
    multiplicative_4_additive=(4.0, 0.2, 0.3),
)


def _all_target_cosines(cosines):
  return {name: margin.margin_target_cosine(cosines, m1, m2, m3)
          for name, (m1, m2, m3) in _TARGET_MARGINS.items()}


class AngleFromCosineTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_arccos_with_finite_gradient(self):
    one = np.float32(1.0)
    cosines = np.concatenate([GRID_COSINES, np.float32(
        [np.nextafter(one, 0), -np.nextafter(one, 0), 1.0 + 1e-7,
         -1.0 - 1e-7])])
    angle_and_grad = self.variant(jax.vmap(jax.value_and_grad(
        margin.angle_from_cosine)))
    angles, grads = angle_and_grad(jnp.asarray(cosines))
    expected = [math.acos(min(1.0, max(-1.0, float(c)))) for c in cosines]
    _assert_close(angles, expected, rtol=1e-5, atol=1e-6)
    # Finite everywhere, including cos = +-1 (and round-off beyond).
    self.assertTrue(np.all(np.isfinite(grads)))
    # Exact inside: d arccos(c) / dc = -1 / sqrt(1 - c^2).
    inside = np.abs(cosines) < 0.999
    expected_grads = [-1.0 / math.sqrt(1.0 - float(c) ** 2)
                      for c in cosines[inside]]
    _assert_close(np.asarray(grads)[inside], expected_grads, rtol=1e-4)


class MarginTargetCosineTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_spec_on_a_grid(self):
    all_psi = self.variant(_all_target_cosines)(jnp.asarray(GRID_COSINES))
    for name, (m1, m2, m3) in _TARGET_MARGINS.items():
      psi = all_psi[name]
      self.assertEqual(psi.dtype, jnp.float32, name)
      expected = [_target_cosine_reference(float(c), m1, m2, m3)
                  for c in GRID_COSINES]
      # For m1 = 1 insightface's rule jumps at theta* = pi - m2: leave out the
      # grid points within float32 round-off of it.
      keep = np.abs(GRID_THETAS - (math.pi - m2) / m1) > 1e-4
      _assert_close(np.asarray(psi)[keep], np.asarray(expected)[keep],
                    rtol=1e-5, atol=1e-6, err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  def test_non_increasing_in_theta(self):
    all_psi = self.variant(_all_target_cosines)(jnp.asarray(GRID_COSINES))
    for name, psi in all_psi.items():
      steps = np.diff(np.asarray(psi))
      self.assertLessEqual(
          steps.max(), 0.0,
          f'{name}: psi increases at theta = {GRID_THETAS[1:][steps > 0][:5]}')

  def test_non_increasing_for_any_margin(self):
    cosines = jnp.asarray(GRID_COSINES)

    # m2 up to 3: past about 2.33 insightface's rule would step *up*.
    @hypothesis.given(m1=st.floats(1.0, 4.0), m2=st.floats(0.0, 3.0),
                      m3=st.floats(0.0, 0.5))
    def check(m1, m2, m3):
      psi = np.asarray(margin.margin_target_cosine(cosines, m1, m2, m3))
      self.assertTrue(np.all(np.isfinite(psi)))
      self.assertLessEqual(np.diff(psi).max(), 0.0)
      # At theta = 0 every margin gives cos(m2) - m3.
      np.testing.assert_allclose(psi[0], math.cos(m2) - m3, rtol=1e-5,
                                 atol=1e-6)

    check()

  @chex.variants(with_jit=True, without_jit=True)
  def test_arcface_fallback_is_insightface(self):
    all_psi = self.variant(_all_target_cosines)(jnp.asarray(GRID_COSINES))
    for name in ('arcface', 'arcface_0_2', 'arcface_0_3', 'arcface_0_8'):
      _, m, _ = _TARGET_MARGINS[name]
      psi = np.asarray(all_psi[name], np.float64)
      expected = np.array([_insightface_arcface_target(float(c), m)
                           for c in GRID_COSINES])
      near_threshold = np.abs(GRID_THETAS - (math.pi - m)) <= 1e-4
      _assert_close(psi[~near_threshold], expected[~near_threshold],
                    rtol=1e-5, atol=1e-6, err_msg=name)
      # In the fallback region theta > pi - m it is cos(theta) - m sin(pi - m):
      # a constant shift of the cosine.
      fallback = GRID_THETAS > math.pi - m + 1e-4
      self.assertGreater(fallback.sum(), 10)
      _assert_close(GRID_COSINES[fallback].astype(np.float64) - psi[fallback],
                    m * math.sin(math.pi - m), rtol=1e-5, atol=1e-6,
                    err_msg=name)

  @chex.variants(with_jit=True, without_jit=True)
  def test_multiplicative_fallback_continuous_and_as_specified(self):
    all_psi = self.variant(_all_target_cosines)(jnp.asarray(GRID_COSINES))
    for name in ('multiplicative', 'multiplicative_2',
                 'multiplicative_additive', 'multiplicative_3',
                 'multiplicative_4_additive'):
      m1, m2, m3 = _TARGET_MARGINS[name]
      psi = np.asarray(all_psi[name], np.float64)
      threshold = (math.pi - m2) / m1
      beyond = GRID_THETAS > threshold + 1e-4
      self.assertGreater(beyond.sum(), 10)
      expected = (GRID_COSINES[beyond].astype(np.float64)
                  - math.cos(threshold) - 1.0 - m3)
      _assert_close(psi[beyond], expected, rtol=1e-5, atol=1e-6, err_msg=name)
      # Continuous at theta* (where psi = -1 - m3): the neighbouring grid
      # points differ by at most the grid step (|d psi / d theta| <= m1 there).
      i = int(np.searchsorted(GRID_THETAS, threshold))
      step = GRID_THETAS[1] - GRID_THETAS[0]
      for j in (i - 1, i):
        self.assertAlmostEqual(psi[j], -1.0 - m3, delta=m1 * step, msg=name)
      self.assertLessEqual(psi[i] - psi[i - 1], 0.0, name)

  def test_bfloat16_input_gives_float32(self):
    psi = margin.margin_target_cosine(jnp.asarray(GRID_COSINES, jnp.bfloat16),
                                      1.0, 0.5, 0.0)
    self.assertEqual(psi.dtype, jnp.float32)

  def test_larger_margin_gives_smaller_target_cosine(self):
    # psi is pointwise non-increasing in m1, m2 and m3, so the target logit,
    # and with it the probability of the label, can only drop.
    cosines = jnp.asarray(GRID_COSINES)
    for margins in ([(1.0, m2, 0.0) for m2 in (0.0, 0.1, 0.3, 0.5, 0.7)],
                    [(1.0, 0.3, m3) for m3 in (0.0, 0.1, 0.2, 0.4)],
                    [(m1, 0.0, 0.0) for m1 in (1.0, 1.35, 2.0, 3.0)]):
      values = [np.asarray(margin.margin_target_cosine(cosines, *m))
                for m in margins]
      for smaller, larger in zip(values, values[1:]):
        self.assertTrue(np.all(larger <= smaller), margins)


# ---------------------------------------------------------------------------
# The losses.
# ---------------------------------------------------------------------------


class MarginLossesTest(angular_problems.AngularLossTestCase):
  """The shared angular-loss tests (see there) and bfloat16 inputs."""

  all_losses = staticmethod(_all_losses)
  all_gradients = staticmethod(_all_gradients)
  references = staticmethod(_references)
  gradient_cases = _GRADIENT_CASES
  extreme_problems = staticmethod(angular_problems.extreme_problems)
  # arccos of a float32 cosine within an ulp of +-1 is only good to ~3e-4 rad.
  extreme_atol = 1e-3
  keeps_feature_norm = False
  min_any_angle = 0.1

  def assert_scaling_invariances(self, losses_fn, x, w, y, rng, expected):
    # Positive scale of each embedding and of each class column.
    row_scale = rng.uniform(0.1, 10.0, size=(N, 1)).astype(np.float32)
    column_scale = rng.uniform(0.1, 10.0, size=(1, C)).astype(np.float32)
    self.assert_all_close(losses_fn(x * row_scale, w * column_scale, y),
                          expected, what='positive scaling')

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_close_to_float32(self):
    losses_fn = self.variant(_all_losses)
    x, w, y = angular_problems.problem(5)
    full = losses_fn(x, w, y)
    half = self.variant(_bfloat16_losses)(jnp.asarray(x, jnp.bfloat16),
                                          jnp.asarray(w, jnp.bfloat16), y)
    for name in _BFLOAT16_CASES:
      self.assertEqual(half[name].dtype, jnp.float32, name)
      np.testing.assert_allclose(half[name], full[name], rtol=2e-2,
                                 err_msg=name)


class KnownLimitsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_no_margin_is_normalised_softmax(self):
    losses_fn = self.variant(_all_losses)
    x, w, y = angular_problems.problem(6)
    logits = (SCALE * brute_force.cosines(x, w)).astype(np.float32)
    expected = float(softmax.softmax_cross_entropy(jnp.asarray(logits), y))
    losses = losses_fn(x, w, y)
    _assert_close(losses['no_margin'], expected)

  @chex.variants(with_jit=True, without_jit=True)
  def test_cosface_is_softmax_with_shifted_target(self):
    losses_fn = self.variant(_all_losses)
    x, w, y = angular_problems.problem(7)
    losses = losses_fn(x, w, y)
    scale, m = 16.0, 0.35  # the 'cosface' case
    logits = scale * brute_force.cosines(x, w)
    for i in range(N):
      logits[i, y[i]] -= scale * m
    expected = softmax.softmax_cross_entropy(
        jnp.asarray(logits.astype(np.float32)), y)
    _assert_close(losses['cosface'], float(expected))

  @chex.variants(with_jit=True, without_jit=True)
  def test_intra_is_normalised_softmax_plus_mean_angle(self):
    x, w, y = angular_problems.problem(8)
    losses = self.variant(_all_losses)(x, w, y)
    cosines = brute_force.cosines(x, w)
    mean_angle = sum(brute_force.acos(cosines[i, y[i]]) for i in range(N)) / N
    _assert_close(float(losses['intra']) - float(losses['no_margin']),
                  mean_angle / math.pi)


class WrapperDefaultsTest(parameterized.TestCase):

  def test_wrapper_defaults(self):
    x, w, y = angular_problems.problem(12)
    # arcface_loss: scale 64, margin 0.5; cosface_loss: scale 64, margin 0.35.
    _assert_close(margin.arcface_loss(x, w, y),
                  _margin_softmax_reference(x, w, y, 64.0, 1.0, 0.5, 0.0))
    _assert_close(margin.cosface_loss(x, w, y),
                  _margin_softmax_reference(x, w, y, 64.0, 1.0, 0.0, 0.35))
    # intra_loss and inter_loss: scale 64.
    _assert_close(margin.intra_loss(x, w, y), _intra_reference(x, w, y, 64.0))
    _assert_close(margin.inter_loss(x, w, y), _inter_reference(x, w, y, 64.0))


def test_float64_inputs_stay_float64_under_x64():
  # x64 is global to a process, so this runs in a fresh one.
  code = """
import jax.numpy as jnp, numpy as np
from facejax import losses
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(4, 3)))
w = jnp.asarray(rng.normal(size=(3, 5)))
y = jnp.arange(4)
for loss in (losses.arcface_loss, losses.cosface_loss, losses.intra_loss,
             losses.inter_loss, losses.sphereface_loss):
  assert loss(x, w, y).dtype == jnp.float64, loss.__name__
"""
  env = dict(os.environ, JAX_ENABLE_X64='1')
  subprocess.run([sys.executable, '-c', code], check=True, env=env)
