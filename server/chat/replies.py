"""The one owner of replies: accept a stored message, generate, stream, store, resume, cancel.

A reply belongs to its message, not to the connection that asked: it runs as a
task owned by the `ReplyManager` and goes on when that connection drops. Its
state (`server.chat.reply_state`: waiting, streaming, storing, ended), its
sources, its tokens so far and its end live in the `Reply` object, which every
follower reads: the connections that should see it live. A connection follows
a reply when it sent the message, when it was open as the message arrived (it
got the `message` frame), or when it resumed it.

Everything that changes a reply goes through the manager, which tells the
observers: the user's connections get the protocol's frames (bytes from
`protocol`), the other instances get fan-out events (`server.fanout.events`)
through the `Outbox`, while any listen. Replies generated on another instance
are mirrored here by `server.chat.fanout.FanOut`, through the same manager, so
`resume`, `cancel` and the other tabs work on any instance.

Rules kept here:
- followers get `start`, the `token`s by `seq` with no gap, then `end`;
- the reply row is committed before `end` is sent;
- replies asked on one connection start in the order they were asked
  (`after`: each waits for the one before it);
- `cancel` stops generation at once; what was generated is stored.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from protocol import (
    ConversationChange,
    ConversationEvent,
    End,
    Error,
    ErrorCode,
    FinishReason,
    Pending,
    encode_bytes,
    format_timestamp,
)
from protocol import Echo as EchoFrame
from protocol.wire import ReplyFrames
from server.answers.llm.base import LLMError
from server.chat.reply_state import INTERRUPTIBLE, ReplyState, Step, next_state
from server.chat.store import ChatStore, ReplyRow, StoredMessage
from server.db import conversations, queries
from server.fanout.events import (
    ConversationChanged,
    Ended,
    Failed,
    MessageStored,
    Started,
    Tokens,
)

if TYPE_CHECKING:
    from server.answers.pipeline import AnswerPipeline
    from server.chat.connection import Connection, Connections
    from server.chat.fanout import Outbox
    from server.chat.store_link import LinkedStore
    from server.metrics import Metrics

log = logging.getLogger(__name__)

# A reply that could not be stored is tried again: after 0.5 s, then twice as long each
# time up to 2 s between tries (the tries of many replies share group commits), for
# 10 minutes.
STORE_RETRY_FIRST_S = 0.5
STORE_RETRY_MAX_S = 2.0
STORE_RETRY_FOR_S = 600.0
MIRROR_WAIT_S = 1.0  # how long a resume waits for another instance's reply to show up


class ShuttingDown(Exception):
    """No new message is accepted: the server is shutting down."""


class FrameSink(Protocol):
    """Where a reply's frames go: a connection's outgoing buffer (must not block)."""

    def push(self, frame: bytes) -> None: ...


class Found(enum.Enum):
    """What the database holds for a message id (`ReplyManager.replay_stored`)."""

    REPLAYED = "replayed"  # the message and its reply: the reply was replayed
    NO_REPLY = "no_reply"  # the message, and no reply yet
    UNKNOWN = "unknown"  # no such message


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """A reply as the database holds it, for the REST answer."""

    response: str
    sources: list[dict[str, Any]]
    reply_id: int
    finish_reason: str


@dataclass(eq=False)
class Reply:
    user_id: int
    id: str
    message_id: int
    question: str
    local: bool  # generated here (else a mirror of another instance's)
    conversation_id: int | None = None
    followers: set[FrameSink] = field(default_factory=set)
    state: ReplyState = ReplyState.WAITING
    sources: list[dict[str, Any]] | None = None
    tokens: list[str] = field(default_factory=list)
    end_frame: bytes | None = None
    finish_reason: FinishReason | None = None
    reply_id: int | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    task: asyncio.Task[None] | None = None
    done_callbacks: list[Callable[[], None]] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)  # its message is stored by then
    frames: ReplyFrames = field(init=False)

    def __post_init__(self) -> None:
        self.frames = ReplyFrames(self.id)

    @property
    def key(self) -> tuple[int, str]:
        return (self.user_id, self.id)

    @property
    def started(self) -> bool:
        return self.sources is not None

    def start_frame(self) -> bytes:
        return self.frames.start(self.sources or [])

    def emit(self, frame: bytes) -> None:
        for listener in self.followers:
            listener.push(frame)

    # -- the steps of `reply_state`, shared by local replies and mirrors ------------------

    def begin(self, sources: list[dict[str, Any]]) -> None:
        self.state = next_state(self.state, Step.BEGIN)
        self.sources = sources
        self.emit(self.start_frame())

    def add_tokens(self, pieces: Iterable[str]) -> None:
        if self.state is not ReplyState.STREAMING:
            next_state(self.state, Step.TOKEN)  # raises
        for piece in pieces:
            seq = len(self.tokens)
            self.tokens.append(piece)
            if self.followers:
                self.emit(self.frames.token(seq, piece))

    def fail(self, code: ErrorCode, message: str) -> None:
        self.state = next_state(self.state, Step.FAIL)
        self.error_code = code
        self.error_message = message
        self.emit(encode_bytes(Error(self.id, code, message)))

    def store(self) -> None:
        self.state = next_state(self.state, Step.STORE)

    def finish(self, reply_id: int | None, reason: FinishReason) -> None:
        self.state = next_state(self.state, Step.FINISH)
        self.finish_reason = reason
        self.reply_id = reply_id
        self.end_frame = encode_bytes(End(self.id, reply_id, "".join(self.tokens), reason))  # type: ignore[arg-type]
        self.emit(self.end_frame)
        self.followers.clear()
        self._set_done()

    def _set_done(self) -> None:
        if self.done.is_set():
            return
        self.done.set()
        callbacks, self.done_callbacks = self.done_callbacks, []
        for callback in callbacks:
            callback()

    def follow(self, listener: FrameSink, after_seq: int) -> None:
        """Send `listener` what was streamed after `after_seq`, then keep it following
        (or end). A listener already following gets nothing twice."""
        if listener in self.followers:
            return
        if self.started:
            listener.push(self.start_frame())
            for seq in range(max(after_seq + 1, 0), len(self.tokens)):
                listener.push(self.frames.token(seq, self.tokens[seq]))
        if self.end_frame is not None:
            if not self.started:
                listener.push(self.start_frame())
            listener.push(self.end_frame)
        else:
            self.followers.add(listener)


class ReplyManager:
    """Every reply in flight on this instance, generated here or mirrored.

    Args:
        store: writes messages and replies (group commit).
        pipeline: retrieval and the LLM.
        connections: this instance's open connections (the user's other tabs).
        outbox: the fan-out's publishing side.
        shutdown: set once the server begins to shut down (the one shutdown flag).
        metrics: counts messages, replies, first-token latency and LLM errors.
        instant: the LLM answers at once (the mock without a token delay): a REST
            question is answered before anything is stored, and the question and its
            reply are committed together (one group commit instead of two in a row).
    """

    def __init__(
        self,
        store: ChatStore | LinkedStore,
        pipeline: AnswerPipeline,
        connections: Connections,
        outbox: Outbox,
        shutdown: asyncio.Event,
        metrics: Metrics,
        instant: bool = False,
    ) -> None:
        self.store = store
        self.instant = instant
        self.pipeline = pipeline
        self.connections = connections
        self.outbox = outbox
        self.shutdown = shutdown
        self.metrics = metrics
        self.active: dict[tuple[int, str], Reply] = {}
        # Ended while the database was away: kept (resume replays them as they were sent)
        # while a task stores them once it is back.
        self.unstored: dict[tuple[int, str], Reply] = {}
        self._storing: set[asyncio.Task[None]] = set()

    @property
    def closing(self) -> bool:
        return self.shutdown.is_set()

    def get(self, user_id: int, client_id: str) -> Reply | None:
        key = (user_id, client_id)
        return self.active.get(key) or self.unstored.get(key)

    def pending(self, user_id: int) -> list[Pending]:
        return [Pending(r.id, r.message_id) for r in self.active.values() if r.user_id == user_id]

    def in_flight(self) -> list[Reply]:
        """The replies generated here that have not ended."""
        return [r for r in self.active.values() if r.local and r.end_frame is None]

    def unfollow(self, listener: FrameSink) -> None:
        """A connection closed: it follows nothing any more."""
        for reply in self.active.values():
            reply.followers.discard(listener)

    # -- a new message ---------------------------------------------------------------------

    async def accept(
        self,
        user_id: int,
        client_id: str,
        text: str,
        sender: Connection | None,
        conversation_id: int | None = None,
    ) -> tuple[StoredMessage, Reply | None]:
        """Store a message (in `conversation_id`; None: the user's most recently active
        one); a new one is shown to the user's other tabs (everywhere) and its reply
        starts. Returns the stored row and the new reply (None for a resend).

        Raises:
            ShuttingDown: the server is shutting down; nothing is stored.
            IdConflict, RateLimited, UnknownConversation: from the store; nothing is stored.
            Exception: the database failed; nothing is stored.
        """
        if self.closing:
            raise ShuttingDown()
        if sender is not None:
            sender.remember_sent(client_id)
        stored = await self.store.add_message(user_id, client_id, text, conversation_id)
        if not stored.created:
            return stored, None
        followers = self._announce(user_id, client_id, text, stored, sender)
        if sender is not None:
            followers.add(sender)
        after = sender.last_reply if sender else None
        reply = self.start(
            user_id, client_id, stored.message_id, text, followers, after, stored.conversation_id
        )
        return stored, reply

    def _announce(
        self,
        user_id: int,
        client_id: str,
        text: str,
        stored: StoredMessage,
        sender: Connection | None,
    ) -> set[FrameSink]:
        """A new message is stored: counted, shown to the user's other tabs here and
        elsewhere; returns the tabs here, which follow its reply."""
        self.metrics.messages.inc()
        conversation_id = stored.conversation_id
        followers = self._show_message(
            user_id, client_id, stored.message_id, text, stored.timestamp, sender, conversation_id
        )
        if self.outbox.peers:
            timestamp = format_timestamp(stored.timestamp)
            self.outbox.publish(
                MessageStored(
                    user_id, client_id, stored.message_id, timestamp, text, conversation_id
                )
            )
        return followers

    def _show_message(
        self,
        user_id: int,
        client_id: str,
        message_id: int,
        text: str,
        timestamp: datetime | str,
        sender: Connection | None,
        conversation_id: int | None,
    ) -> set[FrameSink]:
        """The `message` frame to the user's other connections here; they follow its reply.

        Another connection sending the same id (a racing resend) is no "other tab": it gets
        its own `ack` and then follows the reply from the start, as a resend does.
        """
        others: set[FrameSink] = {
            c
            for c in self.connections.of(user_id)
            if c is not sender and not c.sent_lately(client_id)
        }
        if others:
            if isinstance(timestamp, datetime):
                timestamp = format_timestamp(timestamp)
            echo = encode_bytes(EchoFrame(client_id, message_id, text, timestamp, conversation_id))
            for other in others:
                other.push(echo)
        return others

    async def answer(
        self, user_id: int, client_id: str, text: str, conversation_id: int | None = None
    ) -> tuple[StoredMessage, Reply | StoredAnswer]:
        """The REST question: store it (or find it stored), then the reply once it ended."""
        if self.instant and self.get(user_id, client_id) is None:
            stored, reply = await self._answer_at_once(user_id, client_id, text, conversation_id)
        else:
            stored, reply = await self.accept(user_id, client_id, text, None, conversation_id)
        reply = reply or self.get(user_id, client_id)
        if reply is None:
            answer = await self.stored_answer(user_id, client_id)
            if answer is not None:
                return stored, answer
            # Stored, but nobody generates its reply (its instance was lost): generate it.
            reply = self.start(
                user_id, client_id, stored.message_id, text, (), None, stored.conversation_id
            )
        await reply.done.wait()
        return stored, reply

    async def _answer_at_once(
        self, user_id: int, client_id: str, text: str, conversation_id: int | None
    ) -> tuple[StoredMessage, Reply | None]:
        """`accept` for an LLM that answers at once: the reply is generated first and
        stored with its question in one commit; the user's tabs then get the `message`
        frame and the whole reply. A resend stores nothing and returns no reply, as
        `accept` does; a failed generation takes `accept`'s way (stored, then 502)."""
        if self.closing:
            raise ShuttingDown()
        hits = await self.pipeline.search(text)
        try:
            tokens = [piece async for piece in self.pipeline.stream(text, hits) if piece]
        except LLMError:
            return await self.accept(user_id, client_id, text, None, conversation_id)
        sources = self.pipeline.sources(hits)
        row = ReplyRow("".join(tokens), FinishReason.STOP, sources, [len(t) for t in tokens])
        stored, stored_reply = await self.store.add_exchange(
            user_id, client_id, text, conversation_id, row
        )
        if not stored.created:
            return stored, None
        followers = self._announce(user_id, client_id, text, stored, None)
        if stored_reply.reply_id is None:  # not seen: the batch stores both or neither
            return stored, self.start(
                user_id, client_id, stored.message_id, text, followers, None, stored.conversation_id
            )
        reply = Reply(user_id, client_id, stored.message_id, text, local=True)
        reply.conversation_id = stored.conversation_id
        reply.followers.update(followers)
        self._begin(reply, sources)
        if tokens:
            self.metrics.first_token_seen(time.monotonic() - reply.created)
            reply.add_tokens(tokens)
            if self.outbox.peers:
                self.outbox.publish(Tokens(user_id, client_id, 0, tuple(tokens)))
        reply.store()
        self._end(reply, stored_reply.reply_id, FinishReason.STOP)
        return stored, reply

    # -- local generation ------------------------------------------------------------------

    def start(
        self,
        user_id: int,
        client_id: str,
        message_id: int,
        question: str,
        followers: Iterable[FrameSink],
        after: Reply | None = None,
        conversation_id: int | None = None,
    ) -> Reply:
        """Generate the reply to a stored message in a task of its own."""
        existing = self.active.get((user_id, client_id))
        if existing is not None:
            return existing
        reply = Reply(user_id, client_id, message_id, question, local=True)
        reply.conversation_id = conversation_id
        reply.followers.update(followers)
        self.active[reply.key] = reply
        reply.task = asyncio.create_task(self._run(reply, after), name=f"reply {message_id}")
        return reply

    async def _run(self, reply: Reply, after: Reply | None) -> None:
        try:
            if after is not None and not after.done.is_set():
                try:
                    await after.done.wait()
                except asyncio.CancelledError:
                    if not reply.cancelled:
                        raise
                    _uncancel()
            await self._generate(reply)
        finally:
            self.active.pop(reply.key, None)
            reply._set_done()

    def _begin(self, reply: Reply, sources: list[dict[str, Any]]) -> None:
        reply.begin(sources)
        if self.outbox.peers:
            self.outbox.publish(Started(reply.user_id, reply.id, reply.message_id, tuple(sources)))

    async def _generate(self, reply: Reply) -> None:
        reason = FinishReason.STOP
        early = FinishReason.CANCELLED if reply.cancelled else None
        if early is None:
            try:
                # Hybrid retrieval embeds the question in a worker thread: a cancel may
                # land here, before the reply started.
                hits = await self.pipeline.search(reply.question)
            except asyncio.CancelledError:
                _uncancel()
                early = FinishReason.CANCELLED if reply.cancelled else FinishReason.ERROR
        if early is not None:
            self._begin(reply, [])
            if early == FinishReason.ERROR:
                self._fail(reply, ErrorCode.UNAVAILABLE, "the server is shutting down")
            await self._store_and_end(reply, early)
            return
        earlier = await self._earlier_turns(reply)
        self._begin(reply, self.pipeline.sources(hits))
        # Without earlier turns (the mock; a first question) the two-argument call.
        stream = (
            self.pipeline.stream(reply.question, hits, earlier)
            if earlier
            else self.pipeline.stream(reply.question, hits)
        )
        outbox = self.outbox
        try:
            async for piece in stream:
                if piece:
                    if not reply.tokens:
                        self.metrics.first_token_seen(time.monotonic() - reply.created)
                    reply.add_tokens((piece,))
                    if outbox.peers:
                        seq = len(reply.tokens) - 1
                        outbox.publish(Tokens(reply.user_id, reply.id, seq, (piece,)))
        except asyncio.CancelledError:
            # Our own cancel (the user's, or shutdown) ends the reply; it is still stored.
            _uncancel()
            reason = FinishReason.CANCELLED if reply.cancelled else FinishReason.ERROR
            if reason == FinishReason.ERROR:
                self._fail(reply, ErrorCode.UNAVAILABLE, "the server is shutting down")
        except LLMError as exc:
            reason = FinishReason.ERROR
            self.metrics.llm_errors.inc()
            self._fail(reply, ErrorCode.UPSTREAM_ERROR, str(exc))
        except Exception:
            log.exception("reply %s failed", reply.message_id)
            reason = FinishReason.ERROR
            self._fail(reply, ErrorCode.INTERNAL, "the reply failed")
        finally:
            if reply.state is not ReplyState.STORING:
                reply.store()
            await stream.aclose()
        await self._store_and_end(reply, reason)

    async def _earlier_turns(self, reply: Reply) -> list[tuple[bool, str]]:
        """The conversation's turns before the question, (is_user_message, text) oldest
        first, for an LLM that takes them (the mock does not: no query then). The LLM
        bounds them further; a failed read answers without them."""
        limit = self.pipeline.history_turns
        if not limit or reply.conversation_id is None:
            return []
        try:
            rows = await conversations.earlier_turns(
                self.store.pool, reply.conversation_id, reply.message_id, limit
            )
        except Exception as exc:
            log.warning("reply %s: earlier turns not read: %s", reply.message_id, exc)
            return []
        return [(r["is_user_message"], r["message"]) for r in rows]

    def _fail(self, reply: Reply, code: ErrorCode, message: str) -> None:
        reply.fail(code, message)
        if self.outbox.peers:
            self.outbox.publish(Failed(reply.user_id, reply.id, code, message))

    async def _store_and_end(self, reply: Reply, reason: FinishReason) -> None:
        if reply.state is not ReplyState.STORING:
            reply.store()
        reply_id = None
        try:
            reply_id = await self._store(reply, reason)
        except Exception as exc:
            log.warning("reply %s could not be stored: %s", reply.message_id, exc)
            self._fail(reply, ErrorCode.UNAVAILABLE, "the reply could not be stored")
            reason = FinishReason.ERROR
            self._store_later(reply, reason)
        self._end(reply, reply_id, reason)

    def _end(self, reply: Reply, reply_id: int | None, reason: FinishReason) -> None:
        """The reply is stored (or given up): `end` to its followers, counted, told."""
        reply.finish(reply_id, reason)
        if reply.local:
            self.metrics.replies.labels(reason).inc()
        if reply.local and self.outbox.peers:
            self.outbox.publish(Ended(reply.user_id, reply.id, reply_id, reason))

    async def _store(self, reply: Reply, reason: FinishReason) -> int | None:
        stored = await self.store.add_reply(
            reply.user_id,
            reply.message_id,
            "".join(reply.tokens),
            reason,
            reply.sources or [],
            [len(t) for t in reply.tokens],
        )
        return stored.reply_id

    def _store_later(self, reply: Reply, reason: FinishReason) -> None:
        """Store an ended reply once the database is back: its `end` promised history."""
        self.unstored[reply.key] = reply
        task = asyncio.create_task(self._retry_store(reply, reason), name="store later")
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def _retry_store(self, reply: Reply, reason: FinishReason) -> None:
        delay, waited = STORE_RETRY_FIRST_S, 0.0
        try:
            while waited < STORE_RETRY_FOR_S:
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, STORE_RETRY_MAX_S)
                try:
                    await self._store(reply, reason)
                except Exception as exc:
                    log.debug("reply %s still not stored: %s", reply.message_id, exc)
                    continue
                log.info("reply %s stored after the database came back", reply.message_id)
                return
            log.error("reply %s lost: not stored within %.0f s", reply.message_id, waited)
        finally:
            self.unstored.pop(reply.key, None)

    # -- cancel ----------------------------------------------------------------------------

    async def cancel(self, user_id: int, client_id: str) -> bool:
        """Stop the reply to `client_id`, wherever it is generated; False for an unknown id.

        A reply that has ended already is known and nothing happens.
        """
        reply = self.get(user_id, client_id)
        if reply is None:
            return await queries.message_known(self.store.pool, user_id, client_id)
        if reply.local:
            self.stop(user_id, client_id)
        else:
            self.outbox.cancel(user_id, client_id)
        return True

    def stop(self, user_id: int, client_id: str) -> bool:
        """Stop a reply generated here; False if this instance does not generate it."""
        reply = self.active.get((user_id, client_id))
        if reply is None or not reply.local:
            return False
        if not reply.cancelled:
            reply.cancelled = True
            if reply.state in INTERRUPTIBLE and reply.task is not None:
                reply.task.cancel()
        return True

    async def close(self, timeout_s: float) -> None:
        """At shutdown: let replies finish for up to `timeout_s`, then stop and store them.
        Replies still waiting for the database are given up (and logged)."""
        self.shutdown.set()
        local = [r for r in self.active.values() if r.local and r.task is not None]
        if local:
            tasks = {r.task: r for r in local if r.task is not None}
            _, still = await asyncio.wait(tasks, timeout=timeout_s)
            for task in still:
                if tasks[task].state in INTERRUPTIBLE:
                    task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
        storing = list(self._storing)
        for task in storing:
            task.cancel()
        if storing:
            for reply in self.unstored.values():
                log.error("reply %s lost: the database was away until shutdown", reply.message_id)
            await asyncio.gather(*storing, return_exceptions=True)

    # -- resume ----------------------------------------------------------------------------

    async def resume(
        self, user_id: int, client_id: str, listener: FrameSink, after_seq: int
    ) -> bool:
        """Send `listener` the reply to `client_id` from the token after `after_seq` on, then
        live; False for an unknown id. Raises when the database fails."""
        reply = self.get(user_id, client_id)
        if reply is not None:
            reply.follow(listener, after_seq)
            return True
        found = await self.replay_stored(listener, user_id, client_id, after_seq)
        if found is Found.NO_REPLY and self.outbox.peers:
            # Most likely another instance stored the message a moment ago (a racing
            # resend) and generates the reply: follow its mirror, never a second one.
            reply = await self._mirror_soon(user_id, client_id)
            if reply is not None:
                reply.follow(listener, after_seq)
                return True
            found = await self.replay_stored(listener, user_id, client_id, after_seq)
        if found is Found.NO_REPLY:
            # The message is stored but nobody generates its reply (the instance that
            # did was lost): generate it now.
            row = await queries.message_by_client_id(self.store.pool, user_id, client_id)
            if row is None:
                return False
            reply = self.get(user_id, client_id) or self.start(
                user_id, client_id, row["id"], row["message"], (), None, row["conversation_id"]
            )
            reply.follow(listener, after_seq)
        return found is not Found.UNKNOWN

    async def _mirror_soon(self, user_id: int, client_id: str) -> Reply | None:
        """The reply another instance generates for `client_id`, once its fan-out events
        (milliseconds behind the commit) arrive; None after MIRROR_WAIT_S."""
        deadline = time.monotonic() + MIRROR_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            reply = self.get(user_id, client_id)
            if reply is not None:
                return reply
        return None

    # -- stored replies --------------------------------------------------------------------

    async def replay_stored(
        self, listener: FrameSink, user_id: int, client_id: str, after_seq: int
    ) -> Found:
        """Resume from the database: the stored reply's frames after `after_seq`."""
        row = await queries.stored_reply(self.store.pool, user_id, client_id)
        if row is None:
            return Found.UNKNOWN
        if row["reply_id"] is None:
            return Found.NO_REPLY
        tokens = split_tokens(row["message"], row["token_lengths"])
        frames = ReplyFrames(client_id)
        listener.push(frames.start(row["sources"] or []))
        for seq in range(max(after_seq + 1, 0), len(tokens)):
            listener.push(frames.token(seq, tokens[seq]))
        listener.push(
            encode_bytes(End(client_id, row["reply_id"], row["message"], row["finish_reason"]))
        )
        return Found.REPLAYED

    async def stored_answer(self, user_id: int, client_id: str) -> StoredAnswer | None:
        row = await queries.stored_reply(self.store.pool, user_id, client_id)
        if row is None or row["reply_id"] is None:
            return None
        return StoredAnswer(
            "".join(split_tokens(row["message"], row["token_lengths"])),
            row["sources"] or [],
            row["reply_id"],
            row["finish_reason"],
        )

    # -- mirrors of replies generated on other instances (`server.chat.fanout`) -----------

    def mirror(self, user_id: int, client_id: str, message_id: int) -> Reply | None:
        """The mirror of a reply another instance generates (made now if new); None when
        this instance generates it itself."""
        reply = self.active.get((user_id, client_id))
        if reply is None:
            reply = Reply(user_id, client_id, message_id, "", local=False)
            self.active[reply.key] = reply
        return None if reply.local else reply

    def show_mirrored_message(
        self, mirror: Reply, text: str, timestamp: str, conversation_id: int | None
    ) -> None:
        """Another instance stored `mirror`'s message: the user's tabs here see it and
        follow its reply."""
        mirror.question = text
        mirror.conversation_id = conversation_id
        mirror.followers |= self._show_message(
            mirror.user_id, mirror.id, mirror.message_id, text, timestamp, None, conversation_id
        )

    def advance_mirror(self, event: Started | Tokens | Failed | Ended) -> bool:
        """Another instance's step of a reply it generates, taken by the mirror here; False
        when there is no mirror of it (it began before this instance listened)."""
        mirror = self.active.get((event.user_id, event.client_id))
        if mirror is None or mirror.local:
            return False
        if isinstance(event, Started):
            if not mirror.started:
                mirror.begin(list(event.sources))
        elif isinstance(event, Tokens):
            # Tokens a mirror has already (a sync after live events) are skipped; a gap
            # (events missed) waits for the sync that follows every reconnect.
            have, seq, pieces = len(mirror.tokens), event.seq, event.tokens
            if mirror.started and seq <= have < seq + len(pieces):
                mirror.add_tokens(pieces[have - seq :])
        elif isinstance(event, Failed):
            mirror.fail(event.code, event.message)
        else:
            mirror.finish(event.reply_id, event.finish_reason)
            self.forget(mirror.key)
        return True

    # -- conversations -----------------------------------------------------------------------

    def conversation_changed(
        self, user_id: int, change: ConversationChange, conversation_id: int, title: str | None
    ) -> None:
        """A conversation was created, renamed or deleted here: the user's connections on
        every instance get the `conversation` frame."""
        self.show_conversation_change(user_id, change, conversation_id, title)
        if self.outbox.peers:
            self.outbox.publish(ConversationChanged(user_id, change, conversation_id, title))

    def show_conversation_change(
        self, user_id: int, change: ConversationChange, conversation_id: int, title: str | None
    ) -> None:
        """The `conversation` frame to the user's connections on this instance."""
        conns = self.connections.of(user_id)
        if conns:
            frame = encode_bytes(ConversationEvent(change, conversation_id, title))
            for conn in conns:
                conn.push(frame)

    def forget(self, key: tuple[int, str]) -> None:
        """A mirror that ended, or whose instance no longer speaks of it."""
        reply = self.active.get(key)
        if reply is not None and not reply.local:
            del self.active[key]

    async def end_orphan(self, mirror: Reply, message: str) -> None:
        """The instance generating `mirror` is gone: end it here, storing the text so far."""
        self.forget(mirror.key)
        if not mirror.started:
            mirror.begin([])
        mirror.fail(ErrorCode.UNAVAILABLE, message)
        mirror.store()
        reply_id = None
        try:
            reply_id = await self._store(mirror, FinishReason.ERROR)
        except Exception as exc:
            log.warning("reply to %s could not be stored: %s", mirror.message_id, exc)
        mirror.finish(reply_id, FinishReason.ERROR)


def _uncancel() -> None:
    """Swallow a cancel we asked for: the reply still gets stored and ended."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def new_client_id() -> str:
    """A client id for a message sent without one (REST)."""
    return str(uuid.uuid4())


def split_tokens(text: str, lengths: list[int] | None) -> list[str]:
    """The stored reply cut back into the tokens it was streamed as."""
    if not lengths:
        return [text] if text else []
    tokens, pos = [], 0
    for n in lengths:
        tokens.append(text[pos : pos + n])
        pos += n
    return tokens
