"""How the benchmark scripts print their rows: aligned text or markdown."""


def optional(value, spec):
  """``value`` formatted with ``spec``, or ``n/a`` when it was not measured
  (None, or a string saying why)."""
  return 'n/a' if value is None or isinstance(value, str) else format(
      value, spec)


def print_rows(header, lines, markdown):
  """Prints ``lines`` (tuples of cell strings) under ``header``: a markdown
  table, or columns aligned (the first left, the others right)."""
  if markdown:
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for line in lines:
      print('| ' + ' | '.join(line) + ' |')
    return
  widths = [max(len(text) for text in column)
            for column in zip(header, *lines)]
  for line in (header, *lines):
    print('  '.join(text.rjust(width) if index else text.ljust(width)
                    for index, (text, width) in enumerate(zip(line, widths))))
