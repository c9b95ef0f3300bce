"""CosFace (LMCL), IResNet-50, MS1MV2: s = 64, m = 0.4 (insightface's m3).

    python -m train --config train/configs/cosface_iresnet50_ms1mv2.py:/data/ms1mv2/train.rec \\
        --workdir runs/ms1mv2_r50_cosface
"""

from train.configs import arcface_iresnet50_ms1mv2


def get_config(arg='/data/faces_emore/train.rec'):
  c = arcface_iresnet50_ms1mv2.get_config(arg)
  c.loss.name = 'cosface'
  c.loss.margin = 0.4
  return c
