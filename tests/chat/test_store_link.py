"""Workers' rows through the shared writer (`server.chat.store_link`, `store_writer`), against
a real database over real Unix sockets: one group commit for every worker, the store's
refusals carried back, and nothing lost or doubled when the writer is away or goes."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from server.chat.store import (
    ChatStore,
    IdConflict,
    RateLimited,
    ReplyRow,
    UnknownConversation,
)
from server.chat.store_link import LinkedStore
from server.chat.store_writer import WriterLink, serve_writer
from server.db import migrations
from server.db.pool import BATCH_SETTINGS, create_pool
from server.http import BIGINT_MAX
from tests.db.test_conversations_migration import add_user

ROW = ReplyRow("Blue, mostly.", "stop", [{"id": 1, "topic": "Sky"}], [5, 8])


@pytest.fixture
async def pool(db: asyncpg.Connection, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrations.migrate(db)
    pool = await create_pool(database_url, 1, 4, BATCH_SETTINGS)
    yield pool
    await pool.close()


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "writer.sock")


class Writer:
    """The writer's store on its socket, with its links at hand to cut them."""

    def __init__(self, pool: asyncpg.Pool, path: str, **store_args: float) -> None:
        self.store = ChatStore(pool, batch_pool=pool, **store_args)
        self.path = path
        self.links: list[WriterLink] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> Writer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(self._link, self.path)
        return self

    def _link(self) -> WriterLink:
        self.links.append(WriterLink(self.store))
        return self.links[-1]

    async def die(self) -> None:
        """As the process would: the socket and every link gone at once."""
        assert self.server is not None
        self.server.close()
        for link in self.links:
            link.close()
        await self.server.wait_closed()

    async def close(self) -> None:
        await self.die()
        await self.store.close()


@pytest.fixture
async def linked(pool: asyncpg.Pool, path: str) -> AsyncIterator[list[LinkedStore]]:
    """Two workers' stores, each with its own store behind the link."""
    stores = [LinkedStore(ChatStore(pool, batch_pool=pool), path, retry_s=0.05) for _ in "ab"]
    for store in stores:
        store.start()
    yield stores
    for store in stores:
        await store.close()


async def link_up(*stores: LinkedStore) -> None:
    await asyncio.wait_for(asyncio.gather(*(s.linked.wait() for s in stores)), 5)


async def users(db: asyncpg.Connection, n: int) -> list[int]:
    return [await add_user(db, f"{uuid.uuid4().hex}@example.com") for _ in range(n)]


async def rows_of(db: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, client_id, reply_to, message FROM chat_history WHERE user_id = $1 ORDER BY id",
        user_id,
    )


async def test_two_workers_rows_share_the_writers_batches(db, pool, path, linked):
    writer = await Writer(pool, path, wait_s=0.02).start()
    try:
        await link_up(*linked)
        ids = await users(db, 2)
        asked = [
            store.add_message(user_id, f"m{n}", f"question {n}")
            for store, user_id in zip(linked, ids, strict=True)
            for n in range(20)
        ]
        stored = await asyncio.gather(*asked)
        assert all(s.created for s in stored)
        assert len({s.message_id for s in stored}) == 40
        replies = await asyncio.gather(
            *(
                linked[i // 20].add_reply(
                    ids[i // 20], s.message_id, ROW.text, "stop", ROW.sources, [5, 8]
                )
                for i, s in enumerate(stored)
            )
        )
        assert all(r.reply_id is not None for r in replies)
        # Both workers' 40 messages, then their 40 replies, in a handful of commits.
        assert writer.store.batches <= 6
        assert [s.local.batches for s in linked] == [0, 0]
        for user_id in ids:
            rows = await rows_of(db, user_id)
            assert len(rows) == 40
            assert sum(r["reply_to"] is not None for r in rows) == 20
    finally:
        await writer.close()


async def test_resends_exchanges_and_refusals_cross_the_link(db, pool, path, linked):
    writer = await Writer(pool, path, rate_per_minute=3).start()
    try:
        await link_up(*linked)
        store = linked[0]
        (user_id,) = await users(db, 1)
        first = await store.add_message(user_id, "c1", "Why is the sky blue?")
        again = await store.add_message(user_id, "c1", "Why is the sky blue?")
        assert (again.message_id, again.created) == (first.message_id, False)
        assert again.timestamp == first.timestamp
        with pytest.raises(IdConflict):
            await store.add_message(user_id, "c1", "Another text")
        with pytest.raises(UnknownConversation):
            await store.add_message(user_id, "c2", "In a stranger's?", 999_999_999)
        with pytest.raises(UnknownConversation):  # no bigint: refused by the writer's store
            await store.add_message(user_id, "c2", "In none?", BIGINT_MAX + 1)
        with pytest.raises(UnknownConversation):  # past 64 bits: by this worker's own
            await store.add_message(user_id, "c2", "In none?", 2**70)
        message, reply = await store.add_exchange(user_id, "c3", "And at dusk?", None, ROW)
        assert message.created and reply.reply_id is not None
        await store.add_message(user_id, "c4", "A third")
        with pytest.raises(RateLimited) as refused:
            await store.add_message(user_id, "c5", "A fourth within the minute")
        assert refused.value.retry_after >= 1
        rows = await rows_of(db, user_id)
        assert [(r["client_id"], r["reply_to"]) for r in rows] == [
            ("c1", None),
            ("c3", None),
            (None, rows[1]["id"]),
            ("c4", None),
        ]
        assert [s.local.batches for s in linked] == [0, 0]  # the two too large: unqueued
    finally:
        await writer.close()


async def test_without_a_writer_each_worker_stores_its_own_rows(db, linked):
    (user_id,) = await users(db, 1)
    stored = await linked[0].add_message(user_id, "alone", "Is anyone there?")
    assert stored.created
    reply = await linked[0].add_reply(user_id, stored.message_id, ROW.text, "stop", [], [5, 8])
    assert reply.reply_id is not None
    assert linked[0].local.batches == 2
    rows = await rows_of(db, user_id)
    assert [(r["client_id"], r["reply_to"]) for r in rows] == [
        ("alone", None),
        (None, stored.message_id),
    ]


async def test_rows_in_flight_when_the_writer_dies_are_stored_once(db, pool, path, linked):
    # The writer gathers for 300 ms: the rows are queued there, not committed, when it goes.
    writer = await Writer(pool, path, wait_s=0.3).start()
    (user_id,) = await users(db, 1)
    try:
        await link_up(*linked)
        asked = [
            asyncio.ensure_future(linked[n % 2].add_message(user_id, f"f{n}", f"question {n}"))
            for n in range(10)
        ]
        await asyncio.sleep(0.1)
        await writer.die()
        stored = await asyncio.wait_for(asyncio.gather(*asked), 10)
        assert sum(s.local.batches for s in linked) >= 1  # the workers stored them
    finally:
        await writer.store.close()  # its batch commits too: the same rows, found, not doubled
    rows = await rows_of(db, user_id)
    assert sorted(r["client_id"] for r in rows) == sorted(f"f{n}" for n in range(10))
    assert {s.message_id for s in stored} == {r["id"] for r in rows}

    # A writer back on the socket is found again, and carries the rows once more.
    writer = await Writer(pool, path).start()
    try:
        await link_up(*linked)
        before = [s.local.batches for s in linked]
        await linked[0].add_message(user_id, "back", "Are you back?")
        assert [s.local.batches for s in linked] == before
        assert writer.store.batches == 1
    finally:
        await writer.close()


async def test_a_bad_frame_drops_only_that_link(db, pool, path, linked):
    writer = await Writer(pool, path).start()
    try:
        await link_up(*linked)
        reader, sender = await asyncio.open_unix_connection(path)
        sender.write(b"\x00\x00\x00\x03[1]")
        await sender.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the writer
        sender.close()
        (user_id,) = await users(db, 1)
        stored = await linked[1].add_message(user_id, "ok", "Still there?")
        assert stored.created and writer.store.batches == 1
    finally:
        await writer.close()


async def test_the_writer_process_socket_is_private(pool, path):
    store = ChatStore(pool, batch_pool=pool)
    server = await serve_writer(store, path)
    try:
        mode = (await asyncio.to_thread(os.stat, path)).st_mode
        assert mode & 0o777 == 0o600
    finally:
        server.close()
        await store.close()


async def test_a_stuck_writer_is_left_and_the_worker_stores_its_rows(db, pool, path):
    """A writer that accepts and never answers (stopped, or its database hung)."""
    heard: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heard.append(await reader.read(65536))
            await reader.read()  # until the worker gives up on it
        finally:
            writer.close()

    server = await asyncio.start_unix_server(swallow, path)
    store = LinkedStore(ChatStore(pool, batch_pool=pool), path, retry_s=0.05, stale_s=0.4)
    store.start()
    try:
        await link_up(store)
        (user_id,) = await users(db, 1)
        started = asyncio.get_running_loop().time()
        stored = await asyncio.wait_for(store.add_message(user_id, "s1", "Hello?"), 5)
        waited = asyncio.get_running_loop().time() - started
        assert stored.created and heard  # sent to the writer, stored here
        assert 0.4 <= waited < 2
        assert store.local.batches == 1
        assert not store.linked.is_set()  # and not linked again at once
    finally:
        await store.close()
        server.close()
        await server.wait_closed()
