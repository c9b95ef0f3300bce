"""Tiny probe and distractor sets of small integer features.

Scored unnormalised (``normalize=False``), every score is an exact integer
whatever the summation order, so a search must equal brute force exactly,
ties included.
"""
import numpy as np


def integer_set(seed=0, num_probes=24, num_identities=5, num_distractors=203,
                dim=6):
  rng = np.random.default_rng(seed)
  probes = rng.integers(-3, 4, (num_probes, dim)).astype(np.float32)
  ids = np.arange(num_probes) % num_identities
  distractors = rng.integers(-3, 4, (num_distractors, dim)).astype(
      np.float32)
  return probes, ids, distractors
