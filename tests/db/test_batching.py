"""The batch loop (`server.db.batching.BatchLoop`) on a real pool: what queues while a
batch runs goes in the next one, and with `wait_s` the first item of a quiet spell
waits for company (`GROUP_COMMIT_WAIT_MS`)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from server.db.batching import BatchLoop


class Queue:
    """Items queued for the loop, and the batches it ran (each a list of items)."""

    def __init__(self) -> None:
        self.waiting: list[str] = []
        self.ran: list[list[str]] = []

    def take(self) -> list[str] | None:
        batch, self.waiting = self.waiting, []
        return batch or None

    async def run(self, conn: asyncpg.Connection, batch: list[str]) -> None:
        assert await conn.fetchval("SELECT 1") == 1
        self.ran.append(batch)

    def fail(self, batch: list[str], exc: Exception) -> None:
        raise AssertionError(f"{batch} failed: {exc}")


@pytest.fixture
async def pool(database_url: str):
    async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as pool:
        yield pool


async def two_items_apart(pool: asyncpg.Pool, wait_s: float) -> list[list[str]]:
    """Queues "a", then "b" 20 ms later (after "a"'s batch, unless it waited)."""
    queue = Queue()
    loop = BatchLoop(pool, queue.take, queue.run, queue.fail, wait_s)
    queue.waiting.append("a")
    loop.kick()
    await asyncio.sleep(0.02)
    queue.waiting.append("b")
    loop.kick()
    await loop.close()
    return queue.ran


async def test_without_a_wait_the_first_item_runs_alone(pool):
    assert await two_items_apart(pool, 0.0) == [["a"], ["b"]]


async def test_with_a_wait_an_item_queued_meanwhile_joins_the_batch(pool):
    assert await two_items_apart(pool, 0.2) == [["a", "b"]]
