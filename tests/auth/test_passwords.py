"""PasswordHasher: bcrypt in threads of its own, at the lowest CPU priority."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from server.auth.passwords import HASHING_NICE, PasswordHasher


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _priority() -> tuple[int, int]:
    """(nice, scheduling policy) of the calling thread."""
    return _nice(), os.sched_getscheduler(0)


async def test_hashes_and_verifies_off_the_loop() -> None:
    hasher = PasswordHasher(rounds=4)
    try:
        hashed = await hasher.hash("correct horse battery")
        assert await hasher.verify("correct horse battery", hashed)
        assert not await hasher.verify("wrong horse battery", hashed)
        # An unknown account: the dummy hash is checked, and the answer is no.
        assert not await hasher.verify("not a real password", None)
        assert not await hasher.verify("whatever", "not a bcrypt hash")
    finally:
        hasher.close()


async def test_hashing_threads_run_at_the_lowest_priority() -> None:
    hasher = PasswordHasher(rounds=4, threads=2)
    loop = asyncio.get_running_loop()
    before = _priority()
    try:
        await hasher.hash("correct horse battery")
        priorities = await asyncio.gather(
            *(loop.run_in_executor(hasher._executor, _priority) for _ in range(4))
        )
        thread = await loop.run_in_executor(hasher._executor, threading.current_thread)
    finally:
        hasher.close()
    assert set(priorities) == {(HASHING_NICE, os.SCHED_IDLE)}
    assert thread.name.startswith("bcrypt")
    assert _priority() == before  # the event loop's thread keeps its priority


async def test_close_stops_the_threads() -> None:
    hasher = PasswordHasher(rounds=4)
    await hasher.hash("correct horse battery")
    hasher.close()
    with pytest.raises(RuntimeError):
        await hasher.hash("correct horse battery")
