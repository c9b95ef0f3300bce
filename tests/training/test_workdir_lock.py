"""One trainer per workdir: the lock, its refusal, a stale lock's takeover."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from facejax.training import loop
from facejax.training import run_directory
from facejax.training import workdir_lock
from tests.training.tiny import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HOLDER = f'pid {os.getpid()} on {socket.gethostname()}, started '


def test_the_lock_names_its_holder_and_is_free_after_release(tmp_path):
  with workdir_lock.WorkdirLock(tmp_path) as lock:
    holder = json.loads((tmp_path / '.lock').read_text())
    assert holder['pid'] == os.getpid()
    assert holder['host'] == socket.gethostname()
    assert lock.previous is None
    # Another open file description: as another process would be refused.
    with pytest.raises(workdir_lock.LockHeldError) as raised:
      workdir_lock.WorkdirLock(tmp_path).acquire()
    assert raised.value.holder.startswith(HOLDER)
  assert (tmp_path / '.lock').read_text() == ''
  with workdir_lock.WorkdirLock(tmp_path) as again:
    assert again.previous is None  # a clean release is not a stale lock


def test_a_second_trainer_is_refused_and_writes_nothing(tmp_path):
  with workdir_lock.WorkdirLock(tmp_path):
    with pytest.raises(run_directory.WorkdirInUseError,
                       match=f'in use by another trainer: {HOLDER}'):
      loop.train(tiny_config(), str(tmp_path), log=False)
  assert sorted(os.listdir(tmp_path)) == ['.lock']


def test_python_m_train_prints_the_holder_without_a_traceback(tmp_path):
  with workdir_lock.WorkdirLock(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'train', '--workdir', str(tmp_path),
         '--config.batch_size=16',
         '--config.data.synthetic.num_identities=16',
         '--config.data.synthetic.images_per_identity=4'],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1, result.stderr[-3000:]
  assert f'error: --workdir {tmp_path} is in use by another trainer: ' \
      f'{HOLDER}' in result.stderr
  assert 'Traceback' not in result.stderr


def test_a_stale_lock_is_taken_over_naming_the_old_holder(tmp_path, capfd):
  # A holder killed while holding it: the OS drops the flock, the file
  # still names it.
  killed = subprocess.run(
      [sys.executable, '-c',
       'import os, signal, sys\n'
       'from facejax.training import workdir_lock\n'
       'workdir_lock.WorkdirLock(sys.argv[1]).acquire()\n'
       'print(os.getpid(), flush=True)\n'
       'os.kill(os.getpid(), signal.SIGKILL)\n', str(tmp_path)],
      cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
  assert killed.returncode == -signal.SIGKILL
  pid = int(killed.stdout)
  assert json.loads((tmp_path / '.lock').read_text())['pid'] == pid
  with run_directory.hold_workdir(str(tmp_path)) as lock:
    assert lock.previous['pid'] == pid
    assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()
  err = capfd.readouterr().err
  assert (f'workdir: took over {tmp_path}/.lock from pid {pid} on '
          f'{socket.gethostname()}, started ') in err
  assert 'which is no longer running' in err
