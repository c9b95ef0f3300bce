"""Attribute losses against plain-loop references."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from facejax.losses import attributes
from tests.losses.brute_force import assert_close
from tests.losses.brute_force import gaussian


def cross_entropy_by_loops(logits, targets):
  """-y log s(z) - (1 - y) log(1 - s(z)), averaged over n, per attribute."""
  n, a = logits.shape
  out = []
  for t in range(a):
    total = 0.0
    for i in range(n):
      s = 1 / (1 + math.exp(-float(logits[i, t])))
      total += -math.log(s) if targets[i, t] else -math.log(1 - s)
    out.append(total / n)
  return np.array(out)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 10_000))
def test_sigmoid_cross_entropy_matches_loops(n, a, seed):
  rng = np.random.default_rng(seed)
  logits = rng.normal(scale=4.0, size=(n, a)).astype(np.float32)
  targets = rng.random((n, a)) < 0.3
  got = attributes.per_task_sigmoid_cross_entropy(jnp.asarray(logits),
                                                  jnp.asarray(targets))
  assert got.shape == (a,) and got.dtype == jnp.float32
  assert_close(got, cross_entropy_by_loops(logits, targets))


def test_sigmoid_cross_entropy_is_finite_at_extreme_logits():
  logits = jnp.array([[-200.0, 200.0], [200.0, -200.0]])
  targets = jnp.array([[True, True], [True, False]])
  values, grads = jax.value_and_grad(
      lambda z: jnp.sum(attributes.per_task_sigmoid_cross_entropy(
          z, targets)))(logits)
  # The confident mistakes cost |z|; the confident right answers nothing.
  assert_close(attributes.per_task_sigmoid_cross_entropy(logits, targets),
               [100.0, 0.0])
  assert np.isfinite(values) and np.isfinite(grads).all()
  assert_close(grads, [[-0.5, 0.0], [0.0, 0.0]])


def test_sigmoid_cross_entropy_needs_one_shape():
  with pytest.raises(ValueError, match=r'one shape \(N, A\)'):
    attributes.per_task_sigmoid_cross_entropy(jnp.zeros((2, 3)),
                                              jnp.zeros((2, 2), bool))


def test_logits_are_xw_plus_b():
  x, w, b = gaussian(0, (5, 4)), gaussian(1, (4, 3)), gaussian(2, (3,))
  expected = [[sum(x[n, d] * w[d, a] for d in range(4)) + b[a]
               for a in range(3)] for n in range(5)]
  got = attributes.attribute_logits(jnp.asarray(x, jnp.bfloat16),
                                    jnp.asarray(w), jnp.asarray(b))
  assert got.dtype == jnp.float32
  assert_close(got, expected, rtol=2e-2, atol=2e-2)  # x was rounded to bf16
  assert_close(attributes.attribute_logits(x, w, b), expected)


def test_attribute_embeddings_project_and_normalise_each_attribute():
  x, p = gaussian(3, (6, 4)), gaussian(4, (4, 3, 2))
  got = np.asarray(attributes.attribute_embeddings(jnp.asarray(x),
                                                   jnp.asarray(p)))
  assert got.shape == (3, 6, 2)
  for a in range(3):
    for n in range(6):
      v = p[:, a, :].T @ x[n]
      assert_close(got[a, n], v / np.linalg.norm(v))


def quintuplet_loss_by_loops(features, labels, clusters, margins):
  """One attribute's LMLE loss: every anchor's quintuplet by brute force."""
  g1, g2, g3 = margins
  n = len(labels)
  losses = []
  for i in range(n):
    d = [float(np.sum((features[j] - features[i]) ** 2)) for j in range(n)]
    mates = [j for j in range(n) if j != i and labels[j] == labels[i]]
    cluster = [j for j in mates if clusters[j] == clusters[i]]
    other_cluster = [j for j in mates if clusters[j] != clusters[i]]
    negatives = [j for j in range(n) if labels[j] != labels[i]]
    if not (cluster and other_cluster and negatives):
      continue
    p_plus = max(cluster, key=lambda j: d[j])
    p_minus = min(other_cluster, key=lambda j: d[j])
    p_minus_minus = max(mates, key=lambda j: d[j])
    negative = min(negatives, key=lambda j: d[j])
    losses.append(max(0, g1 + d[p_plus] - d[p_minus])
                  + max(0, g2 + d[p_minus] - d[p_minus_minus])
                  + max(0, g3 + d[p_minus_minus] - d[negative]))
  return (np.mean(losses) if losses else 0.0), len(losses) / n


def test_lmle_attribute_losses_match_a_loop_per_attribute():
  rng = np.random.default_rng(0)
  n, a = 12, 3
  features = np.asarray(attributes.attribute_embeddings(
      jnp.asarray(rng.normal(size=(n, 5))),
      jnp.asarray(rng.normal(size=(5, a, 4)))))
  targets = rng.random((n, a)) < 0.4
  targets[:4, 2] = True  # attribute 2: only 4 positives ...
  targets[4:, 2] = False
  clusters = rng.integers(0, 2, size=(a, n))
  clusters[2, :4] = [0, 1, 2, 3]  # ... each in its own cluster: no p+
  margins = (0.1, 0.2, 0.3)
  losses, valid = attributes.lmle_attribute_losses(
      jnp.asarray(features), jnp.asarray(targets),
      jnp.asarray(clusters, jnp.int32), margins)
  for t in range(a):
    expected, fraction = quintuplet_loss_by_loops(
        features[t], targets[:, t], clusters[t], margins)
    assert_close(losses[t], expected, rtol=1e-4, atol=1e-6)
    assert_close(valid[t], fraction)
  assert_close(valid[2], 8 / 12)  # the positives have no p+


def test_lmle_attribute_losses_check_shapes():
  with pytest.raises(ValueError, match=r'targets \(N, A\)'):
    attributes.lmle_attribute_losses(jnp.zeros((3, 4, 2)),
                                     jnp.zeros((3, 4), bool),
                                     jnp.zeros((3, 4), jnp.int32))


def test_lmle_attribute_gradients_are_finite_at_coincident_points():
  # Every embedding equal: zero distances everywhere.
  x = jnp.ones((6, 4))
  p = jnp.asarray(gaussian(5, (4, 2, 3)))
  targets = jnp.array([[True, False]] * 3 + [[False, True]] * 3)
  clusters = jnp.array([[0, 1, 0, 1, 0, 1]] * 2, jnp.int32)

  def loss(x, p):
    losses, _ = attributes.lmle_attribute_losses(
        attributes.attribute_embeddings(x, p), targets, clusters)
    return jnp.mean(losses)
  grads = jax.grad(loss, argnums=(0, 1))(x, p)
  assert all(np.isfinite(g).all() for g in grads)
