"""facejax: face recognition training and evaluation in JAX/Flax.

Data flows facejax.data -> facejax.models -> facejax.losses -> the train step
and state -> checkpoints -> facejax.metrics. Importing this package imports
nothing heavy: subpackages are imported explicitly, and only facejax.data
touches tensorflow.
"""
__version__ = '0.1.0'
