"""Hostile inputs for the fuzz run (``bench/fuzz_inputs.py``) and its quick test in the suite
(``tests/test_fuzz_inputs.py``): Buildfiles, hand-off locks and action records.

Each input is a pure function of one seed: a ``random.Random`` made from it takes a real
Buildfile, lock or record and bends it (values of the wrong type, NaN and infinities, integers
past 64 bits, deep nesting, hostile text, long and odd names, path tricks out of the project
and through links, unknown keys, missing ones, a dict made a list; a quarter of the Buildfiles
have one reference or folder pointed out of its root and nothing else bent, so that the reading
reaches the input-root checks), then cuts a share of them at
the byte level (truncated, bits flipped, bytes dropped or inserted) or, for a Buildfile, at the
line level (a line dropped, repeated or moved: duplicate keys and tables). Plain Python, so an
input costs microseconds to make and a seed replays it (the earlier hypothesis strategies spent
nine tenths of a run building inputs). A check feeds one input to the code that reads it as the
CLI would, and classifies the end: ``accepted``, ``refused`` (a typed error the CLI turns into
one line and an exit code) or a crash (anything else: a traceback).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import math
import os
import random
import re
import struct
from pathlib import Path
from typing import Any, Callable

import msgpack

from buildsys.cli.common import handled
from buildsys.keys.hashing import digest_bytes
from buildsys.store.errors import StoreError
from buildsys.store.local import LocalStore
from buildsys.store.records import ActionRecord, RecordError

TESTS = Path(__file__).resolve().parent
ACCEPTED, REFUSED = "accepted", "refused"

# --------------------------------------------------------------------------- leaves

_ODD_NAMES = ["t", "a.b", "x-1", "_", "", ".", "..", "../up", "a/b", "/abs", "t" * 100, "t" * 101, "t" * 300,
              "é", "a b", "a\nb", "con", "-x", "t\x00", "💥", "A" * 64, "[/x]", "[bold]", "$HOME", "~", "a\\b", "\u202e", "\ufeff"]
_BIG_INTS = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 2**64 - 1, 10**30, -(10**30), 2**31, -(2**31) - 1]
_SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 2.0**53 + 1, 1e-7]
_HOSTILE_CHARS = "\x00\x01\x1b\x7f\"'\\[]{}=#./:~$\n\r\t \u2028\u202e\ufeff\u0301é💥\U0010ffff"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


class Gen:
    """Hostile values drawn from one seeded ``random.Random``: the same seed, the same values."""

    def __init__(self, seed: int | str) -> None:
        self.r = random.Random(seed)

    def pick(self, options: list | tuple) -> Any:
        return options[self.r.randrange(len(options))]

    def one_in(self, n: int) -> bool:
        return self.r.randrange(n) == 0

    def integer(self) -> int:
        roll = self.r.randrange(6)
        if roll == 0:
            return self.pick(_BIG_INTS)
        if roll < 3:
            return self.r.randint(-3, 10)
        bits = self.r.randrange(72)
        return self.r.choice((1, -1)) * self.r.getrandbits(bits)

    def floating(self) -> float:
        roll = self.r.randrange(4)
        if roll == 0:
            return self.pick(_SPECIAL_FLOATS)
        if roll == 1:
            return struct.unpack("<d", self.r.getrandbits(64).to_bytes(8, "little"))[0]  # any bit pattern, NaNs included
        return self.r.uniform(-1e6, 1e6) if roll == 2 else self.r.random()

    def text(self, max_size: int = 24) -> str:
        size = self.r.randrange(max_size + 1)
        out = []
        for _ in range(size):
            roll = self.r.randrange(10)
            if roll < 6:
                out.append(chr(self.r.randrange(0x20, 0x7F)))
            elif roll < 8:
                out.append(self.pick(_HOSTILE_CHARS))
            else:
                code = self.r.randrange(0x80, 0x110000)
                out.append(chr(code if not 0xD800 <= code <= 0xDFFF else 0xFFFD))  # no lone surrogates: TOML and UTF-8 cannot hold them
        return "".join(out)

    def name(self) -> str:
        roll = self.r.randrange(10)
        if roll < 6:  # mostly good: a bad one stops the reading early
            return self.pick(_NAME_CHARS[:62]) + "".join(self.pick(_NAME_CHARS) for _ in range(self.r.randrange(13)))
        return self.pick(_ODD_NAMES) if roll < 8 else self.text()

    def scalar(self) -> Any:
        roll = self.r.randrange(7)
        return (self.integer, self.integer, self.floating, lambda: self.r.random() < 0.5, self.text, self.text, lambda: None)[roll]()

    def value(self, depth: int = 3) -> Any:
        """A scalar, or lists and tables of them up to ``depth`` deep."""
        roll = self.r.randrange(4) if depth > 0 else 0
        if roll < 2:
            return self.scalar()
        if roll == 2:
            return [self.value(depth - 1) for _ in range(self.r.randrange(5))]
        return {self.name(): self.value(depth - 1) for _ in range(self.r.randrange(5))}

    def table(self, keys: Callable[[], str], values: Callable[[], Any], max_size: int = 3) -> dict[str, Any]:
        return {keys(): values() for _ in range(self.r.randrange(max_size + 1))}


def deep(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def bend(g: Gen, value: Any, others: Callable[[], Any]) -> Any:
    """``value`` with one to four of its parts replaced, dropped, added to, nested deep or
    wrapped in a list (a deep copy); ``others`` draws a replacement."""
    value = copy.deepcopy(value)
    for _ in range(g.r.randint(1, 4)):
        paths = _paths(value)
        path = g.pick(paths)
        parent, key = _at(value, path[:-1]), path[-1] if path else None
        action = g.pick(("replace", "replace", "drop", "add", "deepen", "wrap"))
        if key is None:
            if action in ("replace", "drop"):
                return others()
            continue
        if action == "replace":
            parent[key] = others()
        elif action == "drop":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[g.name()] = others()
        elif action == "deepen":
            parent[key] = deep(g.pick((50, 500, 2000)), parent[key], g.pick(("list", "dict")))
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


_INSERTS = [b"[", b"]", b"{", b"}", b'"', b"=", b"\n", b"\\", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80"]


def cut(g: Gen, data: bytes) -> bytes:
    """``data`` truncated, or with a few bytes flipped, dropped or inserted."""
    if not data or g.r.random() < 0.5:
        return data[: g.r.randint(0, len(data))]
    edited = bytearray(data)
    for _ in range(g.r.randint(1, 8)):
        at = g.r.randint(0, len(edited))
        edit = g.pick(("flip", "drop", "insert"))
        if edit == "flip" and at < len(edited):
            edited[at] ^= 1 << g.r.randrange(8)
        elif edit == "drop" and at < len(edited):
            del edited[at]
        else:
            edited[at:at] = g.pick(_INSERTS) if g.r.random() < 0.5 else g.r.randbytes(g.r.randint(1, 4))
    return bytes(edited)


def shuffle_lines(g: Gen, data: bytes) -> bytes:
    """``data`` with a line or two dropped, repeated or moved (a key or table header given twice,
    a key left outside its table)."""
    lines = data.split(b"\n")
    for _ in range(g.r.randint(1, 3)):
        at = g.r.randrange(len(lines))
        edit = g.pick(("drop", "repeat", "move"))
        if edit == "drop" and len(lines) > 1:
            del lines[at]
        elif edit == "repeat":
            lines.insert(g.r.randrange(len(lines) + 1), lines[at])
        else:
            lines.insert(g.r.randrange(len(lines) + 1), lines.pop(at))
    return b"\n".join(lines)


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
    """A TOML basic string: non-ASCII text as itself (an escaped astral character would be two
    surrogate escapes, which TOML refuses: the earlier generator lost most non-ASCII names so)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


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
# Places in and out of the project BuildfileCheck makes: ``link-out`` is a link to /etc,
# ``data/passwd.lnk`` a link to /etc/passwd, ``link-model`` a link to a file outside.
_PATHS = ["out", "/", "..", "../elsewhere", "link-out", "link-out/x", "store", "store/x", "data", "~", "~/x", "", ".",
          "out/../../x", "/etc", "/tmp", "//", "a\x00b", "model.bin", "link-model", "/etc/shadow", "../model.bin", "data/passwd.lnk"]
_REFS = ["src:data/*.txt", "src:data/a.txt", "src:data/*", "src:**", "src:*", "src:../x", "src:/etc/passwd", "src:", "src:link-out/passwd",
         "src:link-out/*", "src:data/passwd.lnk", "src:data/../../etc/passwd", "src:./data/a.txt", "src:data//a.txt", "src:~/x",
         "pkg:buildsys/errors.py", "pkg:buildsys/../etc", "pkg:buildsys//etc/shadow", "pkg:buildsys/", "pkg:nosuch/x", "pkg:buildsys",
         "pkg:os/../../etc/passwd", "pkg:../x/y", "pkg:buildsys/keys/*.py", "@t/first", "@t/", "@/x", "@t/first/x", "@u/only", "@nosuch/x",
         "approved:first", "first", "second", "nosuch", "", "x:y"]
_RECIPES = ["engine_recipes:copy_through", "engine_recipes:nosuch", "nosuch:f", "engine_recipes", ":", "a:b:c", "os.path:join",
            "engine_recipes:StageContext", "engine_recipes:random_bytes", "builtins:eval", "../x:y", "engine_recipes.x:y"]
_BUDGET_KEYS = ["seconds", "memory_mb", "iterations", "processes", "minutes"]
_MODEL_KEYS = ["path", "target", "stage", "digest", "license", "production", "description", "x"]
_EXECUTOR_KEYS = ["kind", "address", "data_plane", "node_store", "retries", "connect_timeout_s", "x"]
_REMOTE_KEYS = ["url", "timeout_s", "parallel", "retries", "password_env", "username", "read_only", "zstd", "s3_region", "x"]


def _date(g: Gen) -> Any:
    return g.pick((datetime.date(1979, 5, 27), datetime.time(7, 32), datetime.datetime(1979, 5, 27, 7, 32)))


def _toml_other(g: Gen) -> Any:
    """A replacement value for a Buildfile: any value, a path, a reference or a TOML date."""
    roll = g.r.randrange(8)
    return g.value() if roll < 5 else g.pick(_PATHS) if roll == 5 else g.pick(_REFS) if roll == 6 else _date(g)


def _ref(g: Gen) -> str:
    return g.pick(_REFS) if g.r.random() < 0.8 else g.text()


_STAGE_VALUES: dict[str, Callable[[Gen], Any]] = {
    "recipe": lambda g: g.pick(_RECIPES),
    "inputs": lambda g: g.table(g.name, lambda: _ref(g) if g.r.random() < 0.6 else [_ref(g) for _ in range(g.r.randrange(4))]),
    "params": lambda g: g.table(g.name, g.value, 4),
    "seed": lambda g: g.integer(),
    "mode": lambda g: g.pick(("deterministic", "strict", "stochastic", "random", "")),
    "device": lambda g: g.pick(("cpu", "cuda", "auto", "tpu", "cuda:0", "mps")),
    "fingerprint": lambda g: [g.pick(("torch", "threads", "cpu", "gpu", "driver", "nope", "")) for _ in range(g.r.randrange(4))],
    "budget": lambda g: g.table(lambda: g.pick(_BUDGET_KEYS), lambda: g.pick(_SPECIAL_FLOATS) if g.one_in(3) else g.scalar()),
    "model": lambda g: g.pick(("m", "nosuch", "")),
    "production": lambda g: g.r.random() < 0.5,
    "gate": lambda g: g.r.random() < 0.5,
    "isolate": lambda g: g.r.random() < 0.5,
    "network": lambda g: g.r.random() < 0.5 if g.r.random() < 0.8 else g.scalar(),
    "description": lambda g: g.text(),
    "resources": lambda g: g.table(lambda: g.pick(("CPU", "GPU", "memory", "object_store_memory", "custom", "")), g.scalar),
}
_STAGE_KEYS = sorted(_STAGE_VALUES)


def stage_table(g: Gen) -> dict[str, Any]:
    keys = g.r.sample(_STAGE_KEYS, g.r.randrange(5))
    table = {"recipe": "engine_recipes:copy_through", **{k: _STAGE_VALUES[k](g) for k in keys}}
    return bend(g, table, lambda: _toml_other(g)) if g.one_in(5) else table


def _project_table(g: Gen) -> dict[str, Any]:
    """The project table with a few of its settings pointed in and out of the project."""
    table: dict[str, Any] = copy.deepcopy(GOOD_BUILDFILE["project"])
    for key in g.r.sample(["outputs", "store", "allow_outside", "recipe_path", "jobs", "threads", "name"], g.r.randint(1, 3)):
        if key in ("outputs", "store"):
            table[key] = g.pick(_PATHS) if g.r.random() < 0.8 else g.scalar()
        elif key == "allow_outside":
            table[key] = [g.pick(_PATHS) for _ in range(g.r.randrange(3))] if g.r.random() < 0.8 else g.value(1)
        elif key == "recipe_path":
            table[key] = [str(TESTS), *(g.pick(_PATHS) for _ in range(g.r.randrange(3)))] if g.r.random() < 0.8 else g.value(1)
        else:
            table[key] = g.scalar() if g.one_in(2) else g.r.randint(0, 64)
    return table


_ROOT_REFS = [r for r in _REFS if r.startswith(("src:", "pkg:"))] + [
    "src:link-out", "src:link-out/../passwd", "src:data/../link-out/hosts", "src:data/*.lnk", "src:data/**", "src:**/passwd*",
    "src:data/a.txt\x00", "src:\x00", "pkg:buildsys/../../../../etc/shadow", "pkg:buildsys/./errors.py", "pkg:buildsys\\..\\x",
]


def aimed_at_a_root(g: Gen, table: dict[str, Any]) -> None:
    """One reference or folder of a good Buildfile pointed in or out of its root (and nothing
    else bent, so the reading gets as far as the check): the input-root checks' inputs."""
    where = g.r.randrange(5)
    if where == 0:
        table["pipelines"]["p"]["stages"]["first"]["inputs"]["src"] = g.pick(_ROOT_REFS)
    elif where == 1:
        table["targets"]["u"]["stages"]["only"]["inputs"]["b"] = [g.pick(_ROOT_REFS) for _ in range(g.r.randint(1, 3))]
    elif where == 2:
        table["project"] = {**table["project"], g.pick(("outputs", "store")): g.pick(_PATHS)}
    elif where == 3:
        table["project"] = {**table["project"], "allow_outside": [g.pick(_PATHS)], "outputs": g.pick(_PATHS)}
    else:
        table["models"] = {"m": {"path": g.pick(_PATHS), "license": "MIT"}}
        table["targets"]["u"]["stages"]["only"]["model"] = "m"


def buildfile_table(g: Gen) -> dict[str, Any]:
    table: dict[str, Any] = copy.deepcopy(GOOD_BUILDFILE)
    if g.one_in(4):
        aimed_at_a_root(g, table)
        return table
    if g.one_in(3):
        table["project"] = _project_table(g)
    for _ in range(g.r.randrange(4)):
        table["targets"][g.name() or "e"] = {"stages": g.table(g.name, lambda: stage_table(g))}
    if g.one_in(2):
        table["pipelines"]["p"]["stages"]["second"] = stage_table(g)
    if g.one_in(4):
        table["models"] = {g.name(): g.table(lambda: g.pick(_MODEL_KEYS), lambda: g.pick(
            ("model.bin", "link-model", "/etc/shadow", "../model.bin", "t", "first", "0" * 64, "MIT", "~/.ssh/id_rsa")) if g.one_in(2) else g.scalar(), 4)}
        if g.one_in(2):
            table["targets"]["t"]["stages"] = {"second": {"model": next(iter(table["models"]))}}
    if g.one_in(6):
        table["remote"] = g.table(lambda: g.pick(_REMOTE_KEYS), lambda: g.pick(
            ("file:///tmp/x", "http://127.0.0.1:1", "s3://b/p", "ftp://x", "", "NOSUCH_ENV")) if g.one_in(2) else g.scalar())
    if g.one_in(8):
        table["executor"] = g.table(lambda: g.pick(_EXECUTOR_KEYS), lambda: g.pick(
            ("local", "ray", "auto", "remote", "shared", "ray://127.0.0.1:1", "")) if g.one_in(2) else g.scalar())
    if g.one_in(3):
        table = bend(g, table, lambda: _toml_other(g))
    return table if isinstance(table, dict) else {"x": table}


def buildfile_input(seed: int | str) -> bytes:
    """The Buildfile of ``seed``: bent from a real one, a share of them cut at the byte or line level."""
    g = Gen(seed)
    try:
        text = toml(buildfile_table(g))
    except RecursionError:  # a value nested 1,000 deep or more: written out flat
        depth = g.pick((1000, 100_000))
        text = toml(GOOD_BUILDFILE) + f'[targets.deep.stages.s]\nrecipe = "engine_recipes:copy_through"\nparams = {{ x = {"[" * depth}{"]" * depth} }}\n'
    data = text.encode()
    roll = g.r.randrange(6)
    return cut(g, data) if roll == 0 else shuffle_lines(g, data) if roll == 1 else data


class BuildfileCheck:
    """Plans each Buildfile in one project folder as ``buildsys plan`` does (through the same
    session, executor settings, planner and printing, inside the CLI's error edge); always with
    the same store (a fuzzed ``project.store`` is read and checked, never used), and a plan
    writes no outputs. The folder holds ``data/*.txt``, ``model.bin``, and links out of it
    (``link-out`` to /etc, ``data/passwd.lnk`` to /etc/passwd, ``link-model`` to a file outside)
    for the input-root checks to refuse."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / "a.txt").write_text("alpha")
        (root / "data" / "b.txt").write_text("beta")
        (root / "model.bin").write_bytes(b"weights")
        (root.parent / "outside-model.bin").write_bytes(b"secret weights")
        for link, target in (("link-out", "/etc"), ("data/passwd.lnk", "/etc/passwd"), ("link-model", "../outside-model.bin")):
            if not (root / link).is_symlink():
                (root / link).symlink_to(target)
        self.buildfile = root / "Buildfile.toml"
        self.store = root / "store"
        self.json_output = False
        self.message = ""

    def __call__(self, text: bytes) -> str:
        self.buildfile.write_bytes(text)
        self.json_output = not self.json_output
        return self._outcome(self._plan)

    def _outcome(self, call: Callable[[], Any]) -> str:
        outcome, self.message = outcome_of(call)
        return outcome

    @handled
    def _plan(self) -> None:
        from buildsys.build.scheduler import Builder
        from buildsys.build.session import Session
        from buildsys.build.summary import print_plan
        from buildsys.project.config import load_settings, load_user_config
        from buildsys.project.executor import executor_settings

        with Session(self.buildfile, store=self.store, use_index=True, writes=False) as session:
            user = load_user_config()
            project = session.project
            executor_settings(project.executor, str(project.file), user.executor, str(user.path), None)  # read as plan reads it; no cluster is joined
            load_settings(project.remote, None, buildfile_where=str(project.file), user=user)
            report = Builder(session, execute=False).build(session.targets([]))
            print_plan(report, self.json_output)


def outcome_of(call: Callable[[], Any]) -> tuple[str, str]:
    """(ACCEPTED or REFUSED, the one line the CLI printed): REFUSED when the CLI edge turned an
    error into one line and an exit code (``fail`` exits); any other exception propagates: a
    crash. What the call prints is caught (and its error line returned)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            call()
    except SystemExit as exc:
        if exc.code in (0, None):
            return ACCEPTED, ""
        lines = err.getvalue().splitlines()
        if len(lines) != 1 or not lines[0].startswith("buildsys: error: "):
            raise AssertionError(f"a refusal must be one line 'buildsys: error: ...', got {err.getvalue()[:300]!r}") from None
        return REFUSED, lines[0]
    return ACCEPTED, ""


_FIELD = re.compile(r"^(FILE(?::\d+)?: )([^:]+): (.*)$", re.S)
_MASKS = [(re.compile(r"'[^']*'|\"[^\"]*\""), "Q"), (re.compile(r"/\S*"), "P"), (re.compile(r"-?\d+(\.\d+)?"), "N")]


def refusal_kind(message: str, buildfile: str = "") -> str:
    """A refusal's message with its file, quoted names, paths and numbers masked: two inputs
    refused for the same reason give the same kind (a measure of how much of a reader the
    generated inputs reach)."""
    text = message.removeprefix("buildsys: error: ")
    if buildfile:
        text = text.replace(buildfile, "FILE")
    field = _FIELD.match(text)
    if field:  # a dotted field: its last part names what was wrong, the rest are names the input chose
        text = f"{field[1]}{field[2].rsplit('.', 1)[-1]}: {field[3]}"
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text[:90]


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


_LOCK_VALUES = ["0" * 64, "f" * 64, "0" * 63, "artifacts/x", "../x", "/etc/passwd", "files/../../x", "a\x00b", "buildsys-lock 1", "buildsys-lock 2"]


def lock_input(seed: int | str, good: dict[str, Any]) -> bytes:
    """The lock of ``seed``: ``good`` bent (a value swapped for a digest, a path out of the
    bundle or any value), a share of them cut at the byte level."""
    g = Gen(seed)
    lock = bend(g, good, lambda: g.pick(_LOCK_VALUES) if g.one_in(3) else g.value())
    try:
        data = json.dumps(lock, allow_nan=True).encode()  # NaN and Infinity: json.loads takes them
    except RecursionError:  # nested 1,000 deep or more: written out flat
        depth = g.pick((1000, 100_000))
        data = b'{"format": "buildsys-lock 1", "stages": ' + b"[" * depth + b"]" * depth + b"}"
    return cut(g, data) if g.one_in(4) else data


def check_lock(data: bytes) -> str:
    return lock_outcome(data)[0]


def lock_outcome(data: bytes) -> tuple[str, str]:
    from buildsys.repro.lock import parse_lock

    return outcome_of(handled(lambda: parse_lock(Path("bundle/lock.json"), data)))


# --------------------------------------------------------------------------- action records


def real_record(store: LocalStore, signer: Any) -> dict[str, Any]:
    from buildsys.keys.tree import Entry
    from buildsys.store.records import ActionResult

    blob = store.blobs.put_bytes(b"output")
    tree = store.blobs.put_tree({"out.txt": Entry(blob, 6)})
    result = ActionResult(key=digest_bytes(b"fuzz key"), description=store.blobs.put_bytes(b"description"), tree=tree, log=None,
                          metrics={"wall_s": 0.5, "iterations": 3}, fingerprint={"cpu": "x86_64", "threads": 2}, producer={"host": "h"})
    return msgpack.unpackb(ActionRecord(result, signer.sign(result)).encode(), raw=False)


def record_input(seed: int | str, good: dict[str, Any]) -> bytes:
    """The action record of ``seed``: ``good`` bent (a value swapped for bytes, for its own tree
    digest or any value), a share of them cut at the byte level."""
    g = Gen(seed)
    record = bend(g, good, lambda: g.r.randbytes(g.r.randrange(9)) if g.one_in(4) else good["result"]["tree"] if g.one_in(6) else g.value())
    try:
        data = msgpack.packb(record, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):  # msgpack cannot carry it (an int past 64 bits, a deep value): written flat
        data = b"\x81\xa6result" + b"\x91" * g.pick((2000, 100_000)) + b"\xc0"  # {"result": [[[...nil]]]}
    return cut(g, data) if g.one_in(4) else data


class RecordCheck:
    """Reads each record as the store and a remote pull do: decoded, looked up with its blobs
    checked, and its signature checked against a trusted key."""

    def __init__(self, store: LocalStore, trusted: Any) -> None:
        self.store = store
        self.trusted = trusted
        self.key = digest_bytes(b"fuzz key")
        self.path = store.actions.folder / self.key[:2] / self.key
        self.message = ""

    def __call__(self, data: bytes) -> str:
        self.message = ""
        try:
            record = ActionRecord.decode(data, "fuzz")
        except RecordError as exc:
            record, self.message = None, str(exc)
        self.path.parent.mkdir(exist_ok=True)
        self.path.write_bytes(data)
        try:
            self.store.actions.lookup(self.key)  # a malformed record: a miss, set aside in quarantine/
        except StoreError as exc:
            record, self.message = None, self.message or str(exc)
        finally:
            self.path.unlink(missing_ok=True)
        if record is None:
            return REFUSED
        self.trusted.verify(record)  # what a pull does with it: any verdict, never an exception
        return ACCEPTED


def scratch_home(folder: Path) -> None:
    """Point the user config at an empty folder, so a check reads no one's real settings."""
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["HOME"] = str(folder)
    os.environ["XDG_CONFIG_HOME"] = str(folder / ".config")
