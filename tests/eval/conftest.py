"""One tiny trained run that every evaluation job's test restores."""
import pytest

from facejax.training import loop
from tests.training.tiny import tiny_config


@pytest.fixture(scope='session')
def workdir(tmp_path_factory):
  """The workdir of a 2-step tiny run (checkpoint, config.json)."""
  directory = tmp_path_factory.mktemp('run')
  loop.train(tiny_config(total_steps=2), str(directory), log=False)
  return str(directory)
