"""The SQL of conversations: the list, create, rename, delete, and the migration's backfill.

A conversation's activity is `updated_at`, moved by the triggers of migration 0008
whenever rows are stored in it (whoever stores them); a rename leaves it alone.
Lists are ordered by (updated_at, id), newest first; `before` pages by that order.
"""

from __future__ import annotations

import logging

import asyncpg

from server.db.queries import Executor
from server.http import BIGINT_MAX

log = logging.getLogger(__name__)

BACKFILL_BATCH = 5000
BACKFILL_LOCK = 0x636F6E76  # "conv"
INDEX = "chat_history_conversation"

# `messages` counts questions and replies; the (conversation_id, id) index serves it.
_ITEM = (
    "c.id, c.title, c.created_at, c.updated_at,"
    " (SELECT count(*) FROM chat_history h WHERE h.conversation_id = c.id) AS messages"
)


async def list_conversations(
    db: Executor, user_id: int, limit: int, before: int | None
) -> list[asyncpg.Record] | None:
    """The user's conversations, most recently active first, after conversation `before`
    in that order; None when `before` is not one of the user's."""
    if before is None:
        return await db.fetch(
            f"SELECT {_ITEM} FROM conversations c WHERE c.user_id = $1"
            " ORDER BY c.updated_at DESC, c.id DESC LIMIT $2",
            user_id,
            limit,
        )
    anchor = await db.fetchrow(
        "SELECT updated_at, id FROM conversations WHERE id = $1 AND user_id = $2", before, user_id
    )
    if anchor is None:
        return None
    return await db.fetch(
        f"SELECT {_ITEM} FROM conversations c WHERE c.user_id = $1"
        " AND (c.updated_at, c.id) < ($3, $4)"
        " ORDER BY c.updated_at DESC, c.id DESC LIMIT $2",
        user_id,
        limit,
        anchor["updated_at"],
        anchor["id"],
    )


async def create(db: Executor, user_id: int, title: str | None) -> asyncpg.Record:
    return await db.fetchrow(
        "INSERT INTO conversations (user_id, title) VALUES ($1, $2)"
        " RETURNING id, title, created_at, updated_at, 0::bigint AS messages",
        user_id,
        title,
    )


async def get(db: Executor, user_id: int, conversation_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {_ITEM} FROM conversations c WHERE c.id = $1 AND c.user_id = $2",
        conversation_id,
        user_id,
    )


async def rename(
    db: Executor, user_id: int, conversation_id: int, title: str
) -> asyncpg.Record | None:
    """The renamed conversation (its activity unchanged), or None if it is not the user's."""
    return await db.fetchrow(
        f"UPDATE conversations c SET title = $3 WHERE c.id = $1 AND c.user_id = $2"
        f" RETURNING {_ITEM}",
        conversation_id,
        user_id,
        title,
    )


async def delete(pool: asyncpg.Pool, user_id: int, conversation_id: int) -> int | None:
    """Delete the conversation, its messages and their feedback; how many messages, or
    None if it is not the user's."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "DELETE FROM conversations WHERE id = $1 AND user_id = $2 RETURNING id",
            conversation_id,
            user_id,
        )
        if found is None:
            return None
        return await conn.fetchval(
            "WITH gone AS (DELETE FROM chat_history"
            "  WHERE conversation_id = $1 AND user_id = $2 RETURNING id, is_user_message),"
            " gone_feedback AS (DELETE FROM feedback WHERE user_id = $2"
            "  AND reply_id IN (SELECT id FROM gone WHERE NOT is_user_message))"
            " SELECT count(*) FROM gone",
            conversation_id,
            user_id,
        )


async def owned(db: Executor, user_id: int, conversation_id: int) -> bool:
    if not 1 <= conversation_id <= BIGINT_MAX:
        return False  # no conversation has such an id
    return bool(
        await db.fetchval(
            "SELECT true FROM conversations WHERE id = $1 AND user_id = $2",
            conversation_id,
            user_id,
        )
    )


async def earlier_turns(
    db: Executor, conversation_id: int, before_id: int, turns: int
) -> list[asyncpg.Record]:
    """The newest `turns` rows of the conversation before row `before_id`, oldest first."""
    rows = await db.fetch(
        "SELECT message, is_user_message FROM chat_history"
        " WHERE conversation_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        conversation_id,
        before_id,
        turns,
    )
    rows.reverse()
    return rows


# -- the migration's second half ---------------------------------------------------------

# The next `batch` rows after id $1 still without a conversation go into their user's
# first one (the migration made it); each statement is its own transaction.
BACKFILL_ROWS = """
WITH b AS (
    SELECT id, user_id FROM chat_history
    WHERE conversation_id IS NULL AND id > $1 ORDER BY id LIMIT $2
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE chat_history h SET conversation_id = (
        SELECT c.id FROM conversations c WHERE c.user_id = b.user_id ORDER BY c.id LIMIT 1)
    FROM b WHERE h.id = b.id RETURNING h.id
)
SELECT count(*) AS n, max(id) AS last FROM u
"""


async def backfill(pool: asyncpg.Pool, batch: int = BACKFILL_BATCH) -> int:
    """Give the rows stored before migration 0008 their user's conversation, `batch` rows
    per transaction (chat goes on meanwhile), after building the (conversation_id, id)
    index concurrently. One instance at a time (an advisory lock; the others skip it).
    Returns the rows it updated."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", BACKFILL_LOCK):
            return 0  # another instance is at it
        try:
            return await _backfill(conn, batch)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", BACKFILL_LOCK)


async def _backfill(conn: asyncpg.Connection, batch: int) -> int:
    await build_index(conn)
    done, after = 0, 0
    while True:
        row = await conn.fetchrow(BACKFILL_ROWS, after, batch)
        if not row["n"]:
            break
        done += row["n"]
        after = row["last"]
    if done:
        log.info("backfill: %d rows of earlier history put in conversations", done)
    return done


async def build_index(conn: asyncpg.Connection) -> None:
    """CREATE INDEX CONCURRENTLY (writes go on meanwhile); an invalid one left by an
    interrupted build is dropped and built again."""
    valid = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = $1",
        INDEX,
    )
    if valid:
        return
    if valid is False:
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    await conn.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON chat_history (conversation_id, id)"
    )
