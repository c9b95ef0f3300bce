"""Property tests for facejax/losses/softmax.py: softmax_cross_entropy.

The loss is compared with a brute-force reference written below in float64
numpy with explicit Python loops over examples and classes, under and outside
``jit`` (``chex.variants``). Label checking (out-of-range and non-integer
labels) is tested for every loss at once in test_labels.py.
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
from tests.losses import brute_force

N, C = 8, 7  # the shapes of test_labels.py: shared eager compilations


_assert_close = functools.partial(brute_force.assert_close, atol=1e-5)

def _gradient_reference(logits, labels):
  """d loss / d z_{i, j} = (softmax(z_i)_j - [j == y_i]) / N."""
  z = np.asarray(logits, np.float64)
  grad = np.zeros(z.shape)
  for i in range(z.shape[0]):
    top = max(float(z[i, j]) for j in range(z.shape[1]))
    weights = [math.exp(float(z[i, j]) - top) for j in range(z.shape[1])]
    for j in range(z.shape[1]):
      grad[i, j] = (weights[j] / sum(weights)
                    - (1.0 if j == int(labels[i]) else 0.0)) / z.shape[0]
  return grad


def _problem(seed, spread=8.0):
  rng = np.random.default_rng(seed)
  logits = (spread * rng.normal(size=(N, C))).astype(np.float32)
  labels = rng.integers(0, C, size=N).astype(np.int32)
  return logits, labels


_logits_strategy = hnp.arrays(
    np.float32, (N, C), elements=st.floats(-60.0, 60.0, width=32))
_labels_strategy = hnp.arrays(np.int32, (N,), elements=st.integers(0, C - 1))
_value_and_grad = jax.value_and_grad(softmax.softmax_cross_entropy)


class SoftmaxCrossEntropyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_brute_force(self):
    loss_fn = self.variant(softmax.softmax_cross_entropy)
    for seed in range(3):
      logits, labels = _problem(seed)
      loss = loss_fn(logits, labels)
      self.assertEqual(loss.shape, ())
      self.assertEqual(loss.dtype, jnp.float32)
      _assert_close(loss, brute_force.cross_entropy(logits, labels),
                    err_msg=f'seed {seed}')

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_and_gradient_match_brute_force_for_any_logits(self):
    value_and_grad = self.variant(_value_and_grad)

    @hypothesis.given(logits=_logits_strategy, labels=_labels_strategy)
    def check(logits, labels):
      loss, grad = value_and_grad(logits, labels)
      _assert_close(loss, brute_force.cross_entropy(logits, labels))
      _assert_close(grad, _gradient_reference(logits, labels), rtol=1e-4,
                    atol=1e-6)

    check()

  @chex.variants(with_jit=True, without_jit=True)
  def test_invariances(self):
    loss_fn = self.variant(softmax.softmax_cross_entropy)
    rng = np.random.default_rng(3)
    logits, labels = _problem(4)
    expected = float(loss_fn(logits, labels))
    # Batch order.
    order = rng.permutation(N)
    _assert_close(loss_fn(logits[order], labels[order]), expected,
                  err_msg='batch order')
    # Class order (permute the columns, relabel).
    perm = rng.permutation(C)
    new_label = np.argsort(perm).astype(np.int32)
    _assert_close(loss_fn(logits[:, perm], new_label[labels]), expected,
                  err_msg='class permutation')
    # A constant added to each row of logits.
    shift = rng.uniform(-50.0, 50.0, size=(N, 1)).astype(np.float32)
    _assert_close(loss_fn(logits + shift, labels), expected, rtol=1e-5,
                  atol=1e-4, err_msg='shift')

  @chex.variants(with_jit=True, without_jit=True)
  def test_known_values(self):
    loss_fn = self.variant(softmax.softmax_cross_entropy)
    labels = (np.arange(N) % C).astype(np.int32)
    # Equal logits: log C.
    _assert_close(loss_fn(np.zeros((N, C), np.float32), labels), math.log(C))
    # Huge margins: no overflow, 0 when the label wins, the gap otherwise.
    logits = np.zeros((N, C), np.float32)
    logits[np.arange(N), labels] = 1e4
    _assert_close(loss_fn(logits, labels), 0.0, atol=1e-6)
    wrong = (labels + 1) % C
    _assert_close(loss_fn(logits, wrong), 1e4, rtol=1e-6)
    grad = self.variant(jax.grad(softmax.softmax_cross_entropy))(logits,
                                                                 wrong)
    self.assertTrue(np.all(np.isfinite(grad)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_logits_give_float32(self):
    loss_fn = self.variant(softmax.softmax_cross_entropy)
    logits, labels = _problem(5)
    half = loss_fn(jnp.asarray(logits, jnp.bfloat16), labels)
    self.assertEqual(half.dtype, jnp.float32)
    np.testing.assert_allclose(half, loss_fn(logits, labels), rtol=2e-2)
    # Computed in float32 from the bfloat16 values: exact up to float32.
    rounded = np.asarray(jnp.asarray(logits, jnp.bfloat16), np.float32)
    _assert_close(half, brute_force.cross_entropy(rounded, labels))

  def test_shape_mismatch_raises(self):
    logits, labels = _problem(6)
    with self.assertRaises(ValueError):
      softmax.softmax_cross_entropy(logits, labels[:-1])
    with self.assertRaises(ValueError):
      softmax.softmax_cross_entropy(logits[0], labels[:1])
