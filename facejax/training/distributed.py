"""Multi-process start-up: ``jax.distributed.initialize`` from flags or env.

Sources, first found wins:

1. explicit arguments (the ``--coordinator``, ``--num_processes`` and
   ``--process_id`` flags of ``python -m train``);
2. ``FACEJAX_COORDINATOR``, ``FACEJAX_NUM_PROCESSES``,
   ``FACEJAX_PROCESS_ID``;
3. a cluster launcher JAX detects by itself (SLURM with more than one task,
   Open MPI, Cloud TPU pods): ``jax.distributed.initialize()`` with no
   arguments;
4. none: a single process, nothing to do.

CPU processes exchange collectives through gloo (set before initialising;
it has no effect on GPU or TPU). Call this before anything touches a
device.
"""

import os

import jax

_CLUSTER_VARIABLES = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')


def _cluster_size():
  for name in _CLUSTER_VARIABLES:
    value = os.environ.get(name)
    if value and value.isdigit():
      return int(value)
  return 1


def initialize(coordinator=None, num_processes=None, process_id=None):
  """Starts multi-process JAX when asked to; returns True if it did."""
  coordinator = coordinator or os.environ.get('FACEJAX_COORDINATOR')
  if num_processes is None and os.environ.get('FACEJAX_NUM_PROCESSES'):
    num_processes = int(os.environ['FACEJAX_NUM_PROCESSES'])
  if process_id is None and os.environ.get('FACEJAX_PROCESS_ID'):
    process_id = int(os.environ['FACEJAX_PROCESS_ID'])
  explicit = (coordinator, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError(
          'multi-process training needs all of coordinator, num_processes '
          f'and process_id; got {coordinator!r}, {num_processes!r}, '
          f'{process_id!r}')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True
  if _cluster_size() > 1 or os.environ.get('TPU_WORKER_HOSTNAMES'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize()
    return True
  return False
