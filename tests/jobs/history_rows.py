"""Helpers of the purge tests: history rows of a given age, a connection of their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg

DAY = timedelta(days=1)


OLD = timedelta(days=31)


NEW = timedelta(hours=1)


def connector(url: str) -> Callable[[], Any]:
    """A `connect` for PurgeJob that opens a plain connection of its own."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(url)
        try:
            yield conn
        finally:
            await conn.close()

    return connect


async def add_row(
    db: asyncpg.Connection, user_id: int, age: timedelta, reply_to: int | None = None
) -> int:
    """A history row whose timestamp the database sets to now() - age."""
    return await db.fetchval(
        'INSERT INTO chat_history (user_id, message, is_user_message, "timestamp", reply_to)'
        " VALUES ($1, 'hello', $3::bigint IS NULL, now() - $2::interval, $3) RETURNING id",
        user_id,
        age,
        reply_to,
    )


async def row_ids(db: asyncpg.Connection, user_id: int) -> set[int]:
    rows = await db.fetch("SELECT id FROM chat_history WHERE user_id = $1", user_id)
    return {r["id"] for r in rows}


async def wait_for(predicate: Callable[[], bool], within_s: float) -> None:
    for _ in range(int(within_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {within_s} s")
