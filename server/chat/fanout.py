"""Fan-out across server instances through PostgreSQL LISTEN/NOTIFY.

Every instance publishes what happens to the replies it generates (a message
stored, start, tokens, errors, end) and every other instance mirrors them, so
a user's tabs on any instance see the conversation live and `resume` works
anywhere. `cancel` travels the other way, to the instance that generates.

Events are batched: while one NOTIFY round trip is under way the next events
gather, and consecutive tokens of one reply travel as one event. Each payload
stays under NOTIFY's 8,000-byte limit; a message text too long for that is
read back from its row instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from protocol import Echo, ErrorCode, encode_bytes, format_timestamp

if TYPE_CHECKING:
    from server.chat.channel import Connections
    from server.chat.replies import Reply, ReplyManager

log = logging.getLogger(__name__)

CHANNEL = "chat_events"
MAX_PAYLOAD = 7900
ORPHAN_AFTER_S = 60.0


class FanOut:
    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        replies: ReplyManager,
        connections: Connections,
    ) -> None:
        self.instance = uuid.uuid4().hex[:12]
        self._prefix = self.instance + "|"
        self.dsn = dsn
        self.pool = pool
        self.replies = replies
        self.connections = connections
        self._outbox: list[dict[str, Any]] = []
        self._publisher: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._listen_conn: asyncpg.Connection | None = None
        self._seen: dict[tuple[int, str], float] = {}
        self.listening = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="fanout listen"),
            asyncio.create_task(self._consume(), name="fanout consume"),
            asyncio.create_task(self._sweep_orphans(), name="fanout sweep"),
        ]
        try:
            await asyncio.wait_for(self.listening.wait(), 10)
        except TimeoutError:
            log.warning("fan-out is not listening yet; it keeps trying")

    async def close(self) -> None:
        if self._publisher is not None:
            await asyncio.wait({self._publisher}, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            await self._listen_conn.close(timeout=5)

    # -- publishing (events of replies generated here) -------------------------------------

    def message_stored(
        self, user_id: int, client_id: str, message_id: int, text: str, timestamp: datetime
    ) -> None:
        self._publish(
            {
                "k": "msg",
                "u": user_id,
                "id": client_id,
                "mid": message_id,
                "ts": format_timestamp(timestamp),
                "text": text,
            }
        )

    def started(self, reply: Reply) -> None:
        self._publish(
            {
                "k": "start",
                "u": reply.user_id,
                "id": reply.id,
                "mid": reply.message_id,
                "src": reply.sources,
            }
        )

    def token(self, reply: Reply, piece: str) -> None:
        last = self._outbox[-1] if self._outbox else None
        if (
            last is not None
            and last["k"] == "tok"
            and last["id"] == reply.id
            and (last["u"] == reply.user_id)
        ):
            last["t"].append(piece)
            return
        self._publish(
            {
                "k": "tok",
                "u": reply.user_id,
                "id": reply.id,
                "seq": len(reply.tokens) - 1,
                "t": [piece],
            }
        )

    def error(self, reply: Reply, code: ErrorCode, message: str) -> None:
        self._publish(
            {"k": "err", "u": reply.user_id, "id": reply.id, "code": str(code), "msg": message}
        )

    def ended(self, reply: Reply, reply_id: int | None) -> None:
        self._publish(
            {
                "k": "end",
                "u": reply.user_id,
                "id": reply.id,
                "rid": reply_id,
                "fr": reply.finish_reason,
            }
        )

    def cancel(self, user_id: int, client_id: str) -> None:
        self._publish({"k": "cancel", "u": user_id, "id": client_id})

    def _publish(self, event: dict[str, Any]) -> None:
        self._outbox.append(event)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._outbox:
            events, self._outbox = self._outbox, []
            payloads = [p for e in events for p in self._payloads(e)]
            try:
                await self.pool.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL, payloads
                )
            except Exception as exc:
                log.warning("fan-out could not publish %d events: %s", len(payloads), exc)

    def _payloads(self, event: dict[str, Any]) -> list[str]:
        """The event as NOTIFY payloads, each under the size limit."""
        text = self._prefix + orjson.dumps(event).decode()
        if len(text.encode()) <= MAX_PAYLOAD:
            return [text]
        if event["k"] == "msg":
            return self._payloads({**event, "text": None})
        if event["k"] == "tok" and len(event["t"]) > 1:
            half = len(event["t"]) // 2
            first = {**event, "t": event["t"][:half]}
            second = {**event, "t": event["t"][half:], "seq": event["seq"] + half}
            return self._payloads(first) + self._payloads(second)
        log.warning("fan-out event too large to publish: %s for %s", event["k"], event["id"])
        return []

    # -- receiving (mirrors of replies generated elsewhere) --------------------------------

    async def _listen_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listen_conn = conn
                self.listening.set()
                delay = 0.5
                while not conn.is_closed() and not lost.is_set():
                    # A cheap query now and then notices a dead server promptly.
                    try:
                        await asyncio.wait_for(lost.wait(), 10)
                    except TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("fan-out listener lost the database (%s); reconnecting", exc)
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(self._prefix):
            return
        try:
            self._inbox.put_nowait(orjson.loads(payload.partition("|")[2]))
        except orjson.JSONDecodeError:
            log.warning("fan-out ignored a malformed event")

    async def _consume(self) -> None:
        while True:
            event = await self._inbox.get()
            try:
                await self._apply(event)
            except Exception:
                log.exception("fan-out could not apply a %s event", event.get("k"))

    async def _apply(self, event: dict[str, Any]) -> None:
        from server.chat.replies import Reply

        kind, user_id, client_id = event["k"], event["u"], event["id"]
        key = (user_id, client_id)
        if kind == "cancel":
            self.replies.cancel(user_id, client_id)
            return
        self._seen[key] = time.monotonic()
        mirror = self.replies.active.get(key)
        if kind == "msg":
            text = event["text"]
            if text is None:
                text = await self.pool.fetchval(
                    "SELECT message FROM chat_history WHERE id = $1", event["mid"]
                )
            if mirror is None:
                mirror = Reply(user_id, client_id, event["mid"], text or "", local=False)
                self.replies.active[key] = mirror
            echo = encode_bytes(Echo(client_id, event["mid"], text or "", event["ts"]))
            for conn in self.connections.of(user_id):
                conn.push(echo)
                mirror.followers.add(conn)
            return
        if mirror is None or mirror.local:
            return  # began before this instance listened; resume reads the stored reply
        if kind == "start":
            mirror.begin(event["src"] or [])
        elif kind == "tok":
            if event["seq"] == len(mirror.tokens):
                mirror.add_tokens(event["t"])
        elif kind == "err":
            mirror.fail(ErrorCode(event["code"]), event["msg"])
        elif kind == "end":
            mirror.finish(event["rid"], event["fr"])
            self.replies.active.pop(key, None)
            self._seen.pop(key, None)

    async def _sweep_orphans(self) -> None:
        """Mirrors whose instance went silent (it died) end with an error."""
        while True:
            await asyncio.sleep(ORPHAN_AFTER_S / 4)
            cutoff = time.monotonic() - ORPHAN_AFTER_S
            for key, seen in list(self._seen.items()):
                mirror = self.replies.active.get(key)
                if mirror is None or mirror.local:
                    self._seen.pop(key, None)
                elif seen < cutoff:
                    mirror.fail(ErrorCode.UNAVAILABLE, "the instance generating this reply is gone")
                    mirror.finish(None, "error")
                    self.replies.active.pop(key, None)
                    self._seen.pop(key, None)


__all__ = ["CHANNEL", "FanOut"]
