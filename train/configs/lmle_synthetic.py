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

from train.configs import default


def get_config(arg=None):
  del arg
  c = default.get_config()
  c.data.identities_per_batch = 8
  c.data.images_per_identity = 8
  c.batch_size = 64
  c.loss = dict(name='lmle', margins=(0.1, 0.1, 0.2), clusters_per_class=2,
                cluster_every=100, cluster_iterations=20)
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  return c
