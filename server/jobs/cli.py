"""`python run_server.py purge`: the purge once, from the command line."""

from __future__ import annotations

from contextlib import AsyncExitStack

from server.db import pool as db_pool
from server.db.migrations import migrate
from server.http import dumps
from server.jobs.purge import PurgeJob
from server.settings import Settings


async def purge_from_cli(settings: Settings) -> int:
    """`python run_server.py purge`: one run on a pool of its own; the exit status.

    0 when the run purged or another instance was already purging (skipped),
    1 when it failed. The result is printed as one line of JSON.
    """
    async with AsyncExitStack() as stack:
        dsn = settings.database_url
        if dsn is None:
            dsn = await stack.enter_async_context(db_pool.embedded_postgres_async(settings.var_dir))
        pool = await stack.enter_async_context(db_pool.open_pool(dsn, 1, 1))
        async with pool.acquire() as conn:
            await migrate(conn)
        job = PurgeJob(pool.acquire, settings.history_retention_days, settings.purge_batch_size)
        result = await job.run_once()
    print(dumps(result.as_json()).decode(), flush=True)
    return 1 if result.status == "error" else 0
