"""Is the synthetic dataset learnable? Trained embedding vs raw pixels.

    python -m bench.synthetic_separability [--steps 400] [--identities 300]
    python -m bench.synthetic_separability --baseline-only [--pairs 3000]

Trains a small IResNet (ArcFace loss, SGD with momentum, cosine decay) on
training identities of the embedded synthetic dataset, fed by the tf.data
pipeline, then scores held-out identities (``EVAL_FIRST_IDENTITY`` on, never
seen in training) on the LFW protocol: 10-fold accuracy over pairs, the
threshold chosen on nine folds and applied to the tenth. Prints the trained
model's accuracy next to the raw-pixel cosine baseline on the same pairs
(:func:`facejax.inference.raw_pixel_features` at the images' 112x112: the
cosine of mean-subtracted pixels). ``--baseline-only`` skips training and
prints the baseline and how fast the pairs' images were drawn.

This is a check of the dataset (the nuisance leaves identity learnable, and
raw pixels far behind), not the training engine: one device, a plain loop.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from facejax import inference
from facejax import models
from facejax.data import augment
from facejax.data import pipeline
from facejax.data import sources
from facejax.data import synthetic
from facejax.losses import margin
from facejax.metrics import verification

SMALL_IRESNET = dict(stage_units=(1, 1, 1, 1), stage_features=(16, 32, 64,
                                                              128),
                     stem_features=16, embedding_dim=128)


def train(args):
  """Returns (model, variables) after ``args.steps`` steps."""
  source = sources.synthetic_source(args.identities, args.images, seed=0)
  dataset = pipeline.train_dataset(
      source, args.batch, seed=0, image_size=args.size,
      augmentation=augment.Augmentation(flip=True),
      process=pipeline.ProcessShard(), num_classes=source.num_classes)
  model = models.get('iresnet18', **SMALL_IRESNET)
  key = jax.random.key(0)
  variables = model.init(key, jnp.zeros((1, args.size, args.size, 3)))
  class_weights = jax.random.normal(
      key, (SMALL_IRESNET['embedding_dim'], source.num_classes)) * 0.01
  params = dict(model=variables['params'], class_weights=class_weights)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, args.learning_rate, args.steps // 20, args.steps)
  optimizer = optax.chain(optax.add_decayed_weights(5e-4),
                          optax.sgd(schedule, momentum=0.9))
  opt_state = optimizer.init(params)
  batch_stats = variables['batch_stats']

  @jax.jit
  def step(params, batch_stats, opt_state, images, labels):
    def loss_fn(params):
      embeddings, updates = model.apply(
          dict(params=params['model'], batch_stats=batch_stats), images,
          train=True, mutable=['batch_stats'])
      loss = margin.arcface_loss(embeddings, params['class_weights'], labels,
                                 scale=32.0, margin=0.3)
      return loss, updates['batch_stats']
    (loss, batch_stats), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  start = time.perf_counter()
  for number, batch in enumerate(dataset.take(args.steps).as_numpy_iterator()):
    params, batch_stats, opt_state, loss = step(
        params, batch_stats, opt_state, batch['image'], batch['label'])
    if number % 50 == 0 or number == args.steps - 1:
      print(f'step {number:4d}  loss {float(loss):7.3f}  '
            f'{time.perf_counter() - start:6.0f} s', flush=True)
  return model, dict(params=params['model'], batch_stats=batch_stats)


def embed(model, variables, images, size):
  """Flip-summed, L2-normalised embeddings of uint8 images, in order."""
  source = sources.InMemory(images, np.zeros(len(images), np.int32))
  apply = jax.jit(lambda x: model.apply(variables, x))
  out = np.zeros((len(images), SMALL_IRESNET['embedding_dim']), np.float32)
  for batch in pipeline.eval_dataset(source, 200, image_size=size,
                                     process=pipeline.ProcessShard(),
                                     flip=True).as_numpy_iterator():
    features = np.asarray(apply(batch['image']) +
                          apply(batch['image_flipped']))
    real = batch['mask']
    out[batch['index'][real]] = features[real]
  return out / np.linalg.norm(out, axis=1, keepdims=True)


def raw_pixel_accuracy(images_a, images_b, issame):
  """The raw-pixel baseline's LFW-protocol accuracy: (mean, std) over ten
  folds of the cosine of the pairs' mean-subtracted pixels, the mean taken
  over all 2N images."""
  pairs = len(issame)
  source = sources.InMemory(np.concatenate([images_a, images_b]),
                            np.zeros(2 * pairs, np.int32))
  features = inference.raw_pixel_features(source, images_a.shape[1])
  scores = np.sum(features[:pairs] * features[pairs:], axis=1)
  return verification.ten_fold_accuracy(scores, issame)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--identities', type=int, default=300)
  parser.add_argument('--images', type=int, default=20)
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--size', type=int, default=56,
                      help='input side (the 112x112 images are resized)')
  parser.add_argument('--learning-rate', type=float, default=0.1)
  parser.add_argument('--pairs', type=int, default=3000)
  parser.add_argument('--baseline-only', action='store_true',
                      help='no training: the raw-pixel baseline alone')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  images_a, images_b, issame = synthetic.verification_pairs(args.pairs)
  seconds = time.perf_counter() - start
  raw_mean, raw_std = raw_pixel_accuracy(images_a, images_b, issame)
  if args.baseline_only:
    print(f'raw-pixel accuracy {raw_mean:.4f} +- {raw_std:.4f} on '
          f'{args.pairs} pairs; generated {2 * args.pairs} images at '
          f'{2 * args.pairs / seconds:.0f} images/s')
    return
  model, variables = train(args)
  features = embed(model, variables, np.concatenate([images_a, images_b]),
                   args.size)
  scores = np.sum(features[:args.pairs] * features[args.pairs:], axis=1)
  mean, std = verification.ten_fold_accuracy(scores, issame)
  print(f'\nLFW-protocol accuracy on {args.pairs} pairs of held-out '
        f'synthetic identities (10 folds):')
  print(f'  raw-pixel cosine baseline : {raw_mean:.3f} +- {raw_std:.3f}')
  print(f'  trained small IResNet     : {mean:.3f} +- {std:.3f}  '
        f'({args.steps} steps of {args.batch}, {args.identities} identities '
        f'x {args.images} images, {args.size}x{args.size})')


if __name__ == '__main__':
  main()
