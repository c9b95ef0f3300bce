"""A tour of the loss library: each loss's value and gradient norm on one batch.

    python -m train.loss_demo [--identities P] [--images K] [--dim D] [--classes C]

This is what ``make demo`` runs until the end-to-end training job lands. The
batch is P identities x K images of random D-dimensional embeddings, the
layout every loss here accepts; the class-weight matrix of the margin losses
has C columns. Each row of the table is one jitted value-and-gradient call.
"""
import argparse

import jax
import jax.numpy as jnp

from facejax import losses


def loss_cases(key, identities=8, images=4, dim=128, classes=1000):
  """Every loss of the library as (name, loss_fn, differentiable inputs).

  ``loss_fn`` maps the tuple of differentiable inputs to a scalar; labels,
  cluster ids and pairings are closed over. Shared by the demo and bench/.
  """
  batch = identities * images
  keys = jax.random.split(key, 4)
  embeddings = jax.random.normal(keys[0], (batch, dim))
  labels = jnp.repeat(jnp.arange(identities), images)
  weights = jax.random.normal(keys[1], (dim, classes))
  centers = jax.random.normal(keys[2], (classes, dim))
  # Two clusters per identity for LMLE.
  clusters = jnp.tile(jnp.arange(images) % 2, identities)
  # Contrastive pairs: each example against the next one in the batch.
  partners = jnp.roll(jnp.arange(batch), -1)
  same = labels == labels[partners]

  def quintuplet_loss(x):
    quintuplets = losses.quintuplet_indices(x, labels, clusters)
    return losses.triple_header_hinge_loss(
        x, x[quintuplets.p_plus], x[quintuplets.p_minus],
        x[quintuplets.p_minus_minus], x[quintuplets.negative],
        valid=quintuplets.valid)

  unit = losses.l2_normalize
  head = (embeddings, weights)
  return [
      ('softmax', lambda x, w: losses.softmax_cross_entropy(x @ w, labels),
       head),
      ('center (loss only)',
       lambda x: losses.center_loss(x, labels, centers)[0], (embeddings,)),
      ('contrastive', lambda x: losses.contrastive_loss(
          unit(x), unit(x)[partners], same, margin=1.0), (embeddings,)),
      ('batch-hard triplet', lambda x: losses.batch_hard_triplet_loss(
          unit(x), labels), (embeddings,)),
      ('batch-hard soft margin', lambda x: losses.batch_hard_triplet_loss(
          unit(x), labels, soft=True), (embeddings,)),
      ('batch-all triplet', lambda x: losses.batch_all_triplet_loss(
          unit(x), labels), (embeddings,)),
      ('lifted structure', lambda x: losses.lifted_structure_loss(
          unit(x), labels), (embeddings,)),
      ('ArcFace (s=64, m=0.5)', lambda x, w: losses.arcface_loss(
          x, w, labels), head),
      ('CosFace (s=64, m=0.35)', lambda x, w: losses.cosface_loss(
          x, w, labels), head),
      ('combined (1, 0.3, 0.2)', lambda x, w: losses.margin_softmax_loss(
          x, w, labels, m1=1.0, m2=0.3, m3=0.2), head),
      ('SphereFace (m=4, lam=5)', lambda x, w: losses.sphereface_loss(
          x, w, labels), head),
      ('ArcFace Intra-Loss (L5)', lambda x, w: losses.intra_loss(
          x, w, labels), head),
      ('ArcFace Inter-Loss (L6)', lambda x, w: losses.inter_loss(
          x, w, labels), head),
      ('LMLE triple-header hinge', lambda x: quintuplet_loss(unit(x)),
       (embeddings,)),
  ]


def gradient_norm(gradients):
  return jnp.sqrt(sum(jnp.sum(jnp.square(g))
                      for g in jax.tree_util.tree_leaves(gradients)))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--identities', type=int, default=8, help='P')
  parser.add_argument('--images', type=int, default=4, help='K per identity')
  parser.add_argument('--dim', type=int, default=128, help='embedding size')
  parser.add_argument('--classes', type=int, default=1000,
                      help='columns of the class-weight matrix')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  cases = loss_cases(jax.random.PRNGKey(args.seed), args.identities,
                     args.images, args.dim, args.classes)
  print(f'batch {args.identities} identities x {args.images} images, '
        f'{args.dim}-d embeddings, {args.classes} classes, '
        f'{jax.device_count()} {jax.default_backend()} device(s)')
  print(f'{"loss":<26} {"value":>10} {"|grad|":>10} {"finite":>7}')
  all_finite = True
  for name, loss_fn, inputs in cases:
    value, grads = jax.jit(jax.value_and_grad(
        loss_fn, argnums=tuple(range(len(inputs)))))(*inputs)
    norm = gradient_norm(grads)
    finite = bool(jnp.isfinite(value) & jnp.isfinite(norm))
    all_finite &= finite
    print(f'{name:<26} {float(value):>10.4f} {float(norm):>10.4f} '
          f'{"yes" if finite else "NO":>7}')
  if not all_finite:
    raise SystemExit('a loss or gradient is not finite')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
