"""SphereFace-20 with A-Softmax (m = 4) on CASIA-WebFace (an image folder).

The released recipe: batch 256, SGD lr 0.1 momentum 0.9 weight decay 5e-4,
28k iterations, lambda annealed from 1000 to 5 (base 1000, gamma 0.12,
power 1). The paper crops 112x96; the pipeline here makes square 112x112
crops, which SphereFace-20 accepts as well.

    python -m train --config train/configs/sphereface20_casia.py:/data/casia \\
        --workdir runs/sphereface20
"""

from train.configs import default


def casia_config(arg):
  """What the CASIA-WebFace recipes share: 112x112, batch 256, 28k steps."""
  c = default.get_config()
  c.data.source = arg
  c.data.image_size = 112
  c.batch_size = 256
  c.total_steps = 28_000
  c.optimizer.learning_rate = 0.1
  c.optimizer.warmup_steps = 0
  c.eval.every = 2000
  c.checkpoint_every = 2000
  return c


def get_config(arg='/data/CASIA-WebFace'):
  c = casia_config(arg)
  c.model.name = 'sphereface20'
  c.model.kwargs = dict(embedding_dim=512)
  c.loss = dict(name='sphereface', sphereface_m=4, lambda_base=1000.0,
                lambda_gamma=0.12, lambda_power=1.0, lambda_min=5.0)
  c.optimizer.learning_rate = 0.1
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = 'cosine'
  c.eval.every = 2000
  c.checkpoint_every = 2000
  return c
