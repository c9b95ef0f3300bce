"""PyTorch backbones in insightface arcface_torch's layout.

Written here from arcface_torch's published structure (``backbones/
iresnet.py`` and ``backbones/mobilefacenet.py``): the same module names, so
``state_dict()`` has the keys a released checkpoint has, and the same
computation. They are the reference the importers are checked against
(``tests/interop``, ``bench.interop``) and the PyTorch baseline's backbone
(``bench.torch_reference``). Widths are parameters so that the tests can use
tiny ones; the defaults are the released sizes.

``randomise`` makes a test non-trivial: random batch-norm affine terms and
PReLU slopes, and batch statistics calibrated on random images (so that
activations keep a realistic scale through deep nets).
"""
import torch
from torch import nn


def conv3x3(in_features, out_features, stride=1, groups=1):
  return nn.Conv2d(in_features, out_features, 3, stride, 1, groups=groups,
                   bias=False)


class IBasicBlock(nn.Module):
  """arcface_torch's unit: BN, conv, BN, PReLU, conv(stride), BN (+ x)."""

  def __init__(self, in_features, features, stride, downsample):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_features, eps=1e-5)
    self.conv1 = conv3x3(in_features, features)
    self.bn2 = nn.BatchNorm2d(features, eps=1e-5)
    self.prelu = nn.PReLU(features)
    self.conv2 = conv3x3(features, features, stride)
    self.bn3 = nn.BatchNorm2d(features, eps=1e-5)
    self.downsample = downsample

  def forward(self, x):
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    identity = x if self.downsample is None else self.downsample(x)
    return out + identity


class IResNet(nn.Module):
  """arcface_torch ``IResNet`` (``iresnet50`` = stage_units (3, 4, 14, 3))."""

  def __init__(self, stage_units, stage_features=(64, 128, 256, 512),
               stem_features=64, embedding_dim=512, image_size=112,
               dropout_rate=0.0):
    super().__init__()
    self.conv1 = nn.Conv2d(3, stem_features, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(stem_features, eps=1e-5)
    self.prelu = nn.PReLU(stem_features)
    in_features, side = stem_features, image_size
    for stage, (units, features) in enumerate(
        zip(stage_units, stage_features)):
      downsample = nn.Sequential(
          nn.Conv2d(in_features, features, 1, 2, bias=False),
          nn.BatchNorm2d(features, eps=1e-5))
      blocks = [IBasicBlock(in_features, features, 2, downsample)]
      blocks += [IBasicBlock(features, features, 1, None)
                 for _ in range(units - 1)]
      setattr(self, f'layer{stage + 1}', nn.Sequential(*blocks))
      in_features = features
      side = (side - 1) // 2 + 1  # a 3x3 stride-2 convolution, padding 1
    self.bn2 = nn.BatchNorm2d(in_features, eps=1e-5)
    self.dropout = nn.Dropout(dropout_rate)
    self.fc = nn.Linear(in_features * side * side, embedding_dim)
    self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
    nn.init.constant_(self.features.weight, 1.0)
    self.features.weight.requires_grad = False

  def forward(self, x):
    x = self.prelu(self.bn1(self.conv1(x)))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    x = self.dropout(torch.flatten(self.bn2(x), 1))  # NCHW flatten
    return self.features(self.fc(x))


class ConvBlock(nn.Module):
  def __init__(self, in_features, features, kernel=1, stride=1, padding=0,
               groups=1, activation=True):
    super().__init__()
    layers = [nn.Conv2d(in_features, features, kernel, stride, padding,
                        groups=groups, bias=False), nn.BatchNorm2d(features)]
    if activation:
      layers.append(nn.PReLU(features))
    self.layers = nn.Sequential(*layers)

  def forward(self, x):
    return self.layers(x)


class DepthWise(nn.Module):
  """1x1 expand to ``hidden``, 3x3 grouped conv (stride), linear 1x1."""

  def __init__(self, in_features, features, hidden, stride, residual):
    super().__init__()
    self.residual = residual
    self.layers = nn.Sequential(
        ConvBlock(in_features, hidden),
        ConvBlock(hidden, hidden, 3, stride, 1, groups=hidden),
        ConvBlock(hidden, features, activation=False))

  def forward(self, x):
    return x + self.layers(x) if self.residual else self.layers(x)


class Residual(nn.Module):
  def __init__(self, features, units, hidden):
    super().__init__()
    self.layers = nn.Sequential(*[DepthWise(features, features, hidden, 1,
                                            True) for _ in range(units)])

  def forward(self, x):
    return self.layers(x)


class GDC(nn.Module):
  def __init__(self, features, embedding_dim, kernel):
    super().__init__()
    self.layers = nn.Sequential(
        ConvBlock(features, features, kernel, groups=features,
                  activation=False),
        nn.Flatten(),
        nn.Linear(features, embedding_dim, bias=False),
        nn.BatchNorm1d(embedding_dim))

  def forward(self, x):
    return self.layers(x)


class MobileFaceNet(nn.Module):
  """arcface_torch ``get_mbf(fp16=False, num_features, blocks, scale)``.

  ``divisor`` divides every width (1: the released sizes) for fast tests.
  """

  def __init__(self, embedding_dim=512, blocks=(1, 4, 6, 2), scale=2,
               divisor=1, image_size=112):
    super().__init__()
    w = lambda n: n // divisor  # noqa: E731
    self.layers = nn.ModuleList([
        ConvBlock(3, w(64 * scale), 3, 2, 1),
        ConvBlock(w(64 * scale), w(64 * scale), 3, 1, 1, groups=w(64)),
        DepthWise(w(64 * scale), w(64 * scale), w(128), 2, False),
        Residual(w(64 * scale), blocks[1], w(128)),
        DepthWise(w(64 * scale), w(128 * scale), w(256), 2, False),
        Residual(w(128 * scale), blocks[2], w(256)),
        DepthWise(w(128 * scale), w(128 * scale), w(512), 2, False),
        Residual(w(128 * scale), blocks[3], w(256)),
    ])
    self.conv_sep = ConvBlock(w(128 * scale), w(512))
    self.features = GDC(w(512), embedding_dim, image_size // 16)

  def forward(self, x):
    for layer in self.layers:
      x = layer(x)
    return self.features(self.conv_sep(x))


@torch.no_grad()
def randomise(net, seed=0, image_size=112, calibration_batches=3):
  """Random affine terms and PReLU slopes, calibrated statistics, eval mode.

  IResNet's ``features.weight`` stays 1 (arcface_torch freezes it); every
  other batch norm gets a scale in [0.5, 1.5] and a bias N(0, 0.1), every
  PReLU slope U(0, 0.5), every linear bias N(0, 0.1). The running
  statistics are then the averages over a few batches of random images.
  """
  generator = torch.Generator().manual_seed(seed)
  uniform = lambda t, lo, hi: t.copy_(  # noqa: E731
      lo + (hi - lo) * torch.rand(t.shape, generator=generator))
  normal = lambda t, std: t.copy_(  # noqa: E731
      std * torch.randn(t.shape, generator=generator))
  for name, module in net.named_modules():
    if isinstance(module, (nn.Conv2d, nn.Linear)):
      fan_in = module.weight[0].numel()
      normal(module.weight, (2.0 / fan_in) ** 0.5)
      if module.bias is not None:
        normal(module.bias, 0.1)
    elif isinstance(module, nn.PReLU):
      uniform(module.weight, 0.0, 0.5)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
      if not (isinstance(net, IResNet) and name == 'features'):
        uniform(module.weight, 0.5, 1.5)
      normal(module.bias, 0.1)
      module.reset_running_stats()
      module.momentum = None  # cumulative averages over the batches
  net.train()
  for _ in range(calibration_batches):
    net(2 * torch.rand((8, 3, image_size, image_size), generator=generator)
        - 1)
  return net.eval()


def state_dict_arrays(net):
  """The state dict as float32 numpy arrays (``num_batches_tracked`` kept,
  as in a saved checkpoint)."""
  return {key: value.detach().cpu().numpy()
          for key, value in net.state_dict().items()}


@torch.no_grad()
def embed(net, images_nhwc):
  """The net's embeddings of NHWC float32 images, as numpy."""
  return net(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()
