"""The test environment itself: simulated devices and a tensorflow-free core."""
import subprocess
import sys

import jax


def test_eight_simulated_devices():
  assert jax.device_count() == 8


def test_core_imports_do_not_import_tensorflow():
  code = ('import sys, facejax, facejax.losses; '
          "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
  subprocess.run([sys.executable, '-c', code], check=True)
