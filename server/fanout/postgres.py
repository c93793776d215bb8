"""The fan-out over PostgreSQL LISTEN/NOTIFY: the instances need nothing but their database.

Publishing: events are batched (`server.fanout.batching`), one NOTIFY round
trip per batch. Each payload stays under NOTIFY's 8,000-byte limit
(`events.fit`). A batch that cannot be sent is logged and dropped: the
listeners lost with the database say `Missed`, and the chat syncs again.

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
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from server.db import queries
from server.db.listen import Listener
from server.fanout.backend import Delivery, Flag, Missed, Subscribers
from server.fanout.batching import Batcher
from server.fanout.events import Event, Hello, encode, fit

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
        self._batches = Batcher(self._notify)
        self._subscribers = Subscribers()
        self._listen = Listener(
            dsn,
            CHANNEL,
            self._on_notify,
            application_name=LISTENER_PREFIX + self.instance,
            on_connect=self._say_hello,
            on_lost=self._on_lost,
            max_delay_s=MAX_RECONNECT_DELAY_S,
        )
        # The listener sets and clears it; watchers (the gauge) hear of each change.
        self.listening = self._listen.listening = Flag()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen.run(), name="fanout listen")

    async def close(self) -> None:
        await self._batches.close(5)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._listen.close()

    # -- publishing ------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        self._batches.add(event)

    async def _notify(self, events: list[Event]) -> None:
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

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        return self._subscribers.subscribe()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if not payload.startswith(self.instance + "|"):
            self._subscribers.deliver_payload(payload)

    async def _say_hello(self, conn: asyncpg.Connection) -> None:
        """A (re)connected listener announces itself: the others sync their replies to it."""
        await queries.notify(conn, CHANNEL, encode(self.instance, Hello()))

    def _on_lost(self) -> None:
        self._subscribers.deliver(Missed())

    # -- who listens -----------------------------------------------------------------------

    async def peers(self) -> frozenset[str]:
        names = await queries.listeners_named(self.pool, LISTENER_PREFIX)
        return frozenset(names) - {self.instance}
