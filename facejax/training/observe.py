"""What a run shows: a progress line, TensorBoard events and a JSON-lines log.

Only process 0 writes (``jax.process_index() == 0``); the other processes'
writers do nothing. Metrics are plain floats by the time they get here.
"""

import json
import os
import sys
import time


def _format_duration(seconds):
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else (
      f'{minutes}:{seconds:02d}')


class Progress:
  """``step 120/400 [====>    ] loss 9.97 lr 0.08 812 img/s ETA 3:12``."""

  def __init__(self, total_steps, start_step, images_per_step, enabled=True,
               stream=None, width=24, unit='step'):
    self.total, self.start = total_steps, start_step
    self.unit = unit
    self.images_per_step = images_per_step
    self.enabled = enabled
    self.stream = stream or sys.stderr
    self.width = width
    self.begin = self.last_time = time.perf_counter()
    self.last_step = start_step

  def update(self, step, metrics):
    """Prints one line; returns the images/s since the last update."""
    now = time.perf_counter()
    rate = ((step - self.last_step) * self.images_per_step
            / max(now - self.last_time, 1e-9))
    self.last_time, self.last_step = now, step
    if not self.enabled:
      return rate
    done = (step - self.start) / max(self.total - self.start, 1)
    filled = int(self.width * min(done, 1.0))
    bar = '=' * filled + ('>' if filled < self.width else '') + ' ' * (
        self.width - filled - 1)
    steps_per_second = (step - self.start) / max(now - self.begin, 1e-9)
    left = (self.total - step) / max(steps_per_second, 1e-9)
    shown = ' '.join(f'{k} {v:.4g}' for k, v in metrics.items())
    print(f'{self.unit} {step}/{self.total} [{bar}] {shown} {rate:,.0f} img/s '
          f'ETA {_format_duration(left)}', file=self.stream, flush=True)
    return rate


class MetricWriter:
  """Scalars to ``workdir/metrics.jsonl`` and TensorBoard event files."""

  def __init__(self, workdir, enabled=True):
    self.enabled = enabled
    self._board = None
    self._file = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._file = open(os.path.join(workdir, 'metrics.jsonl'), 'a',
                        encoding='utf-8')
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._board = tensorboardX.SummaryWriter(
          os.path.join(workdir, 'tensorboard'))

  def write(self, step, metrics):
    if not self.enabled:
      return
    record = dict(step=int(step), time=time.time(),
                  **{k: float(v) for k, v in metrics.items()})
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    for name, value in metrics.items():
      self._board.add_scalar(name, float(value), int(step))

  def close(self):
    if self.enabled:
      self._file.close()
      self._board.close()
