"""The training loop: config -> data, model, objective, state -> steps.

Read top to bottom, as big_vision's train.py:

1. check the config (every error names its key, the value and what is
   allowed): the config alone before any data is read, then against the
   opened data, both before anything compiles;
2. the mesh, the data source, the model and the objective;
3. the workdir's lock (one trainer per workdir), the abstract state, its
   shardings, and the state: restored from the workdir's newest intact
   checkpoint when there is one (onto this mesh, whatever mesh wrote it;
   damaged steps are moved aside, see :mod:`facejax.training.checkpoint`),
   else freshly initialised in place; what an interrupted run logged after
   the restored step is dropped, as the steps are redone;
4. the input pipeline from the restored step (same seed, same order: a
   resumed run sees exactly the batches an uninterrupted one would);
5. steps, with a progress line and metrics every ``log_every`` steps, the
   config's evaluators (:mod:`facejax.evaluators`: ``config.evals``, and
   ``config.eval``'s verification accuracy on held-out pairs), each every
   ``every`` steps, and a checkpoint every ``checkpoint_every`` steps and at
   the end (the best by ``config.best_metric`` kept as well); between
   steps, the objective's hooks on their schedules (LMLE's re-clustering,
   the adaptive task weights' validation records: both in the state, so a
   resumed run repeats them exactly; :mod:`facejax.training.objectives`).

``init_from`` (a workdir) starts a fresh run from another run's backbone
(e.g. attributes fine-tuned from an identity model), as LMLE initialises
its clusters from a pretrained model's features.

A non-finite loss stops the run with :class:`NonFiniteLossError` before
anything is saved: losses are checked before every checkpoint.
"""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from facejax import evaluators
from facejax import inference
from facejax import sharding
from facejax.data import attribute_sources
from facejax.data import augment
from facejax.data import device
from facejax.data import pipeline
from facejax.data import sources
from facejax.training import config_checks
from facejax.training import config_rules
from facejax.training import objectives
from facejax.training import observe
from facejax.training import optim
from facejax.training import run_directory
from facejax.training import state as state_lib
from facejax.training import step as step_lib


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite; no checkpoint was written after it."""


ConfigError = config_rules.ConfigError  # what ``python -m train`` reports


@dataclasses.dataclass
class Run:
  """What :func:`train` built and ended with (for tests and eval jobs)."""
  state: object
  mesh: object
  model: object
  objective: object
  source: object
  history: list
  workdir: str


def training_source(data_config):
  """The training source of ``config.data``: synthetic (drawn at
  ``image_size``), an attribute dataset's train split
  (:mod:`facejax.data.attribute_sources`), or a path."""
  if attribute_sources.is_attribute_dataset(data_config.source):
    return attribute_sources.open_split(data_config, 'train')
  if data_config.source == 'synthetic':
    s = data_config.synthetic
    return sources.synthetic_source(s.num_identities, s.images_per_identity,
                                    seed=s.seed,
                                    image_size=data_config.image_size)
  return sources.open_source(data_config.source,
                             landmarks_file=data_config.get('landmarks_file')
                             or None)


def evaluate(evaluator, entry, embed, state, mesh, image_size):
  """``{prefix + name: value}`` of one evaluator on the current model
  (flip-summed, L2-normalised embeddings unless the evaluator asks for
  ``flip`` or ``normalise`` otherwise, batches of ``entry.batch_size``;
  ``entry``: its :class:`facejax.evaluators.Entry`)."""
  variables = inference.backbone_variables(state)

  def embed_source(source, **options):  # flip, normalise
    return inference.embed_source(embed, variables, source, mesh,
                                  entry.batch_size, image_size, **options)
  return {entry.prefix + name: value
          for name, value in evaluator.run(embed_source)}


def _check_finite(pending, step):
  losses = np.asarray(jax.device_get([m['loss'] for m in pending]))
  if not np.isfinite(losses).all():
    first = int(np.flatnonzero(~np.isfinite(losses))[0])
    raise NonFiniteLossError(
        f'the loss became {losses[first]} at step '
        f'{step - len(pending) + first + 1}; stopped without saving a '
        'checkpoint after it (lower the learning rate, or check the data)')


def train(config, workdir, mesh=None, log=True, stop_at=None):
  """Trains ``config`` in ``workdir`` (resuming from it); returns a Run.

  Args:
    config: the training config (see ``train/configs/default.py``).
    workdir: checkpoints, ``metrics.jsonl`` and TensorBoard events.
    mesh: default :func:`facejax.sharding.make_mesh` with ``config.mesh``.
    log: print progress (process 0 only in any case).
    stop_at: stop after this step, with a checkpoint, as if interrupted
      (the schedule still runs to ``config.total_steps``).

  Raises:
    ConfigError: a config value that cannot work, named by its key.
    run_directory.WorkdirInUseError: another trainer holds ``workdir`` (a
      ConfigError).
    NonFiniteLossError: the loss became NaN or infinite.
  """
  devices = jax.devices()
  config_checks.check_config(config, len(devices))  # before any data is read
  source = training_source(config.data)
  config_checks.check_source(config, source)  # before anything compiles
  num_classes = source.num_classes
  mesh = mesh or sharding.make_mesh(
      model=config_checks.model_axis_size(config, len(devices)))
  model = inference.build_model(config)
  image_shape = (config.data.image_size, config.data.image_size, 3)
  key = jax.random.key(config.seed)
  objective = objectives.Objective(config.loss, num_classes,
                                   inference.embedding_dim(model, image_shape),
                                   class_shards=mesh.shape[sharding.MODEL],
                                   num_examples=source.num_examples,
                                   num_attributes=len(getattr(
                                       source, 'attribute_names', ())))
  optimizer, learning_rate = optim.build(config.optimizer, config.total_steps)
  first = jax.process_index() == 0  # the only process that writes
  with run_directory.hold_workdir(workdir, enabled=first), jax.set_mesh(mesh):
    if first:  # what evaluation jobs rebuild the model from
      run_directory.save_config(config, workdir)
    shard_backbone = config.get('mesh', {}).get('shard_backbone', False)
    abstract = state_lib.abstract_state(key, model, objective, optimizer,
                                        image_shape, mesh, shard_backbone)
    best = evaluators.best_metric(config)  # (name, mode) or None
    checkpoints = run_directory.open_checkpoints(config, workdir, best)
    state, resumed = checkpoints.restore_latest(abstract)
    if state is not None:
      shardings = jax.tree.map(lambda leaf: leaf.sharding, abstract)
      if first and log:
        print(f'resuming from step {resumed} '
              f'({checkpoints.directory / str(resumed)})', file=sys.stderr,
              flush=True)
    else:
      state, shardings = state_lib.create(key, model, objective, optimizer,
                                          image_shape, mesh, shard_backbone)
      if config.get('init_from'):
        state = inference.initialise_from(state, config.init_from, mesh)
    start = int(jax.device_get(state.step))
    train_step = step_lib.make_train_step(
        model, objective, optimizer, mesh, shardings,
        compute_dtype=jnp.dtype(config.get('compute_dtype', 'float32')),
        micro_batches=config.get('micro_batches', 1))
    embed = step_lib.make_embed(model, mesh, jnp.dtype(
        config.get('compute_dtype', 'float32')))
    evaluations = evaluators.from_config(config)  # their data read now
    hooks = objective.hooks(embed, source, mesh, config)  # between steps
    skipped = pipeline.SkippedImages()
    balanced = config.data.get('identities_per_batch', 0) or None
    dataset = pipeline.train_dataset(
        source, config.batch_size, seed=config.seed,
        image_size=config.data.image_size,
        augmentation=augment.Augmentation(**config.data.augmentation),
        identities_per_batch=balanced,
        images_per_identity=(config.data.images_per_identity
                             if balanced else None),
        start_step=start, skipped=skipped, num_classes=num_classes,
        with_index=objective.needs_example_index,
        max_pixels=config.data.get('max_pixels',
                                   pipeline.DEFAULT_MAX_PIXELS) or None)
    if first and log and getattr(source, 'left_out_message', ''):
      print(f'input: {source.left_out_message}', flush=True)
    end = min(config.total_steps, stop_at or config.total_steps)
    batches = device.device_batches(
        dataset.take(max(end - start, 0)).as_numpy_iterator(),
        sharding.batch_sharding(mesh))
    progress = observe.Progress(config.total_steps, start,
                                config.batch_size, enabled=first and log)
    writer = observe.MetricWriter(workdir, enabled=first, resume_step=start)
    if writer.dropped:
      run_directory.note(
          f'{observe.METRICS_FILE}: dropped {writer.dropped} records after '
          f'step {start} (the interrupted run logged them; they are redone '
          'now)')
    history, pending = [], []
    step = start
    try:
      for batch in batches:
        checkpoints.wait_if_behind(step)  # bounds the work a crash loses
        for hook in hooks:  # LMLE's clusters, the task weights' records
          if step % hook.every == 0:
            state = hook.run(state, step)
        state, metrics = train_step(state, batch)
        step += 1
        pending.append(metrics)
        last = step == end
        if step % config.log_every == 0 or last:
          _check_finite(pending, step)
          values = {k: float(v) for k, v in jax.device_get(
              pending[-1]).items()}
          values['learning_rate'] = float(learning_rate(step - 1))
          values['images_per_second'] = progress.update(
              step, dict(loss=values['loss'],
                         lr=values['learning_rate']))
          values['skipped_images'] = skipped.count
          pending = []
          for entry, evaluator in evaluations:
            if step % entry.every == 0 or last:
              values.update(evaluate(evaluator, entry, embed, state, mesh,
                                     config.data.image_size))
          writer.write(step, values)
          history.append(dict(values, step=step))
        if step % config.checkpoint_every == 0 or last:
          if pending:
            _check_finite(pending, step)
          saved = {k: v for k, v in (history[-1] if history else {}).items()
                   if best and k == best[0]}
          checkpoints.save(step, state, metrics=saved or None, force=last)
          writer.flush()  # a crash keeps the events of every saved step
    finally:
      checkpoints.wait()
      checkpoints.close()
      writer.close()
    if skipped.count and first and log:
      print(f'input: {skipped}', flush=True)
  return Run(state=state, mesh=mesh, model=model, objective=objective,
             source=source, history=history, workdir=workdir)
