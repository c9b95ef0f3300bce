"""A tiny training run that stops inside an asynchronous save (run by a test).

    python -m tests.training.crash_worker WORKDIR STEP MARKER

Trains ``tiny_config(total_steps=5)`` in WORKDIR. The background write of
checkpoint STEP holds just before its commit (orbax's rename of
``STEP.orbax-checkpoint-tmp`` to ``STEP``), after every file of it is
written, and writes the file MARKER: the test kills the process there with
SIGKILL, as a crash or a preemption would.
"""
import pathlib
import sys
import time

import orbax.checkpoint as ocp

from facejax.training import loop
from tests.training.tiny import tiny_config

_atomic = ocp.path.atomicity.AtomicRenameTemporaryPath


def hold_commit(step, marker):
  """Patches orbax so that the commit of ``step`` never comes."""
  finalize = _atomic.finalize

  async def held(self):
    if self.get_final().name == str(step):
      pathlib.Path(marker).write_text(str(self.get()))
      time.sleep(3600)  # killed here
    return await finalize(self)

  _atomic.finalize = held


def main(workdir, step, marker):
  hold_commit(step, marker)
  loop.train(tiny_config(total_steps=5), workdir, log=False)


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
