"""Test set-up: 8 simulated CPU devices, before anything imports jax."""
import os

os.environ['XLA_FLAGS'] = ' '.join(
    flag for flag in os.environ.get('XLA_FLAGS', '').split()
    if not flag.startswith('--xla_force_host_platform_device_count')
) + ' --xla_force_host_platform_device_count=8'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import hypothesis  # noqa: E402

hypothesis.settings.register_profile(
    'facejax', deadline=None, max_examples=25, derandomize=True,
    print_blob=True)
hypothesis.settings.load_profile('facejax')
