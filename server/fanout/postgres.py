"""The fan-out over PostgreSQL LISTEN/NOTIFY: the instances need nothing but their database.

Publishing: events are batched: while one NOTIFY round trip is under way the
next events gather, and consecutive tokens of one reply travel as one event.
Each payload stays under NOTIFY's 8,000-byte limit (`events.fit`).

Subscribing: one LISTEN connection of its own (`server.db.listen`), which
says `Hello` after every (re)connection and reports `Missed` when it was lost.

Who listens: each instance's LISTEN connection is named
`chat-fanout:<instance id>`; `peers` lists those names in `pg_stat_activity`
for the database.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg

from server.db import queries
from server.db.listen import Listener
from server.fanout.backend import Delivery, Missed, Received
from server.fanout.events import Event, EventError, Hello, Tokens, decode, encode, fit

log = logging.getLogger(__name__)

CHANNEL = "chat_events"
MAX_PAYLOAD = 7900
LISTENER_PREFIX = "chat-fanout:"
MAX_RECONNECT_DELAY_S = 2.0


class PostgresBackend:
    """LISTEN/NOTIFY on `CHANNEL`: publishes through the pool, listens on its own connection."""

    def __init__(self, dsn: str, pool: asyncpg.Pool) -> None:
        self.instance = uuid.uuid4().hex[:12]
        self.pool = pool
        self.sent = 0
        self._outbox: list[Event] = []
        self._publisher: asyncio.Task[None] | None = None
        self._subscribers: set[asyncio.Queue[Delivery]] = set()
        self._listen = Listener(
            dsn,
            CHANNEL,
            self._on_notify,
            application_name=LISTENER_PREFIX + self.instance,
            on_connect=self._say_hello,
            on_lost=self._on_lost,
            max_delay_s=MAX_RECONNECT_DELAY_S,
        )
        self.listening = self._listen.listening
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen.run(), name="fanout listen")

    async def close(self) -> None:
        if self._publisher is not None:
            await asyncio.wait({self._publisher}, timeout=5)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._listen.close()

    # -- publishing ------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        last = self._outbox[-1] if self._outbox else None
        if (
            isinstance(event, Tokens)
            and isinstance(last, Tokens)
            and last.client_id == event.client_id
            and last.user_id == event.user_id
            and last.seq + len(last.tokens) == event.seq
        ):
            self._outbox[-1] = replace(last, tokens=last.tokens + event.tokens)
            return
        self._outbox.append(event)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._outbox:
            events, self._outbox = self._outbox, []
            payloads = []
            for event in events:
                fitted = fit(self.instance, event, MAX_PAYLOAD)
                if not fitted:
                    log.warning("fan-out event too large to publish: %r", event)
                payloads += fitted
            try:
                await queries.notify_many(self.pool, CHANNEL, payloads)
                self.sent += len(payloads)
            except Exception as exc:
                log.warning("fan-out could not publish %d events: %s", len(payloads), exc)

    # -- subscribing -----------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Delivery]]:
        queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield Subscription(queue)
        finally:
            self._subscribers.discard(queue)

    def _deliver(self, delivery: Delivery) -> None:
        for queue in self._subscribers:
            queue.put_nowait(delivery)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(self.instance + "|"):
            return
        try:
            origin, event = decode(payload)
        except EventError as exc:
            log.warning("fan-out ignored a malformed event: %s", exc)
            return
        self._deliver(Received(origin, event))

    async def _say_hello(self, conn: asyncpg.Connection) -> None:
        """A (re)connected listener announces itself: the others sync their replies to it."""
        await queries.notify(conn, CHANNEL, encode(self.instance, Hello()))

    def _on_lost(self) -> None:
        self._deliver(Missed())

    # -- who listens -----------------------------------------------------------------------

    async def peers(self) -> frozenset[str]:
        names = await queries.listeners_named(self.pool, LISTENER_PREFIX)
        return frozenset(names) - {self.instance}


class Subscription:
    """The deliveries to one subscriber, in order (an endless async iterator)."""

    def __init__(self, queue: asyncio.Queue[Delivery]) -> None:
        self._queue = queue

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        return await self._queue.get()
