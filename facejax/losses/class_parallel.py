"""Class-parallel softmax and margin softmax for millions of identities.

The class-weight matrix W (D, C) is split by columns over the mesh's
``'model'`` axis (see :mod:`facejax.sharding`): device m holds classes
``[m C/M, (m + 1) C/M)``. The batch is split over all devices. Inside a
``jax.shard_map``:

1. the embeddings and labels of the devices of one model group are gathered
   over ``'model'`` (n = N / data-axis-size rows, D columns: small);
2. each device computes only its slice of logits, z_local (n, C/M);
3. the cross-entropy is exact, assembled with collectives over ``'model'``:

       mu_i   = pmax_m  max_j z_ij           (of a stop-gradient argument)
       S_i    = psum_m  sum_j exp(z_ij - mu_i)
       t_i    = psum_m  z_{i y_i} where y_i is local, else 0
       loss_i = log S_i + mu_i - t_i

   so neither the full logits (N, C) nor W is ever on one device; the
   gradient of W stays sharded like W, and the gradient of each embedding
   flows back to its device through the all-gather's transpose;
4. the mean over the batch is a ``psum`` over the mesh (each model group's
   M devices hold the same per-example losses; their mean is taken).

SphereFace scales each row by the feature norm ||x_i|| instead of s. For a
margin loss the target cosine cos(theta_{y_i}) is found the same way
(one ``psum``), the margin psi (:func:`facejax.losses.margin.
margin_target_cosine`) is applied to it on every device, and the owner of
the target column puts ``s psi`` in place of ``s cos``. The values match
:func:`facejax.losses.margin.margin_softmax_loss` and
:func:`facejax.losses.softmax.softmax_cross_entropy` (tests: 1e-5).

Labels: a concrete label outside ``[0, C)`` raises a ValueError; under jit
the example's loss is NaN (never a silently clamped gather).
"""

import functools
import math

import jax
import jax.numpy as jnp

from facejax import sharding
from facejax.losses import distances
from facejax.losses import labels as labels_lib
from facejax.losses import margin
from facejax.losses import sphereface

__all__ = ['arcface_loss', 'cosface_loss', 'margin_softmax_loss',
           'softmax_loss', 'sphereface_loss']


def _check(embeddings, weights, labels, mesh, num_classes):
  if (embeddings.ndim != 2 or weights.ndim != 2
      or embeddings.shape[1] != weights.shape[0]):
    raise ValueError(
        f'need embeddings (N, D) and weights (D, C), got {embeddings.shape} '
        f'and {weights.shape}')
  if labels.shape != embeddings.shape[:1]:
    raise ValueError(f'labels must be (N,) = {embeddings.shape[:1]}, got '
                     f'{labels.shape}')
  classes, model_size = weights.shape[1], mesh.shape[sharding.MODEL]
  if classes % model_size:
    raise ValueError(f'{classes} classes do not split evenly over the '
                     f'model axis of size {model_size}')
  if embeddings.shape[0] % mesh.size:
    raise ValueError(f'batch of {embeddings.shape[0]} does not split over '
                     f'{mesh.size} devices')
  if not 0 < num_classes <= classes:
    raise ValueError(f'num_classes={num_classes} must be in [1, {classes}] '
                     '(the columns of W)')
  labels_lib.labels_in_range(labels, num_classes)


def _margin_rule(m1, m2, m3):
  def rule(target_value, embeddings, options):
    del embeddings, options
    return margin.margin_target_cosine(target_value, m1, m2, m3)
  return rule


def _sampled_columns(key, labels, first_column, per_shard, num_classes,
                    num_sample):
  """Partial FC: which of a shard's columns take part in this step.

  Every column that is the label of an example of the batch (a positive) is
  kept, then random others up to ``num_sample``; padding columns (index >=
  ``num_classes``) only when nothing else is left. Ranks are random keys in
  [0, 1), plus 2 for positives, minus 4 for padding; the top ``num_sample``
  are taken.

  Args:
    key: PRNG key (distinct per shard and step).
    labels: (n,) global labels of the model group's examples.
    first_column: the shard's first global column.
    per_shard: columns on the shard.
    num_classes: real classes (columns past it are padding).
    num_sample: columns to keep (static).

  Returns:
    (num_sample,) local column indices, highest rank first.
  """
  local = labels - first_column
  positive = jnp.zeros((per_shard,), bool).at[
      jnp.where((local >= 0) & (local < per_shard), local, per_shard)].set(
          True, mode='drop')
  padding = first_column + jnp.arange(per_shard) >= num_classes
  rank = (jax.random.uniform(key, (per_shard,)) + 2.0 * positive
          - 4.0 * padding)
  return jax.lax.top_k(rank, num_sample)[1]


def _varying_axes(x):
  """The mesh axes ``x`` varies over inside shard_map (its type's
  ``manual_axis_type.varying``; ``vma`` in the JAX releases before it)."""
  aval = jax.typeof(x)
  kind = getattr(aval, 'manual_axis_type', None)
  return kind.varying if kind is not None else getattr(aval, 'vma',
                                                        frozenset())


def _local_loss(embeddings, weights, labels, options, *, num_examples,
                num_classes, total_columns, normalise, scale, target_rule,
                num_sample):
  """Per device: the mean loss of the whole batch, by collectives."""
  model = sharding.MODEL
  embeddings = jax.lax.all_gather(embeddings, model, axis=0, tiled=True)
  labels = jax.lax.all_gather(labels, model, axis=0, tiled=True)
  per_shard = weights.shape[1]
  first_column = jax.lax.axis_index(model) * per_shard
  columns = first_column + jnp.arange(per_shard)
  if num_sample < per_shard:  # Partial FC
    chosen = _sampled_columns(
        jax.random.fold_in(options['key'], jax.lax.axis_index(model)),
        labels, first_column, per_shard, num_classes, num_sample)
    weights = jnp.take(weights, chosen, axis=1)
    columns = first_column + chosen
  if normalise:
    values = margin.cosine_matrix(embeddings, weights)
  else:
    dtype = jnp.promote_types(jnp.result_type(embeddings, weights),
                              jnp.float32)
    values = jnp.matmul(embeddings, weights, preferred_element_type=dtype)
  is_target = labels[:, None] == columns[None, :]
  target_value = jax.lax.psum(
      jnp.sum(jnp.where(is_target, values, 0.0), axis=1), model)
  row_scale = scale(embeddings, values.dtype)[:, None]
  target_logit = row_scale[:, 0] * target_rule(target_value, embeddings,
                                               options)
  # The target logit is the same on every device of the class axis
  # (invariant); broadcast into the varying logits as it is, its gradient
  # would be an all-reduce of the whole (N, C / M) logits over 'model'
  # (9.5 GiB a step at 10M classes: bench.scale_plan). Marked varying
  # first, each device keeps its own column's gradient, and the values are
  # bit-identical.
  target_column = target_logit[:, None]
  if model not in _varying_axes(target_column):  # SphereFace's already is
    target_column = jax.lax.pcast(target_column, model, to='varying')
  logits = jnp.where(is_target, target_column, row_scale * values)
  if num_classes < total_columns:  # padding columns: out of the softmax
    logits = jnp.where(columns[None, :] < num_classes, logits, -jnp.inf)
  top = jax.lax.pmax(jax.lax.stop_gradient(jnp.max(logits, axis=1)), model)
  sum_exp = jax.lax.psum(jnp.sum(jnp.exp(logits - top[:, None]), axis=1),
                         model)
  per_example = jnp.log(sum_exp) + top - target_logit
  valid = (labels >= 0) & (labels < num_classes)
  per_example = labels_lib.nan_where_invalid(per_example, valid)
  # Every device of a model group holds the same per-example losses (the
  # all-gather's result is typed as varying over 'model'): average the
  # copies, so the value and each copy's share of the gradient are exact.
  copies = jax.lax.psum(1, model)
  total = jax.lax.psum(jnp.sum(per_example), (sharding.DATA, model))
  return total / (num_examples * copies)


def _constant_scale(value):
  def scale(embeddings, dtype):
    return jnp.full(embeddings.shape[:1], value, dtype)
  return scale


def _sample_size(embeddings, weights, mesh, sample_rate):
  """Columns per shard under Partial FC: enough for every positive."""
  per_shard = weights.shape[1] // mesh.shape[sharding.MODEL]
  if sample_rate is None or sample_rate >= 1:
    return per_shard
  if not 0 < sample_rate:
    raise ValueError(f'sample_rate must be in (0, 1], got {sample_rate}')
  group_examples = embeddings.shape[0] // mesh.shape[sharding.DATA]
  wanted = max(math.ceil(sample_rate * per_shard), group_examples)
  return min(wanted, per_shard)


def _loss(embeddings, weights, labels, mesh, normalise, scale, target_rule,
          options=None, num_classes=None, sample_rate=None, key=None):
  num_classes = weights.shape[1] if num_classes is None else num_classes
  _check(embeddings, weights, labels, mesh, num_classes)
  num_sample = _sample_size(embeddings, weights, mesh, sample_rate)
  options = dict(options or {})
  if num_sample < weights.shape[1] // mesh.shape[sharding.MODEL]:
    if key is None:
      raise ValueError('Partial FC (sample_rate < 1) needs a PRNG key')
    options['key'] = key
  local = functools.partial(
      _local_loss, num_examples=embeddings.shape[0],
      num_classes=num_classes, total_columns=weights.shape[1],
      normalise=normalise, scale=scale, target_rule=target_rule,
      num_sample=num_sample)
  embeddings = jax.reshard(embeddings, sharding.batch_sharding(mesh))
  labels = jax.reshard(labels, sharding.batch_sharding(mesh))
  weights = jax.reshard(weights, sharding.class_weight_sharding(mesh))
  return jax.shard_map(
      local, mesh=mesh,
      in_specs=(sharding.BATCH_SPEC, sharding.CLASS_WEIGHT_SPEC,
                sharding.BATCH_SPEC, jax.sharding.PartitionSpec()),
      out_specs=jax.sharding.PartitionSpec())(embeddings, weights, labels,
                                              options)


def margin_softmax_loss(embeddings, weights, labels, mesh, scale=64.0,
                        m1=1.0, m2=0.5, m3=0.0, num_classes=None,
                        sample_rate=None, key=None):
  """Class-parallel combined-margin softmax (ArcFace eq. 4, insightface's m's).

    L = -1/N sum_i log( e^{s psi(theta_{y_i})}
                        / (e^{s psi(theta_{y_i})} + sum_{j != y_i} e^{s cos theta_j}) )

  Args:
    embeddings: (N, D), batch split over all devices (normalised here).
    weights: (D, C), columns split over the ``'model'`` axis.
    labels: (N,) integers in [0, C), split like the embeddings.
    mesh: the ``('data', 'model')`` mesh (:func:`facejax.sharding.make_mesh`).
    scale, m1, m2, m3: as :func:`facejax.losses.margin.margin_softmax_loss`
      (defaults: ArcFace, s = 64, m2 = 0.5).
    num_classes: the real class count C when W has padding columns (C is
      rounded up to a multiple of the model axis; the padding columns are
      left out of the softmax). Default: every column.
    sample_rate, key: Partial FC (An et al., 2021): each shard keeps the
      columns of the batch's labels and a random ``sample_rate`` of its
      columns in all (at least as many as the group's examples), drawn with
      ``key``; the softmax runs over those only, and only they receive a
      gradient. None or 1: every column.

  Returns:
    The scalar mean loss (float32 or wider), replicated.
  """
  return _loss(embeddings, weights, labels, mesh, True,
               _constant_scale(scale), _margin_rule(m1, m2, m3),
               num_classes=num_classes, sample_rate=sample_rate, key=key)


def arcface_loss(embeddings, weights, labels, mesh, scale=64.0, margin=0.5,
                 **kwargs):
  """Class-parallel ArcFace: target s cos(theta + m)."""
  return margin_softmax_loss(embeddings, weights, labels, mesh, scale,
                             m2=margin, **kwargs)


def cosface_loss(embeddings, weights, labels, mesh, scale=64.0, margin=0.35,
                 **kwargs):
  """Class-parallel CosFace: target s (cos theta - m)."""
  return margin_softmax_loss(embeddings, weights, labels, mesh, scale,
                             m2=0.0, m3=margin, **kwargs)


def softmax_loss(embeddings, weights, labels, mesh, num_classes=None,
                 sample_rate=None, key=None):
  """Class-parallel plain softmax cross-entropy of logits x W (no bias)."""
  return _loss(embeddings, weights, labels, mesh, False, _constant_scale(1.0),
               lambda target, embeddings, options: target,
               num_classes=num_classes, sample_rate=sample_rate, key=key)


def sphereface_loss(embeddings, weights, labels, mesh, m=4, lam=5.0,
                    num_classes=None, sample_rate=None, key=None):
  """Class-parallel A-Softmax with the annealing blend.

    f_{y_i} = ||x_i|| (lam cos(theta_{y_i}) + psi(theta_{y_i})) / (1 + lam)
    f_j     = ||x_i|| cos(theta_j),   j != y_i

  as :func:`facejax.losses.sphereface.sphereface_loss`; ``lam`` may be a
  traced value (annealed with the step).
  """
  if int(m) != m or m < 1:
    raise ValueError(f'sphereface_loss needs an integer margin m >= 1, got {m}')

  def feature_norm(embeddings, dtype):
    return distances.safe_norm(embeddings.astype(dtype))

  def blend(target, embeddings, options):
    del embeddings
    lam = options['lam']
    return (lam * target + sphereface.sphereface_psi(target, int(m))) / (
        1.0 + lam)
  return _loss(embeddings, weights, labels, mesh, True, feature_norm, blend,
               dict(lam=jnp.asarray(lam, jnp.float32)),
               num_classes=num_classes, sample_rate=sample_rate, key=key)
