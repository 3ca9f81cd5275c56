"""The content-addressed store: blobs, trees, action records, refs and build records."""

from buildsys.store.local import LocalStore, StoreCorruption, StoreError
from buildsys.store.records import ActionRecord, ActionResult

__all__ = ["LocalStore", "StoreError", "StoreCorruption", "ActionRecord", "ActionResult"]
