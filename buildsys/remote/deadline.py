"""Deadlines: how long a remote transfer may take, and calls that give up when it has passed.

A transfer of ``n`` bytes must end within ``timeout_s + n / MIN_RATE`` (:class:`Deadlines`):
the answer to a request without a large body within ``timeout_s``, a large body at no less
than ``MIN_RATE``. The HTTP remote has libcurl enforce it (:mod:`buildsys.remote.curl`); the S3
remote, whose client bounds each read but not a whole request, runs its calls through a
:class:`Watchdog`.

A server that answers one byte a second resets a per-read timeout with every byte, so such a
request can last as long as the server likes. :class:`Watchdog` runs each call on a daemon
thread and lets the caller stop waiting when its deadline passes: the call is then abandoned
(it ends when its connection does; a daemon thread never holds up the process's exit), the
caller gets :class:`DeadlineMissed`, and the remote is disabled for the run by the cache.
Threads are reused: one that finished its call waits for the next (a hand-over costs ~20 us,
starting a thread ~100 us).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")

MIN_RATE = 32 << 10
"""Bytes a second below which a transfer counts as stalled (256 kbit/s: any link a build cache
is worth using over moves more)."""


@dataclass(frozen=True)
class Deadlines:
    timeout_s: float

    def for_bytes(self, nbytes: int) -> float:
        """Seconds a transfer of ``nbytes`` may take, connection and answer included."""
        return self.timeout_s + nbytes / MIN_RATE


class DeadlineMissed(Exception):
    """A call did not finish within its deadline (it may still be running)."""


class Watchdog:
    """Daemon threads that run calls; safe to use from several threads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._idle: list[queue.SimpleQueue] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on an idle thread, or a new one."""
        future: Future[T] = Future()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name=self.name, daemon=True).start()
        inbox.put((fn, future))
        return future

    def call(self, fn: Callable[[], T], seconds: float) -> T:
        """``fn()``, or DeadlineMissed once ``seconds`` have passed (``fn`` is then abandoned)."""
        return wait(self.submit(fn), seconds)

    def close(self) -> None:
        """Let the idle threads end (busy ones end after their call)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        while (job := inbox.get()) is not None:
            fn, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                    future.set_exception(exc)
            del job, fn, future
            with self._lock:
                if self._closed:
                    return
                self._idle.append(inbox)


def wait(future: Future[T], seconds: float) -> T:
    """The result of ``future``, or DeadlineMissed after ``seconds``."""
    try:
        return future.result(timeout=max(0.0, seconds))
    except FutureTimeout:
        if future.done():  # the call itself raised a TimeoutError (a socket's, say)
            raise
        raise DeadlineMissed(f"no answer within {seconds:.0f} s") from None
