"""One reply's life: generate, stream, store, resume, cancel.

A reply belongs to its message, not to the connection that asked: it runs as a
task owned by the `ReplyManager` and goes on when that connection drops. Its
state (sources, tokens so far, the end) lives in the `Reply` object, which
every follower reads: the connections that should see it live. A connection
follows a reply when it sent the message, when it was open as the message
arrived (it got the `message` frame), or when it resumed it.

Replies generated on another instance are mirrored here from fan-out events
(`FanOut`), so `resume`, `cancel` and the other tabs work on any instance.

Rules kept here:
- followers get `start`, the `token`s by `seq` with no gap, then `end`;
- the reply row is committed before `end` is sent;
- replies asked on one connection start in the order they were asked
  (`after`: each waits for the one before it);
- `cancel` stops generation at once; what was generated is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from protocol import End, Error, ErrorCode, FinishReason, Pending, encode_bytes
from protocol.wire import ReplyFrames
from server.answers.llm.base import LLMError
from server.chat.store import ChatStore

if TYPE_CHECKING:
    from server.answers.pipeline import AnswerPipeline
    from server.chat.fanout import FanOut

log = logging.getLogger(__name__)

# A reply that could not be stored is tried again: after 0.5 s, then twice as long each
# time up to 2 s between tries (the tries of many replies share group commits), for
# 10 minutes.
STORE_RETRY_FIRST_S = 0.5
STORE_RETRY_MAX_S = 2.0
STORE_RETRY_FOR_S = 600.0


class Listener(Protocol):
    """Where a reply's frames go: a connection's outgoing buffer (must not block)."""

    def push(self, frame: bytes) -> None: ...


@dataclass(eq=False)
class Reply:
    user_id: int
    id: str
    message_id: int
    question: str
    local: bool
    followers: set[Listener] = field(default_factory=set)
    sources: list[dict[str, Any]] | None = None
    tokens: list[str] = field(default_factory=list)
    end_frame: bytes | None = None
    finish_reason: str | None = None
    reply_id: int | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    # waiting (for the reply before it) → streaming → storing; only the first two
    # may be interrupted by a cancel.
    phase: str = "waiting"
    task: asyncio.Task[None] | None = None
    done_callbacks: list[Callable[[], None]] = field(default_factory=list)
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

    # -- state changes, shared by local generation and remote mirrors ----------------------

    def begin(self, sources: list[dict[str, Any]]) -> None:
        self.sources = sources
        self.emit(self.start_frame())

    def add_tokens(self, pieces: Iterable[str]) -> None:
        for piece in pieces:
            seq = len(self.tokens)
            self.tokens.append(piece)
            if self.followers:
                self.emit(self.frames.token(seq, piece))

    def fail(self, code: ErrorCode, message: str) -> None:
        self.error_code = code
        self.error_message = message
        self.emit(encode_bytes(Error(self.id, code, message)))

    def finish(self, reply_id: int | None, reason: str) -> None:
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

    def replay(self, listener: Listener, after_seq: int) -> None:
        """Send what was streamed after `after_seq`, then follow live (or end)."""
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
    """Every reply in flight on this instance: generated here, or mirrored."""

    def __init__(self, store: ChatStore, pipeline: AnswerPipeline) -> None:
        self.store = store
        self.pipeline = pipeline
        self.fanout: FanOut | None = None
        self.active: dict[tuple[int, str], Reply] = {}
        # Ended while the database was away: kept (resume replays them as they were sent)
        # while a task stores them once it is back.
        self.unstored: dict[tuple[int, str], Reply] = {}
        self._storing: set[asyncio.Task[None]] = set()
        self.closing = False

    def get(self, user_id: int, client_id: str) -> Reply | None:
        key = (user_id, client_id)
        return self.active.get(key) or self.unstored.get(key)

    def pending(self, user_id: int) -> list[Pending]:
        return [Pending(r.id, r.message_id) for r in self.active.values() if r.user_id == user_id]

    # -- local generation ------------------------------------------------------------------

    def start(
        self,
        user_id: int,
        client_id: str,
        message_id: int,
        question: str,
        followers: Iterable[Listener],
        after: Reply | None = None,
    ) -> Reply:
        """Generate the reply to a stored message in a task of its own."""
        existing = self.active.get((user_id, client_id))
        if existing is not None:
            return existing
        reply = Reply(user_id, client_id, message_id, question, local=True)
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

    async def _generate(self, reply: Reply) -> None:
        fanout = self.fanout
        reason = FinishReason.STOP
        if reply.cancelled:
            reply.begin([])
            if fanout:
                fanout.started(reply)
            await self._store_and_end(reply, FinishReason.CANCELLED)
            return
        hits = self.pipeline.retrieve(reply.question)
        reply.begin(self.pipeline.sources(hits))
        if fanout:
            fanout.started(reply)
        stream = self.pipeline.stream(reply.question, hits)
        reply.phase = "streaming"
        try:
            async for piece in stream:
                if piece:
                    reply.add_tokens((piece,))
                    if fanout:
                        fanout.token(reply, piece)
        except asyncio.CancelledError:
            # Our own cancel (the user's, or shutdown) ends the reply; it is still stored.
            _uncancel()
            reason = FinishReason.CANCELLED if reply.cancelled else FinishReason.ERROR
            if reason == FinishReason.ERROR:
                self._fail(reply, ErrorCode.UNAVAILABLE, "the server is shutting down")
        except LLMError as exc:
            reason = FinishReason.ERROR
            self._fail(reply, ErrorCode.UPSTREAM_ERROR, str(exc))
        except Exception:
            log.exception("reply %s failed", reply.message_id)
            reason = FinishReason.ERROR
            self._fail(reply, ErrorCode.INTERNAL, "the reply failed")
        finally:
            reply.phase = "storing"
            await stream.aclose()
        await self._store_and_end(reply, reason)

    def _fail(self, reply: Reply, code: ErrorCode, message: str) -> None:
        reply.fail(code, message)
        if self.fanout:
            self.fanout.error(reply, code, message)

    async def _store_and_end(self, reply: Reply, reason: str) -> None:
        reply.phase = "storing"
        reply_id = None
        try:
            reply_id = await self._store(reply, reason)
        except Exception as exc:
            log.warning("reply %s could not be stored: %s", reply.message_id, exc)
            self._fail(reply, ErrorCode.UNAVAILABLE, "the reply could not be stored")
            reason = FinishReason.ERROR
            self._store_later(reply, reason)
        reply.finish(reply_id, reason)
        if self.fanout:
            self.fanout.ended(reply, reply_id)

    async def _store(self, reply: Reply, reason: str) -> int | None:
        stored = await self.store.add_reply(
            reply.user_id,
            reply.message_id,
            "".join(reply.tokens),
            reason,
            reply.sources or [],
            [len(t) for t in reply.tokens],
        )
        return stored.message_id

    def _store_later(self, reply: Reply, reason: str) -> None:
        """Store an ended reply once the database is back: its `end` promised history."""
        self.unstored[reply.key] = reply
        task = asyncio.create_task(self._retry_store(reply, reason), name="store later")
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def _retry_store(self, reply: Reply, reason: str) -> None:
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

    def cancel(self, user_id: int, client_id: str) -> bool:
        """Stop a reply generated here; False if this instance does not generate it."""
        reply = self.active.get((user_id, client_id))
        if reply is None or not reply.local:
            return False
        if not reply.cancelled:
            reply.cancelled = True
            if reply.phase != "storing" and reply.task is not None:
                reply.task.cancel()
        return True

    async def close(self, timeout_s: float) -> None:
        """At shutdown: let replies finish for up to `timeout_s`, then stop and store them.
        Replies still waiting for the database are given up (and logged)."""
        self.closing = True
        local = [r for r in self.active.values() if r.local and r.task is not None]
        if local:
            tasks = {r.task: r for r in local if r.task is not None}
            _, still = await asyncio.wait(tasks, timeout=timeout_s)
            for task in still:
                if tasks[task].phase != "storing":
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

    # -- stored replies --------------------------------------------------------------------

    async def replay_stored(
        self, listener: Listener, user_id: int, client_id: str, after_seq: int
    ) -> str:
        """Resume from the database: 'replayed', 'no_reply' (message without reply) or 'unknown'."""
        row = await self.store.pool.fetchrow(
            "SELECT m.id AS message_id, m.message AS question, r.id AS reply_id, r.message,"
            " r.finish_reason, r.sources, r.token_lengths"
            " FROM chat_history m LEFT JOIN chat_history r ON r.reply_to = m.id"
            " WHERE m.user_id = $1 AND m.client_id = $2",
            user_id,
            client_id,
        )
        if row is None:
            return "unknown"
        if row["reply_id"] is None:
            return "no_reply"
        tokens = split_tokens(row["message"], row["token_lengths"])
        sources = row["sources"] or []
        frames = ReplyFrames(client_id)
        listener.push(frames.start(sources))
        for seq in range(max(after_seq + 1, 0), len(tokens)):
            listener.push(frames.token(seq, tokens[seq]))
        listener.push(
            encode_bytes(End(client_id, row["reply_id"], row["message"], row["finish_reason"]))
        )
        return "replayed"


def _uncancel() -> None:
    """Swallow a cancel we asked for: the reply still gets stored and ended."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def split_tokens(text: str, lengths: list[int] | None) -> list[str]:
    """The stored reply cut back into the tokens it was streamed as."""
    if not lengths:
        return [text] if text else []
    tokens, pos = [], 0
    for n in lengths:
        tokens.append(text[pos : pos + n])
        pos += n
    return tokens
