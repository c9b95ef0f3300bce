"""bench.decompression_bombs runs: its folders, one epoch, the rate ratio."""
from bench import decompression_bombs


def test_folders_epoch_and_rates_at_tiny_sizes(tmp_path, capsys):
  size = decompression_bombs.write_folder(tmp_path, bombs=2, side=64,
                                          identities=2, images=16)
  assert size > 0
  bombs = sorted(p.name for p in tmp_path.glob('bombs/*/bomb_*.png'))
  assert bombs == ['bomb_0.png', 'bomb_1.png']
  assert not list(tmp_path.glob('clean/*/bomb_*.png'))
  decompression_bombs.one_epoch(str(tmp_path / 'bombs'), 'default')
  peak_mib, skipped = capsys.readouterr().out.split()
  assert float(peak_mib) > 0 and skipped == '0'  # 64 x 64 is under 40 MP
  rates = decompression_bombs.header_check_cost(str(tmp_path / 'clean'),
                                                seconds=0.2, rounds=1)
  assert set(rates) == {'limit', 'none'}
  assert all(len(r) == 1 and r[0] > 0 for r in rates.values())
  headers_us, decode_us = decompression_bombs.host_header_cost(
      str(tmp_path / 'clean'), repeats=1)
  assert headers_us > 0 and decode_us > 0
