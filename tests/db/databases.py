"""Helpers of the migration tests: a scratch database with only the earlier migrations."""

from __future__ import annotations

import asyncpg

from server.db import migrations, scratch


async def database_before(admin_url: str, version: int, prefix: str = "chat_old") -> str:
    """A new database with the migrations before `version` applied, as an older release
    left it; the caller drops it."""
    url = await scratch.create_database(admin_url, prefix)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, name, sql in migrations.load_migrations():
            if number < version:
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
                )
    finally:
        await conn.close()
    return url
