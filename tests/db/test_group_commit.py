"""The group commit's statement (`server.db.group_commit.INSERT_BATCH`) against a real
database: each message finds its conversation in the batch itself, a user with none
gets exactly one even from two instances at once, and a batch moves the activity and
title of the conversations it stores into."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from server.db import group_commit, migrations
from server.db.pool import BATCH_SETTINGS
from tests.db.test_conversations_migration import add_user

REPLY_SOURCES = "[]"


@pytest.fixture
async def migrated(db: asyncpg.Connection) -> asyncpg.Connection:
    await migrations.migrate(db)
    return db


async def batch_connection(url: str) -> asyncpg.Connection:
    """A connection as the server's batches have (generic plans, nested loops)."""
    return await asyncpg.connect(url, server_settings=BATCH_SETTINGS)


@pytest.fixture
async def batch(migrated: asyncpg.Connection, database_url: str):
    conn = await batch_connection(database_url)
    yield conn
    await conn.close()


async def store(
    conn: asyncpg.Connection,
    messages: list[tuple[int, str, int | None]] = (),
    replies: list[tuple[int, int]] = (),
) -> list[asyncpg.Record]:
    """One batch: messages (user, text, conversation or None), replies (user, message id)."""
    return await group_commit.insert_batch(
        conn,
        [u for u, _, _ in messages],
        [t for _, t, _ in messages],
        [uuid.uuid4().hex for _ in messages],
        [u for u, _ in replies],
        [f"reply to {m}" for _, m in replies],
        [m for _, m in replies],
        ["stop"] * len(replies),
        [REPLY_SOURCES] * len(replies),
        ["{1,2}"] * len(replies),
        [v for _, _, v in messages],
        *([[None] * len(messages)] * 4),  # no reply stored with its message
    )


async def new_user(conn: asyncpg.Connection) -> int:
    return await add_user(conn, f"batch-{uuid.uuid4().hex}@example.com")


async def conversations_of(conn: asyncpg.Connection, user: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, title, updated_at FROM conversations WHERE user_id = $1 ORDER BY id", user
    )


async def test_a_message_naming_none_goes_to_the_most_recently_active(migrated, batch):
    alice, bob = await new_user(migrated), await new_user(migrated)
    older, newer, bobs = [
        await migrated.fetchval(
            "INSERT INTO conversations (user_id, title, updated_at)"
            " VALUES ($1, $2, now() - make_interval(hours => $3)) RETURNING id",
            user,
            title,
            age,
        )
        for user, title, age in [(alice, "old", 2), (alice, "new", 1), (bob, "b", 1)]
    ]
    rows = await store(
        batch,
        [(alice, "one", None), (bob, "two", None), (alice, "three", older), (alice, "four", None)],
    )
    assert [(r["user_id"], r["conversation_id"]) for r in rows] == [
        (alice, newer),
        (bob, bobs),
        (alice, older),
        (alice, newer),
    ]
    # Ids follow the batch's order: a user's messages in the order they were sent.
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


async def test_the_batch_moves_activity_and_titles_an_untitled_conversation(migrated, batch):
    user = await new_user(migrated)
    untitled = await migrated.fetchval(
        "INSERT INTO conversations (user_id, updated_at) VALUES ($1, now() - interval '1 day')"
        " RETURNING id",
        user,
    )
    named = await migrated.fetchval(
        "INSERT INTO conversations (user_id, title, updated_at)"
        " VALUES ($1, 'kept', now() - interval '2 days') RETURNING id",
        user,
    )
    long_question = "q" * 70
    rows = await store(
        batch, [(user, long_question, untitled), (user, "second", untitled), (user, "x", named)]
    )
    stored_at = rows[0]["timestamp"]
    by_id = {r["id"]: r for r in await conversations_of(migrated, user)}
    assert by_id[untitled]["title"] == long_question[:60]
    assert by_id[named]["title"] == "kept"
    assert by_id[untitled]["updated_at"] == by_id[named]["updated_at"] == stored_at

    # A reply in a later batch moves its question's conversation only.
    rows = await store(batch, replies=[(user, rows[2]["id"])])
    assert rows[0]["conversation_id"] == named
    by_id = {r["id"]: r for r in await conversations_of(migrated, user)}
    assert by_id[named]["updated_at"] == rows[0]["timestamp"] > by_id[untitled]["updated_at"]


async def test_a_user_without_a_conversation_gets_one_titled_by_the_first_question(migrated, batch):
    user = await new_user(migrated)
    rows = await store(batch, [(user, "first question", None), (user, "second", None)])
    made = await conversations_of(migrated, user)
    assert [c["title"] for c in made] == ["first question"]
    assert [r["conversation_id"] for r in rows] == [made[0]["id"]] * 2


async def test_two_instances_make_one_conversation_for_a_user_without_any(migrated, database_url):
    """The first batch holds its transaction open after making the conversation; the
    second, whose statement began before that commit, waits for the advisory lock and
    then finds the first one's conversation instead of making another."""
    user = await new_user(migrated)
    first, second = await batch_connection(database_url), await batch_connection(database_url)
    try:
        tx = first.transaction()
        await tx.start()
        made = await store(first, [(user, "from instance one", None)])
        other = asyncio.create_task(store(second, [(user, "from instance two", None)]))
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        for _ in range(250):
            if await migrated.fetchval(waiting):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the second batch never waited for the first")
        assert not other.done()
        await tx.commit()
        rows = await other
    finally:
        await first.close()
        await second.close()
    conversations = await conversations_of(migrated, user)
    assert [c["title"] for c in conversations] == ["from instance one"]
    assert rows[0]["conversation_id"] == made[0]["conversation_id"] == conversations[0]["id"]


async def test_a_reply_to_a_question_stored_without_a_conversation(migrated, batch):
    """Rows from before migration 0008's backfill have no conversation: a reply to one
    goes to its user's most recently active, made when there is none."""
    with_one, without = await new_user(migrated), await new_user(migrated)
    theirs = await migrated.fetchval(
        "INSERT INTO conversations (user_id) VALUES ($1) RETURNING id", with_one
    )
    questions = []
    for user in (with_one, without):
        questions.append(
            await migrated.fetchval(
                "INSERT INTO chat_history (user_id, message, is_user_message, conversation_id)"
                " VALUES ($1, 'an old question', true, NULL) RETURNING id",
                user,
            )
        )
    # The insert's trigger put them in conversations; make them old rows again.
    await migrated.execute(
        "UPDATE chat_history SET conversation_id = NULL WHERE id = ANY($1)", questions
    )
    await migrated.execute("DELETE FROM conversations WHERE user_id = $1", without)
    rows = await store(batch, replies=[(with_one, questions[0]), (without, questions[1])])
    made = await conversations_of(migrated, without)
    assert {r["reply_to"]: r["conversation_id"] for r in rows} == {
        questions[0]: theirs,
        questions[1]: made[0]["id"],
    }
    assert made[0]["title"] is None  # a reply does not title a conversation


async def test_the_per_row_trigger_fires_only_for_a_user_without_a_conversation(migrated, batch):
    """The batch finds each sender's conversation itself: 0008's per-row trigger (a
    PL/pgSQL call and a lookup a row) runs only to make a new user's first one."""
    old, new = await new_user(migrated), await new_user(migrated)
    await migrated.execute("INSERT INTO conversations (user_id) VALUES ($1)", old)
    await batch.execute("SET track_functions = 'pl'")
    calls = (
        "SELECT coalesce(pg_stat_get_xact_function_calls("
        "'chat_history_default_conversation'::regproc), 0)"
    )
    async with batch.transaction():
        await store(batch, [(old, "a", None), (old, "b", None), (new, "c", None)])
        assert await batch.fetchval(calls) == 1
