"""Face-recognition backbones as pure flax.linen modules.

Every backbone maps NHWC images (112x112x3 aligned faces by default) to a
float32 embedding: ``variables = model.init(key, images)`` and
``model.apply(variables, images, train=False)``; in train mode pass
``mutable=['batch_stats']`` (and a ``'dropout'`` rng where dropout is on).

Models are picked by name: ``facejax.models.get('iresnet50', embedding_dim=512)``.
The table maps a name to (module, class, default keyword arguments); modules
are imported only when asked for.
"""
import importlib

_MODELS = {
    # The family with IResNet-50's units by default; give stage_units for
    # other depths (an imported checkpoint of an unlisted depth gets this).
    'iresnet': ('iresnet', 'IResNet', {}),
    'iresnet18': ('iresnet', 'IResNet', {'stage_units': (2, 2, 2, 2)}),
    'iresnet34': ('iresnet', 'IResNet', {'stage_units': (3, 4, 6, 3)}),
    'iresnet50': ('iresnet', 'IResNet', {'stage_units': (3, 4, 14, 3)}),
    'iresnet100': ('iresnet', 'IResNet', {'stage_units': (3, 13, 30, 3)}),
    'iresnet200': ('iresnet', 'IResNet', {'stage_units': (6, 26, 60, 6)}),
    'mobilefacenet': ('mobilefacenet', 'MobileFaceNet', {}),
    # insightface's "mbf" (arcface_torch get_mbf: scale 2, blocks
    # (1, 4, 6, 2)), the zoo's MobileFaceNet: channels doubled while the
    # hidden widths stay 128/256/512, so the expansions become 1 or 2; a
    # grouped (not depthwise) second stem conv and a learned output scale.
    'mobilefacenet_mbf': ('mobilefacenet', 'MobileFaceNet', {
        'stem_features': 128, 'stem_groups': 64,
        'bottlenecks': ((1, 128, 5, 2), (2, 256, 1, 2), (1, 256, 6, 1),
                        (2, 256, 1, 2), (1, 256, 2, 1)),
        'output_norm_scale': True}),
    'sphereface20': ('sphereface_net', 'SphereFaceNet', {'depth': 20}),
    'center_loss_cnn': ('center_loss_cnn', 'CenterLossCNN', {}),
    'deepid2': ('deepid2', 'DeepID2Net', {}),
    'vgg_face': ('vgg_face', 'VGGFace', {}),
}


def names():
  """The names ``get`` accepts."""
  return sorted(_MODELS)


def get(name, **kwargs):
  """Builds the backbone ``name``; ``kwargs`` override its defaults.

  Raises:
    KeyError: unknown name (the message lists the known ones).
  """
  if name not in _MODELS:
    raise KeyError(f'unknown model {name!r}; known: {", ".join(names())}')
  module_name, class_name, defaults = _MODELS[name]
  module = importlib.import_module(f'facejax.models.{module_name}')
  return getattr(module, class_name)(**{**defaults, **kwargs})
