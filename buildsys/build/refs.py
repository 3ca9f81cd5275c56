"""Named roots a project keeps in its store: pins (a build kept through gc) and approvals (a
person's sign-off of a build: its renders pinned as the render-regression reference, and the
gate failures they accepted on that asset)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from buildsys.build.gate import gate_verdict
from buildsys.build.session import Session
from buildsys.errors import BuildsysError
from buildsys.execution.producer import producer
from buildsys.project.buildfile import TargetSpec
from buildsys.store.local import LocalStore


@dataclass(frozen=True)
class Approval:
    """``stages``: each gate stage's output tree (what ``approved:STAGE`` inputs read);
    ``asset``: every other stage's output tree, the asset that was looked at; ``accepted``: the
    gates that had failed on it. The sign-off stands while the asset is the same and no other
    gate fails: a changed asset, or a new failure, goes back to review."""

    stages: dict[str, str]
    asset: dict[str, str] | None
    accepted: tuple[str, ...]
    by: str
    at: str

    def to_ref(self) -> dict[str, Any]:
        return {"stages": self.stages, "asset": self.asset, "accepted": list(self.accepted), "by": self.by, "at": self.at}

    @classmethod
    def from_ref(cls, value: dict[str, Any]) -> Approval:
        """An approval ref as written here, or as written before approvals named their asset
        (then it covers no asset, only the renders)."""
        asset = value.get("asset")
        return cls(dict(value.get("stages") or {}), dict(asset) if isinstance(asset, dict) else None,
                   tuple(str(g) for g in value.get("accepted") or ()), str(value.get("by") or "?"), str(value.get("at") or ""))

    def covers(self, asset: dict[str, str], failing: set[str]) -> bool:
        return self.asset is not None and self.asset == asset and failing <= set(self.accepted)

    def covers_build(self, spec: TargetSpec, trees: dict[str, str], failing: set[str]) -> bool:
        """Whether this sign-off stands for a build whose stages made ``trees`` (stage name:
        output tree) and whose gates failed ``failing``."""
        return self.covers({n: t for n, t in trees.items() if n in spec.stages and not spec.stages[n].gate}, failing)


def approve_target(session: Session, target: str) -> Approval:
    """Pin the output trees of the target's gate stages (their renders) as the references that
    ``approved:STAGE`` inputs read, and record who accepted which failed gates on which asset."""
    ref = session.last_build(target)
    if ref is None:
        raise BuildsysError(f"target {target!r} has not been built yet: build it, look at it, then approve")
    spec = session.project.targets[target]
    built = {name: entry["tree"] for name, entry in ref["stages"].items() if name in spec.stages and entry.get("tree")}
    stages = {name: tree for name, tree in built.items() if spec.stages[name].gate}
    if not stages:
        raise BuildsysError(f"target {target!r} has no gate stage to approve")
    failing = sorted({str(f.get("gate")) for name, tree in stages.items()
                      for f in gate_verdict(session.store, tree, f"{target}/{name}")["failures"]})
    who = producer()
    approval = Approval(stages, {n: t for n, t in built.items() if n not in stages}, tuple(failing),
                        f"{who['user']}@{who['host']}", datetime.now(UTC).isoformat(timespec="seconds"))
    session.store.refs.write("approved", target, approval.to_ref())
    return approval


def read_approval(store: LocalStore, target: str) -> Approval | None:
    value = store.refs.read("approved", target)
    return Approval.from_ref(value) if value else None


def pin_target(session: Session, target: str, name: str) -> int:
    """Keep the target's last build (every stage's record and output) through gc, under
    ``refs/pins/NAME``; returns the number of stages pinned."""
    ref = session.last_build(target)
    if ref is None:
        raise BuildsysError(f"target {target!r} has not been built yet: nothing to pin")
    session.store.refs.write("pins", name, {"target": target, "stages": ref["stages"]})
    return len(ref["stages"])


def unpin(store: LocalStore, name: str) -> None:
    if not store.refs.delete("pins", name):
        raise BuildsysError(f"no pin named {name!r}; pins: {', '.join(store.refs.names('pins')) or 'none'}")
