"""Evaluation metrics: pure numpy/JAX, no tensorflow."""
