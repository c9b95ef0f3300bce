"""Recompilation guards: the train step and the embedding function compile
once per shape.

A step that compiles again gives the same numbers, only slower: on a real
backbone each compilation costs minutes, so a state whose sharding, dtype or
weak type drifts from one step to the next, or a last evaluation batch of
another size, would make training crawl while every other test passes.

In the spirit of ``chex.assert_max_traces``, but counted where ``jax.jit``
works, so that the functions need no wrapping: ``jax.monitoring`` reports
each trace of a jitted function to a jaxpr and each lowering of a jaxpr to an
XLA module by the function's name. A lowering happens once per compilation,
whether the executable then comes from XLA or from the persistent
compilation cache the test session uses (tests/conftest.py), and a cache hit
of the jitted function does neither. The train step's guard also requires
that nothing at all compiles once the first step has run.
"""
import collections
import contextlib

import jax
import numpy as np
import pytest

from facejax import inference
from facejax import sharding
from facejax.data import device
from facejax.data import sources
from facejax.training import step as step_lib
from tests.training import test_step
from tests.training import tiny

_TRACE = '/jax/core/compile/jaxpr_trace_duration'
_LOWERING = '/jax/core/compile/jaxpr_to_mlir_module_duration'


@contextlib.contextmanager
def compilations():
  """Counts traces and lowerings by function name while the block runs.

  Yields:
    ``{'trace': Counter, 'lowering': Counter}``, keyed by the names jax
    reports (``jit(<function>)`` for a lowering in jax 0.10).
  """
  counts = dict(trace=collections.Counter(), lowering=collections.Counter())

  def listener(event, duration, **kwargs):
    del duration
    kind = {_TRACE: 'trace', _LOWERING: 'lowering'}.get(event)
    if kind:
      counts[kind][kwargs.get('fun_name')] += 1
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def assert_compiled_once(counts, function):
  """``function`` (a jitted function) traced once and lowered once."""
  name = function.__name__
  lowerings = sum(count for module, count in counts['lowering'].items()
                  if module in (f'jit({name})', f'jit_{name}'))
  assert counts['trace'][name] == 1, (name, counts)
  assert lowerings == 1, (name, counts)


@pytest.mark.parametrize('loss', [
    'arcface',  # the class-parallel head and the optimizer state
    'center',  # and the centres, state the step updates outside the grads
])
def test_train_step_compiles_once_across_steps(loss):
  # Class-parallel head (model axis 2) and data parallelism (4): the state
  # goes in with the shardings state.create gave it and comes out with the
  # step's own; batches arrive as the loop feeds them (device_batches).
  mesh = sharding.make_mesh(4, 2)
  batches = [test_step.identity_balanced_batch(seed) for seed in range(4)]
  with jax.set_mesh(mesh):
    _, _, state, train_step = test_step.engine(test_step.LOSSES[loss], mesh)
    batches = device.device_batches(iter(batches),
                                    sharding.batch_sharding(mesh))
    with compilations() as first:
      state, metrics = train_step(state, next(batches))
      float(metrics['loss'])
    with compilations() as later:
      for batch in batches:
        state, metrics = train_step(state, batch)
        float(metrics['loss'])
  assert_compiled_once(first, train_step)
  assert not later['lowering'] and not later['trace'], later
  assert int(state.step) == 4


def test_embedding_compiles_once_including_the_padded_last_batch():
  # 32 images are two full batches of 16; 37 leave a last batch of 5, which
  # the pipeline pads to 16 and masks. Each batch is embedded twice (the
  # image and its mirror image).
  config = tiny.tiny_config()
  mesh = sharding.make_mesh()
  model = test_step.tiny_model()
  size = config.data.image_size
  variables = jax.device_put(
      model.init(jax.random.key(0), np.zeros((1, size, size, 3), np.float32)),
      sharding.replicated(mesh))
  embedder = inference.Embedder(config, model, variables, mesh,
                                batch_size=16)
  images = np.random.default_rng(0).integers(
      0, 256, (37, size, size, 3), dtype=np.uint8)

  def source(count):
    return sources.InMemory(images[:count], np.zeros(count, np.int32))
  with compilations() as counts:
    embedder.embed(source(32), progress=False)
    features = embedder.embed(source(37), progress=False)
  assert_compiled_once(counts, step_lib.make_embed(model, mesh))
  assert features.shape == (37, test_step.TINY_IRESNET['embedding_dim'])
  assert np.isfinite(features).all()
