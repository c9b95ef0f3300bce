"""bench.interop runs its three paths, at tiny widths, within tolerance."""
import pytest

pytest.importorskip('torch')
pytest.importorskip('onnxruntime')

from bench import interop  # noqa: E402


def test_smoke_rows_are_exact_to_float32(capsys):
  rows = interop.main(['--smoke', '--markdown'])
  assert [row['model'] for row in rows] == ['iresnet', 'mobilefacenet']
  for row in rows:
    scale = max(1.0, row['magnitude'])
    for path in ('torch', 'onnx', 'export'):
      assert row[f'{path}_difference'] < 1e-4 * scale, (path, row)
      assert row[f'{path}_seconds'] > 0
  printed = capsys.readouterr().out
  assert printed.startswith('| model | max abs embedding |')
  assert '| iresnet |' in printed and '| mobilefacenet |' in printed
