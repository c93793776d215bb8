"""Fan-out across server instances through PostgreSQL LISTEN/NOTIFY.

Every instance publishes what happens to the replies it generates (a message
stored, start, tokens, errors, end) and every other instance mirrors them, so
a user's tabs on any instance see the conversation live and `resume` works
anywhere. `cancel` travels the other way, to the instance that generates.

Events are batched: while one NOTIFY round trip is under way the next events
gather, and consecutive tokens of one reply travel as one event. Each payload
stays under NOTIFY's 8,000-byte limit: a message text too long for that is
read back from its row instead, and a long run of tokens is cut in pieces.

Who is there. Each instance listens on a connection named
`chat-fanout:<instance id>`; once a second, every instance lists those names in
`pg_stat_activity` for its database. The rules:

- An instance alone publishes nothing (no NOTIFY round trip, no self-delivery):
  only `hello` and `cancel` always go out.
- A listener that (re)connects says `hello`. Whoever hears a `hello`, or sees
  a new name in the list, publishes a `sync` of the replies it generates now
  (the reply and every token so far), so an instance that appears mid-reply,
  or one whose listener came back after missing events, mirrors those replies
  from their start; later events continue them (mirrors skip tokens they
  already have). What a newcomer cannot get is the `message` echo of a message
  stored in the moment between its `hello` and the others hearing it.
- A name gone from the list for `GONE_AFTER_S` means that instance died (its
  process is gone and PostgreSQL closed its sessions): its mirrored replies
  end at once with `unavailable`, and the text so far is stored as the reply
  (`finish_reason` error), so every `end` is in the history. Mirrors that hear
  nothing for `ORPHAN_AFTER_S` end the same way (a partitioned instance).
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
from server.db.listen import Listener

if TYPE_CHECKING:
    from server.chat.channel import Connections
    from server.chat.replies import Reply, ReplyManager

log = logging.getLogger(__name__)

CHANNEL = "chat_events"
MAX_PAYLOAD = 7900
ORPHAN_AFTER_S = 60.0
LISTENER_PREFIX = "chat-fanout:"
PEER_POLL_S = 1.0
GONE_AFTER_S = 5.0
MAX_RECONNECT_DELAY_S = 2.0
ALWAYS_SENT = frozenset({"hello", "cancel"})

_PEERS = (
    "SELECT substr(application_name, $1) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name LIKE $2"
)


class FanOut:
    """This instance's side of the fan-out: publisher, listener, mirrors, peer watch."""

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
        self.peers: frozenset[str] = frozenset()  # other instances' ids, as last seen
        self.sent = 0  # NOTIFY payloads published (tests and the scaling note read it)
        self._outbox: list[dict[str, Any]] = []
        self._publisher: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._listen = Listener(
            dsn,
            CHANNEL,
            self._on_notify,
            application_name=LISTENER_PREFIX + self.instance,
            on_connect=self._say_hello,
            on_lost=self._forget_peers,
            max_delay_s=MAX_RECONNECT_DELAY_S,
        )
        self._seen: dict[tuple[int, str], float] = {}
        self._origin: dict[tuple[int, str], str] = {}  # mirror → the instance generating it
        self._absent_since: dict[str, float] = {}
        self._hello_at: dict[str, float] = {}  # when each peer's last hello was heard
        self.listening = self._listen.listening

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen.run(), name="fanout listen"),
            asyncio.create_task(self._consume(), name="fanout consume"),
            asyncio.create_task(self._sweep_orphans(), name="fanout sweep"),
            asyncio.create_task(self._watch_peers(), name="fanout peers"),
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
        await self._listen.close()

    # -- publishing (events of replies generated here) -------------------------------------

    def message_stored(
        self, user_id: int, client_id: str, message_id: int, text: str, timestamp: datetime
    ) -> None:
        if not self.peers:  # the hot path when alone: build nothing
            return
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
        if not self.peers:
            return
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
        if not self.peers:
            return
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
        if not self.peers:
            return
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

    def _sync(self) -> None:
        """Publish the replies generated here, from their start, for a newcomer to mirror."""
        for reply in list(self.replies.active.values()):
            if not reply.local or reply.end_frame is not None:
                continue
            base = {"u": reply.user_id, "id": reply.id}
            self._publish({"k": "sync", **base, "mid": reply.message_id})
            if reply.started:
                self._publish({"k": "start", **base, "mid": reply.message_id, "src": reply.sources})
                if reply.tokens:
                    self._publish({"k": "tok", **base, "seq": 0, "t": list(reply.tokens)})

    def _publish(self, event: dict[str, Any]) -> None:
        if not self.peers and event["k"] not in ALWAYS_SENT:
            return
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
                self.sent += len(payloads)
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

    # -- who is there ----------------------------------------------------------------------

    async def _watch_peers(self) -> None:
        while True:
            try:
                await self.poll_peers()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Not knowing who is there: anyone seen next time is new, and gets a sync.
                log.debug("fan-out could not list the instances: %s", exc)
                self.peers = frozenset()
            await asyncio.sleep(PEER_POLL_S)

    async def poll_peers(self) -> frozenset[str]:
        """List the other instances now; sync to newcomers, end the mirrors of the gone."""
        asked_at = time.monotonic()
        rows = await self.pool.fetch(_PEERS, len(LISTENER_PREFIX) + 1, LISTENER_PREFIX + "%")
        # A hello heard while the list was on its way is newer than the list.
        heard = {p for p, at in self._hello_at.items() if at >= asked_at}
        self._hello_at = {p: at for p, at in self._hello_at.items() if at >= asked_at}
        found = (frozenset(r[0] for r in rows) | heard) - {self.instance}
        if found - self.peers:
            self.peers = self.peers | found
            self._sync()
        self.peers = found
        now = time.monotonic()
        for origin in set(self._origin.values()):
            if origin in found:
                self._absent_since.pop(origin, None)
            elif now - self._absent_since.setdefault(origin, now) >= GONE_AFTER_S:
                log.warning("instance %s is gone: its replies end here", origin)
                await self._end_mirrors_of(origin, "the instance generating this reply is gone")
                self._absent_since.pop(origin, None)
        return found

    # -- receiving (mirrors of replies generated elsewhere) --------------------------------

    async def _say_hello(self, conn: asyncpg.Connection) -> None:
        """A (re)connected listener announces itself: the others sync their replies to it."""
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, self._prefix + '{"k":"hello"}')

    def _forget_peers(self) -> None:
        self.peers = frozenset()  # events were missed: everyone syncs again

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        origin, _, body = payload.partition("|")
        if origin == self.instance:
            return
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("fan-out ignored a malformed event")
            return
        event["o"] = origin
        self._inbox.put_nowait(event)

    async def _consume(self) -> None:
        while True:
            event = await self._inbox.get()
            try:
                await self._apply(event)
            except Exception:
                log.exception("fan-out could not apply a %s event", event.get("k"))

    async def _apply(self, event: dict[str, Any]) -> None:
        from server.chat.replies import Reply

        kind = event["k"]
        if kind == "hello":
            self.peers = self.peers | {event["o"]}
            self._hello_at[event["o"]] = time.monotonic()
            self._sync()
            return
        user_id, client_id = event["u"], event["id"]
        key = (user_id, client_id)
        if kind == "cancel":
            self.replies.cancel(user_id, client_id)
            return
        mirror = self.replies.active.get(key)
        if kind in ("msg", "sync"):
            if mirror is not None and mirror.local:
                return
            self._seen[key] = time.monotonic()
            self._origin[key] = event["o"]
            if mirror is None:
                mirror = Reply(user_id, client_id, event["mid"], "", local=False)
                self.replies.active[key] = mirror
            if kind == "sync":
                return
            text = event["text"]
            if text is None:
                text = await self.pool.fetchval(
                    "SELECT message FROM chat_history WHERE id = $1", event["mid"]
                )
            mirror.question = text or ""
            echo = encode_bytes(Echo(client_id, event["mid"], text or "", event["ts"]))
            for conn in self.connections.of(user_id):
                if client_id not in conn.sent:  # a racing sender follows after its ack
                    conn.push(echo)
                    mirror.followers.add(conn)
            return
        if mirror is None or mirror.local:
            return  # began before this instance listened; resume reads the stored reply
        self._seen[key] = time.monotonic()
        if kind == "start":
            if not mirror.started:
                mirror.begin(event["src"] or [])
        elif kind == "tok":
            # Tokens a mirror has already (a sync after live events) are skipped; a gap
            # (events missed) waits for the sync that follows every reconnect.
            have, seq, pieces = len(mirror.tokens), event["seq"], event["t"]
            if mirror.started and seq <= have < seq + len(pieces):
                mirror.add_tokens(pieces[have - seq :])
        elif kind == "err":
            mirror.fail(ErrorCode(event["code"]), event["msg"])
        elif kind == "end":
            mirror.finish(event["rid"], event["fr"])
            self._forget(key)

    def _forget(self, key: tuple[int, str]) -> None:
        self.replies.active.pop(key, None)
        self._seen.pop(key, None)
        self._origin.pop(key, None)

    async def _end_mirror(self, mirror: Reply, message: str) -> None:
        """The instance generating it is gone: end it here, storing the text so far."""
        self._forget(mirror.key)
        if not mirror.started:
            mirror.begin([])
        mirror.fail(ErrorCode.UNAVAILABLE, message)
        reply_id = None
        try:
            stored = await self.replies.store.add_reply(
                mirror.user_id,
                mirror.message_id,
                "".join(mirror.tokens),
                "error",
                mirror.sources or [],
                [len(t) for t in mirror.tokens],
            )
            reply_id = stored.message_id
        except Exception as exc:
            log.warning("reply to %s could not be stored: %s", mirror.message_id, exc)
        mirror.finish(reply_id, "error")

    async def _end_mirrors_of(self, origin: str, message: str) -> None:
        keys = [k for k, o in self._origin.items() if o == origin]
        for key in keys:
            mirror = self.replies.active.get(key)
            if mirror is None or mirror.local:
                self._forget(key)
            else:
                await self._end_mirror(mirror, message)

    async def _sweep_orphans(self) -> None:
        """Mirrors silent for long whose instance is not seen either end with an error."""
        while True:
            await asyncio.sleep(ORPHAN_AFTER_S / 4)
            cutoff = time.monotonic() - ORPHAN_AFTER_S
            for key, seen in list(self._seen.items()):
                mirror = self.replies.active.get(key)
                if mirror is None or mirror.local:
                    self._forget(key)
                elif seen < cutoff and self._origin.get(key) not in self.peers:
                    await self._end_mirror(mirror, "the instance generating this reply is gone")


__all__ = ["CHANNEL", "LISTENER_PREFIX", "FanOut"]
