"""The README's figures come from the code that prints them."""
import pathlib

from bench import models as models_bench

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def test_readme_carries_the_model_table_as_printed(capsys):
  models_bench.main(['--markdown'])
  table = capsys.readouterr().out
  assert table.strip() in README.read_text()


def test_quick_start_is_the_first_thing():
  lines = README.read_text().splitlines()
  start = lines.index('```')
  assert lines[start + 1].startswith('make demo')
  assert lines[start + 2].startswith('make test')
