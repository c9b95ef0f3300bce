"""Class-parallel softmax and margin softmax against the unsharded losses."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax import sharding
from facejax.losses import class_parallel
from facejax.losses import margin
from facejax.losses import softmax
from facejax.losses import sphereface

# Partial FC's column choice, checked on its own and used by the reference.
sampled_columns = class_parallel._sampled_columns  # pylint: disable=protected-access

MESHES = [(8, 1), (1, 8), (2, 4), (4, 2)]
LOSSES = {
    'arcface': (functools.partial(class_parallel.arcface_loss, scale=16.0),
                functools.partial(margin.arcface_loss, scale=16.0)),
    'cosface': (functools.partial(class_parallel.cosface_loss, scale=16.0),
                functools.partial(margin.cosface_loss, scale=16.0)),
    'combined': (functools.partial(class_parallel.margin_softmax_loss,
                                   scale=16.0, m1=1.0, m2=0.3, m3=0.2),
                 functools.partial(margin.margin_softmax_loss, scale=16.0,
                                   m1=1.0, m2=0.3, m3=0.2)),
    'multiplicative': (functools.partial(class_parallel.margin_softmax_loss,
                                         scale=16.0, m1=1.5, m2=0.0),
                       functools.partial(margin.margin_softmax_loss,
                                         scale=16.0, m1=1.5, m2=0.0)),
    'sphereface': (functools.partial(class_parallel.sphereface_loss, lam=2.0),
                   functools.partial(sphereface.sphereface_loss, lam=2.0)),
    'softmax': (class_parallel.softmax_loss,
                lambda e, w, l: softmax.softmax_cross_entropy(e @ w, l)),
}


def problem(seed=0, n=16, d=8, c=64):
  rng = np.random.default_rng(seed)
  embeddings = rng.normal(size=(n, d)).astype(np.float32)
  weights = rng.normal(size=(d, c)).astype(np.float32)
  labels = rng.integers(0, c, n).astype(np.int32)
  # Easy examples too: embeddings near their class column (theta ~ 0.1).
  embeddings[:3] = weights[:, labels[:3]].T + 0.1 * embeddings[:3]
  return embeddings, weights, labels


@pytest.fixture(scope='module', params=MESHES, ids=lambda s: f'{s[0]}x{s[1]}')
def mesh(request):
  return sharding.make_mesh(*request.param)


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_matches_unsharded_value_and_gradients(mesh, name):
  parallel_loss, reference_loss = LOSSES[name]
  embeddings, weights, labels = problem()
  expected, (expected_de, expected_dw) = jax.value_and_grad(
      reference_loss, argnums=(0, 1))(embeddings, weights, labels)
  e = jax.device_put(embeddings, sharding.batch_sharding(mesh))
  w = jax.device_put(weights, sharding.class_weight_sharding(mesh))
  y = jax.device_put(labels, sharding.batch_sharding(mesh))
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda e, w, y: parallel_loss(e, w, y, mesh=mesh), argnums=(0, 1)))
  got, (got_de, got_dw) = value_and_grad(e, w, y)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # Float32 sums in another order (at theta -> 0 the margin's gradient,
  # ~1/sin(theta), amplifies round-off: see the test below).
  np.testing.assert_allclose(got_de, expected_de, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_dw, expected_dw, rtol=1e-5, atol=1e-5)
  assert got_dw.sharding.spec == sharding.CLASS_WEIGHT_SPEC


def test_finite_gradients_at_theta_zero():
  mesh = sharding.make_mesh(2, 4)
  embeddings, weights, labels = problem(4)
  embeddings[:4] = weights[:, labels[:4]].T  # cos = 1 up to round-off
  grads = jax.jit(jax.grad(lambda e, w: class_parallel.arcface_loss(
      e, w, labels, mesh), argnums=(0, 1)))(embeddings, weights)
  assert all(np.isfinite(g).all() for g in grads)


def test_bfloat16_inputs_give_a_float32_loss():
  mesh = sharding.make_mesh(2, 4)
  embeddings, weights, labels = problem(1)
  got = jax.jit(lambda e, w, y: class_parallel.arcface_loss(
      e, w, y, mesh, scale=16.0))(embeddings.astype(jnp.bfloat16),
                                  weights.astype(jnp.bfloat16), labels)
  assert got.dtype == jnp.float32
  expected = margin.arcface_loss(embeddings, weights, labels, scale=16.0)
  np.testing.assert_allclose(got, expected, rtol=3e-2)


def test_labels_are_checked():
  mesh = sharding.make_mesh(1, 8)
  embeddings, weights, labels = problem(2)
  bad = labels.copy()
  bad[5] = 64
  with pytest.raises(ValueError, match='outside \\[0, 64\\).*64'):
    class_parallel.arcface_loss(embeddings, weights, bad, mesh)
  under_jit = jax.jit(lambda y: class_parallel.arcface_loss(
      embeddings, weights, y, mesh))(bad)
  assert np.isnan(under_jit)  # never a silently clamped gather


def test_shape_errors_name_the_problem():
  mesh = sharding.make_mesh(1, 8)
  embeddings, weights, labels = problem(3, c=60)
  with pytest.raises(ValueError, match='60 classes do not split evenly'):
    class_parallel.arcface_loss(embeddings, weights, labels, mesh)
  embeddings, weights, labels = problem(3, n=12)
  with pytest.raises(ValueError, match='batch of 12 does not split'):
    class_parallel.arcface_loss(embeddings, weights, labels, mesh)
  with pytest.raises(ValueError, match='is not the 8 devices'):
    sharding.make_mesh(3, 2)


def test_a_million_classes_fit_where_full_logits_would_not():
  # 8 devices, 1,000,000 classes x 512 dims, batch 512: the compiled step's
  # per-device memory stays below one full float32 logits matrix (2 GB).
  mesh = sharding.make_mesh(1, 8)
  n, d, c = 512, 512, 1_000_000
  shapes = (jax.ShapeDtypeStruct((n, d), jnp.float32,
                                 sharding=sharding.batch_sharding(mesh)),
            jax.ShapeDtypeStruct((d, c), jnp.float32,
                                 sharding=sharding.class_weight_sharding(mesh)),
            jax.ShapeDtypeStruct((n,), jnp.int32,
                                 sharding=sharding.batch_sharding(mesh)))
  step = jax.jit(jax.value_and_grad(
      lambda e, w, y: class_parallel.arcface_loss(e, w, y, mesh),
      argnums=(0, 1)))
  memory = step.lower(*shapes).compile().memory_analysis()
  per_device = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  full_logits = n * c * 4
  # (1.29 GB when written: W's shard and its gradient, 256 MB each, and a
  # few (512, 125,000) slices of logits.)
  assert per_device < full_logits, (per_device, full_logits)


@pytest.mark.parametrize('name', ['arcface', 'softmax', 'sphereface'])
def test_padding_columns_are_left_out(name):
  # 60 classes on a model axis of 8: W padded to 64 columns, whatever they
  # hold, gives the loss and gradients of the unpadded 60-class problem.
  mesh = sharding.make_mesh(1, 8)
  parallel_loss, reference_loss = LOSSES[name]
  embeddings, weights, labels = problem(7, c=60)
  padded = np.concatenate([weights, 5 * np.ones((8, 4), np.float32)], 1)
  expected, (expected_de, expected_dw) = jax.value_and_grad(
      reference_loss, argnums=(0, 1))(embeddings, weights, labels)
  got, (got_de, got_dw) = jax.jit(jax.value_and_grad(
      lambda e, w: parallel_loss(e, w, labels, mesh=mesh, num_classes=60),
      argnums=(0, 1)))(embeddings, padded)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  np.testing.assert_allclose(got_de, expected_de, rtol=1e-5, atol=1e-5)
  got_dw = np.asarray(got_dw)
  np.testing.assert_allclose(got_dw[:, :60], expected_dw, rtol=1e-5,
                             atol=1e-5)
  assert not got_dw[:, 60:].any()
  with pytest.raises(ValueError, match='outside \\[0, 60\\)'):
    parallel_loss(embeddings, padded, np.full_like(labels, 61), mesh=mesh,
                  num_classes=60)


def test_sampled_columns_keep_every_positive():
  key = jax.random.key(0)
  labels = jnp.array([3, 3, 17, 40, 41, 200])  # 200: another shard's
  chosen = np.asarray(sampled_columns(
      key, labels, first_column=0, per_shard=50, num_classes=45,
      num_sample=10))
  assert len(set(chosen)) == 10
  assert {3, 17, 40, 41} <= set(chosen)
  assert all(c < 45 for c in chosen)  # padding only when nothing is left
  other = np.asarray(sampled_columns(
      jax.random.key(1), labels, 0, 50, 45, 10))
  assert set(other) != set(chosen)


def test_partial_fc_is_the_softmax_over_the_sampled_columns():
  mesh = sharding.make_mesh(1, 8)
  embeddings, weights, labels = problem(8, n=16, c=256)
  key = jax.random.key(3)

  def loss(e, w):
    return class_parallel.arcface_loss(e, w, labels, mesh, scale=16.0,
                                       sample_rate=0.25, key=key)
  got, (got_de, got_dw) = jax.jit(jax.value_and_grad(
      loss, argnums=(0, 1)))(embeddings, weights)
  # Brute force: the same columns, chosen shard by shard, then the plain
  # loss on them with the labels renumbered.
  per_shard, num_sample = 32, 16  # max(0.25 * 32, 16 examples)
  columns = np.concatenate([
      shard * per_shard + np.asarray(sampled_columns(
          jax.random.fold_in(key, shard), jnp.asarray(labels),
          shard * per_shard, per_shard, 256, num_sample))
      for shard in range(8)])
  assert set(labels) <= set(columns)
  renumbered = np.array([list(columns).index(y) for y in labels])
  expected, (expected_de, expected_dw) = jax.value_and_grad(
      lambda e, w: margin.arcface_loss(e, w, renumbered, scale=16.0),
      argnums=(0, 1))(embeddings, weights[:, columns])
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  np.testing.assert_allclose(got_de, expected_de, rtol=1e-5, atol=1e-5)
  got_dw = np.asarray(got_dw)
  np.testing.assert_allclose(got_dw[:, columns], expected_dw, rtol=1e-5,
                             atol=1e-5)
  untouched = np.setdiff1d(np.arange(256), columns)
  assert not got_dw[:, untouched].any()


def test_partial_fc_cost_follows_the_sample_rate():
  mesh = sharding.make_mesh(1, 8)
  shapes = (jax.ShapeDtypeStruct((64, 128), jnp.float32),
            jax.ShapeDtypeStruct((128, 80_000), jnp.float32),
            jax.ShapeDtypeStruct((64,), jnp.int32))

  def flops(rate):
    step = jax.jit(jax.grad(lambda e, w, y: class_parallel.arcface_loss(
        e, w, y, mesh, sample_rate=rate, key=jax.random.key(0)),
                            argnums=(0, 1)))
    analysis = step.lower(*shapes).compile().cost_analysis()
    if isinstance(analysis, list):
      analysis = analysis[0]
    return analysis['flops']
  full, tenth = flops(1.0), flops(0.1)
  assert tenth < 0.2 * full, (tenth, full)
