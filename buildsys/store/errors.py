"""The store's typed errors; the CLI turns them into exit code 3 (store unusable or corrupt)."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot be used as asked; the message names the path."""


class StoreCorruption(StoreError):
    """A blob's bytes do not match its digest, or a record is malformed."""
