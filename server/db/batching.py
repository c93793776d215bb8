"""The loop behind every batched statement: what queued meanwhile goes in the next batch.

The chat store's group commit (`server.chat.store`) and the batched user reads
(`server.db.user_reads`) both run one task while work is queued: it takes all that
waits, runs it as one statement, and goes on; an idle server runs each item at
once, a busy one hundreds together. One connection serves consecutive batches (no
pool round trip per batch); a failed batch fails its own callers only and gives the
connection back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg

B = TypeVar("B")


class BatchLoop(Generic[B]):
    """Runs `run(conn, batch)` for each `take()` (None: nothing queued) while work waits.

    `fail(batch, exc)` settles a batch whose statement failed. Call `kick()` after
    queueing work; `close()` waits for the batches in hand. `wait_s`: how long the
    first item of a quiet spell waits for company before its batch runs (0: not at all).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        take: Callable[[], B | None],
        run: Callable[[asyncpg.Connection, B], Awaitable[None]],
        fail: Callable[[B, Exception], None],
        wait_s: float = 0.0,
    ) -> None:
        self.pool = pool
        self.wait_s = wait_s
        self._take = take
        self._run = run
        self._fail = fail
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _loop(self) -> None:
        if self.wait_s:
            await asyncio.sleep(self.wait_s)
        # Work queued while the connection is given back is taken by the outer loop.
        while (batch := self._take()) is not None:
            conn: asyncpg.Connection | None = None
            try:
                while batch is not None:
                    try:
                        if conn is None:
                            conn = await self.pool.acquire()
                        await self._run(conn, batch)
                    except Exception as exc:
                        self._fail(batch, exc)
                        await self._release(conn)
                        conn = None
                    self.batches += 1
                    batch = self._take()
            finally:
                await self._release(conn)

    async def _release(self, conn: asyncpg.Connection | None) -> None:
        if conn is not None:
            with contextlib.suppress(Exception):
                await self.pool.release(conn)
