"""What every loss's entry in the objective table says, and the helpers the
families share.

A :class:`Spec` is one loss: how to call it on a batch, the ``loss.*``
keys it reads, its head and its extra state, what its batches must carry,
what it needs of the rest of the config, and the work the training loop
does for it between steps (:class:`StepHook`). The family modules
(:mod:`.classification`, :mod:`.metric_learning`, :mod:`.attributes`) hold
the table's entries; :class:`facejax.training.objectives.Objective` binds
one of them to a run's sizes.
"""

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# insightface's normal(0, 0.01), for every linear head on the embedding.
HEAD_INIT_STD = 0.01


class Inputs(NamedTuple):
  """One global batch as a loss sees it.

  Attributes:
    embeddings: (N, D) float32, batch-sharded.
    labels: (N,) int32 identities, or (N, A) bool attributes.
    head: the head parameters (``Spec.init_head``).
    extra: the extra state (``Spec.init_extra``).
    step: the optimizer step (annealed schedules).
    mesh: the device mesh.
    rng: PRNG key (Partial FC's column sampling).
    indices: (N,) the examples' positions in the training source, or None.
  """
  embeddings: Any
  labels: Any
  head: dict
  extra: dict
  step: Any
  mesh: Any
  rng: Any = None
  indices: Any = None


class StepHook(NamedTuple):
  """Work the loop does between steps: ``state = run(state, step)`` before
  every step that is a multiple of ``every``. The result goes into the
  train state, and the schedule is the step count, so a resumed run
  repeats exactly what an uninterrupted one does."""
  every: int
  run: Callable


def _no_parameters(objective, key):
  del objective, key
  return {}


def _no_state(objective):
  del objective
  return {}


def _accept(config):
  del config


def _no_hooks(embed, source, mesh, config):
  del embed, source, mesh, config
  return []


@dataclasses.dataclass(frozen=True)
class Spec:
  """One loss of the table.

  Attributes:
    loss: ``loss(objective, inputs) -> (loss, extra, metrics)``: the scalar
      loss, the new extra state and a dict of scalar metrics, for one
      global batch (:class:`Inputs`); traced inside the jitted step.
    rules: ``(key, config_rules.Allowed)`` of the ``loss.*`` keys it reads,
      every one required.
    init_head: ``(objective, key) -> dict`` of learned head parameters.
    init_extra: ``(objective) -> dict`` of non-learned state carried in the
      train state (replicated).
    class_weights: the head is a class-weight matrix W (D, C), split by
      columns over the mesh's ``'model'`` axis.
    identity_balanced: it needs P x K batches (``data.identities_per_batch``
      and ``data.images_per_identity``).
    example_index: its batches carry ``index`` (the examples' positions in
      the training source): it keeps a value per training example.
    attributes: it trains on the batch's ``attributes`` (bool (N, A))
      instead of identity labels.
    check_choices: ``(loss_config) -> None``: raises ``ConfigError`` for a
      ``loss.*`` choice it does not know (checked when an Objective is
      built, as well as with the config).
    check: ``(config) -> None``: raises ``ConfigError`` where the rest of
      the config does not give it what it needs (checked with the config,
      before any data is read).
    hooks: ``(embed, source, mesh, config) -> [StepHook]``: the loop's work
      between steps for it (``embed``: :func:`facejax.training.step.
      make_embed`'s function; ``source``: the training source).
  """
  loss: Callable
  rules: tuple = ()
  init_head: Callable = _no_parameters
  init_extra: Callable = _no_state
  class_weights: bool = False
  identity_balanced: bool = False
  example_index: bool = False
  attributes: bool = False
  check_choices: Callable = _accept
  check: Callable = _accept
  hooks: Callable = _no_hooks


def replicated(inputs):
  """``inputs`` with the batch (embeddings, labels, indices) on every
  device: small (N, D) and (N, N) problems are computed on the whole,
  replicated global batch."""
  everywhere = NamedSharding(inputs.mesh, P())
  embeddings = jax.reshard(inputs.embeddings, everywhere)
  labels = jax.reshard(inputs.labels, everywhere)
  indices = inputs.indices
  if indices is not None:
    indices = jax.reshard(indices, everywhere)
  return inputs._replace(embeddings=embeddings, labels=labels,
                         indices=indices)


def example_indices(inputs, name):
  """The batch's example indices; a ValueError naming the loss without."""
  if inputs.indices is None:
    raise ValueError(f'loss.name={name} needs batches with the examples\' '
                     'index (train_dataset(with_index=True))')
  return inputs.indices
