"""Checks a project keeps in its store: the last ``verify`` and ``diff`` report of each subject,
with the review assets (heat maps, previews, displacement renders) its diffs wrote.

A check is a ref ``refs/checks/<kind>-<subject slug>`` (kind ``verify`` or ``diff``) holding::

    kind      "verify" | "diff"
    subject   what was checked, as the command named it (targets, a bundle's folder name, A vs B)
    when      when the check ran (UTC, ISO 8601): the review site shows it, nothing keys on it
    exit_code the command's exit code
    tree      a tree: ``report.json`` (the command's ``--json`` report) and ``assets/<path>``
    trees     [tree], so gc keeps the tree and everything in it

Each new check of a subject replaces the last one. The review site
(:mod:`buildsys.views.site`) reads them; nothing else depends on them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from buildsys.keys.hashing import Digest
from buildsys.keys.tree import Entry, Manifest, walk_files
from buildsys.store.errors import StoreCorruption, StoreError
from buildsys.store.local import LocalStore

CHECKS = "checks"
KINDS = ("verify", "diff")
REPORT = "report.json"
ASSETS = "assets/"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Check:
    name: str
    kind: str
    subject: str
    when: str
    exit_code: int
    tree: Digest
    report: dict[str, Any]
    assets: dict[str, Digest]
    """Asset path (relative to the diff's assets folder, as the report names it) -> blob."""


def check_name(kind: str, subject: str) -> str:
    """The ref name of a subject's check: readable, and unique per subject (a digest suffix)."""
    slug = _UNSAFE.sub("_", subject).strip("._-")[:60] or "subject"
    return f"{kind}-{slug}-{hashlib.sha256(subject.encode('utf-8')).hexdigest()[:8]}"


def keep_check(store: LocalStore, kind: str, subject: str, report: dict[str, Any], exit_code: int, assets_dir: Path | None) -> str:
    """Store ``report`` (JSON-able) and the files under ``assets_dir`` as the subject's check."""
    if kind not in KINDS:
        raise ValueError(f"unknown check kind {kind!r}")
    manifest: Manifest = {}
    data = json.dumps(report, sort_keys=True, allow_nan=False, default=str).encode("utf-8")
    manifest[REPORT] = Entry(store.blobs.put_bytes(data), len(data), False)
    if assets_dir is not None and assets_dir.is_dir():
        for rel, path, _ in walk_files(assets_dir):
            digest, size = store.blobs.put_file(path)
            manifest[ASSETS + rel] = Entry(digest, size, False)
    tree = store.blobs.put_tree(dict(sorted(manifest.items())))
    name = check_name(kind, subject)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    store.refs.write(CHECKS, name, {"kind": kind, "subject": subject, "when": when, "exit_code": exit_code, "tree": tree, "trees": [tree]})
    return name


def read_checks(store: LocalStore) -> list[Check]:
    """Every kept check whose tree is still readable, newest first (then by name)."""
    checks = []
    for name in store.refs.names(CHECKS):
        try:
            ref = store.refs.read(CHECKS, name) or {}
            manifest = store.blobs.get_tree(ref["tree"])
            report = json.loads(store.blobs.read(manifest[REPORT].digest))
        except (StoreError, StoreCorruption, KeyError, TypeError, ValueError):
            continue
        assets = {rel[len(ASSETS):]: e.digest for rel, e in manifest.items() if rel.startswith(ASSETS)}
        checks.append(Check(name, str(ref.get("kind")), str(ref.get("subject")), str(ref.get("when", "")),
                            int(ref.get("exit_code", 0)), ref["tree"], report, assets))
    return sorted(checks, key=lambda c: (c.when, c.name), reverse=True)
