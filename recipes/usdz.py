"""Writing a ``.usdz`` package whose bytes are a function of its members alone.

A usdz is a zip archive whose members are stored uncompressed, each member's data starting on a
64-byte boundary, the root layer first. usd-core's own writers (``Sdf.ZipFileWriter``,
``UsdUtils.CreateNewUsdzPackage``) stamp every member with its source file's modification time,
converted to the local time zone, so the same asset packaged twice, an hour apart or in another
time zone, differs in bytes. This writer uses Python's zip format code with fixed member times
(1980-01-01, the zip epoch), fixed permissions, the member order given and the alignment
padding in each local header's extra field (an "unknown" field id, as the padding other usdz
writers use).
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

ALIGNMENT = 64
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_PADDING_ID = 0x1986
_LOCAL_HEADER = 30


def write_usdz(path: Path, members: list[tuple[str, bytes]]) -> None:
    """Write ``members`` ((name inside the package, bytes), root layer first) to ``path``."""
    if not members or not members[0][0].endswith((".usdc", ".usda", ".usd")):
        raise ValueError("the first member of a usdz package must be its root layer")
    names = [name for name, _ in members]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate member names in {names}")
    with open(path, "wb") as handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            start = handle.tell() + _LOCAL_HEADER + len(name.encode("utf-8"))
            pad = -(start + 4) % ALIGNMENT
            info.extra = struct.pack("<HH", _PADDING_ID, pad) + b"\0" * pad
            archive.writestr(info, data)
