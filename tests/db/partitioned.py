"""Helpers of the tests of a partitioned chat_history: a database of its own, users, and
messages and replies stored as the group commit stores them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import asyncpg

from server.db import migrations, partitions, scratch
from tests.db.databases import database_before

FIRST_OF_PARTITIONS = 15


@asynccontextmanager
async def database(
    admin_url: str, before: int | None = None
) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A scratch database, migrated (only up to migration `before`, when given), and a
    connection to it."""
    url = await database_before(admin_url, before or 0, "chat_part")
    conn = await asyncpg.connect(url)
    try:
        if before is None:
            await migrations.migrate(conn)
        yield url, conn
    finally:
        await conn.close()
        await scratch.drop_database(admin_url, url)


async def add_user(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "INSERT INTO users (email, hashed_password) VALUES (gen_random_uuid() || '@e.com', 'x')"
        " RETURNING id"
    )


async def add_message(
    conn: asyncpg.Connection, user_id: int, at: datetime, client_id: str | None = None
) -> int:
    """A user message stored as the group commit stores it: its key, then its row."""
    message_id = await conn.fetchval("SELECT nextval('chat_history_id_seq')")
    await conn.execute(
        'INSERT INTO chat_keys (message_id, user_id, client_id, "timestamp")'
        " VALUES ($1, $2, $3, $4)",
        message_id,
        user_id,
        client_id,
        at,
    )
    await conn.execute(
        "INSERT INTO chat_history (id, user_id, message, is_user_message, client_id,"
        ' "timestamp") VALUES ($1, $2, $3, true, $4, $5)',
        message_id,
        user_id,
        f"question {message_id}",
        client_id,
        at,
    )
    return message_id


async def add_reply(conn: asyncpg.Connection, user_id: int, message_id: int, at: datetime) -> int:
    reply_id = await conn.fetchval(
        "UPDATE chat_keys SET reply_id = nextval('chat_history_id_seq')"
        " WHERE message_id = $1 AND reply_id IS NULL RETURNING reply_id",
        message_id,
    )
    await conn.execute(
        "INSERT INTO chat_history (id, user_id, message, is_user_message, reply_to,"
        ' "timestamp") VALUES ($1, $2, $3, false, $4, $5)',
        reply_id,
        user_id,
        f"reply to {message_id}",
        message_id,
        at,
    )
    return reply_id


async def where(conn: asyncpg.Connection, row_id: int) -> str | None:
    """The partition holding row `row_id`."""
    return await conn.fetchval(
        "SELECT tableoid::regclass::text FROM chat_history WHERE id = $1", row_id
    )


async def ids(conn: asyncpg.Connection, user_id: int) -> set[int]:
    rows = await conn.fetch("SELECT id FROM chat_history WHERE user_id = $1", user_id)
    return {r["id"] for r in rows}


async def retention_bounds(
    conn: asyncpg.Connection, days: int = 30
) -> tuple[datetime, datetime, datetime]:
    """The database's now, the purge's cutoff `days` before it, and the midnight that
    starts the cutoff's partition."""
    now = await conn.fetchval("SELECT now()")
    cutoff = now - timedelta(days=days)
    return now, cutoff, partitions.day_start(cutoff)
