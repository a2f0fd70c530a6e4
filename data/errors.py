"""DataError: the one exception type for bad data or bad data options, with a message naming the fix."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data (missing image, malformed annotation file, unknown option); message says how to fix it."""
