"""One timer for the deadlines of every connection of this instance.

Each authenticated socket has a next moment when something is due: its ping (every
25 s), the end of its peer's 60 s of grace, its token's expiry warning or its expiry.
Two timer handles a socket (uvloop's `TimerHandle`, its libuv timer, the bound method
and arguments) held about 1.1 KB of an idle connection's 20 KB (tracemalloc, issue 14);
an entry of this heap holds about 140 bytes, and one `call_later` is armed at the
earliest entry. The standard library's recipe for a heap with cancelling: an entry is
a list `[when, seq, owner]` whose owner becomes None when cancelled, and is dropped
when its time comes. `when` is `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from typing import Any, Protocol

log = logging.getLogger(__name__)

EARLY_S = 0.001  # a timer may fire this early (the loop's clock has millisecond steps)


class Due(Protocol):
    def due(self, now: float) -> None:
        """Called at (or just after) the time it was scheduled for; `now` is never earlier."""


Entry = list[Any]  # [when, seq, owner or None]


class Deadlines:
    """A heap of (when, owner) with one loop timer armed at its head."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._firing = False

    def schedule(self, when: float, owner: Due) -> Entry:
        """Call `owner.due(now)` at `when`; the entry returned cancels it."""
        entry = [when, next(self._seq), owner]
        heapq.heappush(self._heap, entry)
        if when < self._armed_at and not self._firing:
            self._arm(when)
        return entry

    @staticmethod
    def cancel(entry: Entry) -> None:
        entry[2] = None  # dropped when its time comes; the owner is freed now

    def __len__(self) -> int:
        return len(self._heap)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        delay = max(0.0, when - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer, self._armed_at = None, math.inf
        heap, now = self._heap, time.monotonic()
        self._firing = True
        try:
            while heap and heap[0][0] <= now + EARLY_S:
                when, _, owner = heapq.heappop(heap)
                if owner is None:
                    continue
                try:
                    owner.due(max(now, when))
                except Exception:  # one connection's failure stops no other's deadline
                    log.exception("a connection's deadline failed")
        finally:
            self._firing = False
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_at = None, math.inf
        self._heap.clear()
