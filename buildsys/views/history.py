"""What the store holds, for people: ``store ls|cat`` and ``log`` (read-only)."""

from __future__ import annotations

from typing import Any, Iterator

from buildsys.errors import BuildsysError
from buildsys.keys.encoding import decode
from buildsys.keys.hashing import is_digest
from buildsys.store.build_record import read_record
from buildsys.store.local import LocalStore
from buildsys.store.refs import REF_KINDS


def list_store(store: LocalStore, what: str) -> Iterator[str]:
    if what == "refs":
        for kind in REF_KINDS:
            for name in store.refs.names(kind):
                yield f"{kind}/{name}"
    elif what == "actions":
        yield from store.actions.keys()
    elif what == "blobs":
        for path in store.blobs.paths():
            yield f"{path.name} {path.stat().st_size}"
    else:
        for name, digest in store.builds.listing():
            yield f"{name} {digest}"


class NotInStore(BuildsysError):
    """What ``store cat`` was asked for is not in the store, or is not a name of anything."""


def cat_object(store: LocalStore, name: str) -> Any:
    """A blob, an action record (by key) or a ref (KIND/NAME); msgpack decoded where it is."""
    if "/" in name:
        kind, _, ref = name.partition("/")
        value = store.refs.read(kind, ref) if kind in REF_KINDS else None
        if value is None:
            raise NotInStore(f"no ref {name} in {store.root} (buildsys store ls refs)")
        return value
    if not is_digest(name):
        raise NotInStore(f"{name!r} is neither a digest nor a ref (KIND/NAME)")
    record = store.actions.get(name)
    if record is not None:
        return {"result": record.result.to_dict(), "signature": record.signature}
    if not store.blobs.has(name):
        raise NotInStore(f"no blob or action record {name} in {store.root}")
    data = store.blobs.read(name)
    try:
        decoded = decode(data)
    except Exception:  # not msgpack: an ordinary file blob
        return data
    return decoded if isinstance(decoded, (dict, list)) else data


def build_history(store: LocalStore, limit: int) -> list[tuple[str, dict[str, Any]]]:
    """(digest, record) of the last ``limit`` builds, newest first; the digest is what ``diff``
    takes (or any unique prefix of 8 digits or more)."""
    records: list[tuple[str, dict[str, Any]]] = []
    for _, digest in reversed(store.builds.listing()):
        if len(records) >= limit:
            break
        records.append((digest, read_record(store, digest)))
    return records


def last_statuses(store: LocalStore, stage_ids: list[str]) -> dict[str, str]:
    """Each stage's status in the newest build record that has it (a ref keeps how a result was
    first obtained, not what the last build did with it)."""
    wanted, found = set(stage_ids), {}
    for _, digest in reversed(store.builds.listing()):
        stages = read_record(store, digest).get("stages", {})
        for sid in wanted & stages.keys():
            found[sid] = stages[sid].get("status")
        wanted -= stages.keys()
        if not wanted:
            break
    return found


def stage_log(store: LocalStore, stage_id: str) -> bytes:
    """What the run behind the stage's result in the last build that had one printed (empty
    when it printed nothing: a result records no log then)."""
    for _, digest in reversed(store.builds.listing()):
        stage = read_record(store, digest).get("stages", {}).get(stage_id)
        if stage and (stage.get("log") or stage.get("key")):
            return store.blobs.read(stage["log"]) if stage.get("log") else b""
    raise BuildsysError(f"no build record holds a log of {stage_id!r}")
