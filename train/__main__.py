"""Train a face recognition model from a config file.

    python -m train --config train/configs/default.py --workdir runs/default \\
        [--config.total_steps=100] [--config.loss.name=cosface ...]

The config is a Python file with ``get_config()`` returning an
``ml_collections.ConfigDict``; ``--config.key=value`` overrides any entry.
A rerun with the same ``--workdir`` resumes from its latest checkpoint.
A bad value, or an override of a key the config does not have, stops it
with one ``error:`` line naming the key (exit code 1 for a value, 2 for a
flag), before any data is read.
Launched as several processes (one per host), pass ``--coordinator``,
``--num_processes`` and ``--process_id`` or let the cluster's environment
variables (SLURM, Open MPI, Cloud TPU) provide them.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from facejax import command_line
from facejax.data import files
from facejax.training import checkpoint
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


def unknown_key(error):
  """(key, hint) of ml_collections' error for a key a config does not have:
  the innermost KeyError of its chain is the key; the one around it may add
  'Did you mean ...?'."""
  chain = []
  while error is not None:
    chain.append(error)
    error = error.__context__
  keys = [e for e in chain if isinstance(e, KeyError) and e.args]
  if not keys:
    return None, ''
  hint = str(keys[-2].args[0]).partition('\n')[2] if len(keys) > 1 else ''
  return str(keys[-1].args[0]), hint


def parse_flags(argv):
  """absl's flag parsing; a bad flag is one ``error:`` line, exit code 2."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # --config.key that is not there
    key, hint = unknown_key(e)
    overrides = [arg[2:].split('=')[0] for arg in argv[1:]
                 if arg.startswith(f'--{_CONFIG.name}.')]
    named = [o for o in overrides if key in o.split('.')[1:]]
    if not named:
      raise
    command_line.report(f'--{named[0]}: no such key in the config'
                        + (f'. {hint}' if hint else ''))
  except flags.Error as e:  # the first and last lines of a long message
    lines = [line for line in str(e).splitlines() if line.strip()]
    command_line.report(' '.join(lines[:1] + lines[1:][-1:]))
  sys.exit(2)  # a usage error, as argparse's


def _is_tensorflow_data_error(error):
  """A tensorflow error from the input pipeline (tensorflow is imported only
  if the pipeline ran: never import it here)."""
  tf = sys.modules.get('tensorflow')
  return tf is not None and isinstance(error, tf.errors.OpError)


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:  # orbax logs every file at INFO
    logging.set_verbosity(logging.WARNING)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  try:
    run = loop.train(_CONFIG.value, _WORKDIR.value)
  except (loop.ConfigError, loop.NonFiniteLossError, files.DataFileError,
          checkpoint.DamagedCheckpointError, FileNotFoundError) as e:
    return command_line.report(e)
  except Exception as e:  # pylint: disable=broad-except
    if not _is_tensorflow_data_error(e):
      raise
    # A damaged file found while reading (a TFRecord shard whose CRC
    # fails): tf.data's message names the file on its first line.
    return command_line.report(str(e).strip().splitlines()[0])
  if run.history:
    print(f'done: {run.history[-1]}')
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
