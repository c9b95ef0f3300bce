"""Multi-process start-up arguments (the real start-up: test_multiprocess)."""
import pytest

from facejax.training import distributed


def test_single_process_needs_nothing(monkeypatch):
  for name in ('FACEJAX_COORDINATOR', 'FACEJAX_NUM_PROCESSES',
               'FACEJAX_PROCESS_ID', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE',
               'TPU_WORKER_HOSTNAMES'):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize() is False
  monkeypatch.setenv('SLURM_NTASKS', '1')  # one task: still single-process
  assert distributed.initialize() is False


def test_partial_arguments_are_refused(monkeypatch):
  monkeypatch.delenv('FACEJAX_PROCESS_ID', raising=False)
  monkeypatch.setenv('FACEJAX_COORDINATOR', 'localhost:1234')
  monkeypatch.setenv('FACEJAX_NUM_PROCESSES', '2')
  with pytest.raises(ValueError, match='needs all of coordinator'):
    distributed.initialize()
