"""Store inspection and upkeep behind ``store ls|cat``, ``log``, ``gc`` and ``approve``."""

from __future__ import annotations

from typing import Any, Iterator

from buildsys.encoding import decode
from buildsys.errors import BuildsysError
from buildsys.hashing import is_digest
from buildsys.session import Session
from buildsys.store.local import GcReport, LocalStore, StoreError

REF_KINDS = ("targets", "pins", "approved")


def list_store(store: LocalStore, what: str) -> Iterator[str]:
    if what == "refs":
        for kind in REF_KINDS:
            for name in store.list_refs(kind):
                yield f"{kind}/{name}"
    elif what == "actions":
        yield from store.action_keys()
    elif what == "blobs":
        for path in store.blobs():
            yield f"{path.name} {path.stat().st_size}"
    else:
        for name, digest in store.build_records():
            yield f"{name} {digest}"


def cat_object(store: LocalStore, name: str) -> Any:
    """A blob, an action record (by key) or a ref (KIND/NAME); msgpack decoded where it is."""
    if "/" in name:
        kind, _, ref = name.partition("/")
        value = store.read_ref(kind, ref)
        if value is None:
            raise StoreError(f"no ref {name}")
        return value
    if not is_digest(name):
        raise StoreError(f"{name!r} is neither a digest nor a ref (KIND/NAME)")
    record = store.get_action(name)
    if record is not None:
        return {"result": record.result.to_dict(), "signature": record.signature}
    data = store.read_bytes(name)
    try:
        decoded = decode(data)
    except Exception:  # not msgpack: an ordinary file blob
        return data
    return decoded if isinstance(decoded, (dict, list)) else data


def roots(store: LocalStore) -> tuple[set[str], set[str]]:
    """(trees, action keys) that gc keeps: everything the refs name."""
    trees: set[str] = set()
    actions: set[str] = set()
    for kind in REF_KINDS:
        for name in store.list_refs(kind):
            ref = store.read_ref(kind, name) or {}
            for entry in ref.get("stages", {}).values():
                if isinstance(entry, dict):
                    actions.add(entry["key"])
                    trees.add(entry["tree"])
                elif isinstance(entry, str):
                    trees.add(entry)
            trees.update(ref.get("trees", []))
    return trees, actions


def collect_garbage(store: LocalStore, dry_run: bool) -> GcReport:
    with store.using(exclusive=True):
        trees, actions = roots(store)
        return store.gc(trees, actions, dry_run=dry_run)


def build_history(store: LocalStore, limit: int) -> list[dict[str, Any]]:
    records = []
    for _, digest in reversed(store.build_records()):
        if len(records) >= limit:
            break
        records.append(decode(store.read_bytes(digest)))
    return records


def stage_log(store: LocalStore, stage_id: str) -> bytes:
    """What the run behind the stage's result in the last build that had one printed (empty
    when it printed nothing: a result records no log then)."""
    for _, digest in reversed(store.build_records()):
        stage = decode(store.read_bytes(digest)).get("stages", {}).get(stage_id)
        if stage and (stage.get("log") or stage.get("key")):
            return store.read_bytes(stage["log"]) if stage.get("log") else b""
    raise BuildsysError(f"no build record holds a log of {stage_id!r}")


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
    session.store.write_ref("approved", target, {"stages": stages})
    return sorted(stages)



def pin_target(session: Session, target: str, name: str) -> int:
    """Keep the target's last build (every stage's record and output) through gc, under
    ``refs/pins/NAME``; returns the number of stages pinned."""
    ref = session.last_build(target)
    if ref is None:
        raise BuildsysError(f"target {target!r} has not been built yet: nothing to pin")
    session.store.write_ref("pins", name, {"target": target, "stages": ref["stages"]})
    return len(ref["stages"])


def unpin(store: LocalStore, name: str) -> None:
    if not store.delete_ref("pins", name):
        raise BuildsysError(f"no pin named {name!r}; pins: {', '.join(store.list_refs('pins')) or 'none'}")
