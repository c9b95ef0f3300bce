"""What every command-line main does with the errors it expects.

    @command_line.reports_errors(OSError, ValueError)
    def main(argv=None):
      ...
      return 0

An error of the given types (each job names the ones its readers
document: a malformed file is a ``ValueError`` naming the file and line, an
unreadable one an ``OSError``) becomes one line ``error: <message>`` on
stderr and exit status 1, never a traceback; anything else is a bug and
keeps its traceback. ``argparse``'s usage errors exit 2 as they always do.
"""

import functools
import sys


def report(error):
  """Prints ``error: <message>`` on stderr; returns the exit status, 1."""
  print(f'error: {error}', file=sys.stderr, flush=True)
  return 1


def reports_errors(*errors):
  """Decorates ``main(argv=None) -> int`` so that ``errors`` are reported
  (:func:`report`) instead of raised."""
  def decorate(main):
    @functools.wraps(main)
    def wrapped(argv=None):
      try:
        return main(argv)
      except errors as error:  # pylint: disable=catching-non-exception
        return report(error)
    return wrapped
  return decorate
