"""Input: the only part of facejax that may import tensorflow, and lazily.

Importing this package imports no tensorflow; the tf.data pipelines import it
inside the functions that build them. The readers of insightface's formats
and the synthetic identity dataset are pure numpy.
"""
