"""What a run shows: a progress line, TensorBoard events and a JSON-lines log.

Only process 0 writes (``jax.process_index() == 0``); the other processes'
writers do nothing. Metrics are plain floats by the time they get here.

A resumed run redoes the steps after its checkpoint: :class:`MetricWriter`
first drops what the interrupted run logged after the resumed step, so each
step is logged once (``metrics.jsonl`` rewritten atomically; TensorBoard
told to purge the later events).
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


METRICS_FILE = 'metrics.jsonl'


def drop_records_after(path, step):
  """Keeps only the records of ``path`` (JSON lines) with step <= ``step``.

  The file is rewritten atomically (a temporary file renamed over it), and
  only when something goes: records past ``step`` and unreadable lines (the
  last line of a writer killed mid-line). Returns how many lines went.
  """
  if not os.path.exists(path):
    return 0
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  kept = [line for line in lines
          if (recorded := _record_step(line)) is not None and recorded <= step]
  if len(kept) == len(lines):
    return 0
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(''.join(line + '\n' for line in kept))
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + '.tmp', path)
  return len(lines) - len(kept)


def _record_step(line):
  """The step of one JSON line, or None if it is not a record."""
  try:
    record = json.loads(line)
  except ValueError:
    return None
  step = record.get('step') if isinstance(record, dict) else None
  return step if isinstance(step, int) else None


class MetricWriter:
  """Scalars to ``workdir/metrics.jsonl`` and TensorBoard event files.

  Attributes:
    dropped: how many lines of ``metrics.jsonl`` were past ``resume_step``
      (or unreadable) and went.
  """

  def __init__(self, workdir, enabled=True, resume_step=None):
    """Opens the logs, forgetting what was logged after ``resume_step``.

    Args:
      workdir: where ``metrics.jsonl`` and ``tensorboard/`` are.
      enabled: False: write nothing (processes other than 0).
      resume_step: the step the run starts from (0 for a fresh run):
        records of later steps, left by an interrupted run that got further,
        are dropped; TensorBoard hides its events after it (``purge_step``).
        None: append to what is there.
    """
    self.enabled = enabled
    self.dropped = 0
    self._board = None
    self._file = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, METRICS_FILE)
      if resume_step is not None:
        self.dropped = drop_records_after(path, resume_step)
      self._file = open(path, 'a', encoding='utf-8')
      import tensorboardX  # pylint: disable=g-import-not-at-top
      # TensorBoard discards the events of steps >= purge_step written
      # before this writer's first event.
      self._board = tensorboardX.SummaryWriter(
          os.path.join(workdir, 'tensorboard'),
          purge_step=None if resume_step is None else resume_step + 1)

  def write(self, step, metrics):
    if not self.enabled:
      return
    record = dict(step=int(step), time=time.time(),
                  **{k: float(v) for k, v in metrics.items()})
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    for name, value in metrics.items():
      self._board.add_scalar(name, float(value), int(step))

  def flush(self):
    """Puts every event on disk (TensorBoard buffers up to two minutes)."""
    if self.enabled:
      self._board.flush()

  def close(self):
    if self.enabled:
      self._file.close()
      self._board.close()
