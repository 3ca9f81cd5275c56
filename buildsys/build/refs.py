"""Named roots a project keeps in its store: pins (a build kept through gc) and approvals
(renders pinned as the render-regression reference)."""

from __future__ import annotations

from buildsys.build.session import Session
from buildsys.errors import BuildsysError
from buildsys.store.local import LocalStore


def approve_target(session: Session, target: str) -> list[str]:
    """Pin the output trees of the target's gate stages (their renders) as the references that
    ``approved:STAGE`` inputs read."""
    ref = session.last_build(target)
    if ref is None:
        raise BuildsysError(f"target {target!r} has not been built yet: build it, look at it, then approve")
    spec = session.project.targets[target]
    stages = {name: ref["stages"][name]["tree"] for name, s in spec.stages.items() if s.gate and name in ref["stages"]}
    if not stages:
        raise BuildsysError(f"target {target!r} has no gate stage to approve")
    session.store.refs.write("approved", target, {"stages": stages})
    return sorted(stages)


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
