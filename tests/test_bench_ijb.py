"""bench.ijb at tiny sizes: both tasks agree with numpy, memory is read."""
from bench import ijb


def test_smoke_rows(capsys):
  rows, memory = ijb.main(['--smoke', '--markdown'])
  assert [r['task'].split(',')[0] for r in rows] == ['1:1 scores',
                                                    '1:N search']
  assert all(r['difference'] < 1e-5 and r['facejax'] > 0 for r in rows)
  assert len(memory) == 2 and all(float(m[2]) > 0 for m in memory)
  assert '| task |' in capsys.readouterr().out
