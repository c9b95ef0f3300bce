"""The one error type of the importers and the exporter."""


class ConversionError(ValueError):
  """A model file that cannot be converted exactly.

  The message names the file and the first key, node or value that could
  not be placed, and why (unknown architecture, shape mismatch, truncated
  or unsafe file, an operation with no exact equivalent).
  """
