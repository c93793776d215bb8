"""The SQL of the history purge (`server.jobs.purge`), over its one connection."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from server.db import guests

# One batch of old rows, and the replies of the messages among them even where a reply is
# younger than the cutoff (it would otherwise outlive its message). Returns (old, replies).
_DELETE_HISTORY_BATCH = """
WITH old AS (
    DELETE FROM chat_history WHERE id IN (
        SELECT id FROM chat_history WHERE "timestamp" < $1 ORDER BY "timestamp" LIMIT $2)
    RETURNING id, is_user_message
), replies AS (
    DELETE FROM chat_history
    WHERE reply_to IN (SELECT id FROM old WHERE is_user_message) AND "timestamp" >= $1
    RETURNING 1
)
SELECT (SELECT count(*) FROM old), (SELECT count(*) FROM replies)
"""


def _count(status: str) -> int:
    """The row count of a command status such as 'DELETE 5000'."""
    return int(status.rsplit(" ", 1)[-1])


async def try_lock(conn: asyncpg.Connection, key: int) -> bool:
    """The session-level advisory lock `key`, if no other session holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def unlock(conn: asyncpg.Connection, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def cutoff(conn: asyncpg.Connection, retention_days: int) -> datetime:
    """Now minus `retention_days` × 24 hours (exact age, whatever the session's time zone)."""
    return await conn.fetchval("SELECT now() - make_interval(hours => $1 * 24)", retention_days)


async def delete_history_batch(
    conn: asyncpg.Connection, before: datetime, batch_size: int
) -> tuple[int, int]:
    """Up to `batch_size` history rows older than `before`, oldest first, and the replies
    of the messages among them: (old rows deleted, younger replies deleted)."""
    deleted, replies = await conn.fetchrow(_DELETE_HISTORY_BATCH, before, batch_size)
    return deleted, replies


async def delete_other(conn: asyncpg.Connection, before: datetime, keep_hours: int) -> int:
    """Used or expired verification links, rate-limit windows older than `keep_hours`,
    purge runs and audit entries older than `before`, guests idle since `before` (with
    their conversations, messages and feedback), feedback on purged replies: the rows
    deleted (a guest counts one)."""
    n = _count(
        await conn.execute(
            "DELETE FROM email_verifications WHERE used_at IS NOT NULL OR expires_at < now()"
        )
    )
    n += _count(
        await conn.execute(
            "DELETE FROM rate_limits WHERE window_start < now() - make_interval(hours => $1)",
            keep_hours,
        )
    )
    n += _count(await conn.execute("DELETE FROM purge_runs WHERE finished_at < $1", before))
    # Guests with no message since the cutoff go, with everything of theirs.
    n += await guests.delete_idle_guests(conn, before)
    n += _count(await conn.execute("DELETE FROM audit_log WHERE at < $1", before))
    # Feedback on replies that are gone (purged above, or by a partition dropped).
    n += _count(
        await conn.execute(
            "DELETE FROM feedback f"
            " WHERE NOT EXISTS (SELECT 1 FROM chat_history h WHERE h.id = f.reply_id)"
        )
    )
    return n


async def record_run(
    conn: asyncpg.Connection,
    started_at: datetime,
    finished_at: datetime,
    deleted: int,
    deleted_other: int,
) -> None:
    await conn.execute(
        "INSERT INTO purge_runs (started_at, finished_at, deleted, deleted_other)"
        " VALUES ($1, $2, $3, $4)",
        started_at,
        finished_at,
        deleted,
        deleted_other,
    )


async def newest_run(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """The newest successful run recorded by any instance."""
    return await conn.fetchrow(
        "SELECT started_at, finished_at, deleted, deleted_other FROM purge_runs"
        " ORDER BY finished_at DESC LIMIT 1"
    )
