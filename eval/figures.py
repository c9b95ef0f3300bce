"""Figures of the papers facejax implements, reproduced on small real data.

    python -m eval.figures center_loss [--out DIR] [--steps N]
        [--lambdas 0,0.003,0.01,0.1] [--seed S]
    python -m eval.figures embeddings \
        --runs softmax=runs/sweep/softmax,arcface=runs/sweep/arcface

Each figure is one subcommand and one function that trains what it needs,
saves a PNG and a JSON of its numbers under ``--out`` and returns the numbers
as a dict; ``main`` prints them as a markdown table.

center_loss: Wen, Zhang, Li, Qiao, "A Discriminative Feature Learning Approach
for Deep Face Recognition", ECCV 2016, Fig. 2 and 3. A small CNN with a 2-D
feature layer is trained on digits with softmax alone (lambda = 0) and with
softmax + lambda * center loss; the held-out 2-D features are plotted coloured
by class. With center loss the classes collapse into tight clusters around
their centres. The data is scikit-learn's copy of the UCI hand-written digits
(1,797 8x8 grey images, shipped with the package: no download).

embeddings: trained runs' embeddings of held-out synthetic identities on
their two principal axes, side by side (a margin loss against plain
softmax, say).
"""
import argparse
import json
import os
import tempfile
import time
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from facejax.losses import center
from facejax.losses import softmax
from facejax.models import layers

NUM_DIGITS = 10
DEFAULT_OUT_DIR = os.path.join(tempfile.gettempdir(), 'facejax-figures')
DEFAULT_LAMBDAS = (0.0, 0.003, 0.01, 0.1)
DEFAULT_STEPS = 1000
CENTER_ALPHA = 0.5  # The paper's centre learning rate.


# ---------------------------------------------------------------------------
# Data.


class DigitsSplit(NamedTuple):
  """Digits as (N, 8, 8, 1) float32 images in [-1, 1] and (N,) int32 labels."""
  train_images: np.ndarray
  train_labels: np.ndarray
  held_out_images: np.ndarray
  held_out_labels: np.ndarray


def load_digits_split(seed=0, held_out_fraction=0.3):
  """scikit-learn's 8x8 digits, split stratified by class, deterministically.

  Pixels (0..16) are mapped to [-1, 1] as x / 8 - 1.
  """
  # Imported here: scikit-learn is needed by this data set only.
  from sklearn import datasets
  from sklearn import model_selection
  digits = datasets.load_digits()
  images = (digits.images / 8.0 - 1.0).astype(np.float32)[..., None]
  labels = digits.target.astype(np.int32)
  train_images, held_out_images, train_labels, held_out_labels = (
      model_selection.train_test_split(
          images, labels, test_size=held_out_fraction, stratify=labels,
          random_state=seed))
  return DigitsSplit(train_images, train_labels, held_out_images,
                     held_out_labels)


def batch_indices(num_examples, steps, batch_size, seed):
  """(steps, batch_size) example indices: shuffled epochs, back to back."""
  rng = np.random.default_rng(seed)
  epochs = -(-steps * batch_size // num_examples)
  order = np.concatenate([rng.permutation(num_examples)
                          for _ in range(epochs)])
  return order[:steps * batch_size].reshape(steps, batch_size).astype(np.int32)


# ---------------------------------------------------------------------------
# Model and training.


class DigitsFeatureNet(nn.Module):
  """A LeNet++-style CNN with a 2-D feature layer (the paper's Fig. 2 net).

  (N, 8, 8, 1) -> two 3x3 convs + PReLU -> 2x2 pool -> two 3x3 convs + PReLU
  -> 2x2 pool -> dense to the ``feature_dim``-d feature x -> the softmax
  classifier W x + b. Returns ``(features, logits)``.
  """
  stage_features: Any = (16, 32)  # Channels of the two conv stages.
  feature_dim: int = 2
  num_classes: int = NUM_DIGITS

  @nn.compact
  def __call__(self, images):
    x = images
    for stage, channels in enumerate(self.stage_features, start=1):
      for index in (1, 2):
        x = layers.conv(channels, 3, use_bias=True,
                        name=f'conv{stage}_{index}')(x)
        x = layers.PReLU(name=f'prelu{stage}_{index}')(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    features = nn.Dense(self.feature_dim, name='feature')(x)
    logits = nn.Dense(self.num_classes, name='classifier')(features)
    return features, logits


class CenterLossTrainState(NamedTuple):
  """The explicit train state: centres are state, not parameters."""
  step: jax.Array
  params: Any
  opt_state: Any
  centers: jax.Array  # (num_classes, feature_dim) class centres c_j.


def make_optimizer(learning_rate, steps, weight_decay=5e-4, momentum=0.9,
                   max_gradient_norm=10.0):
  """SGD with momentum and weight decay (the paper's 0.9 and 5e-4).

  The learning rate decays from ``learning_rate`` to 0 over ``steps`` on a
  cosine; gradients are clipped to a global norm of ``max_gradient_norm`` so
  that a large lambda cannot blow the 2-D features up early in training.
  """
  return optax.chain(
      optax.clip_by_global_norm(max_gradient_norm),
      optax.add_decayed_weights(weight_decay),
      optax.sgd(optax.cosine_decay_schedule(learning_rate, steps),
                momentum=momentum))


def init_train_state(model, optimizer, seed, image_shape):
  """Parameters from ``seed``; centres start at zero as in the paper."""
  params = model.init(jax.random.PRNGKey(seed),
                      jnp.zeros((1,) + tuple(image_shape)))['params']
  centers = jnp.zeros((model.num_classes, model.feature_dim), jnp.float32)
  return CenterLossTrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=optimizer.init(params),
                              centers=centers)


def make_train_step(model, optimizer, alpha=CENTER_ALPHA):
  """One step on L = L_S + lambda L_C (the paper's eq. 5).

  L_S is the softmax cross-entropy of W x + b and L_C the center loss
  1/N sum_i 1/2 ||x_i - c_{y_i}||^2, both averaged over the batch. The
  parameters take an optimizer step on grad L; the centres move by the
  paper's update c_j <- c_j - alpha * delta_c_j (``center.center_loss``).
  """

  def train_step(state, images, labels, center_weight):
    def loss_fn(params):
      features, logits = model.apply({'params': params}, images)
      softmax_loss = softmax.softmax_cross_entropy(logits, labels)
      center_value, new_centers = center.center_loss(
          features, labels, state.centers, alpha)
      total = softmax_loss + center_weight * center_value
      return total, (softmax_loss, center_value, new_centers)

    grads, (softmax_loss, center_value, new_centers) = jax.grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = CenterLossTrainState(step=state.step + 1, params=params,
                                     opt_state=opt_state, centers=new_centers)
    return new_state, (softmax_loss, center_value)

  return train_step


def make_train_fn(model, optimizer, alpha=CENTER_ALPHA):
  """``train(state, images, labels, indices, lambda)`` -> (state, losses).

  Runs the jitted train step once per row of ``indices`` (steps, batch);
  lambda is traced, so every setting shares one compilation. ``losses`` is
  the (steps, 2) array of per-step (softmax loss, center loss). A Python
  loop, not ``lax.scan``: inside a while loop XLA:CPU ran this step about
  50 times slower (2.5 s a step instead of 0.05 s for a (32, 64) net).
  """
  train_step = make_train_step(model, optimizer, alpha)

  @jax.jit
  def gather_and_step(state, images, labels, batch, center_weight):
    return train_step(state, images[batch], labels[batch], center_weight)

  def train(state, images, labels, indices, center_weight):
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    center_weight = jnp.float32(center_weight)
    losses = []
    for batch in jnp.asarray(indices):
      state, step_losses = gather_and_step(state, images, labels, batch,
                                           center_weight)
      losses.append(step_losses)
    return state, np.asarray(jax.device_get(losses), np.float64)

  return train


# ---------------------------------------------------------------------------
# Metrics of the learned features.


def class_means(features, labels, num_classes):
  """(num_classes, D) mean feature of every class (zero for an empty one)."""
  features = np.asarray(features, np.float64)
  sums = np.zeros((num_classes, features.shape[1]))
  np.add.at(sums, np.asarray(labels), features)
  counts = np.bincount(labels, minlength=num_classes)
  return sums / np.maximum(counts, 1)[:, None]


def nearest_centre_predict(features, centres):
  """argmin_j ||x_i - c_j||_2 for every row x_i (ties: the lowest j)."""
  features = np.asarray(features, np.float64)
  centres = np.asarray(centres, np.float64)
  squared_distances = np.sum(
      np.square(features[:, None, :] - centres[None, :, :]), axis=-1)
  return np.argmin(squared_distances, axis=1)


def compactness(features, labels, num_classes):
  """Mean intra-class distance / mean inter-centre distance (lower: tighter).

  With mu_j the mean of class j's features:
    intra = 1/N sum_i ||x_i - mu_{y_i}||
    inter = mean over pairs j < k of ||mu_j - mu_k||
  The ratio does not change when every feature is scaled by the same factor.

  Returns:
    ``(ratio, intra, inter)`` as floats.
  """
  features = np.asarray(features, np.float64)
  means = class_means(features, labels, num_classes)
  intra = float(np.mean(np.linalg.norm(features - means[labels], axis=1)))
  pairs = np.triu_indices(num_classes, k=1)
  inter = float(np.mean(np.linalg.norm(
      means[pairs[0]] - means[pairs[1]], axis=1)))
  return intra / inter, intra, inter


# ---------------------------------------------------------------------------
# Figures.


def plot_feature_panels(panels, path, suptitle, num_classes=NUM_DIGITS):
  """One scatter panel per setting: 2-D features coloured by class.

  Args:
    panels: list of dicts with 'features' (N, 2), 'labels' (N,), 'centres'
      (K, 2) and 'title'.
    path: where to write the PNG.
    suptitle: the figure's title.
    num_classes: K <= 10 (one colour of matplotlib's tab10 each).
  """
  # Imported here: matplotlib is needed by this figure only.
  from matplotlib import colormaps
  from matplotlib import figure
  from matplotlib.backends import backend_agg

  colours = colormaps['tab10']
  # The Agg canvas without pyplot: no global backend or figure state.
  canvas_figure = figure.Figure(figsize=(4.2 * len(panels), 4.6))
  backend_agg.FigureCanvasAgg(canvas_figure)
  axes = canvas_figure.subplots(1, len(panels), squeeze=False)
  for axis, panel in zip(axes[0], panels):
    labels = panel['labels']
    for digit in range(num_classes):
      points = panel['features'][labels == digit]
      axis.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7,
                   color=colours(digit), label=str(digit), linewidths=0)
    axis.scatter(panel['centres'][:, 0], panel['centres'][:, 1], s=90,
                 marker='*', c=[colours(d) for d in range(num_classes)],
                 edgecolors='black', linewidths=0.8, label='centres')
    axis.set_title(panel['title'], fontsize=10)
    axis.set_aspect('equal', adjustable='datalim')
    axis.tick_params(labelsize=7)
  handles, names = axes[0][0].get_legend_handles_labels()
  canvas_figure.legend(handles, names, loc='lower center',
                       ncol=num_classes + 1, fontsize=8, markerscale=2,
                       frameon=False)
  canvas_figure.suptitle(suptitle, fontsize=11)
  canvas_figure.tight_layout(rect=(0, 0.06, 1, 0.95))
  canvas_figure.savefig(path, format='png', dpi=110)


def center_loss_figure(out_dir=DEFAULT_OUT_DIR, steps=DEFAULT_STEPS,
                       lambdas=DEFAULT_LAMBDAS, seed=0, batch_size=128,
                       learning_rate=0.05, alpha=CENTER_ALPHA):
  """Wen et al. 2016, Fig. 2/3: 2-D digit features without and with L_C.

  Every setting trains the same initial net on the same batches for
  ``steps`` steps with L = L_S + lambda L_C (``make_train_step``), SGD as in
  the paper (``make_optimizer``) and centre rate ``alpha``. On the held-out
  split it reports the softmax classifier's accuracy, the accuracy of the
  paper's nearest-centre classifier (centres = mean train feature of each
  class, predict argmin_j ||x - c_j||), and the compactness ratio of the
  held-out features (``compactness``).

  Returns:
    A dict with the run's configuration, the PNG and JSON paths and
    'settings': one dict of numbers per lambda, in the order given.
  """
  os.makedirs(out_dir, exist_ok=True)
  split = load_digits_split(seed)
  model = DigitsFeatureNet()
  optimizer = make_optimizer(learning_rate, steps)
  train = make_train_fn(model, optimizer, alpha)
  initial_state = init_train_state(model, optimizer, seed,
                                   split.train_images.shape[1:])
  indices = batch_indices(len(split.train_labels), steps, batch_size, seed)
  apply = jax.jit(model.apply)

  settings, panels = [], []
  for center_weight in lambdas:
    state, losses = train(initial_state, split.train_images,
                          split.train_labels, indices, center_weight)
    variables = {'params': state.params}
    train_features, _ = apply(variables, split.train_images)
    features, logits = apply(variables, split.held_out_images)
    features = np.asarray(features)
    labels = split.held_out_labels
    centres = class_means(train_features, split.train_labels, NUM_DIGITS)
    nearest = nearest_centre_predict(features, centres)
    ratio, intra, inter = compactness(features, labels, NUM_DIGITS)
    result = {
        'lambda': float(center_weight),
        'softmax_accuracy': float(np.mean(
            np.argmax(np.asarray(logits), axis=1) == labels)),
        'nearest_centre_accuracy': float(np.mean(nearest == labels)),
        'compactness': ratio,
        'intra_class_distance': intra,
        'inter_centre_distance': inter,
        'final_softmax_loss': float(np.mean(losses[-50:, 0])),
        'final_center_loss': float(np.mean(losses[-50:, 1])),
    }
    settings.append(result)
    panels.append({
        'features': features, 'labels': labels, 'centres': centres,
        'title': (f'lambda = {center_weight:g}: nearest-centre '
                  f'{result["nearest_centre_accuracy"]:.1%}\n'
                  f'softmax {result["softmax_accuracy"]:.1%}, '
                  f'compactness {ratio:.3f}')})

  png_path = os.path.join(out_dir, 'center_loss.png')
  json_path = os.path.join(out_dir, 'center_loss.json')
  plot_feature_panels(
      panels, png_path,
      'Held-out 2-D features of digits (8x8): softmax + lambda * center '
      f'loss (Wen et al. 2016), {steps} steps, alpha = {alpha:g}')
  results = {
      'figure': 'center_loss',
      'paper': 'Wen et al., ECCV 2016, Fig. 2/3',
      'data': 'sklearn.datasets.load_digits, 70/30 stratified split',
      'num_train': int(len(split.train_labels)),
      'num_held_out': int(len(split.held_out_labels)),
      'steps': int(steps), 'batch_size': int(batch_size),
      'learning_rate': float(learning_rate), 'alpha': float(alpha),
      'seed': int(seed), 'png': png_path, 'json': json_path,
      'settings': settings,
  }
  with open(json_path, 'w') as stream:
    json.dump(results, stream, indent=2)
  return results


def center_loss_table(results):
  """The markdown table ``main`` prints for the center_loss figure."""
  rows = ['| lambda | softmax acc | nearest-centre acc | compactness |',
          '|---:|---:|---:|---:|']
  for setting in results['settings']:
    rows.append(f'| {setting["lambda"]:g} '
                f'| {setting["softmax_accuracy"]:.4f} '
                f'| {setting["nearest_centre_accuracy"]:.4f} '
                f'| {setting["compactness"]:.4f} |')
  rows += ['', f'PNG: {results["png"]}', f'JSON: {results["json"]}']
  return '\n'.join(rows)


def principal_plane(features):
  """The 2-D PCA projection of (N, D) features (centred, top two axes)."""
  centred = np.asarray(features, np.float64)
  centred = centred - centred.mean(axis=0)
  _, _, axes = np.linalg.svd(centred, full_matrices=False)
  return centred @ axes[:2].T


def embeddings_figure(runs, out_dir=DEFAULT_OUT_DIR, identities=10,
                      images=30, seed=0):
  """Learned embeddings of held-out synthetic identities, projected to 2-D.

  Images of ``identities`` synthetic identities never trained on (from
  ``synthetic.EVAL_FIRST_IDENTITY``) are embedded by each run's backbone
  (flip-summed, L2-normalised, :class:`facejax.inference.Embedder`) and
  projected on their two principal axes; one panel per run, coloured by
  identity, with the identities' mean points starred and the compactness
  ratio (mean distance to the own identity's mean over the mean distance
  between identity means, in the full embedding space) in the title.

  Args:
    runs: {panel name: training workdir}, e.g. softmax and ArcFace runs.

  Returns:
    A dict with the PNG and JSON paths and one dict of numbers per run.
  """
  from facejax import inference  # pylint: disable=g-import-not-at-top
  from facejax.data import sources  # pylint: disable=g-import-not-at-top
  from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
  if not 1 <= identities <= 10:
    raise ValueError(f'identities must be 1 to 10 (one colour each), got '
                     f'{identities}')
  os.makedirs(out_dir, exist_ok=True)
  pictures, labels = synthetic.generate(
      identities, images, seed, first_identity=synthetic.EVAL_FIRST_IDENTITY)
  source = sources.InMemory(pictures, labels, name='held-out identities')
  settings, panels = [], []
  for name, workdir in runs.items():
    features = inference.Embedder.from_workdir(workdir).embed(
        source, progress=False)
    ratio, intra, inter = compactness(features, labels, identities)
    plane = principal_plane(features)
    settings.append(dict(run=name, workdir=workdir, compactness=ratio,
                         intra_class_distance=intra,
                         inter_centre_distance=inter))
    panels.append(dict(features=plane, labels=labels,
                       centres=class_means(plane, labels, identities),
                       title=f'{name}: compactness {ratio:.3f}'))
  png_path = os.path.join(out_dir, 'embeddings.png')
  json_path = os.path.join(out_dir, 'embeddings.json')
  plot_feature_panels(
      panels, png_path, f'{identities} held-out synthetic identities, '
      f'{images} images each: embeddings on their two principal axes',
      num_classes=identities)
  results = dict(figure='embeddings', identities=identities, images=images,
                 seed=seed, png=png_path, json=json_path, runs=settings)
  with open(json_path, 'w') as stream:
    json.dump(results, stream, indent=2)
  return results


def embeddings_table(results):
  """The markdown table ``main`` prints for the embeddings figure."""
  rows = ['| run | compactness | intra | inter |', '|---|---:|---:|---:|']
  for run in results['runs']:
    rows.append(f'| {run["run"]} | {run["compactness"]:.4f} '
                f'| {run["intra_class_distance"]:.4f} '
                f'| {run["inter_centre_distance"]:.4f} |')
  rows += ['', f'PNG: {results["png"]}', f'JSON: {results["json"]}']
  return '\n'.join(rows)


# ---------------------------------------------------------------------------
# Command line: one subcommand per figure.


def parse_floats(text):
  return tuple(float(value) for value in text.split(',') if value.strip())


def run_center_loss(args):
  results = center_loss_figure(args.out, args.steps, args.lambdas, args.seed)
  return center_loss_table(results)


def parse_runs(text):
  """``name=workdir,name=workdir`` -> {name: workdir}."""
  runs = {}
  for item in text.split(','):
    name, separator, workdir = item.partition('=')
    if not separator or not name or not workdir:
      raise argparse.ArgumentTypeError(
          f'--runs wants name=workdir pairs, got {item!r}')
    runs[name] = workdir
  return runs


def run_embeddings(args):
  return embeddings_table(embeddings_figure(args.runs, args.out,
                                            args.identities, args.images,
                                            args.seed))


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  subcommands = parser.add_subparsers(dest='figure', required=True)

  center_loss_parser = subcommands.add_parser(
      'center_loss', help='Wen et al. 2016 Fig. 2/3: 2-D digit features')
  center_loss_parser.add_argument('--out', default=DEFAULT_OUT_DIR)
  center_loss_parser.add_argument('--steps', type=int,
                                  default=DEFAULT_STEPS)
  center_loss_parser.add_argument(
      '--lambdas', type=parse_floats, default=DEFAULT_LAMBDAS,
      help='comma-separated center-loss weights; 0 is softmax alone')
  center_loss_parser.add_argument('--seed', type=int, default=0)
  center_loss_parser.set_defaults(run=run_center_loss)

  embeddings_parser = subcommands.add_parser(
      'embeddings', help='2-D projection of trained runs\' embeddings')
  embeddings_parser.add_argument(
      '--runs', type=parse_runs, required=True,
      help='name=workdir pairs, e.g. softmax=runs/sweep/softmax,'
      'arcface=runs/sweep/arcface')
  embeddings_parser.add_argument('--out', default=DEFAULT_OUT_DIR)
  embeddings_parser.add_argument('--identities', type=int, default=10)
  embeddings_parser.add_argument('--images', type=int, default=30)
  embeddings_parser.add_argument('--seed', type=int, default=0)
  embeddings_parser.set_defaults(run=run_embeddings)
  return parser


def main(argv=None):
  args = build_parser().parse_args(argv)
  start = time.perf_counter()
  print(args.run(args))
  print(f'\n{args.figure}: {time.perf_counter() - start:.1f} s')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
