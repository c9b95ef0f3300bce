"""LMLE (Large Margin Local Embedding) on P x K batches of the synthetic data.

Huang, Li, Loy, Tang, CVPR 2016. Every identity is split into
``clusters_per_class`` clusters by k-means on the current model's
embeddings, refreshed every ``cluster_every`` steps (the paper's
alternation); each batch draws one quintuplet per anchor (its farthest
same-cluster example, nearest same-class other-cluster, farthest same-class,
nearest other-class) and the triple-header hinge with gaps (g1, g2, g3)
orders their squared distances. P = 8 identities x K = 8 images, so that
most anchors find both of their class's clusters in the batch.

    python -m train --config train/configs/lmle_synthetic.py \\
        --workdir runs/lmle
"""

from train.configs import sweep


def get_config(arg=None):
  del arg
  return sweep.get_config('lmle')
