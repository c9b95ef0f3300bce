"""Test set-up: 8 simulated CPU devices, before anything imports jax."""
import os
import tempfile

# Test time is mostly XLA compile time on 2 cores: backend optimisation level
# 0 compiles about three times faster and changes no result the tests check.
TEST_XLA_FLAGS = {
    '--xla_force_host_platform_device_count': '8',
    '--xla_backend_optimization_level': '0',
}
os.environ['XLA_FLAGS'] = ' '.join(
    [flag for flag in os.environ.get('XLA_FLAGS', '').split()
     if flag.split('=')[0] not in TEST_XLA_FLAGS]
    + [f'{name}={value}' for name, value in TEST_XLA_FLAGS.items()])
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The engine's tests compile the same train step several times (a run, then
# its resumption): a persistent compilation cache for the session reuses it.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    tempfile.gettempdir(), f'facejax-test-jax-cache-{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import hypothesis  # noqa: E402
import pytest  # noqa: E402

hypothesis.settings.register_profile(
    'facejax', deadline=None, max_examples=25, derandomize=True,
    print_blob=True)
hypothesis.settings.load_profile('facejax')


@pytest.fixture(scope='session')
def attribute_runs(tmp_path_factory):
  """Two 5-step runs on the tiny synthetic attribute set, trained once for
  the engine's and the evaluation job's tests: name -> loop.Run."""
  from facejax.training import loop  # pylint: disable=g-import-not-at-top
  from tests.training import tiny  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('attribute_runs')
  return {name: loop.train(tiny.attribute_config(loss), str(root / name),
                           log=False)
          for name, loss in (('adaptive', tiny.ADAPTIVE),
                             ('lmle', tiny.LMLE_ATTRIBUTES))}
