"""The sharded train step against plain single-device references."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from facejax import models
from facejax import sharding
from facejax.losses import margin
from facejax.training import objectives
from facejax.training import optim
from facejax.training import state as state_lib
from facejax.training import step as step_lib
from tests.training.tiny import leaves

TINY_IRESNET = dict(stage_units=(1, 1, 1, 1), stage_features=(4, 4, 8, 8),
                    stem_features=4, embedding_dim=8)
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 16
NUM_EXAMPLES = 16  # LMLE's cluster table: one row per training example
SGD = dict(name='sgd', learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
           warmup_steps=0, schedule='constant')


def tiny_model(dtype=jnp.float32):
  return models.get('iresnet18', dtype=dtype, **TINY_IRESNET)


def identity_balanced_batch(seed=0, identities=4, images=4):
  """P x K images: each identity a noisy copy of its own pattern."""
  rng = np.random.default_rng(seed)
  patterns = rng.normal(size=(identities,) + IMAGE_SHAPE)
  labels = np.repeat(np.arange(identities), images)
  noisy = patterns[labels] + 0.3 * rng.normal(size=(len(labels),)
                                              + IMAGE_SHAPE)
  return dict(image=noisy.astype(np.float32), label=labels.astype(np.int32))


def engine(loss, mesh, dtype=jnp.float32, micro_batches=1, optimizer=SGD,
           shard_backbone=False):
  model = tiny_model(dtype)
  objective = objectives.Objective(ml_collections.ConfigDict(loss),
                                   NUM_CLASSES, TINY_IRESNET['embedding_dim'],
                                   num_examples=NUM_EXAMPLES)
  tx, _ = optim.build(ml_collections.ConfigDict(optimizer), 100)
  state, shardings = state_lib.create(jax.random.key(0), model, objective,
                                      tx, IMAGE_SHAPE, mesh, shard_backbone)
  step = step_lib.make_train_step(model, objective, tx, mesh, shardings,
                                  compute_dtype=dtype,
                                  micro_batches=micro_batches)
  return model, tx, state, step


def reference_steps(model, tx, state, batches, loss_fn):
  """Plain single-device training: apply, loss, grad, optax update."""
  params = jax.device_get(state.params)
  stats = jax.device_get(state.batch_stats)
  opt_state = tx.init(params)
  for batch in batches:
    def objective(params, stats=stats, batch=batch):
      embeddings, updates = model.apply(
          dict(params=params['backbone'], batch_stats=stats),
          batch['image'], train=True, mutable=['batch_stats'])
      return loss_fn(embeddings, params['head'], batch['label']), updates
    (loss, updates), grads = jax.value_and_grad(objective, has_aux=True)(
        params)
    stats = updates['batch_stats']
    step_updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, step_updates)
  return params, loss


ARCFACE = dict(name='arcface', scale=16.0, margin=0.3)


def arcface_reference(embeddings, head, labels):
  return margin.arcface_loss(embeddings, head['class_weights'], labels,
                             scale=16.0, margin=0.3)


@pytest.mark.parametrize('data,model', [(8, 1), (1, 8), (2, 4)])
def test_sharded_step_matches_single_device_training(data, model):
  mesh = sharding.make_mesh(data, model)
  batches = [identity_balanced_batch(s) for s in range(2)]
  with jax.set_mesh(mesh):
    module, tx, state, step = engine(ARCFACE, mesh)
    initial = jax.device_get(state)
    for batch in batches:
      state, metrics = step(state, batch)
  expected, expected_loss = reference_steps(module, tx, initial, batches,
                                            arcface_reference)
  np.testing.assert_allclose(metrics['loss'], expected_loss, rtol=1e-5)
  for got, want in zip(leaves(state.params), leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert int(state.step) == 2
  weights = state.params['head']['class_weights']
  assert weights.sharding.spec == sharding.CLASS_WEIGHT_SPEC


def test_micro_batches_average_the_parts_gradients():
  mesh = sharding.make_mesh(4, 2)
  batch = identity_balanced_batch(3, identities=4, images=4)
  with jax.set_mesh(mesh):
    module, tx, state, step = engine(ARCFACE, mesh, micro_batches=2)
    initial = jax.device_get(state)
    state, _ = step(state, batch)
  # Reference: gradients of the two halves (batch norm statistics carried
  # from the first to the second), averaged, one update.
  params = initial.params
  stats = initial.batch_stats
  grads = []
  for half in (slice(0, 8), slice(8, 16)):
    def objective(params, stats=stats, half=half):
      embeddings, updates = module.apply(
          dict(params=params['backbone'], batch_stats=stats),
          batch['image'][half], train=True, mutable=['batch_stats'])
      return arcface_reference(embeddings, params['head'],
                               batch['label'][half]), updates
    (_, updates), g = jax.value_and_grad(objective, has_aux=True)(params)
    stats = updates['batch_stats']
    grads.append(g)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
  updates, _ = tx.update(mean, tx.init(params), params)
  expected = optax.apply_updates(params, updates)
  for got, want in zip(leaves(state.params), leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  for got, want in zip(leaves(state.batch_stats), leaves(stats)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


LOSSES = {
    'softmax': dict(name='softmax'),
    'arcface': ARCFACE,
    'cosface': dict(name='cosface', scale=16.0, margin=0.2),
    'combined': dict(name='combined', scale=16.0, m1=1.0, m2=0.2, m3=0.1),
    'sphereface': dict(name='sphereface', sphereface_m=4, lambda_base=1000.0,
                       lambda_gamma=0.12, lambda_power=1.0, lambda_min=5.0),
    'center': dict(name='center', center_weight=0.01, center_alpha=0.5),
    'triplet_batch_hard': dict(name='triplet_batch_hard', margin=0.2),
    'triplet_soft': dict(name='triplet_soft', margin=0.2),
    'triplet_batch_all': dict(name='triplet_batch_all', margin=0.2),
    'lifted': dict(name='lifted', margin=1.0),
    'contrastive': dict(name='contrastive', margin=1.0),
    'lmle': dict(name='lmle', margins=(0.1, 0.1, 0.1)),
}


def with_two_clusters_per_identity(state, batch):
  """LMLE's inputs: examples 0-15 with clusters {0, 1} in each identity."""
  batch = dict(batch, index=np.arange(16, dtype=np.int32))
  clusters = jax.device_put(np.arange(16, dtype=np.int32) // 2 % 2,
                            state.extra['clusters'].sharding)
  return state.replace(extra=dict(clusters=clusters)), batch


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_every_loss_fits_a_batch(name):
  mesh = sharding.make_mesh(8, 1)
  batch = identity_balanced_batch(5)
  with jax.set_mesh(mesh):
    _, _, state, step = engine(LOSSES[name], mesh)
    if name == 'lmle':
      state, batch = with_two_clusters_per_identity(state, batch)
    history = []
    for _ in range(5):
      state, metrics = step(state, batch)
      history.append(float(metrics['loss']))
  assert np.isfinite(history).all(), history
  assert history[-1] < history[0], history
  if name == 'center':
    centers = np.asarray(state.extra['centers'])
    assert np.abs(centers[:4]).sum() > 0 and not centers[4:].any()
  if name == 'sphereface':
    assert 'sphereface_lambda' in metrics


def test_lmle_step_matches_the_plain_loss():
  mesh = sharding.make_mesh(4, 2)
  batch = identity_balanced_batch(7)
  with jax.set_mesh(mesh):
    model, _, state, step = engine(LOSSES['lmle'], mesh)
    state, batch = with_two_clusters_per_identity(state, batch)
    params = jax.device_get(state.params)
    stats = jax.device_get(state.batch_stats)
    _, metrics = step(state, batch)
  embeddings, _ = model.apply(dict(params=params['backbone'],
                                   batch_stats=stats), batch['image'],
                              train=True, mutable=['batch_stats'])
  embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  clusters = np.arange(16) // 2 % 2
  expected = []
  for a in range(16):  # the quintuplet of each anchor, by brute force
    d = np.sum((embeddings - embeddings[a]) ** 2, axis=1)
    mates = [i for i in range(16) if i != a and batch['label'][i] ==
             batch['label'][a]]
    cluster = [i for i in mates if clusters[i] == clusters[a]]
    other_cluster = [i for i in mates if clusters[i] != clusters[a]]
    negatives = [i for i in range(16) if batch['label'][i] !=
                 batch['label'][a]]
    p_plus = max(cluster, key=lambda i: d[i])
    p_minus = min(other_cluster, key=lambda i: d[i])
    p_minus_minus = max(mates, key=lambda i: d[i])
    negative = min(negatives, key=lambda i: d[i])
    expected.append(max(0, 0.1 + d[p_plus] - d[p_minus])
                    + max(0, 0.1 + d[p_minus] - d[p_minus_minus])
                    + max(0, 0.1 + d[p_minus_minus] - d[negative]))
  np.testing.assert_allclose(float(metrics['loss']), np.mean(expected),
                             rtol=1e-4, atol=1e-6)
  assert float(metrics['valid_quintuplets']) == 1.0


def test_fully_sharded_backbone_trains_as_replicated(monkeypatch):
  monkeypatch.setattr(sharding, 'FULLY_SHARDED_MIN_SIZE', 64)  # tiny model
  mesh = sharding.make_mesh(4, 2)
  batch = identity_balanced_batch(3)
  results = []
  for shard_backbone in (False, True):
    with jax.set_mesh(mesh):
      _, _, state, step = engine(ARCFACE, mesh,
                                 shard_backbone=shard_backbone)
      for _ in range(2):
        state, metrics = step(state, batch)
    results.append((state, float(metrics['loss'])))
  (replicated, loss), (sharded, sharded_loss) = results
  np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5)
  for got, want in zip(leaves(sharded.params), leaves(replicated.params)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  split = [leaf for leaf in jax.tree.leaves(sharded.params['backbone'])
           if not leaf.sharding.is_fully_replicated]
  assert split, 'no backbone parameter was sharded'
  for leaf in split:  # each device holds 1/8 of it, and of its momentum
    shard = leaf.addressable_shards[0].data
    assert shard.size * 8 == leaf.size
  moments = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
      sharded.opt_state) if 'backbone' in jax.tree_util.keystr(path)
             and not leaf.sharding.is_fully_replicated]
  assert len(moments) == len(split)


def test_fully_sharded_spec():
  assert sharding.fully_sharded_spec((3, 3, 64, 128), 8) == P(
      None, None, None, ('data', 'model'))
  assert sharding.fully_sharded_spec((512, 4), 8, min_size=16) == P(
      ('data', 'model'))
  assert sharding.fully_sharded_spec((7, 9), 8, min_size=1) == P()
  assert sharding.fully_sharded_spec((128,), 8) == P()  # small: replicated


def test_bfloat16_compute_keeps_float32_parameters():
  mesh = sharding.make_mesh(8, 1)
  batch = identity_balanced_batch(6)
  with jax.set_mesh(mesh):
    _, _, state32, step32 = engine(ARCFACE, mesh)
    _, _, state16, step16 = engine(ARCFACE, mesh, dtype=jnp.bfloat16)
    state32, metrics32 = step32(state32, batch)
    state16, metrics16 = step16(state16, batch)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state16.params))
  assert metrics16['loss'].dtype == jnp.float32
  np.testing.assert_allclose(metrics16['loss'], metrics32['loss'], rtol=0.05)


def test_partial_fc_trains():
  mesh = sharding.make_mesh(1, 8)
  batch = identity_balanced_batch(7)
  loss = dict(ARCFACE, sample_rate=0.5)
  with jax.set_mesh(mesh):
    _, _, state, step = engine(loss, mesh)
    before = np.asarray(state.params['head']['class_weights'])
    history = []
    for _ in range(6):
      state, metrics = step(state, batch)
      history.append(float(metrics['loss']))
  assert np.isfinite(history).all() and history[-1] < history[0]
  after = np.asarray(state.params['head']['class_weights'])
  assert not np.array_equal(before[:, :4], after[:, :4])  # the positives
