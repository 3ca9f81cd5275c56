"""The live progress display, as a user at a terminal sees it: the real CLI on a pseudo-terminal,
so the rich reporter draws (not the plain one used for pipes)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys

from conftest import Project

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _run_on_terminal(project: Project, *args: str, timeout: float = 120) -> tuple[int, str]:
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "buildsys", *args, "-f", str(project.buildfile)],
        cwd=project.root, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True,
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError("the build drew nothing for too long")
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=timeout), ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def test_a_terminal_build_draws_progress_and_prints_errors_verbatim(project: Project) -> None:
    project.write("steps.py", '''
        import time

        from buildsys.context import RecipeError, StageContext

        def count(ctx: StageContext) -> None:
            for i in range(5):
                ctx.progress(i + 1, 5, "steps")
                time.sleep(0.1)
            (ctx.out / "done.txt").write_text("5\\n")

        def refuse(ctx: StageContext) -> None:
            raise RecipeError("cannot read [/some/path] (bold [red]text[/red] is not markup)")
    ''')
    project.buildfile_text('''
        [targets.ok.stages.count]
        recipe = "steps:count"

        [targets.bad.stages.refuse]
        recipe = "steps:refuse"
    ''')
    code, screen = _run_on_terminal(project, "build", "-k")
    assert code == 2, screen  # a recipe rejecting its input is bad input
    assert "MarkupError" not in screen and "Traceback" not in screen, screen
    assert re.search(r"executed\s+ok/count", screen), screen
    assert re.search(r"failed\s+bad/refuse", screen), screen
    assert "[/some/path]" in screen and "[red]text[/red]" in screen, "error text must reach the terminal verbatim"
