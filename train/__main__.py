"""Train a face recognition model from a config file.

    python -m train --config train/configs/default.py --workdir runs/default \\
        [--config.total_steps=100] [--config.loss.name=cosface ...]

The config is a Python file with ``get_config()`` returning an
``ml_collections.ConfigDict``; ``--config.key=value`` overrides any entry.
A rerun with the same ``--workdir`` resumes from its latest checkpoint.
Launched as several processes (one per host), pass ``--coordinator``,
``--num_processes`` and ``--process_id`` or let the cluster's environment
variables (SLURM, Open MPI, Cloud TPU) provide them.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from facejax.training import distributed
from facejax.training import loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'train/configs/default.py', 'the training config file')
_WORKDIR = flags.DEFINE_string('workdir', None, 'where checkpoints and logs '
                               'go (resumed when it holds a checkpoint)',
                               required=True)
_COORDINATOR = flags.DEFINE_string('coordinator', None, 'host:port of '
                                   'process 0, for multi-process training')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'this process')


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:  # orbax logs every file at INFO
    logging.set_verbosity(logging.WARNING)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  try:
    run = loop.train(_CONFIG.value, _WORKDIR.value)
  except (loop.ConfigError, loop.NonFiniteLossError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  if run.history:
    print(f'done: {run.history[-1]}')
  return 0


if __name__ == '__main__':
  app.run(main)
