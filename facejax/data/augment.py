"""Training augmentation and normalisation, inside tf.data, reproducible.

Every random choice is a *stateless* TensorFlow op (``tf.image.stateless_*``,
``tf.random.stateless_uniform``) keyed by a per-example seed that the
pipeline derives from the run's seed and the example's position in the
stream, so the same seed gives the same images whatever the parallelism
(``AUTOTUNE``), and a resumed run sees exactly what an uninterrupted one
would.

The default is insightface's ArcFace recipe: a random horizontal flip and
nothing else. Crop/scale jitter and colour jitter are opt-in.

Normalisation maps uint8 pixels to [-1, 1]: ``x / 127.5 - 1`` (ArcFace and
insightface use ``(x - 127.5) / 128``, a 0.4% scale difference that the
first batch norm absorbs).
"""

import dataclasses

# Sub-seed streams: each augmentation draws from its own stream.
_FLIP, _CROP, _BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(6)


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Which augmentations a training pipeline applies.

  Attributes:
    flip: random horizontal flip with probability 1/2.
    min_crop_scale: crop/scale jitter: a square crop whose side is a uniform
      fraction in ``[min_crop_scale, 1]`` of the image side, at a uniform
      position, resized back to the image size. 1 turns it off.
    brightness: add a uniform delta in ``[-brightness, brightness]`` (on the
      [0, 1] scale). 0 turns it off.
    contrast: scale the contrast by a uniform factor in ``[1 - contrast,
      1 + contrast]``.
    saturation: scale the saturation likewise.
    hue: rotate the hue by a uniform delta in ``[-hue, hue]`` (fraction of
      the colour circle, at most 0.5).
  """
  flip: bool = True
  min_crop_scale: float = 1.0
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  hue: float = 0.0

  def __post_init__(self):
    if not 0 < self.min_crop_scale <= 1:
      raise ValueError(
          f'min_crop_scale must be in (0, 1], got {self.min_crop_scale}')
    for name in ('brightness', 'contrast', 'saturation'):
      value = getattr(self, name)
      if not 0 <= value < 1:
        raise ValueError(f'{name} must be in [0, 1), got {value}')
    if not 0 <= self.hue <= 0.5:
      raise ValueError(f'hue must be in [0, 0.5], got {self.hue}')

  @property
  def colour(self):
    return any((self.brightness, self.contrast, self.saturation, self.hue))


NO_AUGMENTATION = Augmentation(flip=False)


def _sub_seed(seed, stream):
  """A (2,) int32 seed for one augmentation from an example's (2,) seed."""
  tf = _tf()
  return tf.random.experimental.stateless_fold_in(seed, stream)


def random_crop_scale(image, seed, min_scale):
  """A random square crop of side ``s * size``, resized back to ``size``.

  Args:
    image: float32 (size, size, C).
    seed: (2,) int seed.
    min_scale: ``s`` is uniform in ``[min_scale, 1]``.
  """
  tf = _tf()
  uniforms = tf.random.stateless_uniform([3], seed)
  scale = min_scale + (1.0 - min_scale) * uniforms[0]
  top = (1.0 - scale) * uniforms[1]
  left = (1.0 - scale) * uniforms[2]
  box = tf.stack([top, left, top + scale, left + scale])[None]
  size = tf.shape(image)[:2]
  return tf.image.crop_and_resize(image[None], box, [0], size)[0]


def augment(image, seed, config):
  """Applies ``config`` to one float32 image with values in [0, 255].

  Args:
    image: float32 (H, W, 3) in [0, 255].
    seed: (2,) int32 seed for this example.
    config: an :class:`Augmentation`.

  Returns:
    The augmented float32 image, still in [0, 255].
  """
  tf = _tf()
  if config.flip:
    image = tf.image.stateless_random_flip_left_right(
        image, _sub_seed(seed, _FLIP))
  if config.min_crop_scale < 1:
    image = random_crop_scale(image, _sub_seed(seed, _CROP),
                              config.min_crop_scale)
  if config.colour:
    image = image / 255.0
    if config.brightness:
      image = tf.image.stateless_random_brightness(
          image, config.brightness, _sub_seed(seed, _BRIGHTNESS))
    if config.contrast:
      image = tf.image.stateless_random_contrast(
          image, 1 - config.contrast, 1 + config.contrast,
          _sub_seed(seed, _CONTRAST))
    if config.saturation:
      image = tf.image.stateless_random_saturation(
          image, 1 - config.saturation, 1 + config.saturation,
          _sub_seed(seed, _SATURATION))
    if config.hue:
      image = tf.image.stateless_random_hue(image, config.hue,
                                            _sub_seed(seed, _HUE))
    image = tf.clip_by_value(image, 0.0, 1.0) * 255.0
  return image


def normalise(image):
  """uint8-range pixels [0, 255] -> float32 [-1, 1]: ``x / 127.5 - 1``."""
  tf = _tf()
  return tf.cast(image, tf.float32) / 127.5 - 1.0
