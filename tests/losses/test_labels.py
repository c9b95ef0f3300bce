"""Label checking, the same for every loss that takes class labels.

softmax_cross_entropy, margin_softmax_loss, arcface_loss, cosface_loss,
sphereface_loss, intra_loss, inter_loss and center_loss must

  * raise a ValueError naming the bad value for a concrete label outside
    [0, num_classes) (outside ``jit``, also under ``jax.grad``);
  * return NaN under ``jit`` for such a label, never a clamped, finite loss;
  * raise a TypeError for non-integer labels, with and without ``jit``;
  * accept every integer dtype and the labels 0 and num_classes - 1.

The shapes are those of test_margin.py and test_sphereface.py (from
angular_problems), so that the eagerly compiled primitives are shared when the
files run together.
"""
import collections
import re

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from facejax.losses import center
from facejax.losses import margin
from facejax.losses import softmax
from facejax.losses import sphereface
from tests.losses import angular_problems
from tests.losses import brute_force

N, D, C = angular_problems.N, angular_problems.D, angular_problems.C

Inputs = collections.namedtuple('Inputs', 'embeddings weights logits centers')


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return Inputs(
      embeddings=rng.normal(size=(N, D)).astype(np.float32),
      weights=rng.normal(size=(D, C)).astype(np.float32),
      logits=(4.0 * rng.normal(size=(N, C))).astype(np.float32),
      centers=rng.normal(size=(C, D)).astype(np.float32))


# Each loss as fn(inputs, labels) -> scalar loss. Static hyperparameters.
_LOSSES = {
    'softmax_cross_entropy':
        lambda a, y: softmax.softmax_cross_entropy(a.logits, y),
    'margin_softmax_loss':
        lambda a, y: margin.margin_softmax_loss(a.embeddings, a.weights, y,
                                                scale=16.0, m1=1.0, m2=0.3,
                                                m3=0.2),
    'arcface_loss':
        lambda a, y: margin.arcface_loss(a.embeddings, a.weights, y,
                                         scale=16.0),
    'cosface_loss':
        lambda a, y: margin.cosface_loss(a.embeddings, a.weights, y,
                                         scale=16.0),
    'sphereface_loss':
        lambda a, y: sphereface.sphereface_loss(a.embeddings, a.weights, y),
    'intra_loss':
        lambda a, y: margin.intra_loss(a.embeddings, a.weights, y, scale=16.0),
    'inter_loss':
        lambda a, y: margin.inter_loss(a.embeddings, a.weights, y, scale=16.0),
    'center_loss':
        lambda a, y: center.center_loss(a.embeddings, y, a.centers)[0],
}
_NAMES = tuple((name, name) for name in _LOSSES)
# Out-of-range values: C itself, far above, -1 and far below.
_BAD_VALUES = (C, C + 70, -1, -17)


def _all_losses(inputs, labels):
  return {name: fn(inputs, labels) for name, fn in _LOSSES.items()}


def _center_loss_and_update(inputs, labels):
  return center.center_loss(inputs.embeddings, labels, inputs.centers)


def _valid_labels():
  return (np.arange(N) % C).astype(np.int32)


def _with_bad_label(value, position=3):
  labels = _valid_labels()
  labels[position] = value
  return labels


def _names_value(value):
  """A regex matching ``value`` as a whole number in a message."""
  return rf'(?<![\d-]){re.escape(str(value))}(?!\d)'


class ConcreteLabelsTest(parameterized.TestCase):

  @parameterized.named_parameters(*_NAMES)
  def test_out_of_range_raises_naming_the_value(self, name):
    loss_fn = _LOSSES[name]
    inputs = _inputs()
    for value in _BAD_VALUES:
      # Concrete as a numpy array and as a jax array.
      bad = _with_bad_label(value)
      for labels in (bad, jnp.asarray(bad)):
        with self.assertRaisesRegex(ValueError, _names_value(value),
                                    msg=f'label {value}'):
          loss_fn(inputs, labels)

  @parameterized.named_parameters(*_NAMES)
  def test_out_of_range_raises_under_grad(self, name):
    loss_fn = _LOSSES[name]
    inputs = _inputs()
    grad_fn = jax.grad(lambda e, y: loss_fn(inputs._replace(
        embeddings=e, logits=e @ inputs.weights), y))
    grad_fn(inputs.embeddings, _valid_labels())  # fine
    with self.assertRaisesRegex(ValueError, _names_value(C + 70)):
      grad_fn(inputs.embeddings, _with_bad_label(C + 70))

  @parameterized.named_parameters(*_NAMES)
  def test_small_integer_dtypes(self, name):
    loss_fn = _LOSSES[name]
    inputs = _inputs()
    expected = loss_fn(inputs, _valid_labels())
    for dtype in (np.int8, np.uint8):
      np.testing.assert_allclose(
          loss_fn(inputs, _valid_labels().astype(dtype)), expected, rtol=1e-6,
          err_msg=str(dtype))
    # uint8 cannot be negative, but can be too large; int8 can be negative.
    with self.assertRaisesRegex(ValueError, _names_value(200)):
      loss_fn(inputs, _with_bad_label(200).astype(np.uint8))
    with self.assertRaisesRegex(ValueError, _names_value(-3)):
      loss_fn(inputs, _with_bad_label(-3).astype(np.int8))


class JitLabelsTest(chex.TestCase):

  @chex.variants(with_jit=True)
  def test_out_of_range_gives_nan(self):
    losses_fn = self.variant(_all_losses)
    inputs = _inputs()
    valid = losses_fn(inputs, _valid_labels())
    for name, loss in valid.items():
      self.assertTrue(np.isfinite(loss), f'{name}: {loss} for valid labels')
    for value in _BAD_VALUES:
      for position in (0, 3, N - 1):
        losses = losses_fn(inputs, _with_bad_label(value, position))
        for name, loss in losses.items():
          self.assertTrue(
              np.isnan(loss),
              f'{name}: label {value} at {position} gave {loss}, not NaN')

  @chex.variants(with_jit=True)
  def test_center_loss_moves_no_centre_for_a_bad_label(self):
    update = self.variant(_center_loss_and_update)
    inputs = _inputs()
    for value in _BAD_VALUES:
      labels = _with_bad_label(value, position=N - 1)
      loss, new_centers = update(inputs, labels)
      self.assertTrue(np.isnan(loss), f'label {value}: loss {loss}')
      # The centre update ignores the bad example: no clamped or wrapped
      # class receives it.
      np.testing.assert_allclose(
          new_centers,
          brute_force.center_update(inputs.embeddings, labels,
                                    inputs.centers),
          rtol=1e-5, atol=1e-6, err_msg=f'label {value}')


class NonIntegerLabelsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_NAMES)
  def test_raise_type_error(self, name):
    loss_fn = self.variant(_LOSSES[name])
    inputs = _inputs()
    for labels in (_valid_labels().astype(np.float32),
                   _valid_labels().astype(jnp.bfloat16),
                   (_valid_labels() % 2).astype(bool)):
      with self.assertRaises(TypeError, msg=str(labels.dtype)):
        loss_fn(inputs, labels)


class BoundaryLabelsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_zero_and_last_class_accepted(self):
    losses_fn = self.variant(_all_losses)
    inputs = _inputs()
    labels = np.where(np.arange(N) % 2 == 0, 0, C - 1).astype(np.int32)
    for name, loss in losses_fn(inputs, labels).items():
      self.assertTrue(np.isfinite(loss), f'{name}: {loss}')
