"""The public/private line of facejax.losses (optax and chex style).

What users import is the package's ``__all__``; each module's ``__all__``
names its public functions, which its siblings may build on; everything else
carries a leading underscore. A new public function missing from ``__all__``
(or a helper left public by accident) fails here, not in review.
"""
import importlib
import inspect
import pkgutil

import pytest

from facejax import losses

MODULES = sorted(info.name for info in pkgutil.iter_modules(losses.__path__))


def test_the_package_exports_what_users_import():
  assert sorted(losses.__all__, key=str.lower) == losses.__all__
  for name in losses.__all__:
    assert hasattr(losses, name), name
  assert inspect.ismodule(losses.class_parallel)
  assert inspect.ismodule(losses.attributes)


@pytest.mark.parametrize('name', MODULES)
def test_every_module_states_its_public_surface(name):
  module = importlib.import_module(f'facejax.losses.{name}')
  for public in module.__all__:
    assert hasattr(module, public), public
  defined_here = [
      attribute for attribute, value in vars(module).items()
      if not attribute.startswith('_')
      and (inspect.isfunction(value) or inspect.isclass(value))
      and value.__module__ == module.__name__]
  unlisted = sorted(set(defined_here) - set(module.__all__))
  assert not unlisted, (
      'public by name only: add to __all__ or rename with a leading '
      f'underscore: {unlisted}')
