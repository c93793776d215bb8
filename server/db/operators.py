"""The SQL behind the operators' endpoints (`server.operators`): figures, lists, the audit log."""

from __future__ import annotations

from typing import Any

import asyncpg

Executor = asyncpg.Pool | asyncpg.Connection

# A reply "with no source" was stored with an empty sources list (or none at all).
_NO_SOURCE = "(r.sources IS NULL OR r.sources = '[]'::jsonb)"


async def figures_24h(db: Executor) -> asyncpg.Record:
    """users (accounts), guests, and the messages, unanswered questions and feedback up
    and down of the last 24 hours."""
    return await db.fetchrow(
        "SELECT"
        " (SELECT count(*) FROM users WHERE NOT is_guest) AS users,"
        " (SELECT count(*) FROM users WHERE is_guest) AS guests,"
        " (SELECT count(*) FROM chat_history"
        "   WHERE is_user_message AND \"timestamp\" > now() - interval '24 hours') AS messages,"
        " (SELECT count(*) FROM chat_history r"
        "   WHERE NOT r.is_user_message AND r.\"timestamp\" > now() - interval '24 hours'"
        f"   AND {_NO_SOURCE}) AS unanswered,"
        " (SELECT count(*) FROM feedback"
        "   WHERE rating = 'up' AND updated_at > now() - interval '24 hours') AS up,"
        " (SELECT count(*) FROM feedback"
        "   WHERE rating = 'down' AND updated_at > now() - interval '24 hours') AS down"
    )


async def unanswered(db: Executor, days: int, limit: int) -> list[asyncpg.Record]:
    """Questions whose reply had no source, grouped by text (case and spacing ignored);
    `conversation_id`: the newest asking's conversation."""
    return await db.fetch(
        "SELECT (array_agg(q.message ORDER BY q.id DESC))[1] AS question,"
        " (array_agg(q.conversation_id ORDER BY q.id DESC))[1] AS conversation_id,"
        ' count(*) AS count, max(q."timestamp") AS last_asked'
        " FROM chat_history r JOIN chat_history q ON q.id = r.reply_to"
        ' WHERE NOT r.is_user_message AND r."timestamp" > now() - make_interval(days => $1)'
        f" AND {_NO_SOURCE}"
        " GROUP BY lower(regexp_replace(btrim(q.message), '\\s+', ' ', 'g'))"
        " ORDER BY count DESC, last_asked DESC LIMIT $2",
        days,
        limit,
    )


async def feedback(
    db: Executor, rating: str | None, limit: int, before: int | None
) -> list[asyncpg.Record]:
    """Ratings, newest first, with question, reply and user; `before`: a reply id to page
    after (the ratings older than that one's)."""
    return await db.fetch(
        "SELECT f.reply_id, f.rating, f.comment, f.updated_at AS at,"
        " q.message AS question, r.message AS reply, r.sources,"
        " u.id AS user_id, u.email, u.is_guest"
        " FROM feedback f"
        " JOIN chat_history r ON r.id = f.reply_id"
        " LEFT JOIN chat_history q ON q.id = r.reply_to"
        " JOIN users u ON u.id = f.user_id"
        " WHERE ($1::text IS NULL OR f.rating = $1)"
        " AND ($3::bigint IS NULL OR (f.updated_at, f.reply_id) <"
        "  (SELECT updated_at, reply_id FROM feedback WHERE reply_id = $3))"
        " ORDER BY f.updated_at DESC, f.reply_id DESC LIMIT $2",
        rating,
        limit,
        before,
    )


async def record(db: Executor, admin: Any, action: str, target: str | None) -> None:
    """One audit entry: `admin` (a users row) did `action` to `target`."""
    await db.execute(
        "INSERT INTO audit_log (admin_id, admin_email, action, target) VALUES ($1, $2, $3, $4)",
        admin["id"],
        admin["email"],
        action,
        target,
    )


async def audit(db: Executor, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT at, admin_email, action, target FROM audit_log ORDER BY id DESC LIMIT $1", limit
    )


async def conversations(
    db: Executor, q: str | None, user_key: str | None, limit: int, before: int | None
) -> list[asyncpg.Record]:
    """Every user's conversations, most recently active first: those with `q` in one of
    their messages (case ignored), of the user whose email key is `user_key`, after
    conversation `before` in that order."""
    return await db.fetch(
        "SELECT c.id, c.title, c.updated_at, u.id AS user_id, u.email, u.is_guest,"
        " (SELECT count(*) FROM chat_history h WHERE h.conversation_id = c.id) AS messages,"
        " (SELECT count(*) FROM feedback f JOIN chat_history h ON h.id = f.reply_id"
        "   WHERE h.conversation_id = c.id AND f.rating = 'down') AS down_votes"
        " FROM conversations c JOIN users u ON u.id = c.user_id"
        " WHERE ($1::text IS NULL OR EXISTS (SELECT 1 FROM chat_history h"
        "   WHERE h.conversation_id = c.id AND strpos(lower(h.message), lower($1)) > 0))"
        " AND ($2::text IS NULL OR u.email_key = $2)"
        " AND ($4::bigint IS NULL OR (c.updated_at, c.id) <"
        "   (SELECT updated_at, id FROM conversations WHERE id = $4))"
        " ORDER BY c.updated_at DESC, c.id DESC LIMIT $3",
        q,
        user_key,
        limit,
        before,
    )


async def conversation(db: Executor, conversation_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT c.id, c.title, c.updated_at, u.id AS user_id, u.email, u.is_guest"
        " FROM conversations c JOIN users u ON u.id = c.user_id WHERE c.id = $1",
        conversation_id,
    )
