"""Label checks: JAX gathers clamp out-of-range indices silently, we do not.

With concrete labels (outside ``jit``) a bad label raises a ``ValueError`` that
names its position and value. Under ``jit`` the values are unknown at trace
time, so :func:`labels_in_range` returns a mask instead and the losses turn the
affected examples' loss into NaN: a training loop that refuses non-finite
losses then stops on them, instead of training on a clamped class.
"""
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['labels_in_range', 'nan_where_invalid']


def _concrete_value(x):
  """``np.asarray(x)`` when ``x`` is concrete, ``None`` when it is traced."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError,
          jax.errors.ConcretizationTypeError):
    return None


def _check_integer_labels(labels, what='labels'):
  """Raises TypeError unless ``labels`` has an integer dtype."""
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(
        f'{what} must be integers, got dtype {jnp.result_type(labels)}')


def labels_in_range(labels, num_classes, what='labels'):
  """Boolean mask of labels in [0, num_classes); raises if a concrete one is not.

  Args:
    labels: integer array of class indices, any shape.
    num_classes: the exclusive upper bound.
    what: the name used in the error message.

  Returns:
    A boolean array shaped like ``labels`` (all True when labels are concrete).

  Raises:
    TypeError: labels are not integers.
    ValueError: a concrete label is outside [0, num_classes).
  """
  _check_integer_labels(labels, what)
  values = _concrete_value(labels)
  if values is not None:
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if bad.size:
      first = bad[0]
      raise ValueError(
          f'{what}: {bad.size} value(s) outside [0, {num_classes}); the first '
          f'is {values.reshape(-1)[first]} at flat index {first}')
  return (labels >= 0) & (labels < num_classes)


def nan_where_invalid(per_example_loss, valid):
  """Replaces the loss of examples with an invalid label by NaN."""
  return jnp.where(valid, per_example_loss, jnp.nan)
