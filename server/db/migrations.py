"""Versioned SQL migrations, applied at start-up under an advisory lock.

Files `sql/NNNN_name.sql` run in order, each in its own transaction, and are
recorded in `schema_migrations`. The advisory lock makes two instances that
start at once apply them one after the other: the second finds them done. Then
chat_history is partitioned, once (`server.db.partitions.convert`), and its
partitions of the coming days made.
"""

from __future__ import annotations

import asyncio
import logging
import re
from importlib import resources

import asyncpg

from server.db import partitions

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x63686174  # "chat": the advisory lock key for migrations
LOCK_POLL_S = 0.1
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def load_migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    found = []
    for entry in resources.files("server.db").joinpath("sql").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migrations share a version number")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; return their names."""
    applied_now = []
    # Polled rather than waited for in one statement: a session waiting inside a statement
    # holds a snapshot, which the conversion's CREATE INDEX CONCURRENTLY (run under this
    # lock) would wait for in turn: a deadlock between two instances starting at once.
    # (The lock is another process's: there is no event to wait on.)
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK):  # noqa: ASYNC110
        await asyncio.sleep(LOCK_POLL_S)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in load_migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("applied migration %s", name)
            applied_now.append(name)
        await backfill_email_keys(conn)
        # chat_history partitioned by day (once), and its partitions made ahead.
        await partitions.convert(conn)
        await partitions.ensure_ahead(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


async def backfill_email_keys(conn: asyncpg.Connection) -> int:
    """Key the rows SQL could not (non-ASCII addresses) with `server.auth.emails`;
    the number keyed. A row left without a key cannot log in, and is logged."""
    from server.auth.emails import EmailError, email_key

    keyed = 0
    # Guests have no email (migration 0009): nothing to key.
    unkeyed = "SELECT id, email FROM users WHERE email_key IS NULL AND email IS NOT NULL"
    for row in await conn.fetch(unkeyed):
        try:
            key = email_key(row["email"])
            async with conn.transaction():
                await conn.execute("UPDATE users SET email_key = $2 WHERE id = $1", row["id"], key)
            keyed += 1
        except (EmailError, asyncpg.UniqueViolationError) as exc:
            log.warning("user %s keeps no email key and cannot log in: %s", row["id"], exc)
    return keyed
