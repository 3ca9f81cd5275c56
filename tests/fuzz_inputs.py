"""Hostile inputs for the fuzz run (``bench/fuzz_inputs.py``) and its quick test in the suite
(``tests/test_fuzz_inputs.py``): Buildfiles, hand-off locks and action records.

Each kind is generated from a real one and bent: values of the wrong type, NaN and infinities,
integers past 64 bits, deep nesting, path tricks, long and odd names, unknown keys, missing
ones; and a share of them is cut or flipped at the byte level. A check feeds one input to the
code that reads it as the CLI would, and classifies the end: ``accepted``, ``refused`` (a typed
error the CLI turns into one line and an exit code) or a crash (anything else: a traceback).
"""

from __future__ import annotations

import copy
import datetime
import json
import math
from pathlib import Path
from typing import Any, Callable

import msgpack
from hypothesis import strategies as st

from buildsys.cli.common import handled
from buildsys.keys.hashing import digest_bytes
from buildsys.store.errors import StoreError
from buildsys.store.local import LocalStore
from buildsys.store.records import ActionRecord, RecordError

TESTS = Path(__file__).resolve().parent
ACCEPTED, REFUSED = "accepted", "refused"

# --------------------------------------------------------------------------- leaves

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
_ODD_NAMES = st.sampled_from(
    ["t", "a.b", "x-1", "_", "", ".", "..", "../up", "a/b", "/abs", "t" * 100, "t" * 101, "t" * 300,
     "é", "a b", "a\nb", "con", "-x", "t\x00", "💥", "A" * 64]
)
_GOOD_NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,12}\Z")
NAMES = st.one_of(_GOOD_NAMES, _GOOD_NAMES, _GOOD_NAMES, _ODD_NAMES, _TEXT)  # mostly good: a bad one stops the reading early
_BIG_INTS = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 2**64 - 1, 10**30, -(10**30)])
_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308]))
SCALARS = st.one_of(st.integers(), _BIG_INTS, _FLOATS, st.booleans(), _TEXT, st.sampled_from([None]))


def nested(leaves: st.SearchStrategy, depth: int = 3) -> st.SearchStrategy:
    return st.recursive(
        leaves, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NAMES, inner, max_size=4)), max_leaves=depth * 4
    )


def deep(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


ANY = nested(SCALARS)


@st.composite
def bend(draw: st.DrawFn, value: Any, others: st.SearchStrategy = ANY) -> Any:
    """``value`` with a few of its parts replaced, dropped or added (a deep copy)."""
    value = copy.deepcopy(value)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(value))
        path = draw(st.sampled_from(paths))
        parent, key = _at(value, path[:-1]), path[-1] if path else None
        action = draw(st.sampled_from(["replace", "replace", "drop", "add", "deepen", "wrap"]))
        if key is None:
            if action in ("replace", "drop"):
                return draw(others)
            continue
        if action == "replace":
            parent[key] = draw(others)
        elif action == "drop":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(NAMES)] = draw(others)
        elif action == "deepen":
            parent[key] = deep(draw(st.sampled_from([50, 500, 2000])), parent[key], draw(st.sampled_from(["list", "dict"])))
        elif action == "wrap":
            parent[key] = [parent[key]]
    return value


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if len(prefix) > 12:  # in a value nested deep on purpose: its top is enough
        return out
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out[:400]


def _at(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def cut(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, or with a few bytes flipped, dropped or inserted."""
    if not data or draw(st.booleans()):
        return data[: draw(st.integers(0, len(data)))]
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "drop", "insert"]))
        if edit == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "drop" and at < len(data):
            del data[at]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4) | st.sampled_from([b"[", b"]", b"{", b'"', b"=", b"\n", b"\\", b"\x00"]))
    return bytes(data)


# --------------------------------------------------------------------------- Buildfiles


def toml(table: dict[str, Any]) -> str:
    """TOML text for a table of the values TOML can hold; a dict under a dict gets a header."""
    lines: list[str] = []
    _toml_table(table, (), lines)
    return "\n".join(lines) + "\n"


def _toml_table(table: dict[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    subtables = {k: v for k, v in table.items() if isinstance(v, dict) and v and len(path) < 5}  # deeper: inline tables
    if path and (len(subtables) < len(table) or not table):
        lines.append("[" + ".".join(_toml_key(k) for k in path) + "]")
    for key, value in table.items():
        if key not in subtables:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in subtables.items():
        _toml_table(value, (*path, key), lines)


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) else _toml_string(key)


def _toml_string(text: str) -> str:
    return json.dumps(text).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return '""'  # None: TOML has no null


GOOD_BUILDFILE = {
    "project": {"recipe_path": [str(TESTS)], "jobs": 1},
    "pipelines": {"p": {"stages": {"first": {"recipe": "engine_recipes:copy_through", "inputs": {"src": "src:data/*.txt"}},
                                   "second": {"recipe": "engine_recipes:copy_through", "inputs": {"prev": "first"}}}}},
    "targets": {
        "t": {"pipeline": "p", "seed": 7},
        "u": {"stages": {"only": {"recipe": "engine_recipes:random_bytes", "params": {"kib": 1}, "budget": {"seconds": 10},
                                  "inputs": {"a": "@t/second", "b": ["src:data/a.txt", "pkg:buildsys/errors.py"]}}}},
    },
}
_REFS = st.one_of(
    st.sampled_from(["src:data/*.txt", "src:data/a.txt", "src:**", "src:../x", "src:/etc/passwd", "src:", "pkg:buildsys/errors.py",
                     "pkg:buildsys/../etc", "pkg:nosuch/x", "pkg:buildsys", "@t/first", "@t/", "@/x", "@t/first/x", "approved:first",
                     "first", "second", "nosuch", "", "x:y"]),
    _TEXT,
)
_STAGE_VALUES = {
    "recipe": st.sampled_from(["engine_recipes:copy_through", "engine_recipes:nosuch", "nosuch:f", "engine_recipes", ":", "a:b:c",
                               "os.path:join", "engine_recipes:StageContext"]),
    "inputs": st.dictionaries(NAMES, st.one_of(_REFS, st.lists(_REFS, max_size=3)), max_size=3),
    "params": st.dictionaries(NAMES, ANY, max_size=4),
    "seed": st.one_of(st.integers(), _BIG_INTS),
    "mode": st.sampled_from(["deterministic", "strict", "stochastic", "random", ""]),
    "device": st.sampled_from(["cpu", "cuda", "auto", "tpu"]),
    "fingerprint": st.lists(st.sampled_from(["torch", "threads", "cpu", "gpu", "driver", "nope"]), max_size=3),
    "budget": st.dictionaries(st.sampled_from(["seconds", "memory_mb", "iterations", "minutes"]), st.one_of(SCALARS, _FLOATS), max_size=3),
    "model": st.sampled_from(["m", "nosuch", ""]),
    "production": st.booleans(),
    "gate": st.booleans(),
    "isolate": st.booleans(),
}


@st.composite
def stage_tables(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(_STAGE_VALUES)), max_size=6, unique=True))
    table = {"recipe": "engine_recipes:copy_through", **{k: draw(_STAGE_VALUES[k]) for k in keys}}
    return draw(bend(table)) if draw(st.integers(0, 4)) == 0 else table


@st.composite
def buildfile_tables(draw: st.DrawFn) -> dict[str, Any]:
    table = copy.deepcopy(GOOD_BUILDFILE)
    for _ in range(draw(st.integers(0, 3))):
        table["targets"][draw(NAMES) or "e"] = {"stages": draw(st.dictionaries(NAMES, stage_tables(), max_size=3))}
    if draw(st.booleans()):
        table["pipelines"]["p"]["stages"]["second"] = draw(stage_tables())
    if draw(st.integers(0, 3)) == 0:
        table["models"] = {draw(NAMES): draw(st.dictionaries(
            st.sampled_from(["path", "target", "stage", "digest", "license", "production", "x"]),
            st.one_of(st.sampled_from(["model.bin", "t", "first", "0" * 64, "MIT"]), SCALARS), max_size=4))}
    if draw(st.integers(0, 5)) == 0:
        table["remote"] = draw(st.dictionaries(st.sampled_from(["url", "timeout_s", "parallel", "retries", "password_env", "x"]), SCALARS, max_size=3))
    if draw(st.integers(0, 2)) == 0:
        table = draw(bend(table))
    return table if isinstance(table, dict) else {"x": table}


@st.composite
def buildfiles(draw: st.DrawFn) -> bytes:
    try:
        text = toml(draw(buildfile_tables()))
    except RecursionError:  # a value nested 1,000 deep or more: written out flat
        depth = draw(st.sampled_from([1000, 100_000]))
        text = toml(GOOD_BUILDFILE) + f'[targets.deep.stages.s]\nrecipe = "engine_recipes:copy_through"\nparams = {{ x = {"[" * depth}{"]" * depth} }}\n'
    data = text.encode()
    return draw(cut(data)) if draw(st.integers(0, 3)) == 0 else data


class BuildfileCheck:
    """Plans each Buildfile in one project folder (with ``data/*.txt`` and ``model.bin``) as
    ``buildsys plan`` does, through the CLI's error edge; always with the same store (a fuzzed
    ``project.store`` is read and checked, never used), and a plan writes no outputs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / "a.txt").write_text("alpha")
        (root / "data" / "b.txt").write_text("beta")
        (root / "model.bin").write_bytes(b"weights")
        self.buildfile = root / "Buildfile.toml"
        self.store = root / "store"

    def __call__(self, text: bytes) -> str:
        self.buildfile.write_bytes(text)
        return _outcome(self._plan)

    @handled
    def _plan(self) -> None:
        from buildsys.build.scheduler import Builder
        from buildsys.build.session import Session

        with Session(self.buildfile, store=self.store) as session:
            Builder(session, execute=False).build(session.targets([]))


def _outcome(call: Callable[[], Any]) -> str:
    """ACCEPTED, or REFUSED when the CLI edge turned an error into one line and an exit code
    (``fail`` exits); any other exception propagates: a crash."""
    try:
        call()
    except SystemExit as exc:
        if exc.code in (0, None):
            return ACCEPTED
        return REFUSED
    return ACCEPTED


# --------------------------------------------------------------------------- locks


def real_lock(work: Path) -> dict[str, Any]:
    """The lock of a hand-off of a small built project (built once, in ``work``)."""
    from conftest import run_cli

    project = work / "lock-project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "a.txt").write_text("alpha")
    (project / "Buildfile.toml").write_text(toml(GOOD_BUILDFILE))
    for args in (["build", "--json"], ["handoff", "t", "-o", str(work / "bundle")]):
        result = run_cli(*args, cwd=project)
        assert result.code == 0, result.stderr
    return json.loads((work / "bundle" / "lock.json").read_text())


@st.composite
def locks(draw: st.DrawFn, good: dict[str, Any]) -> bytes:
    lock = draw(bend(good, st.one_of(ANY, st.just("0" * 64), st.just("artifacts/x"), st.just("../x"), st.just("/etc/passwd"))))
    try:
        data = json.dumps(lock, allow_nan=True).encode()  # NaN and Infinity: json.loads takes them
    except RecursionError:  # nested 1,000 deep or more: written out flat
        depth = draw(st.sampled_from([1000, 100_000]))
        data = b'{"format": "buildsys-lock 1", "stages": ' + b"[" * depth + b"]" * depth + b"}"
    return draw(cut(data)) if draw(st.integers(0, 3)) == 0 else data


def check_lock(data: bytes) -> str:
    from buildsys.repro.lock import parse_lock

    return _outcome(handled(lambda: parse_lock(Path("bundle/lock.json"), data)))


# --------------------------------------------------------------------------- action records


def real_record(store: LocalStore, signer: Any) -> dict[str, Any]:
    from buildsys.keys.tree import Entry
    from buildsys.store.records import ActionResult

    blob = store.blobs.put_bytes(b"output")
    tree = store.blobs.put_tree({"out.txt": Entry(blob, 6)})
    result = ActionResult(key=digest_bytes(b"fuzz key"), description=store.blobs.put_bytes(b"description"), tree=tree, log=None,
                          metrics={"wall_s": 0.5, "iterations": 3}, fingerprint={"cpu": "x86_64", "threads": 2}, producer={"host": "h"})
    return msgpack.unpackb(ActionRecord(result, signer.sign(result)).encode(), raw=False)


@st.composite
def records(draw: st.DrawFn, good: dict[str, Any]) -> bytes:
    record = draw(bend(good, st.one_of(ANY, st.binary(max_size=8), st.just(good["result"]["tree"]))))
    try:
        data = msgpack.packb(record, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):  # msgpack cannot carry it (an int past 64 bits, a deep value): written flat
        data = b"\x81\xa6result" + b"\x91" * draw(st.sampled_from([2000, 100_000])) + b"\xc0"  # {"result": [[[...nil]]]}
    return draw(cut(data)) if draw(st.integers(0, 3)) == 0 else data


class RecordCheck:
    """Reads each record as the store and a remote pull do: decoded, looked up with its blobs
    checked, and its signature checked against a trusted key."""

    def __init__(self, store: LocalStore, trusted: Any) -> None:
        self.store = store
        self.trusted = trusted
        self.key = digest_bytes(b"fuzz key")
        self.path = store.actions.folder / self.key[:2] / self.key

    def __call__(self, data: bytes) -> str:
        try:
            record = ActionRecord.decode(data, "fuzz")
        except RecordError:
            record = None
        self.path.parent.mkdir(exist_ok=True)
        self.path.write_bytes(data)
        try:
            self.store.actions.lookup(self.key)  # a malformed record: a miss, set aside in quarantine/
        except StoreError:
            record = None
        finally:
            self.path.unlink(missing_ok=True)
        if record is None:
            return REFUSED
        self.trusted.verify(record)  # what a pull does with it: any verdict, never an exception
        return ACCEPTED
