"""chat_history partitioned by day: bounds, partitions made ahead, the DEFAULT partition,
the purge at a partition boundary, the two guarantees across partitions, and the
conversion of an unpartitioned table that holds rows (each on a database of its own)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from server.chat.store import ChatStore
from server.db import migrations, partitions
from server.db.partitions import DAY, Partition
from server.db.pool import open_pool
from server.jobs.purge import PurgeJob
from tests.db.partitioned import (
    FIRST_OF_PARTITIONS,
    add_message,
    add_reply,
    add_user,
    database,
    ids,
    retention_bounds,
    where,
)
from tests.jobs.history_rows import connector

T0 = datetime(2026, 11, 5, tzinfo=UTC)


# -- pure ---------------------------------------------------------------------------------


def test_bounds_as_postgresql_prints_them():
    p = partitions.parse_bound(
        "chat_history_p20261105",
        "FOR VALUES FROM ('2026-11-05 00:00:00+00') TO ('2026-11-06 00:00:00+00')",
    )
    assert p == Partition("chat_history_p20261105", T0, T0 + DAY)
    first = partitions.parse_bound(
        "chat_history_initial", "FOR VALUES FROM (MINVALUE) TO ('2026-11-07 01:00:00+01')"
    )
    assert first == Partition("chat_history_initial", None, T0 + 2 * DAY)
    assert partitions.parse_bound("chat_history_default", "DEFAULT").is_default
    assert partitions.name_of(T0) == "chat_history_p20261105"
    assert partitions.day_start(T0 + timedelta(hours=23, minutes=59)) == T0


def test_missing_days_and_the_partitions_past_retention():
    initial = Partition("chat_history_initial", None, T0 + 2 * DAY)
    day3 = Partition("chat_history_p20261108", T0 + 3 * DAY, T0 + 4 * DAY)
    default = Partition("chat_history_default", None, None)
    assert partitions.missing_days([initial, day3, default], T0, 5) == [T0 + 2 * DAY, T0 + 4 * DAY]
    assert partitions.missing_days([default], T0, 2) == [T0, T0 + DAY]
    everything = [day3, default, initial]
    assert partitions.past_retention(everything, T0 + 2 * DAY) == [initial]
    assert partitions.past_retention(everything, T0 + 4 * DAY) == [initial, day3]
    assert partitions.past_retention(everything, T0 + 4 * DAY - timedelta(microseconds=1)) == [
        initial
    ]


# -- partitions made ahead, and the DEFAULT partition ------------------------------------


async def test_partitions_are_made_ahead_and_the_default_partition_takes_the_rest(
    admin_database_url,
):
    async with database(admin_database_url) as (url, conn):
        now = await conn.fetchval("SELECT now()")
        today = partitions.day_start(now)
        names = {p.name for p in await partitions.list_partitions(conn)}
        ahead = {partitions.name_of(today + n * DAY) for n in range(partitions.AHEAD_DAYS + 1)}
        assert names == ahead | {partitions.DEFAULT}
        assert await partitions.ensure_ahead(conn) == []  # a second start-up: nothing

        user = await add_user(conn)
        recent = await add_message(conn, user, now)
        future = await add_message(conn, user, now + 60 * DAY, "future")
        ancient = await add_message(conn, user, now - 400 * DAY, "ancient")
        assert await where(conn, recent) == partitions.name_of(today)
        assert await where(conn, future) == partitions.DEFAULT
        assert await where(conn, ancient) == partitions.DEFAULT

        # Made ahead when the server gets there: the DEFAULT's row of that day moves in.
        made = await partitions.ensure_ahead(conn, now + 60 * DAY)
        assert partitions.name_of(today + 60 * DAY) in made
        assert len(made) == partitions.AHEAD_DAYS + 1
        assert await where(conn, future) == partitions.name_of(today + 60 * DAY)

        # The DEFAULT partition is purged by exact age.
        result = await PurgeJob(connector(url), retention_days=30).run_once()
        assert result.status == "ok", result.error
        assert result.deleted == 1
        assert await ids(conn, user) == {recent, future}
        assert not await conn.fetchval(
            "SELECT count(*) FROM chat_keys WHERE message_id = $1", ancient
        )


# -- the purge at a partition boundary ---------------------------------------------------


async def test_purge_drops_whole_partitions_and_deletes_by_exact_age_at_the_boundary(
    admin_database_url,
):
    async with database(admin_database_url) as (url, conn):
        now, cutoff, boundary = await retention_bounds(conn)
        past = await partitions.create_partition(conn, boundary - DAY)
        straddling = await partitions.create_partition(conn, boundary)
        user = await add_user(conn)

        # A message in the partition entirely past retention, its reply stored later,
        # younger than the cutoff (it goes with its message), with feedback on it.
        old = await add_message(conn, user, boundary - timedelta(hours=12), "old")
        young_reply = await add_reply(conn, user, old, now - timedelta(hours=1))
        await conn.execute(
            "INSERT INTO feedback (reply_id, user_id, rating) VALUES ($1, $2, 'up')",
            young_reply,
            user,
        )
        # In the straddling partition, by exact age: a minute either side of the cutoff.
        await add_message(conn, user, cutoff - timedelta(minutes=2), "gone")
        kept = await add_message(conn, user, cutoff + timedelta(minutes=2), "kept")
        kept_reply = await add_reply(conn, user, kept, now)
        assert await where(conn, old) == past
        assert await where(conn, young_reply) == partitions.name_of(partitions.day_start(now))

        result = await PurgeJob(connector(url), retention_days=30).run_once()

        assert result.status == "ok", result.error
        assert result.deleted == 3  # old (its partition), its reply, gone (by age)
        assert await ids(conn, user) == {kept, kept_reply}
        names = {p.name for p in await partitions.list_partitions(conn)}
        assert past not in names and straddling in names
        assert not await conn.fetchval("SELECT to_regclass($1)", past)
        keys = await conn.fetch(
            "SELECT message_id, reply_id FROM chat_keys WHERE user_id = $1", user
        )
        assert [tuple(k) for k in keys] == [(kept, kept_reply)]
        assert not await conn.fetchval("SELECT count(*) FROM feedback WHERE user_id = $1", user)


# -- the guarantees across a partition boundary ------------------------------------------


async def test_resends_and_replies_racing_across_a_partition_boundary_keep_the_guarantees(
    admin_database_url,
):
    """The message was stored yesterday (yesterday's partition); two instances race to
    store it again and to store its reply, in today's."""
    async with (
        database(admin_database_url) as (url, conn),
        open_pool(url, 1, 4) as pool_a,
        open_pool(url, 1, 4) as pool_b,
    ):
        stores = [ChatStore(pool_a), ChatStore(pool_b)]
        try:
            user = await add_user(conn)
            first = await stores[0].add_message(user, "m1", "hello")
            now = await conn.fetchval("SELECT now()")
            yesterday = await partitions.create_partition(conn, partitions.day_start(now) - DAY)
            async with conn.transaction():  # as if stored a day ago
                at = now - DAY
                await conn.execute(
                    'UPDATE chat_history SET "timestamp" = $2 WHERE id = $1', first.message_id, at
                )
                await conn.execute(
                    'UPDATE chat_keys SET "timestamp" = $2 WHERE message_id = $1',
                    first.message_id,
                    at,
                )
            assert await where(conn, first.message_id) == yesterday

            resends = [stores[n % 2].add_message(user, "m1", "hello") for n in range(10)]
            replies = [
                stores[n % 2].add_reply(user, first.message_id, f"reply {n}", "stop", [], [1])
                for n in range(10)
            ]
            fresh = [stores[n % 2].add_message(user, "m2", "again") for n in range(10)]
            results = await asyncio.gather(*resends, *replies, *fresh)
            stored, answered, new = results[:10], results[10:20], results[20:]

            assert {(s.message_id, s.created) for s in stored} == {(first.message_id, False)}
            assert len({r.reply_id for r in answered}) == 1
            reply_id = answered[0].reply_id
            assert reply_id is not None
            assert await where(conn, reply_id) == partitions.name_of(partitions.day_start(now))
            assert len({s.message_id for s in new}) == 1
            assert sum(s.created for s in new) == 1
            rows = await conn.fetch(
                "SELECT client_id, reply_to FROM chat_history WHERE user_id = $1", user
            )
            assert sorted((r["client_id"] or "", r["reply_to"] or 0) for r in rows) == sorted(
                [("m1", 0), ("m2", 0), ("", first.message_id)]
            )
        finally:
            for store in stores:
                await store.close()


# -- the conversion of an unpartitioned table --------------------------------------------


async def test_an_unpartitioned_table_with_rows_becomes_the_first_partition(admin_database_url):
    async with database(admin_database_url, before=FIRST_OF_PARTITIONS) as (url, conn):
        user = await add_user(conn)
        rows = {}
        for n, age in enumerate([40 * DAY, 40 * DAY, DAY, timedelta(0)]):
            message = await conn.fetchval(
                "INSERT INTO chat_history (user_id, message, is_user_message, client_id,"
                ' "timestamp") VALUES ($1, $2, true, $3, now() - $4::interval) RETURNING id',
                user,
                f"question {n}",
                f"c{n}",
                age,
            )
            reply = await conn.fetchval(
                "INSERT INTO chat_history (user_id, message, is_user_message, reply_to,"
                ' "timestamp") VALUES ($1, $2, false, $3, now() - $4::interval) RETURNING id',
                user,
                f"reply {n}",
                message,
                age,
            )
            rows[f"c{n}"] = (message, reply)
        before = {r["id"]: tuple(r) for r in await conn.fetch("SELECT * FROM chat_history")}

        applied = await migrations.migrate(conn)

        assert "0015_chat_keys.sql" in applied
        assert await partitions.is_partitioned(conn)
        now = await conn.fetchval("SELECT now()")
        bound = partitions.day_start(now) + 2 * DAY
        found = {p.name: p for p in await partitions.list_partitions(conn)}
        assert found[partitions.INITIAL] == Partition(partitions.INITIAL, None, bound)
        assert partitions.DEFAULT in found
        assert partitions.name_of(bound) in found
        # Every row kept as it was, ids included, in the old table.
        after = {r["id"]: tuple(r) for r in await conn.fetch("SELECT * FROM chat_history")}
        assert after == before
        assert {await where(conn, i) for i in after} == {partitions.INITIAL}
        # The sequence goes on, and belongs to the partitioned table.
        assert (
            await conn.fetchval("SELECT pg_get_serial_sequence('chat_history', 'id')")
            == "public.chat_history_id_seq"
        )
        # ATTACH built no index: each of the old table's is one it had before.
        attached = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_index x ON x.indexrelid = c.oid"
            " WHERE x.indrelid = 'chat_history_initial'::regclass"
        )
        assert attached and all(r["relname"].endswith("_initial") for r in attached)
        # The keys of both guarantees, backfilled.
        keys = await conn.fetch("SELECT client_id, message_id, reply_id FROM chat_keys")
        assert {k["client_id"]: (k["message_id"], k["reply_id"]) for k in keys} == rows
        assert await migrations.migrate(conn) == []
        assert not await partitions.convert(conn)

        async with open_pool(url, 1, 2) as pool:
            store = ChatStore(pool)
            try:
                resent = await store.add_message(user, "c3", "question 3")
                again = await store.add_reply(user, rows["c3"][0], "other", "stop", [], [5])
                new = await store.add_message(user, "c9", "question 9")
            finally:
                await store.close()
        assert (resent.message_id, resent.created) == (rows["c3"][0], False)
        assert again.reply_id == rows["c3"][1]
        assert new.created and new.message_id > max(after)

        # The old table is purged by exact age until it is entirely past retention.
        result = await PurgeJob(connector(url), retention_days=30).run_once()
        assert result.status == "ok", result.error
        assert result.deleted == 4
        assert await ids(conn, user) == {*rows["c2"], *rows["c3"], new.message_id}
        assert await conn.fetchval("SELECT count(*) FROM chat_keys") == 3


async def test_rows_written_by_hand_get_their_keys(admin_database_url):
    """An import (plain INSERTs, no chat_keys rows): a resend of its message is recognised
    and a reply to it is stored once, by the trigger's keys."""
    async with (
        database(admin_database_url) as (url, conn),
        open_pool(url, 1, 2) as pool,
    ):
        user = await add_user(conn)
        message = await conn.fetchval(
            "INSERT INTO chat_history (user_id, message, is_user_message, client_id)"
            " VALUES ($1, 'imported', true, 'i1') RETURNING id",
            user,
        )
        store = ChatStore(pool)
        try:
            resent = await store.add_message(user, "i1", "imported")
            replies = await asyncio.gather(
                *(store.add_reply(user, message, f"r{n}", "stop", [], [2]) for n in range(3))
            )
        finally:
            await store.close()
        assert (resent.message_id, resent.created) == (message, False)
        assert len({r.reply_id for r in replies}) == 1 and replies[0].reply_id is not None
        assert (
            await conn.fetchval("SELECT count(*) FROM chat_history WHERE reply_to = $1", message)
            == 1
        )
