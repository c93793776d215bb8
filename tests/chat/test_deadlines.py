"""The instance's one timer for every connection's deadlines."""

from __future__ import annotations

import asyncio
import time

from server.chat.deadlines import Deadlines


class Owner:
    def __init__(self, name: str, calls: list[tuple[str, float, float]]) -> None:
        self.name = name
        self.calls = calls

    def due(self, now: float) -> None:
        self.calls.append((self.name, now, time.monotonic()))


async def test_owners_are_called_in_time_order_never_before_their_time() -> None:
    deadlines, calls = Deadlines(), []
    start = time.monotonic()
    for name, after in (("c", 0.15), ("a", 0.05), ("b", 0.1)):
        deadlines.schedule(start + after, Owner(name, calls))
    await asyncio.sleep(0.3)
    assert [name for name, _, _ in calls] == ["a", "b", "c"]
    for (_, now, _), after in zip(calls, (0.05, 0.1, 0.15), strict=True):
        assert now >= start + after
    assert len(deadlines) == 0


async def test_a_cancelled_entry_is_skipped_and_frees_its_owner() -> None:
    deadlines, calls = Deadlines(), []
    entry = deadlines.schedule(time.monotonic() + 0.05, Owner("gone", calls))
    deadlines.schedule(time.monotonic() + 0.06, Owner("kept", calls))
    Deadlines.cancel(entry)
    assert entry[2] is None
    await asyncio.sleep(0.15)
    assert [name for name, _, _ in calls] == ["kept"]


async def test_an_owner_may_schedule_again_from_its_call_and_a_failure_stops_no_other() -> None:
    deadlines, calls = Deadlines(), []

    class Again(Owner):
        def due(self, now: float) -> None:
            super().due(now)
            if len(calls) < 3:
                deadlines.schedule(now + 0.02, self)

    class Broken:
        def due(self, now: float) -> None:
            raise RuntimeError("boom")

    deadlines.schedule(time.monotonic() + 0.01, Broken())
    deadlines.schedule(time.monotonic() + 0.01, Again("again", calls))
    await asyncio.sleep(0.2)
    assert [name for name, _, _ in calls] == ["again"] * 3
    deadlines.close()
