"""eval.lfw on a damaged insightface .bin: one line naming it, no traceback."""
import struct

import pytest

from eval import lfw


@pytest.mark.parametrize('data, message', [
    # BINBYTES8 claiming 2**36 bytes: a MemoryError before it was checked.
    (b'\x80\x04\x8e' + struct.pack('<Q', 2**36) + b'abc.',
     'a length field says 68719476736 bytes follow'),
    # BINBYTES8 beyond the largest size: an OverflowError before.
    (b'\x80\x04\x8e' + struct.pack('<Q', 2**63 + 5) + b'abc.',
     'a length field says 9223372036854775813 bytes follow'),
    (b'\x80\x02cos\nsystem\n.', 'refusing global os.system'),
])
def test_damaged_bin_is_one_error_line(tmp_path, capsys, data, message):
  path = tmp_path / 'lfw.bin'
  path.write_bytes(data)
  # The set is read before the checkpoint, which need not exist.
  assert lfw.main(['--checkpoint', str(tmp_path / 'no-run'), '--bin',
                   str(path), '--out', str(tmp_path / 'out')]) == 1
  err = capsys.readouterr().err
  assert err.startswith(f'error: {path}: ') and message in err
  assert 'Traceback' not in err and err.count('\n') == 1


def test_bin_that_is_a_folder(tmp_path, capsys):
  assert lfw.main(['--checkpoint', str(tmp_path / 'no-run'), '--bin',
                   str(tmp_path), '--out', str(tmp_path / 'out')]) == 1
  assert f'error: {tmp_path}: is a folder' in capsys.readouterr().err
