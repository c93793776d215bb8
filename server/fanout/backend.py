"""What the chat needs of a fan-out transport: publish, subscribe, who else listens.

A transport carries `server.fanout.events` between the instances that share a
database: PostgreSQL LISTEN/NOTIFY (`server.fanout.postgres`, the default:
nothing else to run) and a Redis Stream (`server.fanout.redis`, `FANOUT_URL`)
implement the same `Backend`; `transport` picks one. A transport never delivers
an instance's own events back to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from server.fanout.events import Event, EventError, decode

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Received:
    """An event published by instance `origin`."""

    origin: str
    event: Event


@dataclass(frozen=True, slots=True)
class Missed:
    """The transport lost its subscription for a while: events may have been missed.
    (It says `Hello` again once it is back, so the others sync their replies to it.)"""


Delivery = Received | Missed


class Flag(asyncio.Event):
    """An `asyncio.Event` that also tells its watchers when it is set or cleared: a
    transport's `listening`, which the `chat_fanout_connected` gauge follows."""

    def __init__(self) -> None:
        super().__init__()
        self._watchers: list[Callable[[bool], None]] = []

    def watch(self, watcher: Callable[[bool], None]) -> None:
        self._watchers.append(watcher)
        watcher(self.is_set())

    def set(self) -> None:
        if not self.is_set():
            super().set()
            for watcher in self._watchers:
                watcher(True)

    def clear(self) -> None:
        if self.is_set():
            super().clear()
            for watcher in self._watchers:
                watcher(False)


class Backend(Protocol):
    """A fan-out transport. `start` before use, `close` at the end."""

    #: This instance's id, unique among the instances listening.
    instance: str
    #: Set while the subscription is live (clear: the fan-out is degraded).
    listening: Flag
    #: Payloads published so far (tests and the scaling note read it).
    sent: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def publish(self, event: Event) -> None:
        """Send `event` to the other instances; never blocks (events are batched)."""

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        """The other instances' events, in order, from now on, and `Missed` markers."""
        ...

    async def peers(self) -> frozenset[str]:
        """The ids of the other instances listening now."""
        ...


def transport(fanout_url: str | None, dsn: str, pool: asyncpg.Pool) -> Backend:
    """The transport `FANOUT_URL` names: Redis, or (unset) PostgreSQL LISTEN/NOTIFY."""
    if fanout_url:
        from server.fanout.redis import RedisBackend

        return RedisBackend(fanout_url, pool)
    from server.fanout.postgres import PostgresBackend

    return PostgresBackend(dsn, pool)


class Subscribers:
    """A transport's local subscribers, each with a queue of its own, fed in order."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Delivery]] = set()

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Delivery]]:
        queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._queues.add(queue)
        try:
            yield Subscription(queue)
        finally:
            self._queues.discard(queue)

    def deliver(self, delivery: Delivery) -> None:
        for queue in self._queues:
            queue.put_nowait(delivery)

    def deliver_payload(self, payload: str) -> None:
        """Decode and deliver one payload another instance sent (a bad one is logged)."""
        try:
            origin, event = decode(payload)
        except EventError as exc:
            log.warning("fan-out ignored a malformed event: %s", exc)
            return
        self.deliver(Received(origin, event))


class Subscription:
    """The deliveries to one subscriber, in order (an endless async iterator)."""

    def __init__(self, queue: asyncio.Queue[Delivery]) -> None:
        self._queue = queue

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        return await self._queue.get()
