"""Bounded retries with exponential backoff, shared by the backends that talk to a network.

A transient failure (connection refused, timeout, 5xx) is retried a few times; the whole call
gives up once a time budget is spent, so a dead or hung remote costs a build a bounded number
of seconds (with the defaults: 3 tries, ~10 s worst case) before the cache disables it.
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
