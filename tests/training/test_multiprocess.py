"""Two CPU processes (gloo, loopback) train what one process trains."""
import os
import socket
import subprocess
import sys

import numpy as np

from tests.training import multiprocess_worker


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def launch(count, index, port, devices, workdir, out):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} '
             '--xla_backend_optimization_level=0')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)  # not shared between writers
  return subprocess.Popen(
      [sys.executable, '-m', 'tests.training.multiprocess_worker', str(port),
       str(count), str(index), str(workdir), str(out)],
      env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
          os.path.abspath(__file__)))),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process):
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 0, output[-3000:]


def test_two_processes_train_the_same_parameters_as_one(tmp_path):
  port = free_port()
  pair = [launch(2, i, port, 4, tmp_path / 'two', tmp_path / 'two.npz')
          for i in range(2)]
  # The reference: this (single) process with its 8 devices, meanwhile.
  multiprocess_worker.main(port, 1, 0, tmp_path / 'one', tmp_path / 'one.npz')
  for process in pair:
    finish(process)
  two, one = np.load(tmp_path / 'two.npz'), np.load(tmp_path / 'one.npz')
  assert sorted(two.files) == sorted(one.files)
  np.testing.assert_allclose(two['losses'], one['losses'], rtol=1e-5)
  for name in one.files:
    # The gradients are summed over another topology (2 x 4 devices over
    # gloo, not 8 in one process), so float32 rounding differs: 1.6e-6 on
    # one of 256 parameters (of scale 0.1 to 0.3) was seen after three
    # steps, and arrays whose gradient is zero in exact arithmetic hold
    # noise of 1e-8. An absolute 1e-5 still catches a wrong gradient or a
    # batch seen twice, which move parameters by far more.
    np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5)
  assert os.path.isdir(tmp_path / 'two' / 'checkpoints' / '3')
