"""Softmax + center loss with the center-loss paper's CNN, CASIA-WebFace.

Wen et al. 2016: lambda = 0.003, alpha = 0.5, batch 256, lr 0.1; the network
with locally connected layers (facejax.models.center_loss_cnn).

    python -m train --config train/configs/center_loss_casia.py:/data/casia \\
        --workdir runs/center_loss
"""

from train.configs import sphereface20_casia


def get_config(arg='/data/CASIA-WebFace'):
  c = sphereface20_casia.casia_config(arg)
  c.model.name = 'center_loss_cnn'
  c.model.kwargs = dict(embedding_dim=512)
  c.loss = dict(name='center', center_weight=0.003, center_alpha=0.5)
  c.optimizer.learning_rate = 0.1
  c.optimizer.warmup_steps = 0
  c.eval.every = 2000
  c.checkpoint_every = 2000
  return c
