"""ArcFace, IResNet-50, MS1MV2 as insightface distributes it (.rec + .idx).

arcface_torch's ms1mv2_r50 recipe: 112x112 aligned faces, 512-d, s = 64,
m = 0.5, SGD lr 0.1 momentum 0.9 weight decay 5e-4 for a global batch of
1024 (128 per GPU x 8), polynomial decay (power 2) over 20 epochs of
5,822,653 images (85,742 identities), bfloat16 compute; W split over every
device (mesh.model=-1), as its model-parallel head.

    python -m train --config train/configs/arcface_iresnet50_ms1mv2.py:/data/ms1mv2/train.rec \\
        --workdir runs/ms1mv2_r50
"""

from train.configs import default

EPOCHS = 20
IMAGES = 5_822_653


def get_config(arg='/data/faces_emore/train.rec'):
  c = default.get_config()
  c.data.source = arg
  c.data.image_size = 112
  c.batch_size = 1024
  c.total_steps = EPOCHS * IMAGES // c.batch_size
  c.compute_dtype = 'bfloat16'
  c.mesh = dict(model=-1)
  c.model.name = 'iresnet50'
  c.model.kwargs = dict(embedding_dim=512)
  c.loss.name = 'arcface'
  c.loss.scale = 64.0
  c.loss.margin = 0.5
  c.optimizer.learning_rate = 0.1
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = 'polynomial'
  c.optimizer.power = 2.0
  c.eval.every = 2000
  c.eval.pairs = 6000
  c.eval.batch_size = 512
  c.log_every = 50
  c.checkpoint_every = 2000
  return c
