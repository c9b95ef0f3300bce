"""Tests of facejax.training.adaptive_weighting (He et al., ACM MM 2017).

The weights after every record are compared, under and outside ``jit``
(``chex.variants``), with a plain-Python transcription of the algorithm over
a random validation loss history kept in lists; the degenerate histories
(constant, zero, NaN losses) keep the previous weights.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.training import adaptive_weighting

RTOL = 1e-4
ATOL = 1e-5


def ref_weights_after_each_record(records, window):
  """The algorithm with lists: the weights after records 1, 2, ..."""
  num_tasks = len(records[0])
  weights = [1.0] * num_tasks
  after = []
  for count in range(1, len(records) + 1):
    if count >= 2 * window and count % window == 0:
      pre = [sum(records[r][t] for r in range(count - 2 * window,
                                              count - window)) / window
             for t in range(num_tasks)]
      cur = [sum(records[r][t] for r in range(count - window, count)) / window
             for t in range(num_tasks)]
      trend = [abs(cur[t] - pre[t]) / cur[t] if cur[t] > 0 else 0.0
               for t in range(num_tasks)]
      mean_trend = sum(trend) / num_tasks
      mean_loss = sum(cur) / num_tasks
      if mean_trend > 0 and mean_loss > 0:
        raw = [(trend[t] / mean_trend) * (cur[t] / mean_loss)
               for t in range(num_tasks)]
        mean_raw = sum(raw) / num_tasks
        if mean_raw > 0:
          weights = [value / mean_raw for value in raw]
    after.append(list(weights))
  return after


def random_records(seed, num_records, num_tasks):
  """Decreasing noisy validation losses, a different scale per task."""
  rng = np.random.default_rng(seed)
  scale = rng.uniform(0.2, 3.0, num_tasks)
  decay = np.exp(-rng.uniform(0.0, 0.1, num_tasks)[None, :]
                 * np.arange(num_records)[:, None])
  noise = rng.uniform(0.8, 1.2, (num_records, num_tasks))
  return (scale * decay * noise).astype(np.float32)


def run_records(record, state, records):
  weights = []
  for losses in records:
    state = record(state, losses)
    weights.append(np.asarray(state.weights))
  return state, weights


class AdaptiveWeightingTest(chex.TestCase):

  def check_against_reference(self, records, window):
    record = self.variant(adaptive_weighting.record)
    state = adaptive_weighting.init(records.shape[1], window)
    state, weights = run_records(record, state, records)
    expected = ref_weights_after_each_record(records.tolist(), window)
    for count, (got, want) in enumerate(zip(weights, expected), start=1):
      np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL,
                                 err_msg=f'after record {count}')
    assert int(state.count) == len(records)
    return weights

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_the_reference(self):
    for seed, window, num_tasks in ((0, 3, 4), (1, 1, 3), (2, 4, 6)):
      records = random_records(seed, 5 * window + 2, num_tasks)
      weights = self.check_against_reference(records, window)
      for count, got in enumerate(weights, start=1):
        if count >= 2 * window:
          assert np.mean(got) == pytest.approx(1.0, rel=1e-5)
          assert np.all(got > 0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_schedule(self):
    window = 3
    records = random_records(3, 13, 2)
    weights = self.check_against_reference(records, window)
    # Ones before record 6 = 2 * window; changed at 6, 9 and 12 only.
    for count in range(1, 6):
      np.testing.assert_array_equal(weights[count - 1], [1.0, 1.0])
    changed = [count for count in range(2, 14)
               if not np.array_equal(weights[count - 1], weights[count - 2])]
    assert changed == [6, 9, 12]

  @chex.variants(with_jit=True, without_jit=True)
  def test_degenerate_histories_keep_the_weights(self):
    window = 2
    record = self.variant(adaptive_weighting.record)
    # Constant losses: every trend is 0.
    state = adaptive_weighting.init(3, window)
    state, weights = run_records(record, state, np.ones((6, 3), np.float32))
    np.testing.assert_array_equal(weights[-1], [1.0, 1.0, 1.0])
    # Move the weights away from 1, then zero losses, then a NaN loss.
    moving = random_records(4, 4, 3)
    state, weights = run_records(record, state, moving)
    updated = weights[-1]
    assert not np.allclose(updated, 1.0)
    zeros = np.zeros((2 * window, 3), np.float32)
    state, weights = run_records(record, state, zeros)
    for got in weights:
      np.testing.assert_array_equal(got, updated)
    with_nan = random_records(5, 2 * window, 3)
    with_nan[-1, 1] = np.nan
    state, weights = run_records(record, state, with_nan)
    # Record 2 * window of these updates from finite losses; the last,
    # with the NaN, keeps its weights.
    assert not np.allclose(weights[-2], updated)
    np.testing.assert_array_equal(weights[-1], weights[-2])
    assert np.all(np.isfinite(weights[-1]))

  @chex.variants(with_jit=True, without_jit=True)
  def test_a_task_with_zero_loss_gets_weight_zero(self):
    records = random_records(6, 8, 3)
    records[:, 2] = 0.0
    weights = self.check_against_reference(records, 2)
    assert weights[-1][2] == 0.0
    assert np.mean(weights[-1]) == pytest.approx(1.0, rel=1e-5)


def test_scan_over_records_matches_the_loop():
  records = random_records(7, 11, 4)
  state = adaptive_weighting.init(4, 2)

  @jax.jit
  def scan(state, records):
    def step(state, losses):
      state = adaptive_weighting.record(state, losses)
      return state, state.weights
    return jax.lax.scan(step, state, records)

  final, weights = scan(state, records)
  expected = ref_weights_after_each_record(records.tolist(), 2)
  np.testing.assert_allclose(weights, expected, rtol=RTOL, atol=ATOL)
  assert int(final.count) == 11
  np.testing.assert_allclose(final.weights, expected[-1], rtol=RTOL,
                             atol=ATOL)


def test_init():
  state = adaptive_weighting.init(5, 3)
  assert state.history.shape == (6, 5) and state.history.dtype == jnp.float32
  assert state.count.shape == () and state.count.dtype == jnp.int32
  np.testing.assert_array_equal(state.weights, np.ones(5))
  assert adaptive_weighting.window_of(state) == 3
  assert len(jax.tree_util.tree_leaves(state)) == 3
  for num_tasks, window in ((0, 3), (2, 0), (2, 1.5), (True, 2)):
    with pytest.raises(ValueError, match='must be an int >= 1'):
      adaptive_weighting.init(num_tasks, window)


def test_record_checks_the_number_of_tasks():
  state = adaptive_weighting.init(3, 2)
  with pytest.raises(ValueError, match=r'must be \(3,\), one per task, got '
                     r'\(4,\)'):
    adaptive_weighting.record(state, jnp.ones(4))


def test_weighted_loss():
  rng = np.random.default_rng(8)
  losses = rng.uniform(0, 2, (5, 4)).astype(np.float32)
  weights = rng.uniform(0, 2, 4).astype(np.float32)
  expected = [sum(float(losses[i, t]) * float(weights[t]) for t in range(4))
              for i in range(5)]
  np.testing.assert_allclose(
      jax.jit(adaptive_weighting.weighted_loss)(losses, weights), expected,
      rtol=1e-6)
  # The gradient reaches the losses (d/dL_t = lambda_t), not the weights.
  grad_losses, grad_weights = jax.grad(
      lambda l, w: adaptive_weighting.weighted_loss(l, w), argnums=(0, 1))(
          losses[0], weights)
  np.testing.assert_allclose(grad_losses, weights, rtol=1e-6)
  np.testing.assert_array_equal(grad_weights, np.zeros(4))
  with pytest.raises(ValueError, match=r'\(\.\.\., T\) and weights \(T,\), '
                     r'got \(5, 4\) and \(3,\)'):
    adaptive_weighting.weighted_loss(losses, weights[:3])
