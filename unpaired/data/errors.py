"""The one exception type of the data package."""

from __future__ import annotations


class DataError(ValueError):
    """A user-facing data problem; the message names the offending file, folder or config key."""
