"""The one way command-line mains report the errors they expect."""
import pytest

from facejax import command_line


def test_expected_errors_are_one_line_and_status_1(capsys):
  @command_line.reports_errors(OSError, ValueError)
  def main(argv=None):
    raise FileNotFoundError(f'{argv[0]}: no such file')

  assert main(['x.txt']) == 1
  assert capsys.readouterr().err == 'error: x.txt: no such file\n'


def test_other_errors_keep_their_traceback():
  @command_line.reports_errors(ValueError)
  def main(argv=None):
    raise KeyError('a bug')

  with pytest.raises(KeyError):
    main([])


def test_the_status_of_a_clean_run_passes_through():
  @command_line.reports_errors(ValueError)
  def main(argv=None):
    return 0 if argv == ['ok'] else 3

  assert main(['ok']) == 0 and main([]) == 3
