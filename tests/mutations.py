"""Seeded mutations of a valid file, for the parsers' fuzz tests.

Each parser's fuzz test writes a valid fixture, then feeds it a few hundred
mutants from :func:`mutants` (byte flips, truncation, inserted, deleted and
duplicated lines, odd tokens such as ``-1``, ``nan``, ``1e309``, ``../x``, an
absolute path and invalid UTF-8) and checks that the parser either succeeds
with a result that passes the test's own check, or raises the documented
error type with the file named in the message: :func:`check_outcome`.
"""
import os
import random

ODD_TOKENS = ('-1', '0', 'nan', 'NaN', 'inf', '-inf', '1e309', '2e9',
              '4611686018427387904', '18446744073709551617', '../x',
              '../../../etc/passwd', '/abs/x', '~/x', '', ' ', 'x' * 300,
              '"', '{', '[]', 'null', '\t', '1.5', '0x10')
INVALID_UTF8 = (b'\xff', b'\xc3', b'\xed\xa0\x80', b'\x80abc')


def _lines(data):
  return data.split(b'\n')


def _mutate_once(data, rng):
  """One random mutation of ``data`` (bytes)."""
  kind = rng.randrange(9)
  lines = _lines(data)
  if kind == 0 and data:  # flip one byte
    at = rng.randrange(len(data))
    return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[
        at + 1:]
  if kind == 1:  # truncate
    return data[:rng.randrange(len(data) + 1)]
  if kind == 2:  # delete a line
    del lines[rng.randrange(len(lines))]
    return b'\n'.join(lines)
  if kind == 3:  # duplicate a line
    at = rng.randrange(len(lines))
    lines.insert(at, lines[at])
    return b'\n'.join(lines)
  if kind == 4:  # insert a line of odd tokens
    tokens = [rng.choice(ODD_TOKENS) for _ in range(rng.randrange(1, 5))]
    lines.insert(rng.randrange(len(lines) + 1),
                 rng.choice((' ', '\t', ',')).join(tokens).encode())
    return b'\n'.join(lines)
  if kind == 5:  # replace one token of a line with an odd token
    at = rng.randrange(len(lines))
    for separator in (b'\t', b',', b' ', b'"'):
      fields = lines[at].split(separator)
      if len(fields) > 1:
        fields[rng.randrange(len(fields))] = rng.choice(ODD_TOKENS).encode()
        lines[at] = separator.join(fields)
        break
    else:
      lines[at] = rng.choice(ODD_TOKENS).encode()
    return b'\n'.join(lines)
  if kind == 6:  # invalid UTF-8 somewhere
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice(INVALID_UTF8) + data[at:]
  if kind == 7:  # replace a run of digits with an odd number
    digits = [i for i, byte in enumerate(data) if 48 <= byte <= 57]
    if digits:
      at = rng.choice(digits)
      end = at
      while end < len(data) and 48 <= data[end] <= 57:
        end += 1
      return data[:at] + rng.choice(ODD_TOKENS[:9]).encode() + data[end:]
    return data
  # swap two lines
  if len(lines) > 1:
    i, j = rng.sample(range(len(lines)), 2)
    lines[i], lines[j] = lines[j], lines[i]
  return b'\n'.join(lines)


def mutants(data, count, seed=0, max_mutations=3):
  """``count`` mutants of ``data`` (bytes), each 1 to ``max_mutations``
  random mutations away, reproducible from ``seed``."""
  rng = random.Random(seed)
  for _ in range(count):
    mutant = data
    for _ in range(rng.randrange(1, max_mutations + 1)):
      mutant = _mutate_once(mutant, rng)
    yield mutant


def check_outcome(parse, path, errors, check=None):
  """Runs ``parse()``; only two outcomes pass.

  Success, with ``check(result)`` (if given) holding; or an exception of one
  of the ``errors`` types whose message names ``path`` (its base name).
  Anything else (another exception type, a message that names no file, a
  result that fails ``check``) fails the test with the mutant's path.

  Returns:
    'ok' or 'error', for the caller's tally.
  """
  try:
    result = parse()
  except errors as error:
    assert os.path.basename(str(path)) in str(error), (
        f'{type(error).__name__} names no file: {error}')
    return 'error'
  if check is not None:
    check(result)
  return 'ok'


def fuzz(path, valid, parse, check=None, count=250, seed=14,
         errors=(ValueError, FileNotFoundError)):
  """Writes ``count`` mutants of ``valid`` (bytes) to ``path`` in turn; each
  must pass :func:`check_outcome` with ``parse()``, and both outcomes must
  occur (a parser that refuses everything, or accepts everything, fails)."""
  outcomes = {'ok': 0, 'error': 0}
  for mutant in mutants(valid, count, seed=seed):
    with open(path, 'wb') as f:
      f.write(mutant)
    outcomes[check_outcome(parse, path, errors, check)] += 1
  assert outcomes['ok'] and outcomes['error'], outcomes
  return outcomes


def stays_under_any_root(relative):
  """True if ``relative`` joined to any folder stays inside it (lexically)."""
  normal = os.path.normpath(relative)
  return (not os.path.isabs(relative) and not relative.startswith('~')
          and normal != '.' and normal.split(os.sep)[0] != '..')
