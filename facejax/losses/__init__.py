"""The loss library of face recognition, as pure functions of arrays.

Its headline is class parallelism (:mod:`facejax.losses.class_parallel`):
softmax, ArcFace, CosFace, the combined margin and SphereFace over millions of
identities, with the class weights W (D, C) split by columns over the mesh's
``'model'`` axis. Each device computes only its slice of the logits and the
softmax is assembled with collectives, so neither the full logits nor W is
ever on one device (Partial FC samples a share of the columns on top); values
and gradients match the single-device losses below to 1e-5.

Every loss takes a batch and returns a scalar (its reduction is stated in its
docstring), computes in float32 (or wider), is jit-compatible, and has finite
gradients at coincident embeddings and at cos(theta) = +-1. See README.md for
the equations and conventions in one place.

What users import is ``__all__`` below: the single-device losses and their
reusable pieces by name, and two modules, ``class_parallel`` (the sharded
losses, named like the single-device ones) and ``attributes`` (the
face-attribute losses). Each module's own ``__all__`` also names what its
sibling modules build on (``labels``, ``reductions``, ``distances``); a
leading underscore marks a helper private to its module.
"""
from facejax.losses import attributes
from facejax.losses import class_parallel
from facejax.losses.center import center_loss
from facejax.losses.contrastive import contrastive_loss
from facejax.losses.distances import l2_normalize
from facejax.losses.distances import pairwise_distances
from facejax.losses.distances import safe_norm
from facejax.losses.lmle import quintuplet_indices
from facejax.losses.lmle import Quintuplets
from facejax.losses.lmle import triple_header_hinge_loss
from facejax.losses.margin import arcface_loss
from facejax.losses.margin import cosface_loss
from facejax.losses.margin import inter_loss
from facejax.losses.margin import intra_loss
from facejax.losses.margin import margin_softmax_loss
from facejax.losses.margin import margin_target_cosine
from facejax.losses.softmax import softmax_cross_entropy
from facejax.losses.sphereface import sphereface_lambda
from facejax.losses.sphereface import sphereface_loss
from facejax.losses.triplet import batch_all_triplet_loss
from facejax.losses.triplet import batch_hard_triplet_loss
from facejax.losses.triplet import lifted_structure_loss

__all__ = [
    'arcface_loss', 'attributes', 'batch_all_triplet_loss',
    'batch_hard_triplet_loss', 'center_loss', 'class_parallel',
    'contrastive_loss', 'cosface_loss', 'inter_loss', 'intra_loss',
    'l2_normalize', 'lifted_structure_loss', 'margin_softmax_loss',
    'margin_target_cosine', 'pairwise_distances', 'quintuplet_indices',
    'Quintuplets', 'safe_norm', 'softmax_cross_entropy', 'sphereface_lambda',
    'sphereface_loss', 'triple_header_hinge_loss',
]
