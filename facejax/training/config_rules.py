"""What a config key allows, and the check of a table of such rules.

A rule is ``(key, Allowed)``: the key (dotted, from the config's root or
from a prefix such as ``loss.``) and the kind and range of value it takes.
:func:`check_rules` checks a table of them and raises :class:`ConfigError`
naming the key, the bad value and what is allowed. The tables live with
what reads the keys: :mod:`facejax.training.config_checks` for the keys
every config has, each loss's spec (:mod:`facejax.training.objectives`) for
the keys that loss reads.
"""

import math
from typing import Any, Callable, NamedTuple

import numpy as np


class ConfigError(ValueError):
  """A config value that cannot work, named by its key."""


def _is_integer(value):
  return (isinstance(value, (int, np.integer))
          and not isinstance(value, (bool, np.bool_)))


def _is_number(value):
  return ((_is_integer(value) or isinstance(value, (float, np.floating)))
          and math.isfinite(value))


def _is_three_numbers(value):
  return (isinstance(value, (tuple, list)) and len(value) == 3
          and all(_is_number(v) for v in value))


class Allowed(NamedTuple):
  """What a config key accepts: a kind of value and a range of it.

  Attributes:
    kind: the kind in words ('an integer', "one of 'sgd', 'adamw'", ...).
    is_kind: the test of the kind.
    description: the range in words ('>= 1', 'in (0, 1]'), '' for any.
    in_range: the test of the range, for a value of the right kind.
  """
  kind: str
  is_kind: Callable[[Any], bool]
  description: str = ''
  in_range: Callable[[Any], bool] = lambda value: True

  def error(self, key, value):
    """The message for ``key=value``, or None when the value is allowed."""
    if not self.is_kind(value):
      allowed = ' '.join(filter(None, (self.kind, self.description)))
      return f'{key} must be {allowed}, got {value!r}'
    if not self.in_range(value):
      return f'{key} must be {self.description}, got {value!r}'
    return None


def _interval(low, high=None, low_open=False, high_open=False):
  """(description, test) of the interval from ``low`` to ``high`` (None: no
  upper end); the ends are included unless open."""
  def test(value):
    above = value > low if low_open else value >= low
    below = high is None or (value < high if high_open else value <= high)
    return above and below
  if high is None:
    return f'{">" if low_open else ">="} {low}', test
  return (f'in {"(" if low_open else "["}{low}, {high}'
          f'{")" if high_open else "]"}'), test


def integer(low, high=None):
  """An integer >= ``low`` (and <= ``high``)."""
  return Allowed('an integer', _is_integer, *_interval(low, high))


def number(low, high=None, low_open=False, high_open=False):
  """A finite number from ``low`` to ``high`` (None: no upper end)."""
  return Allowed('a finite number', _is_number,
                 *_interval(low, high, low_open, high_open))


def one_of(*choices):
  """One of the strings ``choices``."""
  return Allowed(f'one of {", ".join(map(repr, choices))}',
                 lambda value: isinstance(value, str) and value in choices)


INTEGER = Allowed('an integer', _is_integer)
NUMBER = Allowed('a finite number', _is_number)
STRING = Allowed('a string', lambda value: isinstance(value, str))
BOOLEAN = Allowed('True or False',
                  lambda value: isinstance(value, (bool, np.bool_)))
MARGINS = Allowed('three finite numbers (g1, g2, g3)', _is_three_numbers,
                  '>= 0', lambda value: min(value) >= 0)


MISSING = object()  # what lookup returns for an absent key


def lookup(config, key):
  """``config``'s value at the dotted ``key``, or ``MISSING``."""
  node = config
  for name in key.split('.'):
    if not hasattr(node, 'keys') or name not in node:
      return MISSING
    node = node[name]
  return node


def check_rules(config, rules, prefix='', needed_by=None):
  """Every ``(key, Allowed)`` rule on ``config[key]`` (named ``prefix +
  key`` in errors); a missing key is skipped, or an error naming what needs
  it (``needed_by``)."""
  for key, allowed in rules:
    value = lookup(config, key)
    if value is MISSING and needed_by:
      wanted = ' '.join(filter(None, (allowed.kind, allowed.description)))
      raise ConfigError(f'{prefix}{key} is missing: {needed_by} needs it '
                        f'({wanted})')
    if value is MISSING:
      continue
    message = allowed.error(prefix + key, value)
    if message:
      raise ConfigError(message)
