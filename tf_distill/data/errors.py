"""Errors raised when a dataset cannot be found or holds nothing usable."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's folder or files do not exist (the message names the path and what was expected)."""


class EmptyDatasetError(ValueError):
    """The dataset exists but holds no images (the message names the path and what was expected)."""
