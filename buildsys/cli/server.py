"""The watcher that also serves builds: ``buildsys watch start`` runs this module (``python -P
-m buildsys.cli.server BUILDFILE``), a :class:`~buildsys.build.watcher.Watcher` whose run
handler executes the thin client's commands (cli/client.py) in this process, with the engine
imported once and the watcher's answers in-process.

A request is served only when it is safe to (else the client builds itself, as without a
watcher): the peer is this process's user (``SO_PEERCRED``), its startup facts equal this
process's own, and the buildsys modules on disk are still the ones this process loaded. A served
build runs in the client's working folder, environment and umask, writing to the client's own
descriptors (dup'ed over 0, 1 and 2 for its duration), under the locks every build takes; what
the engine caches per process (functools caches, ``tempfile``'s folder) is dropped first, so
nothing a previous build saw is reused. Builds are served one at a time; a client's Ctrl-C (or
its connection closing) interrupts the served build as a terminal's Ctrl-C interrupts a local one.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import socket
import struct
import sys
import threading
from pathlib import Path
from typing import Any

from buildsys.build import watcher
from buildsys.build.index_path import socket_path
from buildsys.cli import client

WARM = (
    "buildsys.cli.main", "buildsys.build.session", "buildsys.build.scheduler", "buildsys.build.progress",
    "buildsys.build.summary", "buildsys.build.incremental", "buildsys.build.settled", "buildsys.build.materialize",
)
"""What a build imports, imported when the server starts rather than by the first build."""


def code_stamp() -> dict[str, tuple[int, int]]:
    """(mtime, size) of every module of the buildsys package on disk."""
    package = Path(client.startup_facts()["package"])
    stamp = {}
    for folder, _, names in os.walk(package):
        for name in names:
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                stamp[os.path.join(folder, name)] = (st.st_mtime_ns, st.st_size)
    return stamp


class BuildServer:
    def __init__(self, buildfile: Path) -> None:
        self.buildfile = buildfile
        for module in WARM:
            importlib.import_module(module)
        self.facts = json.loads(json.dumps(client.startup_facts()))  # as a request carries them
        self.stamp = code_stamp()
        self.running = False
        self.terminated = False
        self.served = 0
        self.refused: str | None = None
        signal.signal(signal.SIGINT, self._interrupt)

    def _terminate(self, signum: int, frame: object) -> None:
        self.terminated = True
        sys.exit(0)  # as the watcher stops on SIGTERM; a served build's client is told it died

    def _interrupt(self, signum: int, frame: object) -> None:
        if self.running:  # a cancel that comes after the build finished is dropped
            raise KeyboardInterrupt

    def refusal(self, connection: socket.socket, request: dict[str, Any]) -> str | None:
        """Why this request must be built by the client, or None."""
        _, uid, _ = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.getuid():
            return f"client of user {uid}, watcher of user {os.getuid()}"
        facts = request.get("startup")
        if not isinstance(facts, dict) or facts.get("protocol") != client.PROTOCOL:
            return "another client protocol"
        different = sorted(key for key in self.facts.keys() | facts.keys() if self.facts.get(key) != facts.get(key))
        if different:
            return f"startup facts differ: {', '.join(different)}"
        if request.get("env", {}).get(client.SERVE_ENV) == "0":
            return f"{client.SERVE_ENV}=0"
        argv = request.get("argv")
        if not isinstance(argv, list) or client.buildfile_of(argv) is None:
            return "a command the watcher does not serve"
        if Path(request["cwd"], client.buildfile_of(argv) or "").absolute() != self.buildfile.absolute():
            return "another project's Buildfile"
        if code_stamp() != self.stamp:
            return "buildsys changed on disk since the watcher started (restart it: buildsys watch stop; buildsys watch start)"
        return None

    def run(self, connection: socket.socket, data: bytes, fds: list[int]) -> None:
        """Serve one request (watcher.py's run handler)."""
        signal.signal(signal.SIGTERM, self._terminate)
        try:
            request = _request(connection, data)
            why = "a malformed request" if request is None or len(fds) != 3 else self.refusal(connection, request)
            if why is not None:
                self.refused = why
                self._note()
                _send(connection, {"serve": False, "why": why})
                return
            assert request is not None
            if not _send(connection, {"serve": True, "pid": os.getpid()}):
                return  # the client left (Ctrl-C before the build started): nothing runs
            code = self._build(request, fds, connection)
            self.served += 1
            self._note()
            _send(connection, {"exit": code})
        finally:
            for fd in fds:
                os.close(fd)
            connection.close()  # the client is done: what is left is this process's own
            gc.unfreeze()  # the CLI freezes what a command made, for a process about to exit
            gc.collect()

    def _note(self) -> None:
        if watcher._serving is not None:
            watcher._serving.serving.update(served=self.served, refused=self.refused)

    def _build(self, request: dict[str, Any], fds: list[int], connection: socket.socket) -> int:
        saved = [os.dup(fd) for fd in (0, 1, 2)]
        environment, folder, argv, path, modules = dict(os.environ), os.getcwd(), sys.argv, list(sys.path), set(sys.modules)
        _flush()
        for fd, target in zip(fds, (0, 1, 2)):
            os.dup2(fd, target)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        mask = os.umask(request["umask"])
        sys.argv = [request["prog"], *request["argv"]]
        _forget_process_caches()
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=stream.isatty())  # type: ignore[union-attr]
        cancel = _Canceller(connection)
        try:
            return self._run_cli(request)
        finally:
            cancel.stop()
            _flush()
            for fd, target in zip(saved, (0, 1, 2)):
                os.dup2(fd, target)
                os.close(fd)
            os.environ.clear()
            os.environ.update(environment)
            os.chdir(folder)
            os.umask(mask)
            sys.argv, sys.path[:] = argv, path
            _forget_project_modules(modules)

    def _run_cli(self, request: dict[str, Any]) -> int:
        from buildsys.cli.main import main

        self.running = True
        try:
            main.main(request["argv"], prog_name=request["prog"], standalone_mode=True)
            return 0
        except SystemExit as exit:
            if self.terminated:
                raise
            return _exit_code(exit.code)
        except BaseException:  # what an uncaught error does to a local build: traceback, exit 1
            import traceback

            traceback.print_exc()
            return 1
        finally:
            self.running = False


class _Canceller:
    """Interrupts the served build (SIGINT to this process's main thread) when the client asks
    to cancel or its connection closes."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.wake_read, self.wake_write = os.pipe()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.main = threading.main_thread().ident
        self.thread.start()

    def _watch(self) -> None:
        import select

        while True:
            readable, _, _ = select.select([self.connection.fileno(), self.wake_read], [], [])
            if self.wake_read in readable:
                return
            try:
                data = self.connection.recv(64)
            except OSError:
                data = b""
            if not data or data.startswith(b"cancel"):
                signal.pthread_kill(self.main, signal.SIGINT)  # type: ignore[arg-type]
                if not data:
                    return

    def stop(self) -> None:
        os.write(self.wake_write, b"x")
        self.thread.join()
        os.close(self.wake_read)
        os.close(self.wake_write)


def _forget_process_caches() -> None:
    """Drop what the engine's modules cached for this process (installed distributions, the
    GPU's driver, who the user is...) and the import system's folder listings: a served build
    sees the machine as a new process would."""
    import tempfile

    tempfile.tempdir = None
    importlib.invalidate_caches()
    for name, module in list(sys.modules.items()):
        if not name.startswith("buildsys.") or module is None:
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()


def _forget_project_modules(before: set[str]) -> None:
    """Unload what a build imported from outside the interpreter's installation and buildsys
    (a recipe package found to locate its files): the next build finds it afresh."""
    import buildsys

    kept = (sys.prefix, sys.base_prefix, os.path.dirname(os.path.abspath(buildsys.__file__)))
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None)
        if file and not os.path.abspath(file).startswith(kept):
            del sys.modules[name]


def _request(connection: socket.socket, data: bytes) -> dict[str, Any] | None:
    while not data.endswith(b"\n"):
        chunk = connection.recv(1 << 16)
        if not chunk:
            return None
        data += chunk
    try:
        request = json.loads(data[len(client.RUN):])
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def _send(connection: socket.socket, message: dict[str, Any]) -> bool:
    try:
        connection.sendall(json.dumps(message).encode() + b"\n")
        return True
    except OSError:
        return False


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # what the interpreter does with sys.exit("message")
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass


def main() -> None:
    buildfile = Path(sys.argv[1]).absolute()
    watcher.Watcher(buildfile).serve(socket_path(buildfile), run=BuildServer(buildfile).run)


if __name__ == "__main__":
    main()
