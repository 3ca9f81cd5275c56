"""Bounded retries with exponential backoff, shared by the backends that talk to a network.

A transient failure (connection refused, a deadline missed, 5xx) is retried a few times, and
no try starts once a time budget is spent. Each try has a deadline
(:mod:`buildsys.remote.deadline`), so a whole operation is bounded (:meth:`RetryPolicy.bound`):
with the defaults (3 tries, timeout_s 5, a 10 s budget) a remote that is dead, hung or answers a
byte at a time costs a build at most 15 s before the cache disables it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")


class Transient(Exception):
    """Raised inside a retried call to say "this attempt failed, another may succeed"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0
    budget_s: float = 10.0
    """No new attempt starts once this many seconds have passed since the first one."""

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * (2**attempt))

    def bound(self, attempt_s: float) -> float:
        """The longest an operation under this policy takes when each try takes at most
        ``attempt_s``: every try and the pauses between them, or the budget and one last try."""
        every_try = self.attempts * attempt_s + sum(self.delay(i) for i in range(self.attempts - 1))
        return min(every_try, self.budget_s + attempt_s)


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, on_give_up: Callable[[str, int], Exception]) -> T:
    """Run ``fn``; retry it while it raises :class:`Transient`, within the policy's bounds.
    When the tries or the budget run out, raise ``on_give_up(last reason, attempts made)``."""
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except Transient as exc:
            attempt += 1
            pause = policy.delay(attempt - 1)
            if attempt >= policy.attempts or time.monotonic() - start + pause >= policy.budget_s:
                raise on_give_up(exc.reason, attempt) from None
            time.sleep(pause)
