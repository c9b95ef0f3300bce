"""Face attributes on the synthetic attribute set (CelebA-like imbalance).

    python -m train --config train/configs/attributes.py:adaptive \\
        --workdir runs/attributes_adaptive
    python -m eval.attributes --checkpoint runs/attributes_adaptive \\
        --out runs/attributes_adaptive/eval

Variants (same backbone, data and budget; only the objective changes):

* ``adaptive``: the multi-task network, one sigmoid logit per attribute,
  weighted by He et al.'s adaptive task weights (a validation record every
  ``weighting_every`` steps, the weights recomputed every
  ``weighting_window`` records);
* ``uniform``: the same network with every task weight 1;
* ``lmle``: LMLE per attribute (a 16-d embedding each, 2 clusters per
  class, re-clustered every ``cluster_every`` steps), classified by the
  large-margin cluster kNN at evaluation.

The data: 40 attributes with positive rates from 2% to 50%, drawn from the
synthetic generator's factors (``facejax.data.celeba``); 8,000 training,
500 validation and 3,000 test faces, disjoint. For CelebA in its published
layout set ``--config.data.source=celeba:/path/to/celeba`` (or
``tfds:celeb_a``) and ``--config.data.image_size`` to suit the backbone.
"""

import ml_collections

from train.configs import default

VARIANTS = {
    'adaptive': dict(name='attributes', weighting='adaptive',
                     weighting_every=10, weighting_window=4),
    'uniform': dict(name='attributes', weighting='uniform'),
    'lmle': dict(name='lmle_attributes', attribute_dim=16,
                 margins=(0.1, 0.1, 0.2), clusters_per_class=2,
                 cluster_every=200, cluster_iterations=20),
}


def get_config(arg='adaptive'):
  if arg not in VARIANTS:
    raise ValueError(f'unknown variant {arg!r}; choose one of '
                     f'{", ".join(VARIANTS)}')
  c = default.get_config()
  c.data.source = 'synthetic_attributes'
  c.data.synthetic_attributes = dict(train=8000, val=500, test=3000,
                                     num_attributes=40, seed=0,
                                     image_size=112)
  c.data.max_examples = dict(train=0, val=0, test=0)  # CelebA: 0 for all
  c.data.tfds_data_dir = ''
  c.data.image_size = 64
  # Attributes such as a tilted head or the hair's side are not mirror
  # invariant in general; no flip.
  c.data.augmentation.flip = False
  c.loss = ml_collections.ConfigDict(VARIANTS[arg])
  c.eval.every = 0  # no identity pairs here; python -m eval.attributes
  # AdamW for all three: the multi-task loss is a sum over 40 tasks, whose
  # gradient scale SGD's learning rate would have to follow.
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  return c
