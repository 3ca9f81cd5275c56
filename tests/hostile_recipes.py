"""Recipes that try to get out of their stage (the hostile-recipe suite, test_hostile_recipes.py).

Each one tries, without catching anything, what a stage must not do; a refusal by the kernel
raises and fails the stage, which the tests expect. They live beside the tests, so a test
Buildfile puts the tests folder on ``recipe_path``.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from pathlib import Path

from buildsys.context import StageContext


def write_outside(ctx: StageContext) -> None:
    Path(ctx.param("path", "", str)).write_text("written by a recipe\n")
    (ctx.out / "done.txt").write_text("wrote outside\n")


def read_file(ctx: StageContext) -> None:
    """Copy an undeclared file into the output."""
    (ctx.out / "stolen").write_bytes(Path(ctx.param("path", "", str)).read_bytes())


def read_store(ctx: StageContext) -> None:
    """Find the store from the sandbox (``<store>/tmp/sbx-*/out``) and copy blob
    ``params.digest`` out of it."""
    digest = ctx.param("digest", "", str)
    (ctx.out / "blob").write_bytes((ctx.out.parents[2] / "cas" / digest[:2] / digest).read_bytes())


def write_store(ctx: StageContext) -> None:
    """Plant a file among the store's blobs, then overwrite the blob of the stage's own input
    through its path in the store (a recipe run as root ignores the read-only mode)."""
    cas = ctx.out.parents[2] / "cas"
    (cas / "planted").write_text("not a blob\n")
    digest = ctx.param("digest", "", str)
    os.chmod(cas / digest[:2] / digest, 0o644)
    (cas / digest[:2] / digest).write_text("overwritten\n")


def chmod_input(ctx: StageContext) -> None:
    """Make the stage's input (a store blob, hard-linked in) writable, then write through it."""
    path = ctx.input_files("src")[0]
    os.chmod(path, 0o666)
    path.write_text("overwritten\n")


def connect(ctx: StageContext) -> None:
    with socket.create_connection((ctx.param("host", "127.0.0.1", str), ctx.param("port", 0, int)), timeout=5) as sock:
        sock.sendall(b"leaked from a stage\n")
    (ctx.out / "sent.txt").write_text("connected\n")


def hard_link(ctx: StageContext) -> None:
    os.link(ctx.param("path", "", str), ctx.out / "linked")


def symlink_out(ctx: StageContext) -> None:
    os.symlink(ctx.param("path", "", str), ctx.out / "link")


def read_through_symlink(ctx: StageContext) -> None:
    """Link an outside file into the stage's own output folder, read it through the link, and
    take the link away again (so only the copy is left for the store)."""
    link = ctx.out / "link"
    os.symlink(ctx.param("path", "", str), link)
    data = link.read_bytes()
    link.unlink()
    (ctx.out / "leaked.txt").write_bytes(data)


def fork_bomb(ctx: StageContext) -> None:
    """Fork until refused or ``params.most`` children (a cap, so the suite stays safe on a
    machine without confinement), each leaving the process group (``setsid``) to escape a
    kill of the worker's group and exec'ing a sleep marked ``params.marker``; then wait for
    the budget to end it."""
    marker, made = ctx.param("marker", "3131", str), 0
    for _ in range(ctx.param("most", 200, int)):
        try:
            pid = os.fork()
        except BlockingIOError:
            break
        if pid == 0:
            os.setsid()
            os.execv("/bin/sleep", ["sleep", marker])
        made += 1
    print(f"forked {made} processes", flush=True)
    time.sleep(3600)


def signal_process(ctx: StageContext) -> None:
    """Kill the process ``params.pid`` (outside the stage), then try to trace it."""
    pid = ctx.param("pid", 0, int)
    os.kill(pid, 15)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
        code = ctypes.get_errno()
        raise OSError(code, f"ptrace: {os.strerror(code)}")
    (ctx.out / "done.txt").write_text("signalled and traced\n")


def signal_parent(ctx: StageContext) -> None:
    """Stop the process that runs the build (the worker's parent, or its parent when the
    worker runs under a waiter)."""
    parent = os.getppid()
    if parent <= 1:
        raise PermissionError("no parent process in sight")
    os.kill(parent, 19)  # SIGSTOP: the build would hang
    (ctx.out / "done.txt").write_text(f"stopped {parent}\n")


def linger(ctx: StageContext) -> None:
    """Leave a process behind, detached by a double fork (a sleep marked ``params.marker``)."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", ctx.param("marker", "3132", str)])
        os._exit(0)
    os.wait()
    (ctx.out / "result.txt").write_text("good\n")


def keep_output_open(ctx: StageContext) -> None:
    """Write the output, and leave a thread in the (reused) worker that writes through the
    still-open file after the recipe returned, once the output is in the store."""
    handle = open(ctx.out / "result.txt", "w")  # noqa: SIM115 - kept open on purpose
    handle.write("good\n")
    handle.flush()

    def later() -> None:
        time.sleep(1.0)
        handle.seek(0)
        handle.write("evil\n")
        handle.flush()

    threading.Thread(target=later, daemon=True).start()


def report_confinement(ctx: StageContext) -> None:
    """What a stage sees of its machine: host name, its pid, its /proc, network interfaces."""
    lines = [
        f"hostname={socket.gethostname()}",
        f"pid={os.getpid()}",
        f"processes={len([p for p in os.listdir('/proc') if p.isdigit()])}",
        f"shm={sorted(os.listdir('/dev/shm'))}",
    ]
    (Path("/dev/shm") / ctx.param("marker", "left-by-a-stage", str)).write_text("x")
    (ctx.out / "seen.txt").write_text("\n".join(lines) + "\n")
