"""The loss library of face recognition, as pure functions of arrays.

Every loss takes a batch and returns a scalar (its reduction is stated in its
docstring), computes in float32 (or wider), is jit-compatible, and has finite
gradients at coincident embeddings and at cos(theta) = +-1. See README.md for
the equations and conventions in one place.
"""
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
    'arcface_loss', 'batch_all_triplet_loss', 'batch_hard_triplet_loss',
    'center_loss', 'contrastive_loss', 'cosface_loss', 'inter_loss',
    'intra_loss', 'l2_normalize', 'lifted_structure_loss',
    'margin_softmax_loss', 'margin_target_cosine', 'pairwise_distances',
    'quintuplet_indices', 'Quintuplets', 'safe_norm', 'softmax_cross_entropy',
    'sphereface_lambda', 'sphereface_loss', 'triple_header_hinge_loss',
]
