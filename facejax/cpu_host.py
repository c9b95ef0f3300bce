"""Settings for XLA on CPU cores: one device per core, and tcmalloc.

``train.demo`` starts its jobs with :func:`environment`'s variables. Use
them yourself for ``python -m train`` on a machine without an accelerator::

    eval "$(python -m facejax.cpu_host)"   # prints the export lines
    python -m train --config ... --workdir ...

They do two things. ``bench.demo_costs`` measures each one on the
default config's train step:

* ``--xla_force_host_platform_device_count=N`` with
  ``--xla_cpu_multi_thread_eigen=false``: N single-threaded CPU devices
  (N: the cores this process may use, rounded down to a power of two and
  at most ``MAX_DEVICES``, so that usual batch sizes split evenly). The
  batch is split over them, data-parallel, as it is over accelerators.
  XLA's default is one device, with each op split over a thread pool,
  and the small convolutions of face models do not split well.
* ``LD_PRELOAD`` of tcmalloc, when the system has it (Debian's and
  Ubuntu's ``libtcmalloc-minimal4``). glibc's malloc gives the step's
  large temporary buffers back to the kernel, and every step faults them
  in again: about 59,000 page faults per step of the demo's model on 2
  cores, with 94 of its 254 ms spent in the kernel. tcmalloc keeps them.

Settings the caller already has are kept: a ``XLA_FLAGS`` that sets the
device count, and an ``LD_PRELOAD`` that is not empty. The settings change
only where the work runs. Batch-norm statistics and gradients stay those
of the global batch, so results differ only by float rounding. On a
machine with an accelerator they do nothing, since they configure only
XLA's CPU platform.
"""

import os
import sys

MAX_DEVICES = 8
DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'
TCMALLOC_PATHS = (
    '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4',
    '/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4',
    '/usr/lib64/libtcmalloc_minimal.so.4',
    '/usr/lib/libtcmalloc_minimal.so.4',
)


def usable_cores():
  """The cores this process may run on (its affinity), at least 1."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not on Linux
    return max(1, os.cpu_count() or 1)


def device_count(cores=None):
  """The CPU devices for ``cores``: the largest power of two <= cores,
  at most ``MAX_DEVICES``."""
  cores = min(cores or usable_cores(), MAX_DEVICES)
  return 1 << (cores.bit_length() - 1)


def tcmalloc_path():
  """The system's tcmalloc library, or None."""
  return next((p for p in TCMALLOC_PATHS if os.path.exists(p)), None)


def environment(environ=None, cores=None):
  """Only the variables to set in a child process's environment.

  Args:
    environ: the current environment (default ``os.environ``). What it
      already sets is kept.
    cores: the cores to plan for (default :func:`usable_cores`).
  """
  environ = os.environ if environ is None else environ
  changes = {}
  flags = environ.get('XLA_FLAGS', '')
  count = device_count(cores)
  if DEVICE_COUNT_FLAG not in flags and count > 1:
    changes['XLA_FLAGS'] = ' '.join(filter(None, [
        flags, f'{DEVICE_COUNT_FLAG}={count}',
        '--xla_cpu_multi_thread_eigen=false']))
  library = tcmalloc_path()
  if library and not environ.get('LD_PRELOAD'):
    changes['LD_PRELOAD'] = library
  return changes


def main():
  for name, value in environment().items():
    print(f"export {name}='{value}'")
  return 0


if __name__ == '__main__':
  sys.exit(main())
