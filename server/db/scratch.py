"""Throwaway databases on a PostgreSQL server: for tests, benchmarks and scripted checks.

Each gets a fresh database of its own on the server named by DATABASE_URL (or
on an embedded PostgreSQL when it is unset) and drops it afterwards, so runs
never see each other's rows and the server's own databases stay untouched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
from yarl import URL


@contextmanager
def admin_database(embedded_dir: Path) -> Iterator[str]:
    """DATABASE_URL, or an embedded PostgreSQL whose data lives in `embedded_dir` for the
    life of the block (stopped afterwards if the block started it; blocking)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from server.db.pool import embedded_postgres

    with embedded_postgres(embedded_dir) as url:
        yield url


def admin_url(embedded_dir: Path) -> str:
    """DATABASE_URL, or an embedded PostgreSQL in `embedded_dir` left running (blocking):
    for benchmarks, which are run again and again."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from server.db.pool import start_embedded

    return start_embedded(embedded_dir)


async def create_database(admin: str, prefix: str = "chat_scratch") -> str:
    """Create a uniquely named database on `admin`'s server; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    # keep_query: a Unix-socket URL names its socket directory in the query (?host=…)
    return str(URL(admin).with_path(f"/{name}", keep_query=True))


async def drop_database(admin: str, url: str) -> None:
    """Drop the database of `url`, cutting its sessions."""
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{URL(url).path.lstrip("/")}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_database(admin: str, prefix: str = "chat_scratch") -> AsyncIterator[str]:
    url = await create_database(admin, prefix)
    try:
        yield url
    finally:
        await drop_database(admin, url)
