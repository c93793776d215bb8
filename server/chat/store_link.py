"""A worker's chat store when the supervisor runs a shared writer (`server.chat.store_writer`).

`LinkedStore` has `ChatStore`'s API. While the writer answers, rows go to it over a Unix
socket, so one group commit carries every worker's rows; when it does not (not started
yet, restarting, gone), the worker's own `ChatStore` stores them, as a worker without a
writer does. Rows in flight when the link drops are stored again by the worker's own
store: storing is idempotent (a message by its (user, client id), a reply by its
message), so a row the writer committed just before it went is found, not doubled; a
message found that way comes back as a resend (`created` false), which the chat answers
as any resend: the ack, then its reply, generated if nobody stored one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
import orjson

from server.chat import store_wire as wire
from server.chat.store import ChatStore, ReplyRow, StoredMessage, StoredReply

log = logging.getLogger(__name__)

RETRY_S = 0.5  # between attempts to reach the writer
# A writer that leaves a request unanswered this long is taken for stuck (stopped, or
# its database connection hung): its link is dropped and this worker stores the rows,
# then tries the writer again after as long.
STALE_S = 10.0
CLOSE_WAIT_TURNS = 500  # 5 s for the writer to answer at shutdown, then this worker stores


class FrameLink(asyncio.Protocol):
    """A stream of `store_wire` frames; what one loop turn sends leaves in one write."""

    def __init__(self) -> None:
        self.reader = wire.FrameReader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self.reader.feed(data):
                self.received(payload)
        except (wire.WireError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s: a bad frame (%s); dropping the link", type(self).__name__, exc)
            self.close()

    def received(self, payload: list[Any]) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        if self.transport is None:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass(slots=True)
class _Asked:
    """A request the writer has not answered yet: enough to store it here instead."""

    op: str
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    at: float  # when it was sent (the loop's clock)


class _WorkerLink(FrameLink):
    def __init__(self, store: LinkedStore) -> None:
        super().__init__()
        self.store = store

    def received(self, payload: list[Any]) -> None:
        self.store._answered(payload)


class LinkedStore:
    """`ChatStore`'s API over the shared writer, with this worker's own store behind it."""

    def __init__(
        self, local: ChatStore, path: str, retry_s: float = RETRY_S, stale_s: float = STALE_S
    ) -> None:
        self.local = local
        self.path = path
        self.retry_s = retry_s
        self.stale_s = stale_s
        self._link: _WorkerLink | None = None
        self._asked: dict[int, _Asked] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self.linked = asyncio.Event()  # set while the writer answers (tests wait for it)

    @property
    def pool(self) -> asyncpg.Pool:
        return self.local.pool

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_linked(), name="store-link")

    async def close(self) -> None:
        """Wait (a while) for the answers in flight, then close the link and the own store."""
        for _ in range(CLOSE_WAIT_TURNS):
            if not self._asked or self._link is None:
                break
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.sleep(0)  # the rows taken back are queued here before the close
        await self.local.close()

    # -- ChatStore's API -----------------------------------------------------------------

    async def add_message(
        self, user_id: int, client_id: str, text: str, conversation_id: int | None = None
    ) -> StoredMessage:
        args = (user_id, client_id, text, conversation_id)
        return await self._ask(wire.MESSAGE, args)

    async def add_reply(
        self,
        user_id: int,
        reply_to: int,
        text: str,
        finish_reason: str,
        sources: list[dict[str, Any]],
        token_lengths: list[int],
    ) -> StoredReply:
        args = (user_id, reply_to, ReplyRow(text, finish_reason, sources, token_lengths))
        return await self._ask(wire.REPLY, args)

    async def add_exchange(
        self, user_id: int, client_id: str, text: str, conversation_id: int | None, row: ReplyRow
    ) -> tuple[StoredMessage, StoredReply]:
        return await self._ask(wire.EXCHANGE, (user_id, client_id, text, conversation_id, row))

    # -- the link --------------------------------------------------------------------------

    def _ask(self, op: str, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        link = self._link
        if link is None:
            return asyncio.ensure_future(self._here(op, args))
        rid = next(self._ids)
        try:
            if op == wire.REPLY:
                request = wire.reply_request(rid, *args)
            else:
                request = wire.message_request(rid, *args)
        except orjson.JSONEncodeError:
            # Text that is not UTF-8, a number past 64 bits: this worker's store says no.
            return asyncio.ensure_future(self._here(op, args))
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._asked[rid] = _Asked(op, args, future, loop.time())
        link.send(request)
        return future

    def _here(self, op: str, args: tuple[Any, ...]) -> Any:
        """The same request, to this worker's own store."""
        if op == wire.MESSAGE:
            return self.local.add_message(*args)
        if op == wire.EXCHANGE:
            return self.local.add_exchange(*args)
        return self.local.queue_reply(*args)

    def _answered(self, payload: list[Any]) -> None:
        rid, status, *fields = payload
        asked = self._asked.pop(rid)
        if asked.future.done():
            return
        if status == wire.FAILED:
            asked.future.set_exception(wire.error(fields))
        elif asked.op == wire.MESSAGE:
            asked.future.set_result(wire.stored_message(fields))
        elif asked.op == wire.REPLY:
            asked.future.set_result(wire.stored_reply(fields))
        else:
            asked.future.set_result((wire.stored_message(fields), wire.stored_reply(fields[4:])))

    async def _keep_linked(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, link = await loop.create_unix_connection(lambda: _WorkerLink(self), self.path)
            except OSError:
                await asyncio.sleep(self.retry_s)
                continue
            log.info("chat rows go to the shared writer at %s", self.path)
            self._link = link
            self.linked.set()
            try:
                stuck = await self._watch(link)
            finally:
                self._link = None
                self.linked.clear()
                link.close()
                self._store_here()
            if stuck:
                log.warning(
                    "the shared writer left a row unanswered for %.0f s; this worker stores"
                    " its chat rows itself for as long",
                    self.stale_s,
                )
                await asyncio.sleep(self.stale_s)
            else:
                log.warning("lost the shared writer; this worker stores its chat rows itself")

    async def _watch(self, link: _WorkerLink) -> bool:
        """Until the link drops (False) or its oldest request waits `stale_s` (True)."""
        loop = asyncio.get_running_loop()
        while True:
            done, _ = await asyncio.wait([link.lost], timeout=self.stale_s / 4)
            if done:
                return False
            oldest = next(iter(self._asked.values()), None)
            if oldest is not None and loop.time() - oldest.at > self.stale_s:
                return True

    def _store_here(self) -> None:
        """The writer went with requests unanswered: this worker's own store takes them."""
        asked, self._asked = self._asked, {}
        for item in asked.values():
            if not item.future.done():
                task = asyncio.ensure_future(self._here(item.op, item.args))
                task.add_done_callback(lambda t, f=item.future: _copy(t, f))


def _copy(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())
