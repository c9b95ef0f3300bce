"""One trainer per workdir: an exclusive lock held for the run's lifetime.

``<workdir>/.lock`` is locked with ``fcntl.flock`` (exclusive, without
waiting) and holds its holder as one JSON line: pid, host and start time.
The operating system drops the lock when its holder exits or is killed, so a
lock file left by a killed trainer is free: the next trainer takes it over
and says whose it was. A release empties the file, so a non-empty free lock
file always means its holder died holding it.

The lock works where ``flock`` does between the processes that share the
workdir: a local disk, or NFS (Linux maps ``flock`` to NFS locks). In a
multi-process run only process 0 takes it (the processes of one run share
the workdir by design).
"""

import fcntl
import json
import os
import socket
import time

LOCK_FILE = '.lock'


class LockHeldError(RuntimeError):
  """The lock is held by a live process.

  Attributes:
    path: the lock file.
    holder: its holder in words (pid, host, start time), as written in it.
  """

  def __init__(self, path, holder):
    super().__init__(f'{path} is held by {holder}')
    self.path, self.holder = path, holder


def describe(holder):
  """``pid 123 on host-a, started 2024-05-01 10:00:00`` (or the raw text)."""
  if not isinstance(holder, dict):
    return f'an unknown process ({holder!r})' if holder else (
        'an unknown process')
  started = time.strftime('%Y-%m-%d %H:%M:%S',
                          time.localtime(holder.get('start_time', 0)))
  return (f'pid {holder.get("pid")} on {holder.get("host")}, '
          f'started {started}')


class WorkdirLock:
  """The exclusive lock on ``<workdir>/.lock``; a context manager.

  Attributes:
    path: the lock file.
    previous: the holder (dict, or the raw text) of a stale lock this one
      took over, or None.
  """

  def __init__(self, workdir):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.previous = None
    self._fd = None

  def acquire(self):
    """Takes the lock (never waits); writes this process into it.

    Returns:
      self.

    Raises:
      LockHeldError: another live process holds it.
    """
    os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise LockHeldError(self.path, describe(holder)) from None
    self.previous = _read_holder(fd)  # a holder that died holding it
    me = dict(pid=os.getpid(), host=socket.gethostname(),
              start_time=time.time())
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + '\n').encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self):
    """Empties the lock file and unlocks it (a free lock reads as empty)."""
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)
    finally:
      os.close(self._fd)  # closing drops the flock
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc_info):
    self.release()


def _read_holder(fd):
  """The holder written in the lock file: a dict, raw text, or None."""
  size = os.fstat(fd).st_size
  text = os.pread(fd, min(size, 4096), 0).decode('utf-8', 'replace').strip()
  if not text:
    return None
  try:
    holder = json.loads(text)
  except ValueError:
    return text
  return holder if isinstance(holder, dict) else text
