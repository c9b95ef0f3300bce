"""The PyTorch baseline of ``bench.train_step``: IResNet, ArcFace and SGD.

Imported only by ``python -m bench.train_step --torch`` when torch is
installed; nothing else in facejax needs torch. It mirrors the engine's train
step where it matters to the cost:

* the backbone is arcface_torch's IResNet (:mod:`bench.arcface_torch_models`,
  what :class:`facejax.models.iresnet.IResNet` computes), built from the
  flax module's own attributes: stem conv3x3-BN-PReLU; four stages of
  BN-conv3x3-BN-PReLU-conv3x3(stride)-BN units, the stride (2) in the first
  unit of each stage's second convolution, with a conv1x1(stride)-BN
  shortcut there; the output block BN-(dropout)-dense-BN, the last BN's
  scale fixed at 1. Batch norm: epsilon 1e-5, momentum 0.1 (PyTorch's
  convention for flax's 0.9); PReLU: one slope per channel from 0.25;
  convolutions without bias, initialised normal(0, 2 / fan_out);
* the head is ArcFace (s = 64, m = 0.5) on the cosines of L2-normalised
  embeddings and class weights, with the fallback of
  ``facejax.losses.margin.margin_target_cosine``: psi = cos(theta + m) while
  theta <= pi - m, else cos(theta) - m sin(pi - m) (insightface's rule),
  then softmax cross-entropy. As in facejax it computes in float32 whatever
  the backbone's dtype (on a GPU with TF32 products, JAX's default
  precision there). The class weights are (C, D), as arcface_torch keeps
  them; the work is the same as facejax's (D, C);
* SGD, momentum 0.9, weight decay 5e-4 added to the gradient of every
  trained parameter, the class weights included (as optax's
  ``add_decayed_weights`` then ``sgd`` in facejax);
* channels_last tensors (NCHW for a model under 8 channels wide on the CPU,
  where torch 2.13's oneDNN breaks: see ``TorchCase``), bfloat16 autocast
  of the backbone for ``dtype='bfloat16'`` (where the device supports it;
  float32 otherwise), and ``torch.compile`` of the forward pass and loss
  when asked for.
"""
import math
import time

import torch
from torch import nn
from torch.nn import functional

from bench import arcface_torch_models

BATCH_NORM_MOMENTUM = 0.1  # PyTorch's convention; flax's momentum=0.9
CLASS_WEIGHT_INIT_STD = 0.01
SCALE = 64.0
MARGIN = 0.5
LEARNING_RATE = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


def iresnet(stage_units, stage_features, stem_features, embedding_dim,
            image_size, dropout_rate=0.0):
  """arcface_torch's IResNet (:mod:`bench.arcface_torch_models`), with the
  batch-norm momentum of ``BATCH_NORM_MOMENTUM`` and convolutions
  initialised normal(0, 2 / fan_out) as facejax's are."""
  net = arcface_torch_models.IResNet(
      tuple(stage_units), tuple(stage_features), stem_features,
      embedding_dim, image_size, dropout_rate)
  for module in net.modules():
    if isinstance(module, nn.Conv2d):
      nn.init.kaiming_normal_(module.weight, mode='fan_out',
                              nonlinearity='relu')
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
      module.momentum = BATCH_NORM_MOMENTUM
  return net


def safe_sqrt(x):
  """sqrt(x) with value 0 and gradient 0 (not infinite) where x <= 0."""
  positive = x > 0
  return torch.where(positive, torch.sqrt(torch.where(positive, x, 1.0)),
                     0.0)


def margin_target_cosine(cosine, margin=MARGIN):
  """ArcFace's target cosine psi, facejax's ``margin_target_cosine(m2=m)``.

    psi = cos(theta + m)            for theta <= pi - m
          cos(theta) - m sin(m)     beyond, where cos(m) + m sin(m) >= 1
          cos(theta) + cos(m) - 1   beyond, otherwise (continuous)
  """
  cosine = cosine.clamp(-1.0, 1.0)
  sine = safe_sqrt(1.0 - cosine * cosine)
  with_margin = cosine * math.cos(margin) - sine * math.sin(margin)
  threshold = math.pi - margin
  if math.cos(margin) + margin * math.sin(margin) >= 1.0:
    fallback = cosine - margin * math.sin(math.pi - margin)
  else:
    fallback = cosine - math.cos(threshold) - 1.0
  return torch.where(cosine >= math.cos(threshold), with_margin, fallback)


def arcface_loss(embeddings, class_weights, labels, scale=SCALE,
                 margin=MARGIN):
  """Mean ArcFace cross-entropy.

  Args:
    embeddings: (N, D) float32.
    class_weights: (C, D), one row per class.
    labels: (N,) int64 in [0, C).
    scale: s.
    margin: m, the additive angular margin.
  """
  cosines = functional.linear(functional.normalize(embeddings, dim=1),
                              functional.normalize(class_weights, dim=1))
  index = labels[:, None]
  target = margin_target_cosine(cosines.gather(1, index)[:, 0], margin)
  logits = (scale * cosines).scatter(1, index, scale * target[:, None])
  return functional.cross_entropy(logits, labels)


class ArcFaceTraining(nn.Module):
  """Backbone and class weights: ``(images, labels) -> loss``."""

  def __init__(self, backbone, num_classes, embedding_dim, autocast_dtype,
               device):
    super().__init__()
    self.backbone = backbone
    self.class_weights = nn.Parameter(torch.empty(
        num_classes, embedding_dim, device=device).normal_(
            0.0, CLASS_WEIGHT_INIT_STD))
    self.autocast_dtype = autocast_dtype

  def forward(self, images, labels):
    with torch.autocast(images.device.type,
                        dtype=self.autocast_dtype or torch.bfloat16,
                        enabled=self.autocast_dtype is not None):
      embeddings = self.backbone(images)
    return arcface_loss(embeddings.float(), self.class_weights, labels)


def _autocast_dtype(device_type, dtype):
  """torch.bfloat16 where asked for and supported, else None (float32)."""
  if dtype != 'bfloat16':
    return None
  available = getattr(torch.amp, 'is_autocast_available', None)
  if available is not None and not available(device_type):
    return None
  return torch.bfloat16


class TorchCase:
  """The PyTorch train step for one class count, ready to time.

  Attributes:
    description: the device, dtype and mode it runs in.
    loss: the last window's last loss (a float).
  """

  def __init__(self, flax_model, num_classes, images, labels, dtype,
               compile_model=False, seed=0):
    """Builds the model, optimizer and batch on CUDA if there, else the CPU.

    Args:
      flax_model: the facejax IResNet to mirror (its attributes are read).
      num_classes: C.
      images: float32 (N, H, W, 3) numpy images.
      labels: int (N,) numpy labels.
      dtype: 'bfloat16' (autocast of the backbone) or 'float32'.
      compile_model: ``torch.compile`` the forward pass and loss.
      seed: the parameters' seed.
    """
    self.device = torch.device('cuda' if torch.cuda.is_available()
                               else 'cpu')
    if self.device.type == 'cuda':
      torch.backends.cuda.matmul.allow_tf32 = True  # JAX's default on GPU
      torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(seed)
    autocast_dtype = _autocast_dtype(self.device.type, dtype)
    backbone = iresnet(tuple(flax_model.stage_units),
                       tuple(flax_model.stage_features),
                       flax_model.stem_features, flax_model.embedding_dim,
                       images.shape[1], flax_model.dropout_rate)
    self.model = ArcFaceTraining(backbone, num_classes,
                                 flax_model.embedding_dim, autocast_dtype,
                                 self.device)
    # oneDNN in torch 2.13's CPU build corrupts the heap (a crash or a
    # hang) in the backward of a channels_last 1x1 stride-2 convolution of
    # 4 channels (the tiny test model's shortcuts; 8 and more are fine):
    # such models stay NCHW there, and uncompiled (inductor would pick
    # channels_last for their convolutions again).
    self.memory_format = torch.channels_last
    compile_skipped = False
    if self.device.type == 'cpu' and min(
        flax_model.stem_features, *flax_model.stage_features) < 8:
      self.memory_format = torch.contiguous_format
      compile_skipped, compile_model = compile_model, False
    self.model.to(self.device, memory_format=self.memory_format)
    self.model.train()
    self.optimizer = torch.optim.SGD(
        [p for p in self.model.parameters() if p.requires_grad],
        lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    # NHWC memory seen as NCHW: exactly the channels_last layout.
    self.images = torch.from_numpy(images).permute(0, 3, 1, 2).to(
        self.device).contiguous(memory_format=self.memory_format)
    self.labels = torch.from_numpy(labels).long().to(self.device)
    self.forward = (torch.compile(self.model) if compile_model
                    else self.model)
    name = (torch.cuda.get_device_name(self.device)
            if self.device.type == 'cuda' else 'CPU')
    self.description = (
        f'{self.device.type} ({name}), torch {torch.__version__}, '
        + ('bfloat16 autocast' if autocast_dtype else 'float32')
        + (', channels_last' if self.memory_format == torch.channels_last
           else ', NCHW')
        + (', compiled' if compile_model else '')
        + (', not compiled (too narrow for oneDNN)' if compile_skipped
           else ''))
    self.loss = None

  def _synchronize(self):
    if self.device.type == 'cuda':
      torch.cuda.synchronize(self.device)

  def run(self, steps):
    """Runs ``steps`` train steps; returns their wall time in seconds."""
    self._synchronize()
    start = time.perf_counter()
    for _ in range(steps):
      self.optimizer.zero_grad(set_to_none=True)
      loss = self.forward(self.images, self.labels)
      loss.backward()
      self.optimizer.step()
    self._synchronize()
    seconds = time.perf_counter() - start
    self.loss = float(loss.detach())
    return seconds

  def close(self):
    """Frees the model, optimizer state and batch (and CUDA's cache)."""
    self.model = self.forward = self.optimizer = None
    self.images = self.labels = None
    if self.device.type == 'cuda':
      torch.cuda.empty_cache()
