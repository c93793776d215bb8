"""The partitions past retention, detached together, emptied and dropped: what one run
deletes and counts, a table an interrupted run left detached, and the locks chat waits
behind (each on a database of its own)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
from prometheus_client import CollectorRegistry, Counter

from server.db import partition_purge, partitions
from server.db.partitions import DAY
from server.jobs.purge import PurgeJob
from tests.db.partitioned import (
    add_message,
    add_reply,
    add_user,
    database,
    ids,
    retention_bounds,
    where,
)
from tests.jobs.history_rows import connector


async def keys_of(conn: asyncpg.Connection, user_id: int) -> set[tuple[int, int | None]]:
    query = "SELECT message_id, reply_id FROM chat_keys WHERE user_id = $1"
    rows = await conn.fetch(query, user_id)
    return {(r["message_id"], r["reply_id"]) for r in rows}


async def test_one_run_drops_every_partition_past_retention_and_counts_what_went(
    admin_database_url,
):
    async with database(admin_database_url) as (url, conn):
        now, cutoff, boundary = await retention_bounds(conn)
        past = [await partitions.create_partition(conn, boundary - n * DAY) for n in (3, 2, 1)]
        straddling = await partitions.create_partition(conn, boundary)
        alice, bob = await add_user(conn), await add_user(conn)

        gone = set()
        for n in (3, 2, 1):
            at = boundary - n * DAY + timedelta(hours=6)
            message = await add_message(conn, alice, at, f"a{n}")
            gone |= {message, await add_reply(conn, alice, message, at + timedelta(seconds=2))}
        bobs_old = await add_message(conn, bob, boundary - timedelta(hours=1), "b-old")
        gone.add(bobs_old)
        # The last second of the newest partition past retention; its reply came after
        # midnight, by exact age still younger than the cutoff: it goes with its message.
        late = await add_message(conn, alice, boundary - timedelta(seconds=1), "late")
        late_reply = await add_reply(conn, alice, late, cutoff + timedelta(seconds=1))
        gone |= {late, late_reply}
        assert await where(conn, late_reply) == straddling
        # By exact age in the straddling partition: a second either side of the cutoff.
        by_age = await add_message(conn, alice, cutoff - timedelta(seconds=1), "by-age")
        gone.add(by_age)
        kept = await add_message(conn, alice, cutoff + timedelta(seconds=1), "kept")
        bobs = await add_message(conn, bob, now, "b-new")
        bobs_reply = await add_reply(conn, bob, bobs, now)

        counted = Counter("purge_deleted_rows", "rows", registry=(registry := CollectorRegistry()))
        result = await PurgeJob(connector(url), retention_days=30, deleted_rows=counted).run_once()

        assert result.status == "ok", result.error
        assert result.deleted == len(gone) == 10
        assert registry.get_sample_value("purge_deleted_rows_total") == 10
        assert await ids(conn, alice) == {kept}
        assert await ids(conn, bob) == {bobs, bobs_reply}
        names = {p.name for p in await partitions.list_partitions(conn)}
        assert not names & set(past) and straddling in names
        assert await partition_purge.detached(conn) == []
        for name in past:
            assert await conn.fetchval("SELECT to_regclass($1)", name) is None
        assert await keys_of(conn, alice) == {(kept, None)}
        assert await keys_of(conn, bob) == {(bobs, bobs_reply)}


async def test_a_table_left_detached_by_an_interrupted_run_is_finished_by_the_next(
    admin_database_url,
):
    async with database(admin_database_url) as (url, conn):
        now = await conn.fetchval("SELECT now()")
        boundary = partitions.day_start(now - 30 * DAY)
        user = await add_user(conn)
        left = []
        for n in (2, 1):
            name = await partitions.create_partition(conn, boundary - n * DAY)
            message = await add_message(conn, user, boundary - n * DAY + timedelta(hours=1), name)
            await add_reply(conn, user, message, now - timedelta(minutes=n))  # younger
            left.append(name)
        kept = await add_message(conn, user, now, "kept")
        by_bound = {p.name: p for p in await partitions.list_partitions(conn)}

        # The run stopped after the detach: the rows are out of chat_history, the tables
        # stay; the second table was emptied too, its two rows counted by that run.
        await partition_purge.detach(conn, [by_bound[name] for name in left])
        assert await partition_purge.detached(conn) == left
        assert await partition_purge.delete_younger_replies(conn, left[1:]) == 1
        assert await partition_purge.empty(conn, left[1:]) == 1

        result = await PurgeJob(connector(url), retention_days=30).run_once()

        assert result.status == "ok", result.error
        assert result.deleted == 2  # the first table's message and its younger reply
        assert await ids(conn, user) == {kept}
        assert await partition_purge.detached(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM chat_keys WHERE user_id = $1", user) == 1


async def test_emptying_and_dropping_do_not_wait_for_chat_on_chat_history(admin_database_url):
    """Emptying and dropping the detached tables take no lock on chat_history or its
    partitions, so they go on while chat holds what its statements hold."""
    async with database(admin_database_url) as (url, conn):
        now = await conn.fetchval("SELECT now()")
        name = await partitions.create_partition(conn, partitions.day_start(now) - 40 * DAY)
        user = await add_user(conn)
        await add_message(conn, user, now - 40 * DAY + timedelta(hours=1), "m")
        past = [p for p in await partitions.list_partitions(conn) if p.name == name]
        await partition_purge.detach(conn, past)

        chat = await asyncpg.connect(url)
        try:
            async with chat.transaction():
                # An insert's lock, and what a lookup by id takes on every partition.
                await chat.execute("LOCK TABLE chat_history IN ROW EXCLUSIVE MODE")
                await chat.fetchval("SELECT count(*) FROM chat_history WHERE id = 0")
                rows = await asyncio.wait_for(partition_purge.empty(conn, [name]), 10)
                await asyncio.wait_for(partition_purge.drop_tables(conn, [name]), 10)
                assert rows == 1
        finally:
            await chat.close()
        assert await conn.fetchval("SELECT to_regclass($1)", name) is None
        assert await ids(conn, user) == set()
