"""The jitted train step and the embedding function.

One step, for a global batch split over every device of the mesh:

1. the backbone runs data-parallel (replicated parameters, batch split;
   inside ``jax.sharding.auto_axes`` so XLA places its collectives: batch
   norm statistics are those of the whole global batch, as on one device);
   with ``compute_dtype=bfloat16`` it computes in bfloat16 from float32
   parameters, and the embeddings come out float32;
2. the objective (:mod:`facejax.training.objectives`) computes the loss,
   class-parallel for the classification heads;
3. gradients of all parameters, optional accumulation over
   ``micro_batches`` (a ``lax.scan``: the batch is split in that many
   consecutive parts, the gradients averaged, batch-norm statistics and
   centres updated part after part), then the optax update.

The state is donated (its buffers are reused for the new one). The step
returns the loss and the global gradient norm; a non-finite loss is left
for the loop to act on (it stops before any checkpoint).
"""

import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from facejax import sharding


def _backbone(model, mesh, compute_dtype, params, batch_stats, images, rng,
              train):
  """Embeddings (float32, batch-sharded) and the new batch statistics."""
  def forward(params, batch_stats, images):
    variables = dict(params=params, batch_stats=batch_stats)
    if train:
      embeddings, updates = model.apply(
          variables, images.astype(compute_dtype), train=True,
          mutable=['batch_stats'], rngs=dict(dropout=rng))
      return embeddings.astype(jnp.float32), updates['batch_stats']
    return model.apply(variables, images.astype(compute_dtype)).astype(
        jnp.float32), batch_stats
  out_sharding = (sharding.BATCH_SPEC,
                  jax.tree.map(lambda _: P(), batch_stats))
  return jax.sharding.auto_axes(forward, out_sharding=out_sharding)(
      params, batch_stats, images)


def make_train_step(model, objective, optimizer, mesh, state_shardings,
                    compute_dtype=jnp.float32, micro_batches=1):
  """The jitted ``step(state, batch) -> (state, metrics)``.

  Args:
    model: the backbone (flax module: images -> embeddings).
    objective: a :class:`facejax.training.objectives.Objective`.
    optimizer: an optax GradientTransformation.
    mesh: the ``('data', 'model')`` mesh.
    state_shardings: the state's shardings (:func:`state.create`).
    compute_dtype: the backbone's compute dtype (float32 or bfloat16).
    micro_batches: gradient accumulation: split each batch in this many.
  """
  def loss_and_grads(params, batch_stats, extra, step, rng, images, labels,
                     indices):
    def loss_fn(params):
      embeddings, new_stats = _backbone(
          model, mesh, compute_dtype, params['backbone'], batch_stats,
          images, rng, train=True)
      loss, new_extra, metrics = objective(
          embeddings, labels, params['head'], extra, step, mesh,
          rng=jax.random.fold_in(rng, 1), indices=indices)
      return loss, (new_stats, new_extra, metrics)
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  def train_step(state, batch):
    rng, step_rng = jax.random.split(state.rng)
    images = batch['image']
    # The targets: identities, or the attributes for the attribute losses.
    labels = batch['attributes' if objective.uses_attributes else 'label']
    indices = batch.get('index')  # the examples' positions (LMLE)
    if micro_batches == 1:
      (loss, (batch_stats, extra, metrics)), grads = loss_and_grads(
          state.params, state.batch_stats, state.extra, state.step,
          step_rng, images, labels, indices)
    else:
      parts = jax.tree.map(
          # Each micro-batch keeps the batch's split over the devices (a
          # plain reshape of a sharded batch is refused by JAX).
          lambda x: jnp.reshape(x, (micro_batches, -1) + x.shape[1:],
                                out_sharding=P(None, *sharding.BATCH_SPEC)),
          (images, labels, indices))

      def accumulate(carry, part):
        batch_stats, extra, grad_sum, loss_sum, index = carry
        (loss, (batch_stats, extra, metrics)), grads = loss_and_grads(
            state.params, batch_stats, extra, state.step,
            jax.random.fold_in(step_rng, index), *part)
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
        return (batch_stats, extra, grad_sum, loss_sum + loss,
                index + 1), metrics
      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (batch_stats, extra, grad_sum, loss_sum, _), metrics = jax.lax.scan(
          accumulate, (state.batch_stats, state.extra, zeros,
                       jnp.zeros((), jnp.float32), 0), parts)
      grads = jax.tree.map(lambda g: g / micro_batches, grad_sum)
      loss = loss_sum / micro_batches
      metrics = jax.tree.map(jnp.mean, metrics)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state,
                              extra=extra, rng=rng)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return new_state, metrics

  batch_sharding = sharding.batch_sharding(mesh)
  return jax.jit(train_step, donate_argnums=0,
                 in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None))


def make_embed(model, mesh, compute_dtype=jnp.float32):
  """The jitted ``embed(backbone_params, batch_stats, images)`` (eval mode)."""
  @functools.partial(jax.jit)
  def embed(params, batch_stats, images):
    embeddings, _ = _backbone(model, mesh, compute_dtype, params,
                              batch_stats, images, None, train=False)
    return embeddings
  return embed
