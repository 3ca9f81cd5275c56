"""``buildsys watch``: an optional process that watches the files a Buildfile's resolved-graph
index depends on (inotify), so a build can skip the ``stat`` of every source and output file
that did not change. Never needed for a correct build: without it, or when it cannot vouch for
a stretch of time, the build checks every file as usual.

The watcher listens on a Unix socket beside the index (``<index>.sock``) and keeps a sequence
number that grows with every event, and for each path the number of its last event. A build
asks ``since ID SEQ``: first the watcher syncs (it creates a cookie file in a watched folder and
reads events until the cookie's own event arrives, so every change made before the question was
asked has been read; one inotify queue keeps events in order; cookies go to a folder of the
watcher's own beside the index, never among the user's files), then it answers with the paths
changed after SEQ and the present number. The build takes that number *before* it checks, and the
index it writes records it, so a change made during the build is reported to the next one.

The watcher cannot vouch (the build checks everything) when its ID differs from the one the index
recorded (a new watcher, or one that restarted its watches), when the kernel's queue overflowed,
when a watched folder was deleted or moved, and when the index names a folder it does not watch
yet: in each case it starts a new ID, watching what the index names now. What it watches: the
folders of the index's plain source files and every folder under the project's outputs. inotify
does not see changes made through another machine's mount of a network filesystem.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Callable

from buildsys.build.graph_index import GraphIndex
from buildsys.build.index_path import index_file, socket_path

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_ONLYDIR, IN_NONBLOCK, IN_CLOEXEC = 0x01000000, 0o4000, 0o2000000
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
EVENT = struct.Struct("iIII")
COOKIE = ".buildsys-watch-cookie"
RUN = b"RUN "
"""How a request for a whole build starts (the thin client's, cli/client.py): the watcher hands
it to the run handler it serves with (cli/server.py), with the descriptors that came with it."""

RunHandler = Callable[[socket.socket, bytes, list[int]], None]
_serving: Watcher | None = None
"""The watcher of this process while it serves: a build it runs in-process asks it directly."""


class _Inotify:
    def __init__(self) -> None:
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self.folders: dict[int, str] = {}

    def add(self, folder: str) -> bool:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(folder), MASK | IN_ONLYDIR)
        if wd < 0:
            return False
        self.folders[wd] = folder
        return True

    def read(self) -> list[tuple[str | None, int]]:
        """(path or None when the queue overflowed, mask) of every event queued now."""
        events: list[tuple[str | None, int]] = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return events
            offset = 0
            while offset < len(data):
                wd, mask, _, length = EVENT.unpack_from(data, offset)
                name = data[offset + EVENT.size : offset + EVENT.size + length].rstrip(b"\0").decode(errors="surrogateescape")
                offset += EVENT.size + length
                folder = self.folders.get(wd)
                events.append((None if folder is None or mask & IN_Q_OVERFLOW else f"{folder}/{name}" if name else folder, mask))

    def close(self) -> None:
        os.close(self.fd)


class Watcher:
    def __init__(self, buildfile: Path) -> None:
        self.buildfile = Path(buildfile).absolute()
        self.index_path = index_file(self.buildfile)
        self.seq = 0
        self.changed: dict[str, int] = {}
        self.inotify: _Inotify | None = None
        self.cookies = ""
        self.id = ""
        self.watched: set[str] = set()
        self._index_stat: tuple[int, int] | None = None
        self.serving: dict[str, object] = {}  # what the run handler says of the builds it served
        self.rewatch()

    def wanted(self) -> set[str]:
        index = GraphIndex.load(self.buildfile)
        if index is None:
            return set()
        folders = {os.path.dirname(path) for path, *_ in index.plain_files().values()}
        outputs = Path(self.buildfile.parent, index.tables.get("project", {}).get("outputs", "out"))
        # os.walk, not rglob: a folder deleted while it is listed (an ``rm -rf out`` under way) is
        # skipped, not an error that would stop the watcher; links to folders are not entered
        folders.update(folder for folder, _, _ in os.walk(outputs))
        # and the folder above it: an outputs folder deleted before the watches were made, or
        # after (then no event reaches its own watch), is seen when it appears again
        folders.add(str(outputs.parent))
        return folders

    def rewatch(self) -> None:
        """Start a new ID watching what the index names now, and its own cookie folder."""
        if self.inotify is not None:
            self.inotify.close()
        self.inotify = _Inotify()
        self.cookies = f"{self.index_path}.watch"
        os.makedirs(self.cookies, exist_ok=True)
        if not self.inotify.add(self.cookies):
            raise OSError(f"cannot watch {self.cookies}")
        self.watched = {folder for folder in self.wanted() if self.inotify.add(folder)}
        self.id = f"{os.getpid()}-{time.time_ns()}"
        self.changed.clear()
        self._index_stat = self._stat_index()

    def _stat_index(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.index_path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    def drain(self) -> bool:
        """Read queued events; False when the watcher can no longer vouch (it then rewatches)."""
        assert self.inotify is not None
        for path, mask in self.inotify.read():
            if path is None or mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                self.rewatch()
                return False
            self.seq += 1
            self.changed[path] = self.seq
            if mask & (IN_CREATE | IN_MOVED_TO) and os.path.isdir(path):
                self._watch_new(path)
        return True

    def _watch_new(self, folder: str) -> None:
        """A folder that appeared (an output folder a build made): watch it and every folder in
        it, and count what landed in them before the watches did as changed."""
        assert self.inotify is not None
        self.changed[folder] = self.seq
        if self.inotify.add(folder):  # watched first, listed after: nothing falls in between
            self.watched.add(folder)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            self.changed[entry.path] = self.seq
            if entry.is_dir(follow_symlinks=False):
                self._watch_new(entry.path)

    def sync(self) -> None:
        """Read every event of a change made before now (see the module docstring)."""
        assert self.inotify is not None
        cookie = f"{self.cookies}/{COOKIE}.{time.time_ns()}"
        open(cookie, "w").close()
        os.unlink(cookie)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            select.select([self.inotify.fd], [], [], 0.05)
            if not self.drain():
                return
            if self.changed.pop(cookie, None) is not None:
                return
        self.rewatch()  # the cookie never came: vouch for nothing

    def answer(self, question: str) -> dict:
        if question.startswith("status"):
            import resource

            return {"id": self.id, "seq": self.seq, "folders": len(self.watched), "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "cpu_s": sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))),
                    **self.serving}
        if self._stat_index() != self._index_stat and self.wanted() - self.watched:
            self.rewatch()  # the index names folders not watched yet
        self._index_stat = self._stat_index()
        self.sync()
        parts = question.split()
        if len(parts) == 3 and parts[0] == "since" and parts[1] == self.id:
            since = int(parts[2])
            changed = sorted(p for p, seq in self.changed.items() if seq > since and not p.startswith(self.cookies))
            return {"id": self.id, "seq": self.seq, "changed": changed}
        return {"id": self.id, "seq": self.seq, "changed": None}

    def serve(self, path: str, run: RunHandler | None = None) -> None:
        """Answer builds' questions; with ``run``, hand it the requests for whole builds."""
        global _serving
        _serving = self
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(8)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                readable, _, _ = select.select([server, self.inotify.fd], [], [])  # type: ignore[union-attr]
                if self.inotify is not None and self.inotify.fd in readable:
                    try:
                        self.drain()
                    except OSError:  # vouch for nothing rather than stop
                        self.rewatch()
                if server in readable:
                    connection, _ = server.accept()
                    with connection:
                        try:
                            data, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
                        except OSError:
                            continue
                        if data.startswith(RUN):
                            self._run(run, connection, data, fds)
                            continue
                        for fd in fds:
                            os.close(fd)
                        question = data.decode(errors="replace")
                        if question == "stop":
                            connection.sendall(b"{}")
                            return
                        try:
                            answer = self.answer(question)
                        except OSError:  # vouch for nothing rather than stop
                            self.rewatch()
                            answer = {"id": self.id, "seq": self.seq, "changed": None}
                        connection.sendall(json.dumps(answer).encode())
        finally:
            _serving = None
            server.close()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


    def _run(self, run: RunHandler | None, connection: socket.socket, data: bytes, fds: list[int]) -> None:
        if run is None:
            for fd in fds:
                os.close(fd)
            connection.sendall(b'{"serve": false, "why": "this watcher serves no builds"}\n')
            return
        try:
            run(connection, data, fds)
        except Exception:  # noqa: BLE001 - the client is told by the connection closing; watching goes on
            pass
        self.drain()  # what the build changed, before the next question

    def ask_in_process(self, question: str) -> dict:
        try:
            return self.answer(question)
        except OSError:
            self.rewatch()
            return {"id": self.id, "seq": self.seq, "changed": None}


def ask(buildfile: Path, watch_id: str | None, seq: int | None, timeout: float = 2.0) -> dict | None:
    """The watcher's answer for this Buildfile, or None when none is running. A build the
    watcher serves itself asks it in-process (its socket waits while it builds)."""
    question = f"since {watch_id or '-'} {seq if seq is not None else -1}"
    if _serving is not None and _serving.buildfile == Path(buildfile).absolute():
        return _serving.ask_in_process(question)
    return _request(buildfile, question, timeout)


def _request(buildfile: Path, question: str, timeout: float = 2.0) -> dict | None:
    path = socket_path(buildfile)
    if not os.path.exists(path):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(path)
            client.sendall(question.encode())
            data = b""
            while chunk := client.recv(1 << 16):
                data += chunk
        return json.loads(data)
    except (OSError, ValueError):
        return None


# Watching a 60,000-stage library's 30,000 output folders took over 10 s on two loaded cores: the
# wait is for a watcher still starting, which says so by being alive.
START_TIMEOUT_S = 300.0


def start(buildfile: Path, module: str = "buildsys.build.watcher") -> str:
    """Start a watcher in its own session, detached; returns what ``status`` says of it.
    ``module``: the one to run (``python -P -m MODULE BUILDFILE``), this one or a watcher that
    also serves builds (cli/server.py)."""
    import subprocess

    buildfile = Path(buildfile).absolute()
    if _request(buildfile, "status") is not None:
        return f"already watching: {status(buildfile)}"
    index_file(buildfile).parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-P", "-m", module, str(buildfile)], start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _request(buildfile, "status") is not None:
            return f"watching: {status(buildfile)}"
        if child.poll() is not None:
            raise OSError(f"the watcher of {buildfile} exited with status {child.returncode} before it was ready")
        time.sleep(0.05)
    child.kill()  # never left running after the caller was told it did not start
    child.wait()
    raise OSError(f"the watcher of {buildfile} was not ready after {START_TIMEOUT_S:g} s: stopped")


def stop(buildfile: Path) -> str:
    buildfile = Path(buildfile).absolute()
    return "stopped" if _request(buildfile, "stop") is not None else "no watcher was running"


def status(buildfile: Path) -> str:
    answer = _request(Path(buildfile).absolute(), "status")
    if answer is None:
        return "no watcher"
    serving = ""
    if "served" in answer:
        refused = answer.get("refused")
        serving = f"; builds served: {answer['served']}" + (f", last refused: {refused}" if refused else "")
    return f"{answer['folders']} folders, {answer['seq']} events, peak RSS {answer['rss_mib']:.1f} MiB (id {answer['id']}){serving}"


def main() -> None:
    buildfile = Path(sys.argv[1])
    Watcher(buildfile).serve(socket_path(buildfile))


if __name__ == "__main__":
    main()
