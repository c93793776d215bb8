"""One WebSocket's outgoing side (a write buffer that never blocks) and the registry
of this instance's open connections.

Frames out go through the connection's buffer (`Connection.push`, never
blocking), drained by a writer task that exists only while there is something
to write; a peer more than 1 MiB behind is closed with 1013 and its replies go
on without it. Only the handler task (`server.chat.session`) reads the socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import Gauge

from protocol import CloseCode
from protocol.wire import text_frame_header

if TYPE_CHECKING:
    from server.chat.replies import Reply

MAX_BEHIND_BYTES = 1024 * 1024
WRITE_HIGH_WATER = 64 * 1024
WRITE_WAIT_S = 0.01
MAX_REMEMBERED_SENDS = 64
CLOSE_WAIT_S = 15.0  # a closing handshake's longest wait: flush, then the peer's close


class Connection:
    """One authenticated WebSocket: its outgoing buffer and what it has asked for.

    Frames pushed in one turn of the event loop leave in one `transport.write` (a reply's
    `start`, tokens and `end` are usually pushed together): one system call instead of
    one a frame. Writing to the transport ourselves is safe because every text frame goes
    this way, unmasked and uncompressed (`compress=False`), and aiohttp writes its own
    control frames (ping, pong, close) whole and at once too.
    """

    # Slots: one of these per open socket (memory per idle connection, issue 14).
    __slots__ = (
        "_behind",
        "_buffer",
        "_closer",
        "_writer",
        "closing",
        "expires_at",
        "generation",
        "last_reply",
        "last_seen",
        "replies_queued",
        "sent",
        "transport",
        "user_id",
        "ws",
    )

    def __init__(
        self, ws: web.WebSocketResponse, user_id: int, transport: asyncio.Transport | None
    ) -> None:
        self.ws = ws
        self.user_id = user_id
        self.transport = transport
        # A list, swapped out whole by the writer: an empty deque takes 624 bytes, an
        # empty list 56, on every idle connection.
        self._buffer: list[bytes] = []
        self._behind = 0
        self._writer: asyncio.Task[None] | None = None
        self.closing = False
        self._closer: asyncio.Task[None] | None = None
        self.last_reply: Reply | None = None
        self.replies_queued = 0
        # The client ids this connection sent lately (an ordered set): it gets their
        # `ack` and follows their replies itself, never another sender's `message` echo.
        self.sent: dict[str, None] = {}
        self.last_seen = time.monotonic()
        self.expires_at = 0.0
        # The token generation it authenticated with; a newer one on the account means
        # its tokens were revoked (`server.chat.revocation` closes it then).
        self.generation = 0

    def sent_lately(self, client_id: str) -> bool:
        return client_id in self.sent

    def remember_sent(self, client_id: str) -> None:
        self.sent[client_id] = None
        if len(self.sent) > MAX_REMEMBERED_SENDS:
            del self.sent[next(iter(self.sent))]

    def push(self, frame: bytes) -> None:
        if self.closing:
            return
        self._buffer.append(frame)
        self._behind += len(frame)
        if self._behind > MAX_BEHIND_BYTES:
            self._buffer.clear()
            self.close_soon(CloseCode.TRY_AGAIN_LATER, "too slow to read")
            return
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        transport = self.transport
        try:
            while self._buffer:
                if self.ws.closed or transport is None or transport.is_closing():
                    raise ConnectionResetError("the connection is closing")
                # Above the transport's high-water mark the peer is slow: wait for it
                # (our buffer grows meanwhile, up to MAX_BEHIND_BYTES).
                if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                    await asyncio.sleep(WRITE_WAIT_S)
                    continue
                frames, self._buffer = self._buffer, []
                parts = []
                for frame in frames:
                    parts.append(text_frame_header(len(frame)))
                    parts.append(frame)
                self._behind = 0
                transport.write(b"".join(parts))
                await asyncio.sleep(0)
        except (ConnectionError, RuntimeError):
            self.closing = True
            self._buffer.clear()
        finally:
            self._writer = None

    async def flush(self, timeout_s: float = 5.0) -> None:
        writer = self._writer
        if writer is not None:
            await asyncio.wait({writer}, timeout=timeout_s)

    def close_soon(self, code: int, reason: str) -> None:
        """Close from any task; the handler's read loop then ends."""
        if self.closing:
            return
        self.closing = True
        self._closer = asyncio.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        await self.flush()
        await self.ws.close(code=code, message=reason.encode())

    async def closed(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Wait for a close we began: aiohttp sends the close frame behind what is still
        buffered, then reads (and drops) the peer's frames until its close frame. Were
        the handler to return first, the socket would be torn down with the peer's
        frames unread, a reset that loses the close frame (a slow reader's 1013)."""
        closer = self._closer
        if closer is not None and not closer.done():
            _, pending = await asyncio.wait({closer}, timeout=timeout_s)
            for task in pending:
                task.cancel()

    def track(self, reply: Reply) -> None:
        """Count a reply this connection asked for until it ends (the bounded queue)."""
        self.last_reply = reply
        self.replies_queued += 1
        reply.done_callbacks.append(self._reply_done)

    def _reply_done(self) -> None:
        self.replies_queued -= 1


class Connections:
    """The open connections of this instance, by user.

    A user's are a list, not a set: most users hold one socket, and an empty set takes
    216 bytes where a list of one takes 64 (MAX_CONNECTIONS_PER_USER keeps it short)."""

    def __init__(self, gauge: Gauge) -> None:
        self._by_user: dict[int, list[Connection]] = {}
        self._gauge = gauge  # chat_connections: kept with the set it counts

    def of(self, user_id: int) -> Sequence[Connection]:
        return self._by_user.get(user_id, ())

    def count(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    def add(self, conn: Connection) -> None:
        conns = self._by_user.setdefault(conn.user_id, [])
        if conn not in conns:
            conns.append(conn)
            self._gauge.inc()

    def remove(self, conn: Connection) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is not None and conn in conns:
            conns.remove(conn)
            self._gauge.dec()
            if not conns:
                del self._by_user[conn.user_id]

    def __iter__(self) -> Iterator[Connection]:
        for conns in list(self._by_user.values()):
            yield from list(conns)

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_user.values())
