"""The pool gives connections back without a reset query: no session state may leak; the
batches' pool plans each statement once, by index."""

from __future__ import annotations

import re

import asyncpg

from server.db import group_commit, queries, scratch
from server.db.migrations import migrate
from server.db.pool import BATCH_SETTINGS, open_pool
from server.jobs.purge import PURGE_LOCK, PurgeJob

ADVISORY_LOCKS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"


async def test_migrations_and_the_purge_leave_no_lock_on_the_pooled_connection(
    database_url: str,
) -> None:
    async with open_pool(database_url, 1, 1) as pool:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await migrate(conn)
        result = await PurgeJob(pool.acquire, retention_days=30).run_once()
        assert result.status == "ok"
        async with pool.acquire() as conn:
            # The same session, kept (not reset, not reopened), holds no advisory lock.
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            other = await asyncpg.connect(database_url)
            try:
                assert await other.fetchval(ADVISORY_LOCKS, pid) == 0
                assert await other.fetchval("SELECT pg_try_advisory_lock($1)", PURGE_LOCK)
                await other.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK)
            finally:
                await other.close()


async def test_a_transaction_left_open_is_rolled_back_on_release(database_url: str) -> None:
    async with open_pool(database_url, 1, 1) as pool:
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMPORARY TABLE left_open (x int)")
        await pool.release(conn)
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None


async def test_the_batched_statements_plan_index_lookups_on_young_tables(
    admin_database_url: str,
) -> None:
    """On the batches' connections each statement is planned once (a generic plan), on
    tables that have no statistics yet: every lookup must still go through an index, or
    the plan made now would scan the whole table at every batch once it has grown."""
    async with scratch.scratch_database(admin_database_url, "chat_young") as url:
        async with open_pool(url, 1, 1) as pool, pool.acquire() as conn:
            await migrate(conn)
        async with open_pool(url, 1, 1, BATCH_SETTINGS) as pool, pool.acquire() as conn:
            for n, sql in enumerate((*group_commit.STATEMENTS, queries.USERS_BY_IDS)):
                params = max(int(p) for p in re.findall(r"\$(\d+)", sql))
                await conn.execute(f"PREPARE batch_{n} AS {sql}")
                plan = "\n".join(
                    r[0]
                    for r in await conn.fetch(
                        f"EXPLAIN EXECUTE batch_{n}({', '.join(['NULL'] * params)})"
                    )
                )
                assert "Seq Scan" not in plan, plan
                assert "Hash Join" not in plan and "Hash Semi Join" not in plan, plan
            # Each was planned once for any arguments, not for these.
            counts = await conn.fetch(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE name LIKE 'batch_%'"
            )
            assert {(r["generic_plans"], r["custom_plans"]) for r in counts} == {(1, 0)}
