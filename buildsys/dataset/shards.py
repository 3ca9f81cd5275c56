"""WebDataset shards written so their bytes depend on their contents alone.

A shard is a POSIX tar whose members ``<key>.<field>`` group a sample's files under one key
(readers split a member's base name at its first dot), one sample's members together. Every
member header is pinned: mtime 0, uid and gid 0, no user or group name, mode 0444, regular file,
the pax format (a name that needs it gets a pax record; nothing else does); members are written
in the order given, and the archive is padded to tar's record size as usual.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from buildsys.keys.hashing import Digest, digest_file


@dataclass
class Shard:
    file: str
    samples: list[str] = field(default_factory=list)
    digest: Digest = ""
    size: int = 0


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class ShardWriter:
    """Writes samples into ``shard-NNNNNN.tar`` files in ``folder``, starting a new shard when
    the current one holds ``max_samples`` samples or ``max_bytes`` of member data (a sample is
    never split; a sample larger than ``max_bytes`` gets a shard of its own)."""

    def __init__(self, folder: Path, max_samples: int, max_bytes: int) -> None:
        if max_samples < 1 or max_bytes < 1:
            raise ValueError("shards hold at least one sample and one byte")
        self.folder = folder
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.shards: list[Shard] = []
        self._tar: tarfile.TarFile | None = None
        self._bytes = 0

    def add(self, key: str, members: list[tuple[str, bytes]]) -> str:
        """Write one sample (``(field, bytes)`` in order); returns the shard's file name."""
        size = sum(len(data) for _, data in members)
        current = self.shards[-1] if self.shards and self._tar is not None else None
        if current is None or len(current.samples) >= self.max_samples or (current.samples and self._bytes + size > self.max_bytes):
            self._open()
        assert self._tar is not None
        for name, data in members:
            self._tar.addfile(_member(f"{key}.{name}", len(data)), io.BytesIO(data))
        self._bytes += size
        self.shards[-1].samples.append(key)
        return self.shards[-1].file

    def _open(self) -> None:
        self._close()
        shard = Shard(f"shard-{len(self.shards):06d}.tar")
        self.shards.append(shard)
        self._tar = tarfile.open(self.folder / shard.file, "w", format=tarfile.PAX_FORMAT, encoding="utf-8")
        self._bytes = 0

    def _close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._tar = None
        shard = self.shards[-1]
        shard.digest, shard.size = digest_file(self.folder / shard.file)

    def close(self) -> list[Shard]:
        self._close()
        return self.shards
