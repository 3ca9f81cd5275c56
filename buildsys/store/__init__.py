"""The content-addressed store: blobs, trees, action records, refs and build records.

:class:`LocalStore` (local.py) is the interface; each concept has a module of its own that
says what it owns on disk: blobs.py, downloads.py, actions.py (records.py for the format),
refs.py, locks.py, verify.py, gc.py, recovery.py (unflushed.py for the journals), diskio.py.
"""

from buildsys.store.errors import StoreCorruption, StoreError
from buildsys.store.local import LocalStore
from buildsys.store.records import ActionRecord, ActionResult

__all__ = ["LocalStore", "StoreError", "StoreCorruption", "ActionRecord", "ActionResult"]
