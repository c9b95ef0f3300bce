"""Optimizers and learning-rate schedules, from a config.

    optimizer:
      name: 'sgd' (momentum, weight decay added to the gradient, as
            insightface trains: lr 0.1, momentum 0.9, wd 5e-4) or 'adamw'
            (decoupled weight decay)
      learning_rate: the peak rate
      warmup_steps: linear warm-up from 0 to the peak
      schedule: 'cosine' (to end_learning_rate), 'polynomial' (power, to
                end_learning_rate; insightface's PolyScheduler is power 2)
                or 'constant'
      clip_norm: clip the global gradient norm (0 or None: off)

Schedules are in optimizer steps (one per train step, micro-batches
included). All optimizer state is float32, as are the parameters.
"""

import optax


def schedule(config, total_steps):
  """The learning rate as a function of the step (an optax schedule)."""
  peak = float(config.learning_rate)
  warmup = int(config.get('warmup_steps', 0))
  end = float(config.get('end_learning_rate', 0.0))
  kind = config.get('schedule', 'cosine')
  decay_steps = max(total_steps - warmup, 1)
  if kind == 'cosine':
    decay = optax.cosine_decay_schedule(peak, decay_steps,
                                        alpha=end / peak if peak else 0.0)
  elif kind == 'polynomial':
    decay = optax.polynomial_schedule(peak, end, config.get('power', 2.0),
                                      decay_steps)
  elif kind == 'constant':
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f"optimizer.schedule: unknown {kind!r} (choose "
                     "'cosine', 'polynomial' or 'constant')")
  if not warmup:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def build(config, total_steps):
  """(optax GradientTransformation, schedule) from the optimizer config."""
  learning_rate = schedule(config, total_steps)
  name = config.get('name', 'sgd')
  weight_decay = float(config.get('weight_decay', 0.0))
  if name == 'sgd':
    parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
    parts.append(optax.sgd(learning_rate,
                           momentum=config.get('momentum', 0.9) or None,
                           nesterov=config.get('nesterov', False)))
  elif name == 'adamw':
    parts = [optax.adamw(learning_rate, b1=config.get('b1', 0.9),
                         b2=config.get('b2', 0.999),
                         weight_decay=weight_decay)]
  else:
    raise ValueError(f"optimizer.name: unknown {name!r} (choose 'sgd' or "
                     "'adamw')")
  clip = config.get('clip_norm', None)
  if clip:
    parts.insert(0, optax.clip_by_global_norm(float(clip)))
  return optax.chain(*parts), learning_rate
