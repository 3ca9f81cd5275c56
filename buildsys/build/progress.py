"""Terminal progress for long builds: stages done/total, running stages and their iterations.

A live rich display on a terminal; on anything else (CI logs, pipes) one plain line per stage
that ran, failed or was blocked, and nothing for cache hits. ``--json`` silences both.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, TextIO

from buildsys.build.scheduler import CACHED, Reporter, StageReport

if TYPE_CHECKING:
    from rich.progress import TaskID
    from rich.text import Text


class PlainReporter(Reporter):
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def finished(self, report: StageReport) -> None:
        if report.status == CACHED:
            return
        detail = f" ({report.wall_s:.1f} s)" if report.wall_s else ""
        if report.error:
            detail += f": {report.error}"
        with self.lock:
            print(f"{report.status:>9}  {report.id}{detail}", file=self.stream, flush=True)


class RichReporter(Reporter):
    """Overall bar plus one line per running stage with the iterations its recipe reports."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=True,
        )
        self.total_task: TaskID | None = None
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()

    def begin(self, total: int) -> None:
        self.bar.start()
        self.total_task = self.bar.add_task("stages", total=total)

    def started(self, stage_id: str) -> None:
        with self.lock:
            self.tasks[stage_id] = self.bar.add_task(f"  {stage_id}", total=None)

    def progress(self, stage_id: str, done: int, total: int | None, message: str) -> None:
        with self.lock:
            task = self.tasks.get(stage_id)
            if task is not None:
                label = f"  {stage_id}" + (f" {message}" if message else "")
                self.bar.update(task, completed=done, total=total, description=label)

    def finished(self, report: StageReport) -> None:
        with self.lock:
            task = self.tasks.pop(report.id, None)
            if task is not None:
                self.bar.remove_task(task)
            if self.total_task is not None:
                self.bar.advance(self.total_task)
            if report.status != CACHED:
                self.console.print(self._line(report), highlight=False)

    @staticmethod
    def _line(report: StageReport) -> "Text":
        """A styled Text, never markup: stage ids and error messages are shown as written
        (an error naming ``[/some/path]`` is not a closing tag)."""
        from rich.text import Text

        style = {"executed": "green", "pulled": "cyan", "failed": "red", "blocked": "yellow"}.get(report.status, "")
        detail = f" ({report.wall_s:.1f} s)" if report.wall_s else ""
        if report.error:
            detail += f": {report.error}"
        return Text.assemble((f"{report.status:>9}", style), f"  {report.id}{detail}")

    def end(self) -> None:
        self.bar.stop()


def reporter_for(json_output: bool, stream: TextIO = sys.stderr):
    if json_output:
        return Reporter()
    if stream.isatty():
        return RichReporter()
    return PlainReporter(stream)
