"""Synthetic faces drawn from their factors: batched, per-image exact.

Every shape is a signed distance ``d`` (approximate, in face units,
negative inside, never above the true distance outside) on the pixel grid
mapped to face coordinates by the pose, turned into a soft coverage
``clip(0.5 - d / edge, 0, 1)`` about one pixel (``edge``) wide, and
alpha-blended in painter's order. Intersections are ``max`` of distances,
unions ``min``; eyes, eyebrows and glasses are drawn once on ``|x|``. All
per-pixel work is vectorised float32 numpy; nothing here imports tensorflow
or PIL.

Rendering is batched, but every step is per image: a shape is computed on
the union of the batch's windows, and its coverage is exactly zero outside
its own conservative bounding box, so the bytes do not depend on the batch
(tests check this, and that drawing every shape on the whole image changes
no byte). Bytes are reproducible on one machine and numpy build; another
CPU or BLAS could round the blur's matrix products differently and move a
rare pixel by one level.

Speed: rare features (beards, moles, glasses) are drawn on the images that
have them only; the blur multiplies by banded matrices in blocks small
enough to stay single-threaded in OpenBLAS; and the noise indexes a table
of normal quantiles with random bytes.

Face coordinates: x to the right, y down, the image spans [-1, 1] in both
when the pose is the identity; the face is roughly centred, chin near
y = 0.85, eyes near y = -0.1.
"""
import copy
import functools
import math
import statistics

import numpy as np

IMAGE_SIZE = 112
# Images with a smaller blur sigma (pixels) are not blurred.
_MIN_BLUR = 0.3
_BLUR_BLOCK = 16
# Tests set this to draw every shape on the whole image: the windows must
# not change a byte.
_FULL_WINDOWS = False

# Palettes of the drawn details (RGB in [0, 1]; the identity's own colours
# are factors).
_MOLE = np.array([0.28, 0.16, 0.10])
_SCLERA = np.array([0.96, 0.95, 0.92])
# Pixel noise: 256 equiprobable normal quantiles indexed by random bytes, a
# gaussian to within its 1/256 steps at a quarter of standard_normal's cost.
_NORMAL_QUANTILES = np.array(
    [statistics.NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)],
    np.float32)
_MOUTH_INSIDE = np.array([0.28, 0.06, 0.07])
_TEETH = np.array([0.95, 0.93, 0.86])


def _stack(dicts):
  """Stacks parameter dicts: floats -> (B, 1, 1), RGB -> (B, 3) float32."""
  out = {}
  for key in dicts[0]:
    if key == 'noise_seed':
      continue
    value = np.asarray([d[key] for d in dicts], np.float32)
    out[key] = value if value.ndim == 2 else value[:, None, None]
  return out


def _coverage(d, edge):
  """Soft coverage of the region d < 0, ``edge`` wide: 0 where d >= edge / 2."""
  alpha = d * (-1 / edge)
  alpha += 0.5
  return np.clip(alpha, 0, 1, out=alpha)


def _ellipse(x, y, cx, cy, a, b):
  """(r - 1) * min(a, b): at most the true distance outside the ellipse."""
  r = np.sqrt(np.square((x - cx) / a) + np.square((y - cy) / b))
  return (r - 1) * np.minimum(a, b)


def _thin_ellipse(x, y, cx, cy, a, b):
  """(r - 1) / |grad r|: even edges on thin ellipses, >= :func:`_ellipse`."""
  u, v = (x - cx) / a, (y - cy) / b
  r = np.sqrt(np.square(u) + np.square(v))
  slope = np.sqrt(np.square(u / a) + np.square(v / b))
  return (r - 1) * np.maximum(r, 1e-6) / np.maximum(slope, 1e-6)


def _eye_ellipse(x, y, cx, cy, a, b):
  """:func:`_thin_ellipse` cut to its bounding box, which bounds it tightly."""
  d = _thin_ellipse(x, y, cx, cy, a, b)
  np.maximum(d, np.abs(x - cx) - a, out=d)
  return np.maximum(d, np.abs(y - cy) - b, out=d)


def _ellipse_box(cx, cy, a, b, margin):
  """Bounds of {_ellipse < margin}: the ellipse scaled by 1 + m / min(a, b).

  Since ``_thin_ellipse >= _ellipse`` outside, they also bound it.
  """
  grow = 1 + margin / np.minimum(a, b)
  return cx - a * grow, cx + a * grow, cy - b * grow, cy + b * grow


def _union(*boxes):
  return (np.minimum.reduce([b[0] for b in boxes]),
          np.maximum.reduce([b[1] for b in boxes]),
          np.minimum.reduce([b[2] for b in boxes]),
          np.maximum.reduce([b[3] for b in boxes]))


def _intersect(box, within):
  """The overlap of ``box`` with ``within``; always inside ``within``."""
  return (np.minimum(np.maximum(box[0], within[0]), within[1]),
          np.maximum(np.minimum(box[1], within[1]), within[0]),
          np.minimum(np.maximum(box[2], within[2]), within[3]),
          np.maximum(np.minimum(box[3], within[3]), within[2]))


def _mirror(box, shift):
  """The box in x of a shape drawn on |x - shift| with |x - shift| <= x1."""
  return shift - box[1], shift + box[1], box[2], box[3]


_ALL = slice(None)


class _Canvas:
  """A batch of images with face coordinates at every pixel.

  ``x``, ``y``: (B, H, W) face coordinates of the pixel centres under each
  image's pose; ``edge``: (B, 1, 1) one pixel in face units; ``pad``: three
  pixels, the margin every shape's box adds to its geometry (coverage is
  zero beyond ``edge`` outside a shape whose edge is at most two pixels soft);
  ``image``: (B, 3, H, W) float32 RGB, channel planes (numpy's inner loops
  then run along image rows, not over 3 channels). :meth:`subset` gives a
  canvas that draws on some of the images only.
  """

  def __init__(self, nuisance, size):
    self.size = size
    grid = ((np.arange(size, dtype=np.float32) + 0.5) * np.float32(2 / size)
            - 1)
    self.grid = grid
    n = nuisance
    self.pose = {'cos': np.cos(n['rotation']), 'sin': np.sin(n['rotation']),
                 'tx': n['tx'], 'ty': n['ty'], 'scale': n['scale']}
    du = grid[None, None, :] - n['tx']
    dv = grid[None, :, None] - n['ty']
    c, s = self.pose['cos'], self.pose['sin']
    self.x = (c * du + s * dv) / n['scale']
    self.y = (c * dv - s * du) / n['scale']
    self.edge = np.float32(2 / size) / n['scale']
    self.pad = 3 * self.edge
    self.image = np.empty((len(n['scale']), 3, size, size), np.float32)
    self.images = _ALL
    self.fields = {}

  def subset(self, weights):
    """The canvas of the images whose weight is > 0, or None if none is."""
    mask = np.asarray(weights).reshape(-1) > 0
    if mask.all():
      return self
    if not mask.any():
      return None
    sub = copy.copy(self)
    sub.images = np.flatnonzero(mask)
    sub.pose = {k: v[sub.images] for k, v in self.pose.items()}
    sub.edge, sub.pad = self.edge[sub.images], self.pad[sub.images]
    return sub

  def take(self, params):
    """``params`` (a dict of batched arrays) for this canvas's images."""
    return params if self.images is _ALL else _Taken(
        params, self.images)

  def window(self, box):
    """The pixel window covering face-coordinate ``box`` in every image.

    A shape's coverage must be exactly 0 outside its box: the window is the
    union over the batch, and what an image gets must not depend on it.

    Args:
      box: (x0, x1, y0, y1), each broadcastable to (B, 1, 1).

    Returns:
      (row slice, column slice), or None when empty.
    """
    if _FULL_WINDOWS:
      return slice(None), slice(None)
    pose = self.pose
    shape = pose['scale'].shape
    x0, x1, y0, y1 = (np.broadcast_to(b, shape) for b in box)
    fx = np.stack([x0, x1, x0, x1])
    fy = np.stack([y0, y0, y1, y1])
    u = pose['scale'] * (pose['cos'] * fx - pose['sin'] * fy) + pose['tx']
    v = pose['scale'] * (pose['sin'] * fx + pose['cos'] * fy) + pose['ty']
    half = self.size / 2
    c0, c1 = (u.min() + 1) * half - 0.5, (u.max() + 1) * half - 0.5
    r0, r1 = (v.min() + 1) * half - 0.5, (v.max() + 1) * half - 0.5
    c0, r0 = max(0, math.floor(c0) - 1), max(0, math.floor(r0) - 1)
    c1 = min(self.size, math.ceil(c1) + 2)
    r1 = min(self.size, math.ceil(r1) + 2)
    if c0 >= c1 or r0 >= r1:
      return None
    return slice(r0, r1), slice(c0, c1)

  def coords(self, window):
    """x, y on the window and the edge width, all for this canvas's images."""
    rows, cols = window
    return self.x[self.images, rows, cols], self.y[self.images, rows,
                                                   cols], self.edge

  def keep(self, name, window, field):
    """Keeps a field computed on the whole batch for later shapes."""
    self.fields[name] = window, field

  def kept(self, name, window):
    """Kept field ``name`` on ``window``, which must lie inside its own."""
    outer, field = self.fields[name]
    (r0, r1, _), (c0, c1, _) = (s.indices(self.size) for s in window)
    (o0, o1, _), (p0, p1, _) = (s.indices(self.size) for s in outer)
    if not (o0 <= r0 and r1 <= o1 and p0 <= c0 and c1 <= p1):
      raise AssertionError(f'window {window} is not inside {outer}')
    return field[self.images, r0 - o0:r1 - o0, c0 - p0:c1 - p0]

  def paint(self, window, d, colour, soft=1, weight=None):
    """Blends ``colour`` over the region ``d < 0`` of the window.

    Args:
      window: from :meth:`window`.
      d: (B, h, w) signed distance (face units) on the window.
      colour: (3,) or (B, 3) RGB.
      soft: edge width in pixels (at most 2: see ``pad``).
      weight: optional opacity, a float or (B, 1, 1).
    """
    alpha = _coverage(d, self.edge * soft)
    if weight is not None:
      alpha *= weight
    index = (self.images, slice(None)) + tuple(window)
    view = self.image[index]
    colour = np.asarray(colour, np.float32)
    change = colour.reshape(colour.shape + (1, 1)) - view
    change *= alpha[:, None]
    view += change
    if self.images is not _ALL:
      self.image[index] = view  # a copy: write it back


class _Taken:
  """Read-only view of batched parameters at some images, indexed lazily."""

  def __init__(self, params, images):
    self._params, self._images = params, images

  def __getitem__(self, key):
    return self._params[key][self._images]


def _draw_background(canvas, n):
  """A vertical gradient between two colours."""
  t = (canvas.grid[:, None] + 1) / 2
  top = n['bg_top'][:, :, None, None]
  bottom = n['bg_bottom'][:, :, None, None]
  canvas.image[:] = top + (bottom - top) * t


def _draw_body(canvas, p, n):
  """Clothes, neck and ears: what lies behind the face."""
  fa, fb, cy = p['face_a'], p['face_b'], p['face_cy']
  pad = canvas.pad
  # Clothes: a wide ellipse below the chin.
  ccy, ca, cb = cy + fb + 0.5, fa * 1.9, 0.5
  w = canvas.window(_ellipse_box(0, ccy, ca, cb, pad))
  if w:
    x, y, e = canvas.coords(w)
    canvas.paint(w, _ellipse(x, y, 0, ccy, ca, cb), n['clothes'])
  # Neck: a column from mid-face down.
  half = fa * 0.45
  top = cy + 0.2
  w = canvas.window((-half - pad, half + pad, top - pad, top + 10))
  if w:
    x, y, e = canvas.coords(w)
    d = np.maximum(np.abs(x) - half, top - y)
    canvas.paint(w, d, p['skin'] * 0.78)
  # Ears at the sides of the face, one window each.
  ea, eb = 0.065 * p['ear_size'], 0.12 * p['ear_size']
  ex, ey = fa * 0.97, cy + p['eye_y'] + 0.08
  box = _ellipse_box(ex, ey, ea, eb, pad)
  for side in (-1, 1):
    w = canvas.window((side * box[0], side * box[1]) + box[2:])
    if w:
      x, y, e = canvas.coords(w)
      canvas.paint(w, _ellipse(x * side, y, ex, ey, ea, eb), p['skin'] * 0.9)


def _face_distance(x, y, p):
  """Distance-like field of the face: an ellipse narrowed below its centre."""
  fa, fb, cy = p['face_a'], p['face_b'], p['face_cy']
  v = (y - cy) / fb
  t = np.square(np.clip(v, 0, 1))
  # The half-width fa * (1 - jaw2 * t - jaw4 * t^2), t = v^2 below centre.
  a = fa - t * (fa * p['jaw2'] + fa * p['jaw4'] * t)
  r = np.sqrt(np.square(x / a) + np.square(v))
  # The narrowest half-axis keeps this below the true outside distance.
  return (r - 1) * np.minimum(fa * (1 - p['jaw2'] - p['jaw4']), fb)


def _hair_distance(x, y, cy, a, b):
  """Like :func:`_ellipse` above ``cy``, a vertical strip |x| < a below."""
  r = np.sqrt(np.square(x / a) + np.square(np.minimum(y - cy, 0) / b))
  return (r - 1) * np.minimum(a, b)


def _face_box(p, margin):
  """Bounds of {_face_distance < margin}: inside the scaled plain ellipse."""
  fa, fb = p['face_a'], p['face_b']
  grow = 1 + margin / np.minimum(fa * (1 - p['jaw2'] - p['jaw4']), fb)
  cy = p['face_cy']
  return -fa * grow, fa * grow, cy - fb * grow, cy + fb * grow


def _draw_head(canvas, p, n):
  """Face and hair.

  The hair is one layer over the face. Its outline is the upper half of an
  ellipse continued straight down (:func:`_hair_distance`); it shows down to
  ``hair_bottom`` where it is not face, and above the hairline where it is.
  The face distance is kept for the beard kinds.
  """
  pad, cy = canvas.pad, p['face_cy']
  ha = p['face_a'] + p['hair_volume'] + p['hair_width']
  hb = p['face_b'] + p['hair_volume'] * 1.3
  bottom = cy + p['hair_bottom']
  hair_box = _ellipse_box(0, cy, ha, hb, pad)
  hair_box = hair_box[:3] + (np.maximum(bottom, cy + 0.1) + pad,)
  head = canvas.window(_union(_face_box(p, pad), hair_box))
  x, y, e = canvas.coords(head)
  face = _face_distance(x, y, p)
  canvas.paint(head, face, p['skin'])
  canvas.keep('face', head, face)
  present = 1 - p['bald']
  if not present.any():
    return
  # The hairline falls at the temples, to cheekbone height at most.
  xr = x / p['face_a']
  line = np.minimum(cy + 0.1, cy + p['hairline'] + p['hair_slope'] * xr
                    + p['hair_side'] * np.square(np.square(xr)))
  outline = _hair_distance(x, y, cy, ha, hb)
  back = np.maximum(outline, y - bottom)
  d = np.minimum(np.maximum(back, -face), np.maximum(outline, y - line))
  canvas.paint(head, d, p['hair'], weight=present)


def _mouth_y(p):
  return p['face_cy'] + p['eye_y'] + p['nose_len'] + p['mouth_gap']


def _draw_beard(canvas, p, n):
  """Full beard: the face below a line that climbs at the sides."""
  face_box = _face_box(p, canvas.pad)
  top = p['face_cy'] + p['eye_y'] + p['nose_len'] + p['beard_top']
  reach = (face_box[1] + np.abs(n['yaw'])) / p['face_a']
  w = canvas.window(_intersect(
      (face_box[0], face_box[1],
       top - p['beard_side'] * np.square(reach) - canvas.pad, face_box[3]),
      face_box))
  if w:
    x, y, e = canvas.coords(w)
    xr = (x - n['yaw']) / p['face_a']
    d = np.maximum(canvas.kept('face', w),
                   top - p['beard_side'] * np.square(xr) - y)
    canvas.paint(w, d, p['hair'], soft=2, weight=p['beard'])


def _draw_moustache(canvas, p, n):
  """A band above the upper lip, thinner at its ends."""
  pad, mx, mw = canvas.pad, n['yaw'], p['mouth_w']
  half = mw + 0.04
  base = _mouth_y(p) - n['mouth_open'] - p['lip_upper'] - 0.028
  qmax = np.square(1 + pad / half)
  w = canvas.window((mx - half - pad, mx + half + pad, base - 0.022 - pad,
                     base + 0.02 * qmax + 0.022 + pad))
  if w:
    x, y, e = canvas.coords(w)
    mq = np.square((x - mx) / half)
    d = np.maximum(np.abs(y - base - 0.02 * mq) - 0.022 * (1 - 0.5 * mq),
                   np.abs(x - mx) - half)
    canvas.paint(w, d, p['hair'], soft=2, weight=p['moustache'])


def _draw_goatee(canvas, p, n):
  """An ellipse on the chin, inside the face."""
  goatee = (n['yaw'], _mouth_y(p) + 0.1, p['mouth_w'] * 0.75, 0.14)
  w = canvas.window(_intersect(_ellipse_box(*goatee, canvas.pad),
                               _face_box(p, canvas.pad)))
  if w:
    x, y, e = canvas.coords(w)
    d = np.maximum(_ellipse(x, y, *goatee), canvas.kept('face', w))
    canvas.paint(w, d, p['hair'], soft=2, weight=p['goatee'])


def _draw_eyes(canvas, p, n):
  """Eyes (sclera, iris, pupil, lash line) and eyebrows, drawn on |x|."""
  pad, yaw = canvas.pad, n['yaw']
  ex, ey = p['eye_dx'], p['face_cy'] + p['eye_y']
  ew = p['eye_w']
  eh = np.maximum(p['eye_h'] * n['eye_open'], 0.008)
  lash = 0.008
  reach = lash + pad
  w = canvas.window(_mirror((0, ex + ew + reach, ey - eh - reach,
                             ey + eh + reach), yaw))
  x, y, e = canvas.coords(w)
  xin = x - yaw
  ax = np.abs(xin)
  sclera = _eye_ellipse(ax, y, ex, ey, ew, eh)
  canvas.paint(w, sclera, _SCLERA * 0.85 + p['skin'] * 0.15)
  ir = p['iris_r'] * p['eye_h']
  radius = np.sqrt(np.square(ax - ex - n['gaze_x'] * ew * np.sign(xin))
                   + np.square(y - ey - n['gaze_y'] * p['eye_h']))
  canvas.paint(w, np.maximum(radius - ir, sclera), p['iris'])
  canvas.paint(w, np.maximum(radius - ir * 0.45, sclera), np.zeros(3))
  lid = np.maximum(np.abs(sclera) - lash, (y - ey) - eh * 0.3)
  canvas.paint(w, lid, p['brow'] * 0.5)
  # Eyebrows: tapered bands along a slanted arch above each eye.
  by = ey - p['brow_gap'] - n['brow_raise']
  bl, bt = p['brow_len'], p['brow_t']
  bx = ex + 0.02
  qmax = 1 + pad / bl
  reach = (p['brow_arch'] * np.maximum(1, np.square(qmax) - 1)
           + np.abs(p['brow_slant']) * bl * qmax + bt + pad)
  w = canvas.window(_mirror((0, bx + bl + pad, by - reach, by + reach), yaw))
  x, y, e = canvas.coords(w)
  q = (np.abs(x - yaw) - bx) / bl
  line = by - p['brow_arch'] * (1 - np.square(q)) - p['brow_slant'] * bl * q
  d = np.maximum(np.abs(y - line) - bt * (1 - 0.4 * np.square(q)),
                 (np.abs(q) - 1) * bl)
  canvas.paint(w, d, p['brow'], soft=1.5)


def _draw_nose(canvas, p, n):
  """Nose: a shaded side line, the arc of the tip and two nostrils."""
  pad = canvas.pad
  ey = p['face_cy'] + p['eye_y']
  ny = ey + p['nose_len']
  nx = n['yaw'] * 1.4
  nw = p['nose_w']
  skin = p['skin']
  nostril = (nw * 0.5, ny - 0.004, nw * 0.32, 0.014)
  arc_x = nw * 0.9 + pad
  box = _union(
      (nx + nw * 0.55 - 0.008 - pad, nx + nw * 0.55 + 0.008 + pad,
       ey + 0.06 - pad, ny - 0.03 + pad),
      (nx - arc_x, nx + arc_x, ny + 0.006 - 4 * np.square(arc_x) - pad,
       ny + 0.018 + pad),
      _mirror(_ellipse_box(*nostril, pad), nx))
  w = canvas.window(box)
  x, y, e = canvas.coords(w)
  xn = x - nx
  side = np.maximum(np.abs(xn - nw * 0.55) - 0.008,
                    np.maximum(ey + 0.06 - y, y - ny + 0.03))
  canvas.paint(w, side, skin * 0.6, soft=2, weight=0.35)
  arc = np.maximum(np.abs(y - (ny + 0.012 - 4 * np.square(xn))) - 0.006,
                   np.abs(xn) - nw * 0.9)
  canvas.paint(w, arc, skin * 0.6, soft=1.5, weight=0.6)
  nostrils = _ellipse(np.abs(xn), y, *nostril)
  canvas.paint(w, nostrils, skin * 0.4, soft=1.5, weight=0.8)


def _draw_mouth(canvas, p, n):
  """Lips around a centre line whose ends rise with the smile.

  An open mouth shows its dark inside and the upper teeth.
  """
  pad, mx = canvas.pad, n['yaw']
  my, mw = _mouth_y(p), p['mouth_w']
  opening = n['mouth_open']
  lu, ll = p['lip_upper'], p['lip_lower']
  shift, thick = (ll - lu) / 2, opening + (lu + ll) / 2
  qmax = 1 + pad / mw
  reach = np.abs(n['smile']) * np.square(qmax) + np.abs(shift) + thick + pad
  w = canvas.window((mx - mw - pad, mx + mw + pad, my - reach, my + reach))
  x, y, e = canvas.coords(w)
  q = (x - mx) / mw
  profile = np.sqrt(np.clip(1 - np.square(q), 0, 1))
  centre = my - n['smile'] * np.square(q)
  ends = (np.abs(q) - 1) * mw
  lips = np.maximum(np.abs(y - centre - shift * profile) - thick * profile,
                    ends)
  canvas.paint(w, lips, p['lips'])
  inside = np.maximum(np.abs(y - centre) - opening * profile, ends)
  canvas.paint(w, inside, _MOUTH_INSIDE)
  teeth = np.maximum(inside, y - centre + opening * profile * 0.3)
  canvas.paint(w, teeth, _TEETH, weight=(opening > 0.01))
  line = np.maximum(np.abs(y - centre) - 0.005, ends + 0.01)
  canvas.paint(w, line, p['lips'] * 0.45, weight=0.7)


def _draw_mole(canvas, p, n):
  """A small dark disc at a fixed place on the face."""
  mole = (p['mole_x'] + n['yaw'], p['face_cy'] + p['mole_y'], p['mole_r'],
          p['mole_r'])
  w = canvas.window(_ellipse_box(*mole, canvas.pad))
  if w:
    x, y, e = canvas.coords(w)
    canvas.paint(w, _ellipse(x, y, *mole), _MOLE, soft=1.5, weight=p['mole'])


def _draw_glasses(canvas, p, n):
  """Lens tint (dark for sunglasses), frames, bridge and arms, on |x|."""
  pad, yaw = canvas.pad, n['yaw']
  ex, ey = p['eye_dx'], p['face_cy'] + p['eye_y']
  rx = p['eye_w'] * p['glasses_rx']
  ry = rx * p['glasses_ry']
  t = p['glasses_t']
  outer = p['face_a'] * 1.02
  box = _ellipse_box(ex, ey, rx, ry, t + pad)
  w = canvas.window(_mirror((0, np.maximum(box[1], outer + pad)) + box[2:],
                            yaw))
  if not w:
    return
  x, y, e = canvas.coords(w)
  ax = np.abs(x - yaw)
  lens = _thin_ellipse(ax, y, ex, ey, rx, ry)
  tint = p['glasses'] * (0.12 + 0.76 * p['glasses_dark'])
  canvas.paint(w, lens, p['frame'] * 0.3, weight=tint)
  frame = np.abs(lens) - t
  level = np.abs(y - ey + ry * 0.3)
  bridge = np.maximum(level - t * 0.8, ax - (ex - rx * 0.9))
  arm = np.maximum(level - t * 0.7,
                   np.maximum(ex + rx * 0.9 - ax, ax - outer))
  d = np.minimum(frame, np.minimum(bridge, arm))
  canvas.paint(w, d, p['frame'], weight=p['glasses'])


def _draw_where(canvas, p, n, key, draw):
  """Draws with ``draw`` only on the images whose ``p[key]`` is > 0."""
  sub = canvas.subset(p[key])
  if sub is not None:
    draw(sub, sub.take(p), sub.take(n))


def _draw_occluder(canvas, n):
  """A flat rectangle of random colour in image coordinates."""
  size = canvas.size
  boxes = np.rint((n['occ_box'] + 1) * size / 2).astype(int)
  boxes = np.clip(boxes, 0, size)
  for b in np.flatnonzero(n['occluded'].reshape(-1) > 0):
    c0, r0, c1, r1 = boxes[b]
    canvas.image[b, :, r0:r1, c0:c1] = n['occ_colour'][b][:, None, None]


def _light(canvas, n):
  """Brightness, directional gradient, colour cast and contrast.

  Also maps [0, 1] to [0.5, 255.5], so that truncation to uint8 rounds.
  """
  g = canvas.grid
  field = n['brightness'] * (
      1 + n['light_strength'] * (n['light_u'] * g[None, None, :]
                                 + n['light_v'] * g[None, :, None]))
  gain = (n['gains'] * (255 * n['contrast'][:, :, 0]))[:, :, None, None]
  canvas.image *= field[:, None] * gain
  canvas.image += 127.5 * (1 - n['contrast'][:, None]) + 0.5


def _blur_radius(sigma, size):
  return min(size - 1, math.ceil(3 * sigma))


@functools.lru_cache(maxsize=256)
def _blur_matrix(sigma, size):
  """(size, size) gaussian blur along one axis, rows renormalised at borders."""
  radius = _blur_radius(sigma, size)
  offsets = np.arange(-radius, radius + 1)
  taps = np.zeros(2 * size - 1)
  taps[size - 1 - radius:size + radius] = np.exp(
      -0.5 * np.square(offsets / sigma))
  matrix = taps[np.arange(size)[None, :] - np.arange(size)[:, None]
                + size - 1]
  return (matrix / matrix.sum(axis=1, keepdims=True)).astype(np.float32)


def _blur(image, sigmas):
  """Separable gaussian blur of (B, 3, H, W) images, one sigma each.

  The blur matrices are banded: blocks of ``_BLUR_BLOCK`` output rows take
  only the input rows within the kernel radius. Small products are also
  below OpenBLAS's threading threshold, so no BLAS thread spins.
  """
  size = image.shape[2]
  for b in np.flatnonzero(sigmas >= _MIN_BLUR):
    sigma = float(sigmas[b])
    k, radius = _blur_matrix(sigma, size), _blur_radius(sigma, size)
    planes, rows = image[b], np.empty_like(image[b])
    for start in range(0, size, _BLUR_BLOCK):
      stop = min(size, start + _BLUR_BLOCK)
      low, high = max(0, start - radius), min(size, stop + radius)
      np.matmul(planes[:, :, low:high], k.T[low:high, start:stop],
                out=rows[:, :, start:stop])
    for start in range(0, size, _BLUR_BLOCK):
      stop = min(size, start + _BLUR_BLOCK)
      low, high = max(0, start - radius), min(size, stop + radius)
      np.matmul(k[start:stop, low:high], rows[:, low:high, :],
                out=planes[:, start:stop, :])


def _render(identities, nuisances, image_size):
  """Draws a batch: float32 (B, 3, H, W) in [0, 255.5], to truncate."""
  if len(identities) != len(nuisances) or not identities:
    raise ValueError(
        f'need as many identities as nuisances (>= 1), got {len(identities)} '
        f'and {len(nuisances)}')
  if image_size < 8:
    raise ValueError(f'image_size must be >= 8, got {image_size}')
  p, n = _stack(identities), _stack(nuisances)
  canvas = _Canvas(n, image_size)
  _draw_background(canvas, n)
  _draw_body(canvas, p, n)
  _draw_head(canvas, p, n)
  _draw_where(canvas, p, n, 'beard', _draw_beard)
  _draw_where(canvas, p, n, 'moustache', _draw_moustache)
  _draw_where(canvas, p, n, 'goatee', _draw_goatee)
  _draw_eyes(canvas, p, n)
  _draw_nose(canvas, p, n)
  _draw_mouth(canvas, p, n)
  _draw_where(canvas, p, n, 'mole', _draw_mole)
  _draw_where(canvas, p, n, 'glasses', _draw_glasses)
  _draw_occluder(canvas, n)
  _light(canvas, n)
  image = canvas.image
  _blur(image, n['blur'].reshape(-1))
  for b, nuisance in enumerate(nuisances):
    if nuisance['noise'] > 0:
      levels = np.random.default_rng(nuisance['noise_seed']).integers(
          0, 256, image.shape[2:], np.uint8)
      noise = np.take(_NORMAL_QUANTILES, levels)
      noise *= 255 * n['noise'][b]
      image[b] += noise  # the same in all channels, as luminance noise
  return np.clip(image, 0, 255.5, out=image)


def render_batch(identities, nuisances, image_size=IMAGE_SIZE):
  """Draws a batch of faces.

  Args:
    identities: sequence of :func:`facejax.data.synthetic.factors.
      identity_params` dicts.
    nuisances: sequence of :func:`facejax.data.synthetic.factors.
      nuisance_params` dicts, same length.
    image_size: side of the square images in pixels.

  Returns:
    uint8 array (B, image_size, image_size, 3).
  """
  image = _render(identities, nuisances, image_size)
  # Truncating [0.5, 255.5] to uint8 rounds.
  return image.transpose(0, 2, 3, 1).astype(np.uint8)


def render(identity, nuisance, image_size=IMAGE_SIZE):
  """Draws one face: uint8 (image_size, image_size, 3)."""
  return render_batch([identity], [nuisance], image_size)[0]
