"""Masked reductions shared by the metric-learning losses.

All of them are NaN-free for empty masks: an empty mean is 0, an empty max or
min is replaced by ``empty_value`` and an empty log-sum-exp by 0, and none of
them lets a gradient flow into masked-out entries.
"""
import jax
import jax.numpy as jnp

__all__ = ['compute_dtype', 'masked_logsumexp', 'masked_max', 'masked_mean',
           'masked_min']


def compute_dtype(*arrays):
  """The dtype the losses compute in: the inputs' float type, at least float32."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def masked_mean(values, mask):
  """mean(values[mask]); 0 when the mask is empty."""
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_max(values, mask, axis=-1, empty_value=0.0):
  """Max over the entries of ``values`` where ``mask`` is True, along ``axis``."""
  lowest = jnp.finfo(values.dtype).min
  result = jnp.max(jnp.where(mask, values, lowest), axis=axis)
  return jnp.where(jnp.any(mask, axis=axis), result, empty_value)


def masked_min(values, mask, axis=-1, empty_value=0.0):
  """Min over the entries of ``values`` where ``mask`` is True, along ``axis``."""
  highest = jnp.finfo(values.dtype).max
  result = jnp.min(jnp.where(mask, values, highest), axis=axis)
  return jnp.where(jnp.any(mask, axis=axis), result, empty_value)


def masked_logsumexp(values, mask, axis=-1):
  """log(sum(exp(values[mask]))) along ``axis``; 0 for an empty mask."""
  has_any = jnp.any(mask, axis=axis, keepdims=True)
  shift = jax.lax.stop_gradient(
      jnp.max(jnp.where(mask, values, jnp.finfo(values.dtype).min), axis=axis,
              keepdims=True))
  shift = jnp.where(has_any, shift, 0.0)
  # The inner where keeps exp() of masked-out entries from overflowing, which
  # would turn their zero cotangent into 0 * inf = NaN.
  exponentials = jnp.exp(jnp.where(mask, values - shift, 0.0))
  total = jnp.sum(jnp.where(mask, exponentials, 0.0), axis=axis, keepdims=True)
  result = jnp.log(jnp.where(has_any, total, 1.0)) + shift
  return jnp.squeeze(jnp.where(has_any, result, 0.0), axis=axis)
