"""Adaptive task weights from the validation loss trend (AWMT).

He, Wang, Fu, Feng, Jiang, Xue, "Adaptively Weighted Multi-task Deep Network
for Person Attribute Classification", ACM MM 2017. A multi-task network
(e.g. one binary task per face attribute) is trained on

  L = sum_t lambda_t * L_t

and every ``window`` (the paper's k) validation records the weights are
recomputed from each task's validation loss history: with cur_mean_t the
mean of task t's last k validation losses and pre_mean_t the mean of the k
before them,

  trend_t      = |cur_mean_t - pre_mean_t| / cur_mean_t
  norm_trend_t = trend_t / mean_s(trend_s)
  norm_loss_t  = cur_mean_t / mean_s(cur_mean_s)
  lambda_t     = norm_trend_t * norm_loss_t, then lambda /= mean(lambda)

so tasks whose validation loss is high and still moving get more weight, and
the weights average 1. Validation losses are expected to be >= 0 (e.g.
cross-entropies).

Everything here is pure JAX on a small pytree (:class:`State`) that can live
in a train state and go through ``jit``: no Python control flow on traced
values. Schedule: :func:`record` appends one record (the validation losses of
all tasks, typically measured every few training steps); after the r-th
record (r counted from 1), if r >= 2 * window and r is a multiple of
``window``, the weights are recomputed from records r - 2 * window + 1 ..
r - window (pre) and r - window + 1 .. r (cur). So the first update comes
after record 2 * window and the next ones every ``window`` records.
Degenerate histories keep the previous weights: a task with cur_mean = 0
has trend 0 (and norm_loss 0); if every trend is 0, every cur_mean is 0, or
the new weights are not finite with a positive mean (e.g. a NaN loss), the
weights stay as they were.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp


class State(NamedTuple):
  """The weighting state, a pytree.

  Attributes:
    history: (2 * window, num_tasks) ring buffer of the last 2 * window
      validation records; record r (from 1) sits at row (r - 1) % (2 *
      window). ``window`` is its static shape's half.
    count: int32 scalar, the number of records so far.
    weights: (num_tasks,) current lambda, ones until the first update.
  """
  history: jax.Array
  count: jax.Array
  weights: jax.Array


def init(num_tasks, window, dtype=jnp.float32):
  """A fresh state: no records, all weights 1.

  Args:
    num_tasks: number of tasks T (python int >= 1).
    window: the paper's k, records per mean (python int >= 1).
    dtype: float dtype of the history and the weights.
  """
  for value, what in ((num_tasks, 'num_tasks'), (window, 'window')):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f'{what} must be an int >= 1, got {value!r}')
  return State(history=jnp.zeros((2 * window, num_tasks), dtype),
               count=jnp.zeros((), jnp.int32),
               weights=jnp.ones((num_tasks,), dtype))


def window_of(state):
  """The window (the paper's k) of a state, from its static shape."""
  return state.history.shape[0] // 2


def trend_weights(previous_losses, current_losses, fallback):
  """lambda from the pre and cur windows' records (the module's equations).

  Args:
    previous_losses: (window, T) the older window's validation losses.
    current_losses: (window, T) the newer window's.
    fallback: (T,) weights returned when the update is degenerate (see the
      module docstring).

  Returns:
    (T,) weights with mean 1, or ``fallback``.
  """
  pre_mean = jnp.mean(previous_losses, axis=0)
  cur_mean = jnp.mean(current_losses, axis=0)
  positive = cur_mean > 0
  trend = jnp.where(
      positive,
      jnp.abs(cur_mean - pre_mean) / jnp.where(positive, cur_mean, 1.0), 0.0)
  mean_trend, mean_loss = jnp.mean(trend), jnp.mean(cur_mean)
  usable = (mean_trend > 0) & (mean_loss > 0)
  norm_trend = trend / jnp.where(usable, mean_trend, 1.0)
  norm_loss = cur_mean / jnp.where(usable, mean_loss, 1.0)
  raw = norm_trend * norm_loss
  mean_raw = jnp.mean(raw)
  usable &= (mean_raw > 0) & jnp.all(jnp.isfinite(raw))
  weights = raw / jnp.where(usable, mean_raw, 1.0)
  return jnp.where(usable, weights, fallback).astype(fallback.dtype)


def record(state, validation_losses):
  """Appends one validation record and updates the weights on schedule.

  Args:
    state: :class:`State`.
    validation_losses: (T,) this record's validation loss of every task.

  Returns:
    The new :class:`State` (see the module docstring for the schedule).
  """
  window = window_of(state)
  num_tasks = state.history.shape[1]
  validation_losses = jnp.asarray(validation_losses)
  if validation_losses.shape != (num_tasks,):
    raise ValueError(f'validation_losses must be ({num_tasks},), one per '
                     f'task, got {validation_losses.shape}')
  size = 2 * window
  history = state.history.at[state.count % size].set(
      validation_losses.astype(state.history.dtype))
  count = state.count + 1
  # Rows of records count - window + 1 .. count and of the window before.
  back = jnp.arange(window - 1, -1, -1)
  current = history[(count - 1 - back) % size]
  previous = history[(count - 1 - window - back) % size]
  due = (count >= size) & (count % window == 0)
  weights = jnp.where(due, trend_weights(previous, current, state.weights),
                      state.weights)
  return State(history=history, count=count, weights=weights)


def weighted_loss(per_task_losses, weights):
  """L = sum_t lambda_t * L_t over the last axis; no gradient to lambda.

  Args:
    per_task_losses: (..., T) training losses.
    weights: (T,) lambda, e.g. ``state.weights``.

  Returns:
    (...) the weighted sum.
  """
  if per_task_losses.shape[-1:] != weights.shape or weights.ndim != 1:
    raise ValueError(f'weighted_loss needs per_task_losses (..., T) and '
                     f'weights (T,), got {per_task_losses.shape} and '
                     f'{weights.shape}')
  weights = jax.lax.stop_gradient(weights).astype(per_task_losses.dtype)
  return jnp.sum(per_task_losses * weights, axis=-1)
