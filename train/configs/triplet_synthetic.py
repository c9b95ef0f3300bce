"""Batch-hard triplet loss on P x K batches of the synthetic data.

Hermans et al. 2017's batch-hard mining with FaceNet's unit-sphere
embeddings: P = 16 identities x K = 4 images per batch, margin 0.2, Adam.
Pass ``:soft`` for the soft margin, ``:all`` for batch-all.

    python -m train --config train/configs/triplet_synthetic.py \\
        --workdir runs/triplet
"""

from train.configs import sweep

VARIANTS = dict(hard='triplet_batch_hard', soft='triplet_soft',
                all='triplet_batch_all')


def get_config(arg='hard'):
  return sweep.get_config(VARIANTS[arg])
