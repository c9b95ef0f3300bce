"""An embedded synthetic face-identity dataset, drawn procedurally in numpy.

Real face datasets cannot ship with the code, so the default dataset of the
main training job is drawn here: cartoon faces whose identity is a fixed set of
random factors and whose every image adds random nuisance.

* **Identity** (fixed per identity): face shape (ellipse axes, jaw and chin),
  proportions (eye spacing and height, nose length, mouth width and lips),
  colouring (skin tone, hair colour, hair volume and hairline, eye colour,
  eyebrow thickness and shape) and distinguishing features (a mole, glasses,
  a beard, a moustache or a goatee).
* **Nuisance** (drawn per image): pose (translation, in-plane rotation, scale
  and a yaw-like shift of the inner features), background and clothes colour,
  expression (smile, mouth opening, eyebrow raise, eye openness, gaze),
  illumination (brightness, contrast, colour cast and a directional
  gradient), an occluding rectangle of random colour, gaussian blur and pixel
  noise. It is strong enough that raw pixels verify identities poorly
  (``python -m bench.synthetic_separability``: their cosine near 0.64 on
  held-out pairs, a small trained network near 0.90) while the identity
  stays visible.

Determinism: the same (seed, identity, index) always gives the same image,
whatever else is requested with it and in whatever order (each factor dict
has its own seed stream, and rendering is exact per image however the
images are batched). Speed: about 500 images/s at 112x112 on one core of
the 2-core development machine (``python -m bench.synthetic_separability
--baseline-only`` prints it). Training identities conventionally start at 0
and evaluation identities at ``EVAL_FIRST_IDENTITY``, so the two never
overlap.

The package, in the order an image is made:

* :mod:`~facejax.data.synthetic.factors`: an identity's and an image's
  random factors, from their seed streams;
* :mod:`~facejax.data.synthetic.rendering`: faces drawn from their factors
  (signed distances, soft coverage, painter's order, blur, noise);
* :mod:`~facejax.data.synthetic.generation`: images of (identity, index),
  labelled sets and verification pairs;
* :mod:`~facejax.data.synthetic.export`: PNG image folders, contact sheets
  and the command line (``python -m facejax.data.synthetic export|sheet``).

Everything public is importable from here (``synthetic.generate(...)``).
"""
from facejax.data.synthetic.export import contact_sheet
from facejax.data.synthetic.export import encode_png
from facejax.data.synthetic.export import export_image_folder
from facejax.data.synthetic.export import identity_name
from facejax.data.synthetic.export import main
from facejax.data.synthetic.factors import HAIR_PALETTE
from facejax.data.synthetic.factors import IDENTITY_STREAM
from facejax.data.synthetic.factors import IMAGE_STREAM
from facejax.data.synthetic.factors import PAIR_STREAM
from facejax.data.synthetic.factors import identity_params
from facejax.data.synthetic.factors import neutral_nuisance
from facejax.data.synthetic.factors import nuisance_params
from facejax.data.synthetic.generation import EVAL_FIRST_IDENTITY
from facejax.data.synthetic.generation import generate
from facejax.data.synthetic.generation import generate_image
from facejax.data.synthetic.generation import generate_images
from facejax.data.synthetic.generation import pair_list
from facejax.data.synthetic.generation import verification_pairs
from facejax.data.synthetic.rendering import IMAGE_SIZE
from facejax.data.synthetic.rendering import render
from facejax.data.synthetic.rendering import render_batch

__all__ = [
    'EVAL_FIRST_IDENTITY', 'HAIR_PALETTE', 'IDENTITY_STREAM', 'IMAGE_SIZE',
    'IMAGE_STREAM', 'PAIR_STREAM', 'contact_sheet', 'encode_png',
    'export_image_folder', 'generate', 'generate_image', 'generate_images',
    'identity_name', 'identity_params', 'main', 'neutral_nuisance',
    'nuisance_params', 'pair_list', 'render', 'render_batch',
    'verification_pairs',
]
