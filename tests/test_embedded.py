"""No DATABASE_URL: an embedded PostgreSQL under ./var/, kept across restarts."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from server.db import scratch
from server.db.pool import embedded_running, start_embedded, stop_embedded
from tests.accounts import PASSWORD, unique_email
from tests.processes import server_process


@pytest.fixture
def embedded_dir():
    """A folder outside pytest's own temporary folders: as root, pgserver runs PostgreSQL
    as its `pgserver` user and opens up the folder's parents for it, while every pytest
    session that starts makes `/tmp/pytest-of-root` private again."""
    path = Path(tempfile.mkdtemp(prefix="chat-embedded-"))
    path.chmod(0o755)
    yield path
    if embedded_running(path / "var"):
        stop_embedded(path / "var")
    shutil.rmtree(path, ignore_errors=True)


async def test_embedded_database_survives_a_restart(embedded_dir, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    email = unique_email()
    credentials = {"email": email, "password": PASSWORD}
    async with aiohttp.ClientSession() as session:
        async with server_process(embedded_dir, "", "") as server:
            async with session.post(server.url + "/api/v1/auth/signup", json=credentials) as r:
                assert r.status == 201
            assert "SECRET_KEY is not set" in server.output()
        key = (embedded_dir / "var" / "secret_key").read_text()
        assert len(key) >= 32 and key not in server.output()
        async with (
            server_process(embedded_dir, "", "") as server,
            session.post(server.url + "/api/v1/auth/login", json=credentials) as r,
        ):
            assert r.status == 200
    assert (embedded_dir / "var" / "pgdata" / "PG_VERSION").exists()


async def test_scratch_databases_keep_a_unix_socket_url(embedded_dir):
    """`postgresql://user@/db?host=/dir`: the throwaway database is on that same server."""
    admin = await asyncio.to_thread(start_embedded, embedded_dir / "var")
    assert "host=" in admin
    async with scratch.scratch_database(admin, "chat_socket") as url:
        assert "host=" in url
        conn = await asyncpg.connect(url)
        try:
            assert (await conn.fetchval("SELECT current_database()")).startswith("chat_socket_")
        finally:
            await conn.close()


@pytest.mark.parametrize(
    ("sig", "workers"),
    [(signal.SIGTERM, "1"), (signal.SIGINT, "1"), (signal.SIGTERM, "2")],
    ids=["sigterm", "ctrl-c", "workers-parent"],
)
async def test_the_embedded_database_stops_with_the_server(embedded_dir, monkeypatch, sig, workers):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    var = embedded_dir / "var"
    async with server_process(embedded_dir, "", "", WORKERS=workers) as server:
        assert embedded_running(var)
        assert await server.stop(sig) == 0
        assert "stopped the embedded PostgreSQL" in server.output()
    assert not embedded_running(var)


async def test_a_database_started_by_another_process_is_left_running(embedded_dir, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    var = embedded_dir / "var"
    await asyncio.to_thread(start_embedded, var)
    async with server_process(embedded_dir, "", "") as server:
        assert await server.stop() == 0
    assert embedded_running(var)
