"""One config per loss family, same backbone and budget: ``train.sweep``.

    python -m train --config train/configs/sweep.py:cosface --workdir runs/x

The default config (a small IResNet on the embedded synthetic identities,
400 steps of 64) with only the loss, and what the loss needs, changed:

* classification losses keep SGD (lr 0.1, momentum 0.9, wd 5e-4) and
  plain shuffled batches; ``scale`` 32 for the normalised ones;
* metric-learning losses take P x K batches (16 x 4; LMLE 8 x 8 so that
  both clusters of an identity show up) and AdamW (lr 1e-3), as FaceNet
  and the triplet literature train.
"""

import ml_collections

from facejax.training import objectives
from train.configs import default

LOSSES = {
    'softmax': dict(name='softmax'),
    'center': dict(name='center', center_weight=0.01, center_alpha=0.5),
    'arcface': dict(name='arcface', scale=32.0, margin=0.3),
    'cosface': dict(name='cosface', scale=32.0, margin=0.2),
    'sphereface': dict(name='sphereface', sphereface_m=4, lambda_base=1000.0,
                       lambda_gamma=0.5, lambda_power=1.0, lambda_min=5.0),
    'combined': dict(name='combined', scale=32.0, m1=1.0, m2=0.3, m3=0.2),
    'triplet_batch_hard': dict(name='triplet_batch_hard', margin=0.2),
    'triplet_soft': dict(name='triplet_soft', margin=0.2),
    'triplet_batch_all': dict(name='triplet_batch_all', margin=0.2),
    'lifted': dict(name='lifted', margin=1.0),
    'contrastive': dict(name='contrastive', margin=1.0),
    'lmle': dict(name='lmle', margins=(0.1, 0.1, 0.2), clusters_per_class=2,
                 cluster_every=100, cluster_iterations=20),
}


def get_config(arg='arcface'):
  if arg not in LOSSES:
    raise ValueError(f'unknown loss {arg!r}; choose one of '
                     f'{", ".join(LOSSES)}')
  c = default.get_config()
  c.loss = ml_collections.ConfigDict(LOSSES[arg])
  if objectives.get(arg).identity_balanced:  # the metric-learning losses
    identities = 8 if arg == 'lmle' else 16
    c.data.identities_per_batch = identities
    c.data.images_per_identity = c.batch_size // identities
    c.optimizer.name = 'adamw'
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 1e-4
  return c
