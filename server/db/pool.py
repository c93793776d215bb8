"""The asyncpg pool, and the embedded PostgreSQL used when no DATABASE_URL is set."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import orjson

log = logging.getLogger(__name__)


def start_embedded(var_dir: Path) -> str:
    """Start (or reuse) the `pgserver` PostgreSQL whose data lives in `var_dir/pgdata`.

    Blocking: call it in a thread. A server already running on that folder (another
    local process's) is reused; `embedded_postgres` stops what it started.
    """
    import pgserver  # imported lazily: only embedded mode needs it

    pgdata = (var_dir / "pgdata").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def embedded_running(var_dir: Path) -> bool:
    """Whether a PostgreSQL runs on `var_dir/pgdata` (its postmaster.pid names a live process)."""
    pid_file = (var_dir / "pgdata" / "postmaster.pid").resolve()
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def stop_embedded(var_dir: Path) -> None:
    """Stop the embedded PostgreSQL of `var_dir` (`pg_ctl stop -m fast`; blocking).

    pgserver keeps one handle per data directory and process, so its own cleanup
    cannot stop a server that this process started with `start_embedded`.
    """
    from pgserver._commands import POSTGRES_BIN_PATH

    pgdata = (var_dir / "pgdata").resolve()
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
        check=True,
        capture_output=True,
        # As root, pgserver runs PostgreSQL as its own `pgserver` user.
        user="pgserver" if os.getuid() == 0 else None,
    )


@contextmanager
def embedded_postgres(var_dir: Path) -> Iterator[str]:
    """The embedded PostgreSQL for the life of the block: its URI (blocking).

    Stopped at the end when this block started it, so a stopped server leaves no
    PostgreSQL behind; one that was already running (another local process's: a
    second server, the test suite) is left running for its owner.
    """
    started = not embedded_running(var_dir)
    uri = start_embedded(var_dir)
    if started:
        log.info("started the embedded PostgreSQL in %s", var_dir / "pgdata")
    try:
        yield uri
    finally:
        if started and embedded_running(var_dir):
            try:
                stop_embedded(var_dir)
            except subprocess.CalledProcessError as exc:
                log.warning("could not stop the embedded PostgreSQL: %s", exc.stderr)
            else:
                log.info("stopped the embedded PostgreSQL")


@asynccontextmanager
async def embedded_postgres_async(var_dir: Path) -> AsyncIterator[str]:
    """`embedded_postgres` for a running event loop: start and stop in a thread."""
    block = embedded_postgres(var_dir)
    uri = await asyncio.to_thread(block.__enter__)
    try:
        yield uri
    finally:
        await asyncio.to_thread(block.__exit__, None, None, None)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def keep_session(conn: asyncpg.Connection) -> None:
    """Give a connection back to the pool without asyncpg's reset query.

    The default reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`)
    is a round trip and four statements at every release: the one cost a REST request
    paid twice. It undoes session state this server never leaves on a pooled
    connection: nothing runs SET, LISTEN or DECLARE on one (LISTEN has connections of
    its own, server/db/listen.py), and the two session advisory locks are released
    in `finally` by their owners, the migrations (server/db/migrations.py) and the
    purge (server/jobs/purge.py, which terminates the connection when the unlock fails).
    asyncpg still rolls back an open transaction and drops listener callbacks before
    calling this.
    """


# The connections that run the batched statements (the chat store's group commit, the
# user reads: `server.db.batching`) plan each statement once, not at every batch: a
# group-commit batch of 20 messages took 0.35 ms to plan, and the pool's custom plans
# cost PostgreSQL 92-98 µs of CPU a message against 56-66 with these settings
# (bench/README.md, 2026-12-05). A generic plan is made for any array length with the
# statistics of its moment, so one made while a table is young (no statistics, a few
# pages) could scan it, or hash a whole `users`, at every batch as it grows; every batched
# statement has an index for each lookup, so nested loops over indexes are forced (the
# switches make the other plans dear, not impossible). Only these statements run on these
# connections, and migration 0008's triggers, whose lookups are by index too.
BATCH_SETTINGS = {
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
}


async def create_pool(
    dsn: str, min_size: int = 2, max_size: int = 10, settings: dict[str, str] | None = None
) -> asyncpg.Pool:
    """The pool; `settings` (say, BATCH_SETTINGS) go on top of every connection's own."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=keep_session,
        command_timeout=30,
        server_settings={
            "application_name": "chat-server",
            "timezone": "UTC",
            # asyncpg prepares every statement, and after five runs PostgreSQL may switch
            # to a generic plan, made for any array length (it guesses 100 rows) with the
            # statistics of that moment. For the group-commit INSERT of a young table
            # (never analyzed yet) that plan scans chat_history at every batch: the chat
            # benchmark measured 180 µs of PostgreSQL CPU per message with it, 85 µs with a
            # plan made for each batch. Planning our statements costs far less than that.
            "plan_cache_mode": "force_custom_plan",
            **(settings or {}),
        },
    )


class DatabaseUnreachable(Exception):
    """The pool could not open a first connection (at start-up: a wrong URL, or no server)."""


@asynccontextmanager
async def open_pool(
    dsn: str, min_size: int = 2, max_size: int = 10, settings: dict[str, str] | None = None
) -> AsyncIterator[asyncpg.Pool]:
    try:
        pool = await create_pool(dsn, min_size, max_size, settings)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnreachable(f"cannot connect to the database: {exc}") from None
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), 10)
        except TimeoutError:
            log.warning("database pool did not close in 10 s; terminating it")
            pool.terminate()
