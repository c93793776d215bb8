"""Shared fixtures: a real PostgreSQL database per test session, the real app on a real socket.

With DATABASE_URL set, a fresh database is created on that server for the session
and dropped at the end; without it, an embedded PostgreSQL (pgserver) under
`var/test` is used the same way. Every test gets users of its own, so
tests never see each other's rows. Helpers (test users, the test secret) are in
accounts.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.db import scratch
from server.settings import Settings
from tests.accounts import ROOT, TEST_SECRET, signup
from tests.processes import MACHINE_REDIS, PrivateRedis, redis_answers

# Embedding the knowledge base takes seconds per server start; the tests of hybrid
# retrieval (tests/answers/test_semantic.py) turn it on where they need it. Servers
# started as subprocesses inherit this.
os.environ.setdefault("SEMANTIC_RETRIEVAL", "off")


@pytest.fixture(scope="session")
def admin_database_url() -> Iterator[str]:
    with scratch.admin_database(ROOT / "var" / "test") as url:
        yield url


@pytest.fixture(scope="session")
def database_url(admin_database_url: str) -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    url = asyncio.run(scratch.create_database(admin_database_url, "chat_test"))
    yield url
    asyncio.run(scratch.drop_database(admin_database_url, url))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The machine's Redis when it answers at 127.0.0.1:6379, else a private `redis-server`
    for the session (never a skip). Sessions sharing a Redis do not collide: the fan-out's
    keys begin with the name of the session's own database."""
    if redis_answers(*MACHINE_REDIS):
        yield "redis://{}:{}/0".format(*MACHINE_REDIS)
        return
    with PrivateRedis() as server:
        yield server.url


@pytest.fixture(params=["notify", "redis"])
def fanout_url(request: pytest.FixtureRequest) -> str | None:
    """Each fan-out transport in turn: None (PostgreSQL LISTEN/NOTIFY) or a Redis URL."""
    if request.param == "notify":
        return None
    return request.getfixturevalue("redis_url")


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "secret_key": TEST_SECRET,
            "bcrypt_rounds": 4,
            "llm_token_delay_ms": 0.0,
            "var_dir": tmp_path / "var",
            "db_pool_min": 1,
            "db_pool_max": 5,
            "shutdown_timeout_s": 2.0,
            # Every test signs up from 127.0.0.1 into one database: the limit's own
            # tests turn it on with an address of their own.
            "signups_per_hour_per_address": 0,
            "semantic_retrieval": False,
        }
        values.update(overrides)
        return Settings.from_env({}, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def client(aiohttp_client, settings: Settings) -> TestClient:
    """The real app on a real socket, with a real database."""
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, for setting up and checking rows."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def user(client: TestClient) -> dict[str, Any]:
    email, token, user_id = await signup(client)
    return {
        "email": email,
        "token": token,
        "id": user_id,
        "headers": {"Authorization": f"Bearer {token}"},
    }
