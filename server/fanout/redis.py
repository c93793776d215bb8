"""The fan-out over Redis (`FANOUT_URL=redis://host:port/db`): for deployments whose
PostgreSQL should not carry it.

A stream, not pub/sub. PUBLISH is at-most-once: a subscriber whose connection
blinks loses what was published meanwhile. Here every instance appends its
batches of events to one Redis Stream (XADD) and reads it (XREAD) from the last
entry it has read, so after a lost connection it reads on from where it was and
misses nothing. The stream keeps about `KEEP_S` seconds of entries (XADD's
MINID trimming by the entries' own ids, which are Redis's clock, not ours).
When the entry it read last is gone as it comes back (Redis restarted, or it
was away for longer than that), some events may be lost: it says `Missed` and
`Hello`, so the chat syncs the replies in flight both ways, as after a lost
LISTEN connection, and it still reads everything the stream has after that
entry (after a restart: the whole new stream, where the events that waited for
Redis went).

Publishing: events are batched (`server.fanout.batching`), one XADD per batch
with the payloads one per line. While Redis is away a batch waits and is tried
again, and `peers` answers with the instances last seen, so the chat goes on
publishing and the events wait too (a reply that ends meanwhile reaches the
other instances' tabs when Redis is back); beyond `MAX_WAITING` events waiting,
they are dropped and this instance says `Missed` (it syncs its replies in flight
to the others once Redis is back). PostgreSQL stays the record: nothing
acknowledged to a client depends on Redis.

Who listens: while its reader is connected, each instance refreshes the key
`…:alive:<id>`, which expires after `ALIVE_TTL_S`, and names itself in the set
`…:instances`; `peers` lists the members whose key is still there. A killed
instance drops out within `ALIVE_TTL_S`.

Keys begin `chat-fanout:<database name>:`: deployments (and test sessions) that
share a Redis but not a database never hear each other, as with NOTIFY, which
is per database. Every key expires when nobody refreshes it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from server.db import queries
from server.fanout.backend import Delivery, Flag, Missed, Subscribers
from server.fanout.batching import Batcher
from server.fanout.events import Event, Hello, encode

log = logging.getLogger(__name__)

KEY_PREFIX = "chat-fanout:"
KEEP_S = 120.0
READ_BLOCK_MS = 1000
READ_COUNT = 1000
HEARTBEAT_S = 1.0
ALIVE_TTL_S = 3.0
MAX_WAITING = 100_000
COMMAND_TIMEOUT_S = 5.0
RECONNECT_FIRST_S = 0.1
MAX_RECONNECT_DELAY_S = 2.0
FIELD = b"e"

# What a lost or refused connection raises (redis-py wraps most of it in RedisError).
RedisDown = (RedisError, OSError, TimeoutError)


class RedisBackend:
    """One Redis Stream that every instance appends to and reads; a heartbeat key each."""

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self.instance = uuid.uuid4().hex[:12]
        self.pool = pool
        self.sent = 0
        self.listening = Flag()
        # Failures are ours to handle (reconnect with backoff), not redis-py's to retry.
        self.redis = Redis.from_url(
            url,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            client_name=KEY_PREFIX + self.instance,
        )
        self._subscribers = Subscribers()
        self._batches = Batcher(self._send, MAX_WAITING, self._missed)
        self._own = (self.instance + "|").encode()
        self._newest_ms: int | None = None  # the time of this instance's newest entry
        self._tasks: list[asyncio.Task[None]] = []
        self._peers: frozenset[str] | None = None  # as last seen
        self.prefix = KEY_PREFIX

    async def start(self) -> None:
        self.prefix = f"{KEY_PREFIX}{await queries.database_name(self.pool)}:"
        self.stream = self.prefix + "events"
        self._instances = self.prefix + "instances"
        self._tasks = [
            asyncio.create_task(self._read(), name="fanout read"),
            asyncio.create_task(self._heartbeat(), name="fanout heartbeat"),
        ]

    async def close(self) -> None:
        await self._batches.close(5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.listening.is_set():
            self.listening.clear()
            try:  # the others need not wait for the key to expire
                async with asyncio.timeout(1):
                    await self.redis.delete(self._alive(self.instance))
            except RedisDown:
                pass
        await self.redis.aclose()

    def _alive(self, instance: str) -> str:
        return f"{self.prefix}alive:{instance}"

    # -- publishing ------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        self._batches.add(event)

    async def _send(self, events: list[Event]) -> None:
        """Append one batch; while Redis is away, wait and try again."""
        body = "\n".join(encode(self.instance, event) for event in events)
        delay = RECONNECT_FIRST_S
        while True:
            try:
                await self._append(body)
                self.sent += len(events)
                return
            except RedisDown as exc:
                if delay == RECONNECT_FIRST_S:
                    log.warning("fan-out could not publish %d events: %s", len(events), exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY_S)

    async def _append(self, body: str) -> bytes:
        """XADD one entry, trimming what is older than `KEEP_S`; returns its id."""
        minid = None
        if self._newest_ms is not None:
            minid = f"{self._newest_ms - int(KEEP_S * 1000)}-0"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.stream, {FIELD: body}, minid=minid, approximate=True)
            pipe.pexpire(self.stream, int(KEEP_S * 2000))
            entry_id, _ = await pipe.execute()
        self._newest_ms = int(entry_id.split(b"-")[0])
        return entry_id

    def _missed(self) -> None:
        self._subscribers.deliver(Missed())

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        return self._subscribers.subscribe()

    async def _read(self) -> None:
        """Read the stream until cancelled, on from the last entry read after a reconnect."""
        last: bytes | None = None
        delay = RECONNECT_FIRST_S
        while True:
            try:
                if last is None:
                    # Read on from our own hello: the others' syncs to us come after it.
                    last = await self._append(encode(self.instance, Hello()))
                elif not await self.redis.xrange(self.stream, last, last):
                    log.warning("fan-out: Redis lost events while away; the replies sync again")
                    self._missed()
                    first = await self.redis.xrange(self.stream, count=1)
                    if first and _id(first[0][0]) <= _id(last):
                        last = b"0-0"  # another stream (a clock behind ours): read it all
                    await self._append(encode(self.instance, Hello()))
                self.listening.set()
                await self._beat()
                delay = RECONNECT_FIRST_S
                while True:
                    streams = await self.redis.xread(
                        {self.stream: last}, count=READ_COUNT, block=READ_BLOCK_MS
                    )
                    for _name, entries in streams:
                        for entry_id, fields in entries:
                            last = entry_id
                            self._on_entry(fields)
            except asyncio.CancelledError:
                raise
            except RedisDown as exc:
                if self.listening.is_set():
                    log.warning("fan-out lost Redis (%s); reconnecting", exc)
                self.listening.clear()
            except Exception:
                log.exception("fan-out reading failed; reading again")
                self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY_S)

    def _on_entry(self, fields: dict[bytes, bytes]) -> None:
        body = fields.get(FIELD, b"")
        if body.startswith(self._own):
            return
        for payload in body.decode(errors="replace").split("\n"):
            self._subscribers.deliver_payload(payload)

    # -- who listens -----------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if self.listening.is_set():
                try:
                    await self._beat()
                except RedisDown as exc:
                    log.debug("fan-out heartbeat failed: %s", exc)

    async def _beat(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._alive(self.instance), b"1", px=int(ALIVE_TTL_S * 1000))
            pipe.sadd(self._instances, self.instance)
            pipe.pexpire(self._instances, int(ALIVE_TTL_S * 10_000))
            await pipe.execute()

    async def peers(self) -> frozenset[str]:
        """The instances whose key is there; while Redis is away, those last seen."""
        try:
            self._peers = await self._list_peers()
        except RedisDown:
            if self._peers is None:
                raise
        return self._peers

    async def _list_peers(self) -> frozenset[str]:
        members = sorted(m.decode() for m in await self.redis.smembers(self._instances))
        if not members:
            return frozenset()
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.exists(self._alive(member))
            alive = await pipe.execute()
        gone = [m for m, up in zip(members, alive, strict=True) if not up]
        if gone:
            await self.redis.srem(self._instances, *gone)
        return frozenset(m for m, up in zip(members, alive, strict=True) if up) - {self.instance}


def _id(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id (`<ms>-<seq>`) as numbers, to compare."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
