"""The SQL the server runs, as plain functions over a connection or pool.

Two concerns have modules of their own: the chat store's group commit
(`group_commit`) and the history purge (`purge`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

Executor = asyncpg.Pool | asyncpg.Connection

USER_COLUMNS = (
    "id, email, email_key, is_active, is_verified, created_at, token_generation, is_guest"
)

HISTORY_COLUMNS = (
    'h.id, h.message, h.is_user_message, h."timestamp", h.client_id, h.reply_to,'
    " h.finish_reason, h.sources, f.rating AS feedback, h.conversation_id"
)


async def ping(db: Executor) -> None:
    """A round trip: raises when the database does not answer."""
    await db.fetchval("SELECT 1")


# -- users -----------------------------------------------------------------------------


async def create_user(
    db: Executor, email: str, email_key: str, hashed_password: str
) -> asyncpg.Record | None:
    """The new user, or None when an account has this email key (`server.auth.emails`)."""
    return await db.fetchrow(
        f"INSERT INTO users (email, email_key, hashed_password) VALUES ($1, $2, $3) "
        f"ON CONFLICT (email_key) DO NOTHING RETURNING {USER_COLUMNS}",
        email,
        email_key,
        hashed_password,
    )


async def user_by_email(db: Executor, email_key: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {USER_COLUMNS}, hashed_password FROM users WHERE email_key = $1", email_key
    )


USERS_BY_IDS = f"SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1::bigint[])"


async def users_by_ids(db: Executor, user_ids: list[int]) -> list[asyncpg.Record]:
    """The users with these ids (those that exist), in no particular order."""
    return await db.fetch(USERS_BY_IDS, user_ids)


async def add_verification(db: Executor, jti: str, user_id: int, expires_at: datetime) -> None:
    await db.execute(
        "INSERT INTO email_verifications (jti, user_id, expires_at) VALUES ($1, $2, $3)",
        jti,
        user_id,
        expires_at,
    )


async def use_verification(
    db: Executor, jti: str, user_id: int, hashed_password: str | None
) -> asyncpg.Record | None:
    """Use the link: the user, now verified, with every earlier token revoked and the
    password replaced by `hashed_password` (the opener's choice; None: no password);
    None if the link is unknown, used or expired."""
    return await db.fetchrow(
        "WITH used AS ("
        "  UPDATE email_verifications SET used_at = now()"
        "  WHERE jti = $1 AND user_id = $2 AND used_at IS NULL AND expires_at > now()"
        "  RETURNING user_id)"
        " UPDATE users SET is_verified = true, hashed_password = $3,"
        "  token_generation = token_generation + 1"
        f" WHERE id IN (SELECT user_id FROM used) RETURNING {USER_COLUMNS}",
        jti,
        user_id,
        hashed_password,
    )


async def set_password(db: Executor, user_id: int, hashed_password: str) -> asyncpg.Record:
    """A new password; every token issued before is revoked. The user, updated."""
    return await db.fetchrow(
        "UPDATE users SET hashed_password = $2, token_generation = token_generation + 1"
        f" WHERE id = $1 RETURNING {USER_COLUMNS}",
        user_id,
        hashed_password,
    )


async def password_hash(db: Executor, user_id: int) -> str | None:
    return await db.fetchval("SELECT hashed_password FROM users WHERE id = $1", user_id)


# -- rate limits -----------------------------------------------------------------------


async def hits_in_window(db: Executor, key: str, window_s: int) -> tuple[int, float]:
    """(hits so far, seconds until the window ends) for `key`'s current fixed window."""
    row = await db.fetchrow(
        "SELECT hits, extract(epoch FROM window_start + make_interval(secs => $2) - now())"
        " AS left_s FROM rate_limits"
        " WHERE key = $1 AND window_start > now() - make_interval(secs => $2)"
        " ORDER BY window_start DESC LIMIT 1",
        key,
        float(window_s),
    )
    return (row["hits"], float(row["left_s"])) if row else (0, 0.0)


async def add_hit(db: Executor, key: str, window_s: int) -> None:
    await db.execute(
        "INSERT INTO rate_limits (key, window_start, hits)"
        " VALUES ($1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), 1)"
        " ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1",
        key,
        window_s,
    )


async def count_hit(db: Executor, key: str, window_s: int) -> tuple[int, float]:
    """Add one hit to `key`'s current window, atomically: (hits now, seconds left)."""
    row = await db.fetchrow(
        "INSERT INTO rate_limits (key, window_start, hits)"
        " VALUES ($1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), 1)"
        " ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1"
        " RETURNING hits,"
        "  extract(epoch FROM window_start + make_interval(secs => $2) - now()) AS left_s",
        key,
        window_s,
    )
    return row["hits"], float(row["left_s"])


async def clear_hits(db: Executor, key: str) -> None:
    await db.execute("DELETE FROM rate_limits WHERE key = $1", key)


# -- chat history ----------------------------------------------------------------------


async def history(
    db: Executor, user_id: int, limit: int, before: int | None, conversation_id: int | None = None
) -> list[asyncpg.Record]:
    """The newest `limit` rows (older than `before`; of one conversation, when given),
    oldest first."""
    rows = await db.fetch(
        f"SELECT {HISTORY_COLUMNS} FROM chat_history h"
        " LEFT JOIN feedback f ON f.reply_id = h.id"
        " WHERE h.user_id = $1 AND ($3::bigint IS NULL OR h.id < $3)"
        " AND ($4::bigint IS NULL OR h.conversation_id = $4)"
        " ORDER BY h.id DESC LIMIT $2",
        user_id,
        limit,
        before,
        conversation_id,
    )
    rows.reverse()
    return rows


async def delete_history(db: Executor, user_id: int) -> int:
    """Delete a user's whole history, its feedback and conversations with it; how many
    messages went."""
    return await db.fetchval(
        "WITH gone_feedback AS (DELETE FROM feedback WHERE user_id = $1),"
        " gone_conversations AS (DELETE FROM conversations WHERE user_id = $1),"
        " gone AS (DELETE FROM chat_history WHERE user_id = $1 RETURNING 1)"
        " SELECT count(*) FROM gone",
        user_id,
    )


# -- feedback on replies ---------------------------------------------------------------


async def set_feedback(
    db: Executor, user_id: int, reply_id: int, rating: str, comment: str | None
) -> asyncpg.Record | None:
    """Rate one of the user's replies (again: replaced); None if it is not theirs."""
    return await db.fetchrow(
        "INSERT INTO feedback (reply_id, user_id, rating, comment)"
        " SELECT h.id, h.user_id, $3, $4 FROM chat_history h"
        " WHERE h.id = $2 AND h.user_id = $1 AND NOT h.is_user_message"
        " ON CONFLICT (reply_id) DO UPDATE"
        " SET rating = excluded.rating, comment = excluded.comment, updated_at = now()"
        " RETURNING reply_id, rating, comment",
        user_id,
        reply_id,
        rating,
        comment,
    )


async def delete_feedback(db: Executor, user_id: int, reply_id: int) -> bool:
    """Take back the user's rating of one of their replies; False if the reply is not
    theirs (one statement: the check and the delete)."""
    return await db.fetchval(
        "WITH reply AS (SELECT id FROM chat_history"
        "   WHERE id = $2 AND user_id = $1 AND NOT is_user_message),"
        " gone AS (DELETE FROM feedback WHERE reply_id IN (SELECT id FROM reply))"
        " SELECT EXISTS (SELECT 1 FROM reply)",
        user_id,
        reply_id,
    )


async def message_text(db: Executor, message_id: int) -> str | None:
    return await db.fetchval("SELECT message FROM chat_history WHERE id = $1", message_id)


def history_item(row: asyncpg.Record) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": row["id"],
        "message": row["message"],
        "is_user_message": row["is_user_message"],
        "timestamp": row["timestamp"],
        "conversation_id": row["conversation_id"],
    }
    if row["is_user_message"]:
        item["client_id"] = row["client_id"]
    else:
        item["reply_to"] = row["reply_to"]
        item["finish_reason"] = row["finish_reason"]
        item["sources"] = row["sources"] or []
        item["feedback"] = row["feedback"]
    return item


# -- notifications ---------------------------------------------------------------------


async def notify(db: Executor, channel: str, payload: str) -> None:
    await db.execute("SELECT pg_notify($1, $2)", channel, payload)


async def notify_many(db: Executor, channel: str, payloads: list[str]) -> None:
    """Several notifications in one round trip, delivered in order."""
    await db.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", channel, payloads)


async def database_name(db: Executor) -> str:
    return await db.fetchval("SELECT current_database()")


async def listeners_named(db: Executor, prefix: str) -> list[str]:
    """What follows `prefix` in the application_name of this database's sessions that have it."""
    rows = await db.fetch(
        "SELECT substr(application_name, $1) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE $2",
        len(prefix) + 1,
        prefix + "%",
    )
    return [r[0] for r in rows]


# -- chat messages and replies (the group-commit writes are in server/chat/store.py) ---------


async def message_known(db: Executor, user_id: int, client_id: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT true FROM chat_history WHERE user_id = $1 AND client_id = $2",
            user_id,
            client_id,
        )
    )


async def message_by_client_id(db: Executor, user_id: int, client_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        'SELECT id, message, "timestamp", conversation_id FROM chat_history'
        " WHERE user_id = $1 AND client_id = $2",
        user_id,
        client_id,
    )


async def stored_reply(db: Executor, user_id: int, client_id: str) -> asyncpg.Record | None:
    """The user message `client_id` and its reply (the reply's columns null when it has
    none yet): message_id, question, reply_id, message, finish_reason, sources,
    token_lengths. None when there is no such message."""
    return await db.fetchrow(
        "SELECT m.id AS message_id, m.message AS question, r.id AS reply_id, r.message,"
        " r.finish_reason, r.sources, r.token_lengths"
        " FROM chat_history m LEFT JOIN chat_history r ON r.reply_to = m.id"
        " WHERE m.user_id = $1 AND m.client_id = $2",
        user_id,
        client_id,
    )
