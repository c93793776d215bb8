"""
An asyncio client for the chat WebSocket, on ``websockets``.

::

    async with ChatClient.connect("ws://127.0.0.1:8000/api/v1/chat/ws", token) as chat:
        async for piece in chat.ask("Hello"):
            print(piece, end="", flush=True)

One reader task owns the receiving side of the socket and hands every frame to
a :class:`FrameRouter` (pure, no I/O): acks and pongs wake whoever waits for
them, a reply's frames go to that reply's queue, everything else to
:meth:`ChatClient.frames` (or the ``on_frame`` callback). Sending happens from
the caller's task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from .errors import ErrorCode, ProtocolError, ReplyError, ServerError
from .frames import (
    Ack,
    Auth,
    Cancel,
    ClientFrame,
    End,
    Error,
    Message,
    Ping,
    Pong,
    Ready,
    Resume,
    ServerFrame,
    Start,
    Token,
    decode,
    decode_server,
    encode,
    encode_bytes,
)

__all__ = ["ChatClient", "FrameRouter", "ReplyStream"]

logger = logging.getLogger(__name__)

#: Finished replies kept for a late :meth:`ChatClient.reply` call.
FINISHED_KEPT = 64


class _Closed:
    """Queue marker: the connection is gone; ``exc`` says how."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Reply:
    """The frames of one reply, buffered until read."""

    __slots__ = ("acked", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ServerFrame | _Closed] = asyncio.Queue()
        # Set once the server accepted the message: from then on an error
        # frame for this id means a failed reply, and an end frame follows.
        self.acked = False


class FrameRouter:
    """Routes server frames to whoever waits for them. No I/O.

    - ``ack`` / ``error`` for a message awaiting its ack: resolve that wait
      (an error before the ack is a refusal: the message was not stored);
    - ``start`` / ``token`` / ``end`` / ``error`` for a followed reply: that
      reply's queue;
    - ``pong``: the oldest :meth:`expect_pong` wait;
    - anything else (``message`` echoes from other tabs, their replies, errors
      with ``id`` null …): ``on_frame`` if given, else a bounded queue of
      ``backlog`` frames that drops the oldest (counted in ``dropped``).
    """

    def __init__(
        self, *, backlog: int = 1000, on_frame: Callable[[ServerFrame], Any] | None = None
    ) -> None:
        self.acks: dict[str, asyncio.Future[Ack]] = {}
        self.pongs: collections.deque[asyncio.Future[None]] = collections.deque()
        self.replies: dict[str, _Reply] = {}
        self.finished: collections.OrderedDict[str, _Reply] = collections.OrderedDict()
        self.other: asyncio.Queue[ServerFrame | _Closed] = asyncio.Queue(maxsize=backlog)
        self.on_frame = on_frame
        self.dropped = 0
        self.closed: _Closed | None = None

    # -- registrations ------------------------------------------------------

    def expect_ack(self, id: str) -> asyncio.Future[Ack]:
        """Wait for the ack of message ``id`` and follow its reply."""
        if id in self.acks:
            raise ValueError(f"message {id!r} is already waiting for its ack")
        if self.closed is not None:
            raise self.closed.exc
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self.acks[id] = future
        self.follow(id, active=False, finished=False)
        return future

    def forget_ack(self, id: str) -> None:
        """Stop waiting for an ack (the wait was cancelled or timed out)."""
        future = self.acks.pop(id, None)
        if future is not None:  # still registered: no answer came
            future.cancel()
            self.replies.pop(id, None)

    def expect_pong(self) -> asyncio.Future[None]:
        if self.closed is not None:
            raise self.closed.exc
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pongs.append(future)
        return future

    def follow(self, id: str, *, active: bool = True, finished: bool = True) -> _Reply:
        """The reply to ``id``; its frames are kept from now on.

        Args:
            active: return the reply already followed, if any.
            finished: return an ended reply that nobody read yet (the last
                :data:`FINISHED_KEPT` are kept), if any.
        """
        reply = self.replies.get(id) if active else None
        if reply is None and finished:
            reply = self.finished.pop(id, None)
        if reply is not None:
            return reply
        reply = _Reply()
        self.finished.pop(id, None)
        if self.closed is not None:
            reply.queue.put_nowait(self.closed)
        else:
            self.replies[id] = reply
        return reply

    # -- dispatch -------------------------------------------------------------

    def dispatch(self, frame: ServerFrame) -> None:
        """Hand one frame to whoever waits for it."""
        if isinstance(frame, Pong):
            while self.pongs:
                future = self.pongs.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        elif isinstance(frame, Ack):
            if (reply := self.replies.get(frame.id)) is not None:
                reply.acked = True
            future = self.acks.pop(frame.id, None)
            if future is not None and not future.done():
                future.set_result(frame)
                return
        elif isinstance(frame, Error) and frame.id in self.acks:
            # Refused before the ack: nothing was stored, no reply follows.
            future = self.acks.pop(frame.id)
            self.replies.pop(frame.id, None)
            if not future.done():
                future.set_exception(ServerError(frame))
            return
        elif (
            isinstance(frame, Start | Token | End | Error)
            and frame.id is not None
            and (reply := self.replies.get(frame.id)) is not None
        ):
            reply.queue.put_nowait(frame)
            if isinstance(frame, End):
                del self.replies[frame.id]
                self.finished[frame.id] = reply
                while len(self.finished) > FINISHED_KEPT:
                    self.finished.popitem(last=False)
            return
        self._publish(frame)

    def _publish(self, frame: ServerFrame | _Closed) -> None:
        if self.on_frame is not None and not isinstance(frame, _Closed):
            try:
                self.on_frame(frame)
            except Exception:
                logger.exception("on_frame callback failed")
            return
        while True:
            try:
                self.other.put_nowait(frame)
                return
            except asyncio.QueueFull:
                self.other.get_nowait()
                self.dropped += 1

    def close(self, exc: BaseException) -> None:
        """The connection is gone: wake every waiter with ``exc``."""
        if self.closed is not None:
            return
        self.closed = marker = _Closed(exc)
        for future in [*self.acks.values(), *self.pongs]:
            if not future.done():
                future.set_exception(exc)
        self.acks.clear()
        self.pongs.clear()
        for reply in self.replies.values():
            reply.queue.put_nowait(marker)
        self.replies.clear()
        self._publish(marker)


class ReplyStream:
    """The frames of one reply: :class:`Start`, :class:`Token` …, :class:`End`.

    ``async for frame in stream`` ends after the ``end`` frame. A reply that
    failed (an ``error`` then ``end`` with ``finish_reason`` ``error``) yields
    its ``end`` frame too, then raises :class:`ReplyError` carrying both; a
    request that was refused (``unknown_message`` for a resume …) raises
    :class:`ReplyError` with ``end`` None at once. If the connection closes
    first, the ``ConnectionClosed`` exception is raised.

    Attributes:
        id: the message id.
        end: the ``end`` frame, once received.
        error: the ``error`` frame of a failed reply, if any.
    """

    def __init__(self, id: str, reply: _Reply, frame_timeout: float | None = None) -> None:
        self.id = id
        self.frame_timeout = frame_timeout
        self.end: End | None = None
        self.error: Error | None = None
        self._reply = reply
        self._started = False
        self._finished = False

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> Start | Token | End:
        while True:
            if self._finished:
                if self.error is not None:
                    error, self.error = self.error, None
                    raise ReplyError(error, self.end)
                raise StopAsyncIteration
            frame = await asyncio.wait_for(self._reply.queue.get(), self.frame_timeout)
            match frame:
                case _Closed(exc=exc):
                    self._reply.queue.put_nowait(frame)  # for any other reader
                    raise exc
                case Error():
                    if self._reply.acked or self._started:
                        self.error = frame  # an end frame follows
                        continue
                    self._finished = True
                    raise ReplyError(frame)
                case Start():
                    self._started = True
                case End():
                    self.end = frame
                    self._finished = True
            return frame

    async def text(self) -> str:
        """Read the whole reply and return its text (the ``end`` frame's).

        Raises:
            ReplyError: the reply failed or was refused.
        """
        async for _ in self:
            pass
        assert self.end is not None
        return self.end.text


class ChatClient:
    """A connection to the chat WebSocket, authenticated and ``ready``.

    Open it with :meth:`connect` (an async context manager) or :meth:`open` /
    :meth:`close`.

    Attributes:
        ready: the server's ``ready`` frame (user, pending replies).
        timeout: seconds to wait for an ack or a pong (wrap a call in
            ``asyncio.timeout()`` for another limit).
    """

    def __init__(
        self,
        ws: ClientConnection,
        ready: Ready,
        *,
        timeout: float = 10.0,
        backlog: int = 1000,
        on_frame: Callable[[ServerFrame], Any] | None = None,
    ) -> None:
        self.ready = ready
        self.timeout = timeout
        self._ws = ws
        self._router = FrameRouter(backlog=backlog, on_frame=on_frame)
        self._reader = asyncio.create_task(self._read(), name="chat-client-reader")

    # -- opening and closing ----------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        token: str,
        *,
        origin: str | None = None,
        header_auth: bool = True,
        open_timeout: float = 10.0,
        request_timeout: float = 10.0,
        backlog: int = 1000,
        on_frame: Callable[[ServerFrame], Any] | None = None,
        **connect_kwargs: Any,
    ) -> ChatClient:
        """Connect, authenticate and wait for ``ready``.

        Args:
            url: ``ws://`` or ``wss://`` URL of ``/api/v1/chat/ws``.
            token: the access token from ``/api/v1/auth/login``.
            origin: the ``Origin`` header to send (none by default: not a browser).
            header_auth: send the token in an ``Authorization: Bearer`` header;
                if False, in a first ``auth`` frame, as browsers do.
            open_timeout: seconds for the handshake, and again for ``ready``.
            request_timeout: seconds to wait for an ack or a pong
                (:attr:`timeout`).
            backlog: how many unclaimed frames :meth:`frames` keeps.
            on_frame: called with every unclaimed frame instead of queueing it.
            connect_kwargs: passed to ``websockets.asyncio.client.connect``.

        Raises:
            ServerError: the server refused the token (``unauthorized`` …).
            websockets.exceptions.InvalidStatus: the handshake was refused
                (401 bad header token, 403 origin not allowed).
            websockets.exceptions.ConnectionClosed: closed before ``ready``.
            TimeoutError: no ``ready`` in time.
        """
        headers = {"Authorization": f"Bearer {token}"} if header_auth else None
        ws = await ws_connect(
            url,
            origin=origin,
            additional_headers=headers,
            open_timeout=open_timeout,
            **connect_kwargs,
        )
        try:
            if not header_auth:
                await ws.send(encode(Auth(token)))
            ready = await asyncio.wait_for(_receive_ready(ws), open_timeout)
        except BaseException:
            await ws.close()
            raise
        return cls(ws, ready, timeout=request_timeout, backlog=backlog, on_frame=on_frame)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, token: str, **kwargs: Any) -> AsyncIterator[ChatClient]:
        """``async with ChatClient.connect(url, token) as chat:`` — see :meth:`open`."""
        client = await cls.open(url, token, **kwargs)
        try:
            yield client
        finally:
            await client.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and stop the reader task."""
        try:
            await self._ws.close(code, reason)
        finally:
            self._reader.cancel()
            await asyncio.wait({self._reader})

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by either side)."""
        await asyncio.wait({self._reader})

    @property
    def closed(self) -> bool:
        return self._reader.done()

    @property
    def close_code(self) -> int | None:
        """The close code once closed (see :class:`~protocol.errors.CloseCode`)."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self._ws.close_reason

    @property
    def dropped(self) -> int:
        """Unclaimed frames dropped because nobody read :meth:`frames`."""
        return self._router.dropped

    async def _read(self) -> None:
        exc: BaseException | None = None
        try:
            async for data in self._ws:
                try:
                    frame = decode_server(data)
                except ProtocolError as error:
                    logger.warning("ignoring a bad frame from the server: %s", error)
                    continue
                self._router.dispatch(frame)
        except ConnectionClosed as closed:
            exc = closed
        finally:
            if exc is None:
                try:
                    exc = self._ws.close_exc
                except Exception:
                    exc = ConnectionError("connection closed")
            self._router.close(exc)

    # -- sending ------------------------------------------------------------------

    async def send(self, frame: ClientFrame) -> None:
        """Send any client frame as is (no local validation, no waiting)."""
        await self._ws.send(encode_bytes(frame), text=True)

    async def send_raw(self, data: str) -> None:
        """Send raw text (for testing the server with malformed frames)."""
        await self._ws.send(data)

    async def send_message(
        self, text: str, id: str | None = None, conversation_id: int | None = None
    ) -> Ack:
        """Send a message and wait for its ``ack``; its reply is kept for :meth:`reply`.

        Args:
            text: 1 to 4000 characters, no NUL.
            id: the message id; a new UUID when None. Sending an id again is
                safe: the server acks it once and sends the same reply.
            conversation_id: the conversation it belongs to (``ack.conversation_id``
                says which); None: the most recently active one.

        Raises:
            ProtocolError: the frame is invalid (checked locally, not sent).
            ServerError: the server refused it (``rate_limited``, ``id_conflict``,
                ``unknown_conversation``, ``unavailable`` …): it was not stored.
            TimeoutError: no ack in time.
        """
        frame = Message(str(uuid.uuid4()) if id is None else id, text, conversation_id)
        data = encode_bytes(frame)
        decode(data)  # refuse locally what the server would refuse
        ack = self._router.expect_ack(frame.id)
        try:
            await self._ws.send(data, text=True)
            return await asyncio.wait_for(ack, self.timeout)
        finally:
            self._router.forget_ack(frame.id)

    def reply(self, id: str, *, frame_timeout: float | None = None) -> ReplyStream:
        """The reply to message ``id``, as a :class:`ReplyStream`.

        Replies to messages sent with :meth:`send_message` or resumed with
        :meth:`resume` are buffered from the start; for any other id (e.g. an
        :class:`~protocol.frames.Echo` from another tab) only the frames that
        arrive after this call are seen. ``frame_timeout`` limits the wait for each
        frame (none by default: a reply may wait behind earlier ones).
        """
        return ReplyStream(id, self._router.follow(id), frame_timeout)

    async def ask(
        self, text: str, *, id: str | None = None, conversation_id: int | None = None
    ) -> AsyncIterator[str]:
        """Send ``text`` (in ``conversation_id``; None: the most recently active one)
        and yield the reply's token texts as they stream.

        Raises:
            ServerError: the message was refused.
            ReplyError: the reply failed (after all its tokens were yielded).
        """
        ack = await self.send_message(text, id, conversation_id)
        async for frame in self.reply(ack.id):
            if isinstance(frame, Token):
                yield frame.text

    async def cancel(self, id: str) -> None:
        """Ask the server to stop the reply to ``id`` (it ends ``cancelled``).

        The ``end`` frame arrives on the reply's stream; an unknown id gets an
        ``unknown_message`` error there, or in :meth:`frames`.
        """
        await self.send(Cancel(id))

    async def resume(
        self, id: str, after_seq: int = -1, *, frame_timeout: float | None = None
    ) -> ReplyStream:
        """Ask for the reply to ``id`` from the token after ``after_seq`` on.

        Returns its :class:`ReplyStream` (``start``, the tokens, ``end``); an
        unknown id raises :class:`ReplyError` (``unknown_message``) from it.
        """
        frame = Resume(id, after_seq)
        stream = ReplyStream(id, self._router.follow(id, finished=False), frame_timeout)
        await self.send(frame)
        return stream

    async def ping(self) -> float:
        """Send an application ``ping``; return the seconds until its ``pong``."""
        loop = asyncio.get_running_loop()
        pong = self._router.expect_pong()
        started = loop.time()
        await self.send(Ping())
        await asyncio.wait_for(pong, self.timeout)
        return loop.time() - started

    async def reauth(self, token: str) -> None:
        """Replace the connection's token with a fresh one (before it expires)."""
        await self.send(Auth(token))

    async def frames(self) -> AsyncIterator[ServerFrame]:
        """Every frame nobody else claimed: echoes and replies from other tabs,
        errors with ``id`` null (``token_expired`` …). Ends when the connection
        closes. Unused when ``on_frame`` was given."""
        queue = self._router.other
        while True:
            frame = await queue.get()
            if isinstance(frame, _Closed):
                queue.put_nowait(frame)
                return
            yield frame


async def _receive_ready(ws: ClientConnection) -> Ready:
    """Read the first frame, which must be ``ready`` (or an ``error``)."""
    frame = decode_server(await ws.recv())
    if isinstance(frame, Ready):
        return frame
    if isinstance(frame, Error):
        raise ServerError(frame)
    raise ProtocolError(ErrorCode.INVALID_FRAME, f"expected 'ready', got {frame.type!r}")
