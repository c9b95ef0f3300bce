"""The random factors of a synthetic face: an identity's and an image's.

An identity is a fixed dict of factors (face shape, proportions,
colouring, distinguishing features) drawn from ``SeedSequence(seed,
spawn_key=(IDENTITY_STREAM, identity))``; an image adds a dict of nuisance
(pose, background, expression, illumination, occlusion, blur, noise) drawn
from ``SeedSequence(seed, spawn_key=(IMAGE_STREAM, identity, index))``. Each
comes from its own stream, so the same (seed, identity, index) gives the
same factors whatever else is drawn and in whatever order. The streams'
domain tags live together here, so they stay distinct.
"""
import bisect
import itertools
import math

import numpy as np

# Domain tags of the seed streams (SeedSequence spawn keys).
IDENTITY_STREAM = 0x1D
IMAGE_STREAM = 0x13A
PAIR_STREAM = 0x9A1

# Palettes (RGB in [0, 1]).
_SKIN_LIGHT = np.array([0.97, 0.82, 0.71])
_SKIN_DARK = np.array([0.33, 0.21, 0.14])
# The hair colours an identity draws from (black, dark brown, brown, blond,
# red, grey, white), public: the synthetic attributes name them
# (facejax.data.celeba).
HAIR_PALETTE = np.array([
    [0.06, 0.05, 0.05], [0.20, 0.12, 0.07], [0.38, 0.24, 0.13],
    [0.78, 0.63, 0.38], [0.62, 0.27, 0.10], [0.62, 0.60, 0.58],
    [0.90, 0.88, 0.84]])
_HAIR_P = np.array([0.3, 0.22, 0.16, 0.1, 0.07, 0.09, 0.06])
_IRIS = np.array([
    [0.25, 0.14, 0.07], [0.12, 0.07, 0.04], [0.25, 0.45, 0.70],
    [0.30, 0.50, 0.30], [0.50, 0.52, 0.55], [0.50, 0.38, 0.16]])
_FRAME = np.array([
    [0.05, 0.05, 0.05], [0.45, 0.25, 0.10], [0.75, 0.65, 0.30],
    [0.60, 0.10, 0.10], [0.15, 0.20, 0.55], [0.80, 0.80, 0.82]])


def check_index(value, what):
  """``value`` as an int >= 0, or a TypeError / ValueError naming ``what``."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)):
    raise TypeError(f'{what} must be an int, got {type(value).__name__}')
  if value < 0:
    raise ValueError(f'{what} must be >= 0, got {value}')
  return int(value)


def stream_rng(seed, *key):
  """The generator of stream ``key`` (ints >= 0) under ``seed``."""
  seed = check_index(seed, 'seed')
  key = tuple(check_index(k, 'identity/index') for k in key)
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _clamp(value, low, high):
  return min(max(value, low), high)


class _Draws:
  """One generator's numbers, drawn in two calls and handed out in order.

  Drawing some sixty scalars one numpy call each would cost a quarter of
  the rendering time. 80 uniforms and 24 normals cover either dict.
  """

  def __init__(self, rng, uniforms=80, normals=24):
    self._uniforms = iter(rng.random(uniforms).tolist())
    self._normals = iter(rng.standard_normal(normals).tolist())

  def uniform(self, low=0.0, high=1.0, size=None):
    """A float in [low, high), or a tuple of ``size`` of them."""
    if size is not None:
      return tuple(self.uniform(low, high) for _ in range(size))
    return low + (high - low) * next(self._uniforms)

  def normal(self, mean=0.0, sd=1.0, size=None):
    """A normal float, or a tuple of ``size`` of them."""
    if size is not None:
      return tuple(self.normal(mean, sd) for _ in range(size))
    return mean + sd * next(self._normals)

  def choice(self, weights):
    """An index drawn with probability proportional to ``weights``."""
    total = list(itertools.accumulate(weights))
    return min(bisect.bisect_right(total, self.uniform(0, total[-1])),
               len(total) - 1)

  def colour(self, palette, weights=None, jitter=0.04):
    """A palette colour, jittered."""
    if weights is None:
      weights = [1] * len(palette)
    return self.jitter(palette[self.choice(weights)], jitter)

  def jitter(self, colour, sd):
    """``colour`` plus normal noise, clipped to [0, 1]: a tuple."""
    return tuple(_clamp(float(c) + self.normal(0, sd), 0, 1) for c in colour)


def identity_params(seed, identity):
  """The fixed factors of one identity: a dict of floats and RGB colours.

  Args:
    seed: dataset seed (int >= 0).
    identity: identity number (int >= 0).

  Returns:
    A dict of floats (lengths in face units, see the module docstring) and
    RGB triples in [0, 1]; flags (``glasses``, ``mole``, ``bald``) are 0 or
    1 and the beard kinds (``beard``, ``moustache``, ``goatee``) 0 or their
    density.
  """
  r = _Draws(stream_rng(seed, IDENTITY_STREAM, identity))
  u = r.uniform
  p = {}
  p['face_a'] = u(0.5, 0.66)
  p['face_b'] = u(0.7, 0.86)
  p['face_cy'] = u(0.0, 0.08)
  p['jaw2'] = u(0.0, 0.35)
  p['jaw4'] = u(0.0, 0.35)
  tone = u() ** 1.2
  p['skin'] = r.jitter(_SKIN_LIGHT * (1 - tone) + _SKIN_DARK * tone, 0.025)
  p['ear_size'] = u(0.8, 1.2)
  p['hair'] = r.colour(HAIR_PALETTE, _HAIR_P)
  p['hair_volume'] = u(0.02, 0.16)
  p['hairline'] = u(-0.62, -0.2)
  p['hair_slope'] = u(-0.18, 0.18)
  p['hair_side'] = u(0.1, 0.6)
  p['hair_bottom'] = u(-0.2, 1.1)
  p['hair_width'] = u(0.0, 0.12)
  p['bald'] = float(u() < 0.08)
  p['eye_dx'] = u(0.22, 0.32)
  p['eye_y'] = u(-0.2, -0.05)
  p['eye_w'] = u(0.08, 0.12)
  p['eye_h'] = u(0.038, 0.058)
  p['iris'] = r.colour(_IRIS)
  p['iris_r'] = u(0.5, 0.75)
  p['brow'] = r.jitter(np.multiply(p['hair'], u(0.5, 0.9)), 0.02)
  p['brow_t'] = u(0.009, 0.03)
  p['brow_gap'] = u(0.07, 0.12)
  p['brow_len'] = u(0.09, 0.15)
  p['brow_arch'] = u(0.0, 0.05)
  p['brow_slant'] = u(-0.25, 0.25)
  p['nose_len'] = u(0.16, 0.3)
  p['nose_w'] = u(0.045, 0.085)
  p['mouth_gap'] = u(0.1, 0.19)
  p['mouth_w'] = u(0.11, 0.21)
  p['lip_upper'] = u(0.008, 0.025)
  p['lip_lower'] = u(0.012, 0.035)
  lips = (np.multiply(p['skin'], u(0.55, 0.8))
          + np.multiply((0.25, 0.02, 0.04), u(0.3, 1.0)))
  p['lips'] = tuple(min(float(c), 1.0) for c in lips)
  p['mole'] = float(u() < 0.4)
  p['mole_x'] = u(-0.4, 0.4)
  p['mole_y'] = u(-0.35, 0.45)
  p['mole_r'] = u(0.014, 0.028)
  p['glasses'] = float(u() < 0.25)
  p['glasses_dark'] = float(u() < 0.2)
  p['glasses_rx'] = u(1.35, 1.75)
  p['glasses_ry'] = u(0.55, 0.9)
  p['glasses_t'] = u(0.008, 0.02)
  p['frame'] = r.colour(_FRAME)
  kind = r.choice([0.6, 0.15, 0.1, 0.15])  # none, full, moustache, goatee
  density = u(0.6, 0.95)
  p['beard'] = density * (kind == 1)
  p['moustache'] = density * (kind in (1, 2, 3))
  p['goatee'] = density * (kind == 3)
  p['beard_top'] = u(0.06, 0.12)
  p['beard_side'] = u(0.0, 0.15)
  return p


def nuisance_params(seed, identity, index):
  """The per-image factors of image ``index`` of ``identity``: a dict.

  Args:
    seed: dataset seed (int >= 0).
    identity: identity number (int >= 0).
    index: image number within the identity (int >= 0).

  Returns:
    A dict of floats and RGB colours with the keys of
    :func:`neutral_nuisance`; ``noise_seed`` seeds the pixel noise.
  """
  r = _Draws(stream_rng(seed, IMAGE_STREAM, identity, index))
  u = r.uniform
  n = {}
  n['tx'] = _clamp(r.normal(0, 0.07), -0.18, 0.18)
  n['ty'] = _clamp(r.normal(0, 0.07), -0.18, 0.18)
  n['rotation'] = _clamp(r.normal(0, 0.14), -0.35, 0.35)
  n['scale'] = u(0.92, 1.18)
  n['yaw'] = u(-0.09, 0.09)
  n['bg_top'] = u(0, 1, 3)
  n['bg_bottom'] = tuple(_clamp(c + r.normal(0, 0.2), 0, 1)
                         for c in n['bg_top'])
  n['clothes'] = u(0, 1, 3)
  n['smile'] = u(-0.03, 0.05)
  n['mouth_open'] = u(0, 0.035) * (u() < 0.35)
  n['brow_raise'] = u(-0.015, 0.035)
  n['eye_open'] = 0.15 if u() < 0.08 else u(0.6, 1.15)
  n['gaze_x'] = u(-0.35, 0.35)
  n['gaze_y'] = u(-0.2, 0.2)
  n['occluded'] = float(u() < 0.3)
  cx, cy, hx, hy = u(-1, 1), u(-1, 1), u(0.1, 0.5), u(0.1, 0.5)
  n['occ_box'] = (cx - hx, cy - hy, cx + hx, cy + hy)
  n['occ_colour'] = u(0, 1, 3)
  n['brightness'] = u(0.6, 1.25)
  n['contrast'] = u(0.6, 1.2)
  n['gains'] = tuple(_clamp(r.normal(1, 0.07), 0.75, 1.25) for _ in range(3))
  angle = u(0, 2 * math.pi)
  n['light_u'] = math.cos(angle)
  n['light_v'] = math.sin(angle)
  n['light_strength'] = u(0.0, 0.5)
  # Quantised, so that the blur matrices can be cached.
  n['blur'] = round(u(0.5, 1.8), 2) if u() < 0.45 else 0.0
  n['noise'] = u(0.01, 0.06) if u() < 0.7 else 0.0
  n['noise_seed'] = int(u() * 2**53)
  return n


def neutral_nuisance():
  """Nuisance off: frontal, neutral, evenly lit, grey background, clean."""
  grey = np.full(3, 0.5)
  return {
      'tx': 0.0, 'ty': 0.0, 'rotation': 0.0, 'scale': 1.0, 'yaw': 0.0,
      'bg_top': grey, 'bg_bottom': grey, 'clothes': grey,
      'smile': 0.0, 'mouth_open': 0.0, 'brow_raise': 0.0, 'eye_open': 1.0,
      'gaze_x': 0.0, 'gaze_y': 0.0, 'occluded': 0.0,
      'occ_box': np.zeros(4), 'occ_colour': grey,
      'brightness': 1.0, 'contrast': 1.0, 'gains': np.ones(3),
      'light_u': 1.0, 'light_v': 0.0, 'light_strength': 0.0,
      'blur': 0.0, 'noise': 0.0, 'noise_seed': 0}
