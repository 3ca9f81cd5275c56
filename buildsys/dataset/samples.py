"""One training sample per built target, read from the store (nothing is built or rebuilt).

A sample pairs what went into an asset with what came out, by the roles its stages play:

- the *creative* stage: the first stage of the target that runs a registered model (score
  distillation, say); it gives the prompt (``params.prompt``, ``params.negative_prompt``), its
  params, the model's digest, and its camera renders (``renders/view_*.png`` and
  ``renders/*.json``, e.g. the cameras, where the stage writes them; plus its top-level ``*.json``
  summaries);
- the *mesh* stage: the first of the target's output stages, not a gate, whose output holds one
  top-level ``.glb`` (the finalized, delivered mesh);
- the *gate* stage: the first gate stage, whose ``report.json`` is the gates (verdict, value and
  threshold of each) and whose ``renders/view_*.png`` (and ``renders/*.json``) are the finalized
  mesh's renders.

A target without a creative stage (an imported scan) still makes a sample, with no prompt; one
without a mesh stage cannot. Every field names the stage and file it came from and its BLAKE3
digest; every stage is linked to its action key, description, output tree and the build record
that produced it (the first record in which that action executed or was pulled: no-op builds
afterwards do not change the link).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from buildsys.build.session import Session
from buildsys.errors import EXIT_BAD_INPUT, BuildsysError
from buildsys.keys.encoding import decode
from buildsys.keys.hashing import Digest
from buildsys.keys.tree import Manifest
from buildsys.store.build_record import read_record
from buildsys.store.errors import StoreError
from buildsys.store.local import LocalStore

PRODUCED = ("executed", "pulled")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class DatasetError(BuildsysError):
    """A target that cannot make a sample (never built, no finalized mesh), or a bad destination."""

    exit_code = EXIT_BAD_INPUT


@dataclass
class SampleFile:
    """A file of a sample: where it comes from in the store and what it is called in the shard."""

    field: str
    stage: str
    path: str
    digest: Digest
    size: int


@dataclass
class Sample:
    key: str
    target: str
    seed: int | None
    prompt: str | None
    negative_prompt: str | None
    creative: dict[str, Any] | None
    mesh: dict[str, Any]
    gates: dict[str, Any] | None
    stages: dict[str, dict[str, Any]]
    files: list[SampleFile] = field(default_factory=list)

    @property
    def records(self) -> list[Digest]:
        return sorted({s["record"] for s in self.stages.values() if s.get("record")})

    def metadata(self) -> dict[str, Any]:
        """The sample's ``json`` field: everything but the file bytes, the files by digest."""
        return {
            "key": self.key, "target": self.target, "seed": self.seed, "prompt": self.prompt,
            "negative_prompt": self.negative_prompt, "creative": self.creative, "mesh": self.mesh, "gates": self.gates,
            "stages": self.stages, "records": self.records,
            "files": {f.field: {"stage": f.stage, "path": f.path, "digest": f.digest, "size": f.size} for f in self.files},
        }


def sample_keys(targets: list[str]) -> dict[str, str]:
    """WebDataset keys for targets (no dots: a reader splits a member name at the first dot of
    its base name). A target whose name is safe keeps it; others get theirs with each unsafe
    character replaced by '_', and a numeric suffix should that name be taken."""
    keys = {t: t for t in targets if not _KEY_UNSAFE.search(t)}
    taken = set(keys.values())
    for target in sorted(t for t in targets if t not in keys):
        base = _KEY_UNSAFE.sub("_", target) or "_"
        key, n = base, 1
        while key in taken:
            key, n = f"{base}_{n}", n + 1
        keys[target] = key
        taken.add(key)
    return keys


class Collector:
    """Reads samples from a session's store; build records are read once, on first need."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.store: LocalStore = session.store
        self._producers: dict[Digest, Digest] | None = None

    def mesh_stage(self, target: str) -> str | None:
        """The name of the target's mesh stage, from its last build (None: it has none)."""
        ref = self.session.last_build(target)
        if ref is None:
            return None
        spec = self.session.project.targets[target]
        for name in spec.outputs:
            entry = ref.get("stages", {}).get(name)
            if entry and not spec.stages[name].gate and len(_top_level(self._tree(target, name, entry), ".glb")) == 1:
                return name
        return None

    def sample(self, target: str, key: str) -> Sample:
        ref = self.session.last_build(target)
        if ref is None:
            raise DatasetError(f"{target}: never built in {self.store.root} (run 'buildsys build {target}' first)")
        spec = self.session.project.targets[target]
        entries: dict[str, dict[str, Any]] = ref.get("stages", {})
        mesh = self.mesh_stage(target)
        if mesh is None:
            raise DatasetError(f"{target}: no finalized mesh: none of its output stages ({', '.join(spec.outputs)}) holds one .glb")
        creative = next((n for n in spec.stages if n in entries and spec.stages[n].model), None)
        gate = next((n for n in spec.stages if n in entries and spec.stages[n].gate), None)
        descriptions = {name: self._description(target, name, entry) for name, entry in entries.items() if name in spec.stages}
        files: list[SampleFile] = []
        prompt = negative = None
        creative_info = None
        if creative is not None:
            params = descriptions[creative].get("params") or {}
            prompt = params.get("prompt") if isinstance(params.get("prompt"), str) else None
            negative = params.get("negative_prompt") if isinstance(params.get("negative_prompt"), str) else None
            tree = self._tree(target, creative, entries[creative])
            files += self._renders(creative, tree, "creative")
            files += [self._file(f"creative.{rel[:-5]}.json", creative, rel, tree) for rel in _top_level(tree, ".json")]
            model = descriptions[creative].get("model") or {}
            creative_info = {"stage": creative, "recipe": (descriptions[creative].get("recipe") or {}).get("ref"),
                             "params": params, "model": {"name": spec.stages[creative].model, "digest": model.get("digest")}}
        mesh_tree = self._tree(target, mesh, entries[mesh])
        glb = _top_level(mesh_tree, ".glb")[0]
        files.append(self._file("mesh.glb", mesh, glb, mesh_tree))
        gates = None
        if gate is not None:
            tree = self._tree(target, gate, entries[gate])
            files += self._renders(gate, tree, "render")
            if "report.json" in tree:
                files.append(self._file("gates.json", gate, "report.json", tree))
                report = _json(self.store.blobs.read(tree["report.json"].digest))
                gates = {"stage": gate, "passed": bool(report.get("passed")), "failures": report.get("failures", [])}
            else:
                gates = {"stage": gate, "passed": False, "failures": [{"gate": "report", "message": "no report.json"}]}
        seeds = {d.get("seed") for d in descriptions.values() if isinstance(d.get("seed"), int)}
        stages = {name: self._link(entries[name], descriptions[name]) for name in spec.stages if name in entries}
        return Sample(key, target, seeds.pop() if len(seeds) == 1 else None, prompt, negative, creative_info,
                      {"stage": mesh, "file": glb}, gates, stages, sorted(files, key=lambda f: f.field))

    def _tree(self, target: str, stage: str, entry: dict[str, Any]) -> Manifest:
        try:
            return self.store.blobs.get_tree(entry["tree"])
        except StoreError as exc:
            raise StoreError(f"{target}/{stage}: output tree of the last build unreadable ({exc}); rebuild the target") from None

    def _description(self, target: str, stage: str, entry: dict[str, Any]) -> dict[str, Any]:
        try:
            description = decode(self.store.blobs.read(entry["description"]))
        except StoreError as exc:
            raise StoreError(f"{target}/{stage}: description of the last build unreadable ({exc}); rebuild the target") from None
        return description if isinstance(description, dict) else {}

    def _file(self, name: str, stage: str, rel: str, tree: Manifest) -> SampleFile:
        entry = tree[rel]
        return SampleFile(name, stage, rel, entry.digest, entry.size)

    def _renders(self, stage: str, tree: Manifest, prefix: str) -> list[SampleFile]:
        """The camera views (``renders/view_*.png``, or a gate's review views, the textured pass
        ``renders/textured/*.png``) and what the stage says about them (``renders/*.json``, e.g.
        the cameras); not the other images (progress frames, shaded passes, turntables)."""
        pattern = r"renders/(view_[A-Za-z0-9_-]+\.png|textured/[A-Za-z0-9_-]+\.png|[A-Za-z0-9_-]+\.json)"
        names = sorted(rel for rel in tree if re.fullmatch(pattern, rel))
        return [self._file(f"{prefix}.{rel[len('renders/'):].replace('/', '.')}", stage, rel, tree) for rel in names]

    def _link(self, entry: dict[str, Any], description: dict[str, Any]) -> dict[str, Any]:
        recipe = description.get("recipe") or {}
        return {"key": entry["key"], "description": entry["description"], "tree": entry["tree"],
                "recipe": recipe.get("ref"), "code": recipe.get("code"), "mode": description.get("mode"),
                "record": self.producers().get(entry["key"])}

    def producers(self) -> dict[Digest, Digest]:
        """Action key -> the first build record in which it executed or was pulled."""
        if self._producers is None:
            self._producers = {}
            for _, digest in self.store.builds.listing():
                try:
                    record = read_record(self.store, digest)
                except (StoreError, ValueError):
                    continue
                stages = record.get("stages") if isinstance(record, dict) else None
                for entry in (stages or {}).values():
                    if isinstance(entry, dict) and entry.get("status") in PRODUCED and isinstance(entry.get("key"), str):
                        self._producers.setdefault(entry["key"], digest)
        return self._producers


def _top_level(tree: Manifest, suffix: str) -> list[str]:
    return sorted(rel for rel in tree if "/" not in rel and rel.lower().endswith(suffix))


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
