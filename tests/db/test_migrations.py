"""Migrations on a real PostgreSQL: 0006 keys the users an earlier version stored."""

from __future__ import annotations

import asyncpg
import pytest

from server.db import scratch
from server.db.migrations import load_migrations, migrate


@pytest.fixture
async def fresh(admin_database_url):
    url = await scratch.create_database(admin_database_url, "chat_migrate")
    conn = await asyncpg.connect(url)
    yield conn
    await conn.close()
    await scratch.drop_database(admin_database_url, url)


async def apply_until(conn: asyncpg.Connection, version: int) -> None:
    """The schema as an older server left it: migrations below `version` only."""
    await conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for v, name, sql in load_migrations():
        if v < version:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", v, name)


async def test_existing_users_get_their_email_key(fresh):
    await apply_until(fresh, 6)
    emails = [
        "Mixed.Case@Example.com",  # ASCII: lower() in SQL is the key
        "owner@bücher.de",  # an IDN domain: keyed in Python, by its ASCII form
        "İnfo@example.com",  # a non-ASCII local part: now refused, so no key
    ]
    for email in emails:
        await fresh.execute("INSERT INTO users (email, hashed_password) VALUES ($1, 'x')", email)

    await migrate(fresh)

    rows = await fresh.fetch("SELECT email, email_key FROM users ORDER BY id")
    assert [(r["email"], r["email_key"]) for r in rows] == [
        ("Mixed.Case@Example.com", "mixed.case@example.com"),
        ("owner@bücher.de", "owner@xn--bcher-kva.de"),
        ("İnfo@example.com", None),
    ]
    # The keyless row squats nothing: the real info@ can have its account.
    await fresh.execute(
        "INSERT INTO users (email, hashed_password) VALUES ('info@example.com', 'x')"
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await fresh.execute(
            "INSERT INTO users (email, hashed_password) VALUES ('INFO@example.com', 'x')"
        )
