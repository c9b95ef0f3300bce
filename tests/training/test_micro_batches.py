"""Gradient accumulation in the real loop: batches arrive as sharded device
arrays, and each micro-batch keeps their split over the devices."""
import numpy as np

from facejax.training import loop
from tests.training.tiny import tiny_config


def test_the_loop_trains_with_micro_batches(tmp_path):
  run = loop.train(tiny_config(micro_batches=2, total_steps=2),
                   str(tmp_path), log=False)
  assert [record['step'] for record in run.history] == [1, 2]
  assert all(np.isfinite(record['loss']) for record in run.history)
