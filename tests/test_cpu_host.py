"""facejax.cpu_host: the CPU settings the demo's jobs run with."""
import os
import subprocess
import sys

import pytest

from facejax import cpu_host


@pytest.mark.parametrize('cores,devices', [(1, 1), (2, 2), (3, 2), (6, 4),
                                           (8, 8), (16, 8), (96, 8)])
def test_one_device_per_core_a_power_of_two_at_most_eight(cores, devices):
  assert cpu_host.device_count(cores) == devices


def test_settings_are_added_and_the_callers_own_are_kept(monkeypatch):
  monkeypatch.setattr(cpu_host, 'TCMALLOC_PATHS', ('/nowhere/libtc.so',))
  assert cpu_host.environment({}, cores=4) == dict(XLA_FLAGS=(
      '--xla_force_host_platform_device_count=4 '
      '--xla_cpu_multi_thread_eigen=false'))
  # Other XLA flags stay, in front; a device count the caller set wins.
  assert cpu_host.environment(dict(XLA_FLAGS='--xla_dump_to=/tmp/x'),
                              cores=2)['XLA_FLAGS'] == (
                                  '--xla_dump_to=/tmp/x '
                                  '--xla_force_host_platform_device_count=2 '
                                  '--xla_cpu_multi_thread_eigen=false')
  assert cpu_host.environment(dict(
      XLA_FLAGS='--xla_force_host_platform_device_count=8'), cores=2) == {}
  assert cpu_host.environment({}, cores=1) == {}  # one core: nothing to split
  library = os.path.abspath(__file__)  # any file that exists
  monkeypatch.setattr(cpu_host, 'TCMALLOC_PATHS', ('/nowhere', library))
  assert cpu_host.environment({}, cores=1) == dict(LD_PRELOAD=library)
  assert cpu_host.environment(dict(LD_PRELOAD='/mine.so'), cores=1) == {}


def test_a_child_with_the_settings_has_one_device_per_core():
  """The settings take effect in a fresh process (tcmalloc preloaded where
  the system has it) and the printed export lines are what environment()
  gives."""
  environ = {k: v for k, v in os.environ.items()
             if k not in ('XLA_FLAGS', 'LD_PRELOAD')}
  environ.update(cpu_host.environment(environ, cores=2))
  out = subprocess.run(
      [sys.executable, '-c', 'import jax; print(jax.device_count("cpu"))'],
      env=environ, check=True, capture_output=True, text=True).stdout
  assert out.split()[-1] == '2'
  printed = subprocess.run(
      [sys.executable, '-m', 'facejax.cpu_host'], env=dict(
          environ, XLA_FLAGS='', LD_PRELOAD=''), check=True,
      capture_output=True, text=True).stdout
  expected = cpu_host.environment(dict(XLA_FLAGS='', LD_PRELOAD=''))
  assert printed.splitlines() == [f"export {k}='{v}'"
                                  for k, v in expected.items()]
