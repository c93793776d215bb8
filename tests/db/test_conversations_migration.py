"""Migration 0008 on a copy of a version-1 database: one conversation per user, rows
backfilled in batches while chat goes on, and rows from instances of the previous
version (that store no conversation) put in the right one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from server.db import conversations, migrations, scratch
from server.db.pool import open_pool
from tests.db.databases import database_before

FIRST_OF_CONVERSATIONS = 8


async def version_1_database(admin_url: str) -> str:
    """A database with the migrations before conversations only."""
    return await database_before(admin_url, FIRST_OF_CONVERSATIONS, "chat_v1")


async def add_user(conn, email: str) -> int:
    return await conn.fetchval(
        "INSERT INTO users (email, hashed_password) VALUES ($1, 'x') RETURNING id", email
    )


async def add_rows(conn, user_id: int, count: int, start: datetime) -> None:
    """`count` question/reply pairs, a minute apart, as version 1 stored them."""
    for n in range(count):
        at = start + timedelta(minutes=n)
        qid = await conn.fetchval(
            'INSERT INTO chat_history (user_id, message, is_user_message, client_id, "timestamp")'
            " VALUES ($1, $2, true, $3, $4) RETURNING id",
            user_id,
            f"question {n} " + "x" * 80,
            f"c{n}",
            at,
        )
        await conn.execute(
            'INSERT INTO chat_history (user_id, message, is_user_message, reply_to, "timestamp")'
            " VALUES ($1, $2, false, $3, $4)",
            user_id,
            f"reply {n}",
            qid,
            at + timedelta(seconds=1),
        )


async def test_version_1_history_becomes_one_conversation_per_user(admin_database_url):
    url = await version_1_database(admin_database_url)
    try:
        conn = await asyncpg.connect(url)
        start = datetime(2026, 11, 1, tzinfo=UTC)
        alice = await add_user(conn, "alice@example.com")
        bob = await add_user(conn, "bob@example.com")
        carol = await add_user(conn, "carol@example.com")  # no history: no conversation
        await add_rows(conn, alice, 30, start)
        await add_rows(conn, bob, 3, start + timedelta(days=1))

        applied = await migrations.migrate(conn)
        assert "0008_conversations.sql" in applied
        rows = await conn.fetch(
            "SELECT user_id, title, created_at, updated_at FROM conversations ORDER BY user_id"
        )
        assert [r["user_id"] for r in rows] == [alice, bob]
        assert rows[0]["title"] == ("question 0 " + "x" * 80)[:60]
        assert rows[0]["created_at"] == start
        assert rows[0]["updated_at"] == start + timedelta(minutes=29, seconds=1)
        # Before the backfill the rows wait without a conversation.
        assert (
            await conn.fetchval("SELECT count(*) FROM chat_history WHERE conversation_id IS NULL")
            == 66
        )

        async with open_pool(url, 1, 2) as pool:
            # Small batches, with chat going on meanwhile (a new message of bob's).
            backfill = asyncio.create_task(conversations.backfill(pool, batch=7))
            await conn.execute(
                "INSERT INTO chat_history (user_id, message, is_user_message, client_id)"
                " VALUES ($1, 'during the backfill', true, 'new')",
                bob,
            )
            assert await backfill == 66
        assert (
            await conn.fetchval("SELECT count(*) FROM chat_history WHERE conversation_id IS NULL")
            == 0
        )
        per_user = {
            r["user_id"]: (r["conversations"], r["rows"])
            for r in await conn.fetch(
                "SELECT h.user_id, count(DISTINCT h.conversation_id) AS conversations,"
                " count(*) AS rows FROM chat_history h"
                " JOIN conversations c ON c.id = h.conversation_id AND c.user_id = h.user_id"
                " GROUP BY h.user_id"
            )
        }
        assert per_user == {alice: (1, 60), bob: (1, 7)}
        assert not await conn.fetchval(
            "SELECT count(*) FROM conversations WHERE user_id = $1", carol
        )
        assert await conn.fetchval(
            "SELECT indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = 'chat_history_conversation'"
        )
        # A second start-up finds nothing left to do.
        async with open_pool(url, 1, 1) as pool:
            assert await conversations.backfill(pool) == 0
        await conn.close()
    finally:
        await scratch.drop_database(admin_database_url, url)


async def test_rows_stored_without_a_conversation_find_one(database_url, db):
    """What instances of the previous version store (no conversation_id) during a
    rolling update: a question goes to the user's most recently active conversation,
    made and titled when there is none; a reply follows its question."""
    await migrations.migrate(db)
    user = await add_user(db, f"old-{uuid.uuid4().hex}@example.com")
    qid = await db.fetchval(
        "INSERT INTO chat_history (user_id, message, is_user_message, client_id)"
        " VALUES ($1, 'a question from an old instance', true, 'o1') RETURNING id",
        user,
    )
    first = await db.fetchrow("SELECT id, title FROM conversations WHERE user_id = $1", user)
    assert first["title"] == "a question from an old instance"
    newer = await db.fetchval(
        "INSERT INTO conversations (user_id, title) VALUES ($1, 'newer') RETURNING id", user
    )
    reply_conv = await db.fetchval(
        "INSERT INTO chat_history (user_id, message, is_user_message, reply_to)"
        " VALUES ($1, 'its reply', false, $2) RETURNING conversation_id",
        user,
        qid,
    )
    assert reply_conv == first["id"]
    second = await db.fetchval(
        "INSERT INTO chat_history (user_id, message, is_user_message, client_id)"
        " VALUES ($1, 'next question', true, 'o2') RETURNING conversation_id",
        user,
    )
    # The reply made the first one the most recently active, ahead of the newer one.
    assert second == first["id"] != newer
