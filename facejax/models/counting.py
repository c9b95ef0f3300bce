"""Parameter and multiply-accumulate counts, from the module definition.

``count_macs`` runs the model's ``init`` under ``jax.eval_shape`` (no compute,
no memory) with a method interceptor that adds up the multiply-accumulates of
every convolution and dense layer from their input and output shapes. A layer
of another kind adds its own count by defining
``multiply_accumulates(inputs, outputs) -> int``. Element-wise work (batch
norm, activations, additions) is not counted, as in the published tables.
One MAC is one multiply and one add: tools that report FLOPs give about
twice these numbers.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def count_parameters(params):
  """Number of scalars in a parameter pytree (or in ``variables['params']``)."""
  leaves = jax.tree_util.tree_leaves(params)
  return sum(math.prod(leaf.shape) for leaf in leaves)


def _layer_macs(module, inputs, outputs):
  if isinstance(module, (nn.Conv, nn.Dense)):
    out_positions = math.prod(outputs.shape[:-1])
  if isinstance(module, nn.Conv):
    in_per_group = inputs.shape[-1] // module.feature_group_count
    return (out_positions * math.prod(module.kernel_size) * in_per_group
            * outputs.shape[-1])
  if isinstance(module, nn.Dense):
    return out_positions * inputs.shape[-1] * outputs.shape[-1]
  if hasattr(module, 'multiply_accumulates'):
    return module.multiply_accumulates(inputs, outputs)
  return 0


def count(model, input_shape=(1, 112, 112, 3), **call_kwargs):
  """(parameters, forward multiply-accumulates per example) of ``model``,
  from one abstract ``init`` (see :func:`count_macs`)."""
  total = []

  def interceptor(next_fun, args, kwargs, context):
    outputs = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and args:
      total.append(_layer_macs(context.module, args[0], outputs))
    return outputs

  def init():
    images = jnp.zeros(input_shape, jnp.float32)
    return model.init(jax.random.PRNGKey(0), images, **call_kwargs)

  with nn.intercept_methods(interceptor):
    variables = jax.eval_shape(init)
  return (count_parameters(variables['params']),
          sum(total) // input_shape[0])


def count_macs(model, input_shape=(1, 112, 112, 3), **call_kwargs):
  """Forward multiply-accumulates of ``model`` per example.

  Args:
    model: a flax module whose ``__call__`` takes images first.
    input_shape: the input's shape, batch first.
    **call_kwargs: passed to the call (e.g. ``train=False``).

  Returns:
    MACs for one example (an int).
  """
  return count(model, input_shape, **call_kwargs)[1]
