"""Errors raised when a dataset cannot be found or holds nothing usable."""

from tf_distill.errors import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset's folder or files do not exist (the message names the path and what was expected)."""


class EmptyDatasetError(UserError, ValueError):
    """The dataset exists but holds no images (the message names the path and what was expected)."""


class DamagedDataError(UserError, ValueError):
    """A data file cannot be read to its end (a truncated copy, a flipped bit); the message names the file."""
