"""``export dataset``: paired samples of built targets as WebDataset shards and a manifest.

Why WebDataset tar shards rather than Parquet: a sample is a handful of whole files of different
kinds (PNG renders, a GLB, JSON), which tar holds as the files they are and every training stack
streams (``webdataset``, ``torchdata``, plain ``tarfile``) without a schema or a decode step;
Parquet would hold them as binary cells behind a columnar schema that the variable set of
renders per sample makes awkward, and its footer records the writer's version
(``created_by``), so the same rows written by another pyarrow are other bytes. Tar headers are
ours to pin, with the standard library alone (the engine takes on no dependency).

The folder holds ``shard-NNNNNN.tar`` and ``manifest.json`` (JSON, sorted keys)::

    format      "buildsys-dataset 1"
    samples     [{key, target, shard, seed, prompt, passed, fields {field: {digest, size[, stage, path]}},
                  stages {stage: {key, description, tree, recipe, code, mode, record}}, records}]
    shards      [{file, digest, size, samples: [key, ...]}]
    fields      every field name some sample has
    skipped     {target: why} targets of the project that make no sample (only when none were named)

The dataset's identity is the BLAKE3 digest of ``manifest.json``'s bytes, which name every
shard's digest. Samples are ordered by key, and nothing in any file depends on when, where or in
what order of arguments the export ran: exporting the same builds again writes the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.build.session import Session
from buildsys.dataset.samples import Collector, DatasetError, Sample, sample_keys
from buildsys.dataset.shards import ShardWriter
from buildsys.keys.hashing import Digest, digest_bytes, digest_file
from buildsys.store.atomic import filling_folder, is_new_or_empty_folder
from buildsys.store.errors import StoreError

FORMAT = "buildsys-dataset 1"
MANIFEST = "manifest.json"
DEFAULT_SHARD_SAMPLES = 1000
DEFAULT_SHARD_BYTES = 1 << 30


@dataclass
class DatasetReport:
    folder: Path
    digest: Digest
    samples: int
    shards: int
    bytes: int
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "digest": self.digest, "samples": self.samples, "shards": self.shards,
                "bytes": self.bytes, "skipped": self.skipped}


def dataset_digest(folder: Path) -> Digest:
    return digest_file(Path(folder) / MANIFEST)[0]


def export_dataset(session: Session, targets: list[str], out: Path, named: bool,
                   max_samples: int = DEFAULT_SHARD_SAMPLES, max_bytes: int = DEFAULT_SHARD_BYTES) -> DatasetReport:
    """Export one sample per target into ``out`` (new or empty). ``named``: the targets were named
    by the user, so each must make a sample; otherwise targets that were never built or have no
    finalized mesh are skipped and listed in the manifest."""
    out = Path(out)
    if not is_new_or_empty_folder(out):
        raise DatasetError(f"{out}: exists and is not an empty directory")
    if max_samples < 1 or max_bytes < 1:
        raise DatasetError(f"shard limits must be positive (got {max_samples} samples, {max_bytes} bytes)")
    collector = Collector(session)
    chosen, skipped = _choose(session, collector, targets, named)
    if not chosen:
        raise DatasetError("no target makes a sample: " + "; ".join(f"{t}: {why}" for t, why in skipped.items()))
    keys = sample_keys(chosen)
    samples = sorted((collector.sample(t, keys[t]) for t in chosen), key=lambda s: s.key)
    with filling_folder(out):
        return _write(session, samples, out, skipped, max_samples, max_bytes)


def _choose(session: Session, collector: Collector, targets: list[str], named: bool) -> tuple[list[str], dict[str, str]]:
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    never = [t for t in targets if session.last_build(t) is None]
    if named and never:
        raise DatasetError(f"{', '.join(never)}: never built in {session.store.root} (run 'buildsys build {' '.join(never)}' first)")
    for target in targets:
        if target in never:
            skipped[target] = "never built"
        elif not named and collector.mesh_stage(target) is None:
            skipped[target] = "no finalized mesh (no output stage holds one .glb)"
        else:
            chosen.append(target)  # a named target without a mesh is refused by Collector.sample
    return chosen, skipped


def _write(session: Session, samples: list[Sample], out: Path, skipped: dict[str, str], max_samples: int, max_bytes: int) -> DatasetReport:
    store = session.store
    writer = ShardWriter(out, max_samples, max_bytes)
    entries: list[dict[str, Any]] = []
    for sample in samples:
        metadata = sample.metadata()
        members = [("json", (json.dumps(metadata, sort_keys=True, indent=1, allow_nan=False) + "\n").encode("utf-8"))]
        if sample.prompt is not None:
            members.append(("txt", sample.prompt.encode("utf-8")))
        for f in sample.files:
            try:
                members.append((f.field, store.blobs.read(f.digest)))
            except StoreError as exc:
                raise StoreError(f"{sample.target}/{f.stage}: {f.path} of the last build: {exc}; rebuild the target") from None
        shard = writer.add(sample.key, members)
        sources = {f.field: {"stage": f.stage, "path": f.path} for f in sample.files}
        entries.append({
            "key": sample.key, "target": sample.target, "shard": shard, "seed": sample.seed, "prompt": sample.prompt,
            "passed": None if sample.gates is None else sample.gates["passed"],
            "fields": {name: {"digest": digest_bytes(data), "size": len(data), **sources.get(name, {})} for name, data in members},
            "stages": sample.stages, "records": sample.records,
        })
    shards = writer.close()
    manifest = {
        "format": FORMAT,
        "samples": entries,
        "shards": [{"file": s.file, "digest": s.digest, "size": s.size, "samples": s.samples} for s in shards],
        "fields": sorted({name for entry in entries for name in entry["fields"]}),
        "skipped": dict(sorted(skipped.items())),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return DatasetReport(out, dataset_digest(out), len(samples), len(shards), sum(s.size for s in shards), dict(skipped))
