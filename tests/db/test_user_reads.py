"""Users read in batches: one query for the reads that wait together, never a stale row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from server.db import queries
from server.db.migrations import migrate
from server.db.pool import open_pool
from server.db.user_reads import UserReads


async def _users(conn: asyncpg.Connection, n: int) -> list[int]:
    tag = uuid.uuid4().hex[:8]
    rows = await conn.fetch(
        "INSERT INTO users (email, email_key, hashed_password)"
        " SELECT e, e, 'x' FROM unnest($1::text[]) AS e RETURNING id",
        [f"reads-{tag}-{i}@example.com" for i in range(n)],
    )
    return [r["id"] for r in rows]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(database_url, 1, 2) as pool:
        async with pool.acquire() as conn:
            await migrate(conn)
        yield pool


async def test_concurrent_reads_share_queries_and_each_gets_its_own_user(
    pool: asyncpg.Pool, monkeypatch
) -> None:
    async with pool.acquire() as conn:
        ids = await _users(conn, 20)
    queried: list[list[int]] = []
    real = queries.users_by_ids

    async def counted(db, user_ids):
        queried.append(list(user_ids))
        return await real(db, user_ids)

    monkeypatch.setattr(queries, "users_by_ids", counted)
    reads = UserReads(pool)
    missing = max(ids) + 1000
    wanted = [*ids, ids[0], missing]  # one user twice, one that does not exist
    rows = await asyncio.gather(*(reads.get(i) for i in wanted))

    assert [r["id"] for r in rows[:-1]] == wanted[:-1]
    assert rows[-1] is None
    # Asked in one loop turn: one query, each user once.
    assert len(queried) == reads.batches == 1
    assert sorted(queried[0]) == sorted({*wanted})


async def test_a_read_sees_what_was_committed_before_it_was_asked(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        (user_id,) = await _users(conn, 1)
    reads = UserReads(pool)
    before = await reads.get(user_id)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE users SET token_generation = token_generation + 1, is_active = false"
            " WHERE id = $1",
            user_id,
        )
    after = await reads.get(user_id)
    assert before["is_active"] and not after["is_active"]
    assert after["token_generation"] == before["token_generation"] + 1


async def test_a_failed_query_fails_its_reads_and_the_next_batch_works(
    pool: asyncpg.Pool, monkeypatch
) -> None:
    async with pool.acquire() as conn:
        (user_id,) = await _users(conn, 1)
    real = queries.users_by_ids

    async def away(db, user_ids):
        raise ConnectionRefusedError("the database is away")

    monkeypatch.setattr(queries, "users_by_ids", away)
    reads = UserReads(pool)
    results = await asyncio.gather(reads.get(user_id), reads.get(user_id), return_exceptions=True)
    assert all(isinstance(r, ConnectionRefusedError) for r in results)
    monkeypatch.setattr(queries, "users_by_ids", real)
    assert (await reads.get(user_id))["id"] == user_id
