"""The pool gives connections back without a reset query: no session state may leak."""

from __future__ import annotations

import asyncpg

from server.db.migrations import migrate
from server.db.pool import open_pool
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
