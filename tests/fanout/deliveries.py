"""Helpers of the fan-out tests: what a subscription received, and waiting for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from server.fanout.backend import Delivery, Received


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
    return value


def events_from(got: list[Delivery], origin: str) -> list[Any]:
    return [d.event for d in got if isinstance(d, Received) and d.origin == origin]


async def eventually_async(fetch, ok, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not ok(value := await fetch()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {value}"
        await asyncio.sleep(0.05)
    return value
