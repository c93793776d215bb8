"""The WebSocket chat channel: `GET /api/v1/chat/ws`.

Only the handler task reads its socket. Frames out go through the
connection's buffer (`Connection.push`, never blocking), drained by a writer
task that exists only while there is something to write; a peer more than
1 MiB behind is closed with 1013 and its replies go on without it.

The life of a connection:
1. handshake: Origin checked (403), a header token checked (401);
2. no header token: the first frame must be `auth`, within 10 s (4408);
3. `ready`, then frames: `message` is stored (group commit), acked, and its
   reply started; `cancel`, `resume` and `ping` are answered at once;
4. shortly before the token expires: `error token_expired`, then 4401
   unless a fresh `auth` came;
5. shutdown: replies are stored first, then every socket gets 1001.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

from aiohttp import WSMsgType, web
from yarl import URL

from protocol import (
    MAX_FRAME_BYTES,
    Ack,
    Auth,
    Cancel,
    CloseCode,
    Echo,
    Error,
    ErrorCode,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Ready,
    Resume,
    decode,
    encode_bytes,
    format_timestamp,
)
from protocol.wire import text_frame_header
from server import keys
from server.auth.tokens import Claims, TokenError
from server.chat.replies import Reply
from server.chat.store import IdConflict, RateLimited, StoredMessage
from server.db import queries
from server.http import APIError

log = logging.getLogger(__name__)

PING_EVERY_S = 25.0
SILENT_LIMIT_S = 60.0
MAX_BEHIND_BYTES = 1024 * 1024
WRITE_HIGH_WATER = 64 * 1024
WRITE_WAIT_S = 0.01
MAX_QUEUED_REPLIES = 256  # bounds memory per connection, far above any real client
MAX_REMEMBERED_SENDS = 64
MIRROR_WAIT_S = 1.0  # how long a resume waits for another instance's reply to show up
CLOSE_WAIT_S = 15.0  # a closing handshake's longest wait: flush, then the peer's close
EXPIRY_WARNING_S = 30.0
PONG = encode_bytes(Pong())


class Connection:
    """One authenticated WebSocket: its outgoing buffer and what it has asked for.

    Frames pushed in one turn of the event loop leave in one `transport.write` (a reply's
    `start`, tokens and `end` are usually pushed together): one system call instead of
    one a frame. Writing to the transport ourselves is safe because every text frame goes
    this way, unmasked and uncompressed (`compress=False`), and aiohttp writes its own
    control frames (ping, pong, close) whole and at once too.
    """

    def __init__(
        self, ws: web.WebSocketResponse, user_id: int, transport: asyncio.Transport | None
    ) -> None:
        self.ws = ws
        self.user_id = user_id
        self.transport = transport
        self._buffer: deque[bytes] = deque()
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
        buffer, transport = self._buffer, self.transport
        try:
            while buffer:
                if self.ws.closed or transport is None or transport.is_closing():
                    raise ConnectionResetError("the connection is closing")
                # Above the transport's high-water mark the peer is slow: wait for it
                # (our buffer grows meanwhile, up to MAX_BEHIND_BYTES).
                if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                    await asyncio.sleep(WRITE_WAIT_S)
                    continue
                parts = []
                while buffer:
                    frame = buffer.popleft()
                    parts.append(text_frame_header(len(frame)))
                    parts.append(frame)
                self._behind = 0
                transport.write(b"".join(parts))
                await asyncio.sleep(0)
        except (ConnectionError, RuntimeError):
            self.closing = True
            buffer.clear()
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
    """The open connections of this instance, by user."""

    def __init__(self) -> None:
        self._by_user: dict[int, set[Connection]] = {}

    def of(self, user_id: int) -> set[Connection]:
        return self._by_user.get(user_id, set())

    def count(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    def add(self, conn: Connection) -> None:
        self._by_user.setdefault(conn.user_id, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_user[conn.user_id]

    def __iter__(self) -> Iterator[Connection]:
        for conns in list(self._by_user.values()):
            yield from list(conns)

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_user.values())


def origin_allowed(request: web.Request, origin: str) -> bool:
    """No Origin (not a browser), the server's own origin, or one on the allow-list."""
    allowed = request.app[keys.SETTINGS].allowed_origins
    if "*" in allowed:
        return True
    origin = origin.rstrip("/")
    if origin in allowed or origin == request.app[keys.SETTINGS].own_origin:
        return True
    own = URL.build(scheme=request.scheme, authority=request.host)
    return origin == str(own).rstrip("/")


async def chat_ws(request: web.Request) -> web.StreamResponse:
    app = request.app
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(request, origin):
        raise APIError(403, "origin not allowed")
    if app[keys.STATE]["shutting_down"]:
        raise APIError(503, "the server is shutting down", {"Retry-After": "5"})
    claims = None
    if "Authorization" in request.headers:
        scheme, _, token = request.headers["Authorization"].partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise TokenError("invalid authorization header")
            claims = app[keys.TOKENS].verify(token.strip())
        except TokenError as exc:
            raise APIError(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None

    ws = web.WebSocketResponse(
        autoping=False,
        max_msg_size=MAX_FRAME_BYTES + 1,  # aiohttp refuses sizes >= the limit; 64 KiB is allowed
        compress=False,
        decode_text=False,
    )
    await ws.prepare(request)
    if claims is None:
        claims = await _first_frame_auth(app, ws)
        if claims is None:
            return ws
    await Session(app, ws, claims, request.transport).run()
    return ws


async def _refuse(ws: web.WebSocketResponse, code: ErrorCode, message: str, close: int) -> None:
    await ws.send_frame(encode_bytes(Error(None, code, message)), WSMsgType.TEXT)
    await ws.close(code=close, message=message.encode())


async def _first_frame_auth(app: web.Application, ws: web.WebSocketResponse) -> Claims | None:
    try:
        msg = await ws.receive(timeout=app[keys.SETTINGS].ws_auth_timeout_s)
    except TimeoutError:
        await ws.close(code=CloseCode.AUTH_TIMEOUT, message=b"no authentication in time")
        return None
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return None
    try:
        frame = decode(msg.data) if msg.type == WSMsgType.TEXT else None
    except ProtocolError:
        frame = None
    if not isinstance(frame, Auth):
        await _refuse(ws, ErrorCode.UNAUTHORIZED, "authenticate first", CloseCode.AUTH_FAILED)
        return None
    try:
        return app[keys.TOKENS].verify(frame.token)
    except TokenError as exc:
        code = ErrorCode.TOKEN_EXPIRED if exc.expired else ErrorCode.UNAUTHORIZED
        await _refuse(ws, code, str(exc), CloseCode.AUTH_FAILED)
        return None


class Session:
    """An authenticated connection's frame handling."""

    def __init__(
        self,
        app: web.Application,
        ws: web.WebSocketResponse,
        claims: Claims,
        transport: asyncio.Transport | None,
    ) -> None:
        self.app = app
        self.ws = ws
        self.claims = claims
        self.user_id = claims.user_id
        self.replies = app[keys.REPLIES]
        self.store = app[keys.REPLIES].store
        self.connections = app[keys.CONNECTIONS]
        self.fanout = app[keys.FANOUT]
        self.conn = Connection(ws, claims.user_id, transport)
        self._timers: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        app, ws, conn = self.app, self.ws, self.conn
        try:
            user = await queries.user_by_id(app[keys.POOL], self.user_id)
        except Exception:
            await _refuse(ws, ErrorCode.UNAVAILABLE, "the database is unavailable", 1011)
            return
        if user is None or not user["is_active"]:
            await _refuse(ws, ErrorCode.UNAUTHORIZED, "invalid token", CloseCode.AUTH_FAILED)
            return
        settings = app[keys.SETTINGS]
        if self.connections.count(self.user_id) >= settings.max_connections_per_user:
            await ws.close(code=CloseCode.POLICY, message=b"too many connections")
            return
        self.connections.add(conn)
        try:
            conn.push(
                encode_bytes(
                    Ready(self.user_id, user["email"], tuple(self.replies.pending(self.user_id)))
                )
            )
            self._watch_expiry(self.claims)
            self._timers.append(asyncio.create_task(self._heartbeat()))
            await self._read_loop()
            await conn.closed()
        finally:
            conn.closing = True
            self.connections.remove(conn)
            for reply in list(self.replies.active.values()):
                reply.followers.discard(conn)
            for timer in self._timers:
                timer.cancel()

    async def _read_loop(self) -> None:
        ws, conn = self.ws, self.conn
        while not ws.closed:
            msg = await ws.receive()
            conn.last_seen = time.monotonic()
            if msg.type == WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.push(
                    encode_bytes(Error(None, ErrorCode.INVALID_FRAME, "binary frames are not used"))
                )
            elif msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                pass
            else:  # CLOSE, CLOSING, CLOSED, ERROR (1009 for a frame too large is sent by aiohttp)
                break

    async def _on_text(self, data: bytes) -> None:
        conn = self.conn
        try:
            frame = decode(data)
        except ProtocolError as exc:
            conn.push(encode_bytes(Error.from_exception(exc)))
            return
        if isinstance(frame, Message):
            await self._on_message(frame)
        elif isinstance(frame, Ping):
            conn.push(PONG)
        elif isinstance(frame, Cancel):
            await self._on_cancel(frame)
        elif isinstance(frame, Resume):
            await self._on_resume(frame.id, frame.after_seq)
        elif isinstance(frame, Auth):
            self._on_auth(frame)

    def _error(self, id: str | None, code: ErrorCode, message: str, **extra: Any) -> None:
        self.conn.push(encode_bytes(Error(id, code, message, **extra)))

    # -- message ---------------------------------------------------------------------------

    async def _on_message(self, frame: Message) -> None:
        conn = self.conn
        if conn.replies_queued >= MAX_QUEUED_REPLIES:
            self._error(
                frame.id,
                ErrorCode.RATE_LIMITED,
                "too many replies queued on this connection; wait for one to end",
                retry_after=1.0,
            )
            return
        if self.replies.closing:
            self._error(frame.id, ErrorCode.UNAVAILABLE, "the server is shutting down")
            return
        conn.remember_sent(frame.id)
        try:
            stored = await self.store.add_message(self.user_id, frame.id, frame.text)
        except IdConflict:
            self._error(frame.id, ErrorCode.ID_CONFLICT, "this id is stored with another text")
            return
        except RateLimited as exc:
            self._error(
                frame.id,
                ErrorCode.RATE_LIMITED,
                "too many messages; slow down",
                retry_after=round(exc.retry_after, 1),
            )
            return
        except Exception as exc:
            log.warning("message not stored: %s", exc)
            self._error(frame.id, ErrorCode.UNAVAILABLE, "the database is unavailable")
            return
        ack = encode_bytes(Ack(frame.id, stored.message_id, format_timestamp(stored.timestamp)))
        if stored.created:
            # The reply's task is created before the ack's push creates the writer task, so
            # in the next turn the reply pushes its start and tokens (behind the ack) before
            # the writer runs: the ack leaves with them, in one write instead of two.
            reply = begin_reply(self.app, self.user_id, frame.id, frame.text, stored, conn)
            conn.push(ack)
            conn.track(reply)
        else:
            conn.push(ack)
            await self._on_resume(frame.id, -1)

    # -- cancel and resume -----------------------------------------------------------------

    async def _on_cancel(self, frame: Cancel) -> None:
        reply = self.replies.get(self.user_id, frame.id)
        if reply is not None:
            if reply.local:
                self.replies.cancel(self.user_id, frame.id)
            else:
                self.fanout.cancel(self.user_id, frame.id)
            return
        try:
            known = await self.store.pool.fetchval(
                "SELECT true FROM chat_history WHERE user_id = $1 AND client_id = $2",
                self.user_id,
                frame.id,
            )
        except Exception:
            self._error(frame.id, ErrorCode.UNAVAILABLE, "the database is unavailable")
            return
        if not known:
            self._error(frame.id, ErrorCode.UNKNOWN_MESSAGE, "no message with this id")

    async def _on_resume(self, client_id: str, after_seq: int) -> None:
        conn = self.conn
        reply = self.replies.get(self.user_id, client_id)
        if reply is not None:
            if conn not in reply.followers:
                reply.replay(conn, after_seq)
            return
        try:
            status = await self.replies.replay_stored(conn, self.user_id, client_id, after_seq)
            if status == "no_reply" and self.fanout.peers:
                # Most likely another instance stored the message a moment ago (a racing
                # resend) and generates the reply: follow its mirror, never a second one.
                reply = await self._mirror(client_id)
                if reply is not None:
                    if conn not in reply.followers:
                        reply.replay(conn, after_seq)
                    return
                status = await self.replies.replay_stored(conn, self.user_id, client_id, after_seq)
            if status == "no_reply":
                # The message is stored but nobody generates its reply (the instance
                # that did was lost): generate it now.
                row = await self.store.pool.fetchrow(
                    'SELECT id, message, "timestamp" FROM chat_history'
                    " WHERE user_id = $1 AND client_id = $2",
                    self.user_id,
                    client_id,
                )
                if row is None:
                    status = "unknown"
                else:
                    reply = self.replies.get(self.user_id, client_id) or self.replies.start(
                        self.user_id, client_id, row["id"], row["message"], ()
                    )
                    if conn not in reply.followers:
                        reply.replay(conn, after_seq)
        except Exception as exc:
            log.warning("resume failed: %s", exc)
            self._error(client_id, ErrorCode.UNAVAILABLE, "the database is unavailable")
            return
        if status == "unknown":
            self._error(client_id, ErrorCode.UNKNOWN_MESSAGE, "no message with this id")

    async def _mirror(self, client_id: str) -> Reply | None:
        """The reply another instance generates for `client_id`, once its fan-out events
        (milliseconds behind the commit) arrive; None after MIRROR_WAIT_S."""
        deadline = time.monotonic() + MIRROR_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            reply = self.replies.get(self.user_id, client_id)
            if reply is not None:
                return reply
        return None

    # -- token expiry and heartbeats -------------------------------------------------------

    def _on_auth(self, frame: Auth) -> None:
        try:
            claims = self.app[keys.TOKENS].verify(frame.token)
        except TokenError as exc:
            code = ErrorCode.TOKEN_EXPIRED if exc.expired else ErrorCode.UNAUTHORIZED
            self._error(None, code, str(exc))
            return
        if claims.user_id != self.user_id:
            self._error(None, ErrorCode.UNAUTHORIZED, "the token is for another user")
            return
        self._watch_expiry(claims)

    def _watch_expiry(self, claims: Claims) -> None:
        self.claims = claims
        self._timers = [t for t in self._timers if not t.done()]
        for timer in self._timers:
            if timer.get_name() == "expiry":
                timer.cancel()
        self._timers.append(asyncio.create_task(self._expiry(claims), name="expiry"))

    async def _expiry(self, claims: Claims) -> None:
        clock = self.app[keys.TOKENS].clock
        left = claims.expires_at - clock()
        warn_at = max(0.0, left - min(EXPIRY_WARNING_S, left / 10))
        await asyncio.sleep(warn_at)
        self._error(None, ErrorCode.TOKEN_EXPIRED, "the token expires soon; send a fresh auth")
        await asyncio.sleep(max(0.0, claims.expires_at - clock()))
        if self.claims is claims:
            self._error(None, ErrorCode.TOKEN_EXPIRED, "the token expired")
            self.conn.close_soon(CloseCode.AUTH_FAILED, "token expired")

    async def _heartbeat(self) -> None:
        """Ping every 25 s; drop a peer that has sent nothing (pongs included) for 60 s,
        at 60 s and not at the next ping after it."""
        next_ping = time.monotonic() + PING_EVERY_S
        while not self.ws.closed:
            drop_at = self.conn.last_seen + SILENT_LIMIT_S
            await asyncio.sleep(max(0.0, min(next_ping, drop_at) - time.monotonic()))
            now = time.monotonic()
            if now - self.conn.last_seen >= SILENT_LIMIT_S:
                self.conn.close_soon(CloseCode.POLICY, "no sign of life for 60 s")
                return
            if now >= next_ping:
                next_ping = now + PING_EVERY_S
                try:
                    await self.ws.ping()
                except (ConnectionError, RuntimeError):
                    return


def begin_reply(
    app: web.Application,
    user_id: int,
    client_id: str,
    text: str,
    stored: StoredMessage,
    sender: Connection | None,
) -> Reply:
    """A new message is stored: show it to the user's other tabs, everywhere, and reply."""
    # Another connection sending the same id (a racing resend) is no "other tab": it gets
    # its own `ack` and then follows the reply from the start, as a resend does.
    others = {
        c for c in app[keys.CONNECTIONS].of(user_id) if c is not sender and client_id not in c.sent
    }
    if others:
        echo = encode_bytes(
            Echo(client_id, stored.message_id, text, format_timestamp(stored.timestamp))
        )
        for other in others:
            other.push(echo)
    app[keys.FANOUT].message_stored(user_id, client_id, stored.message_id, text, stored.timestamp)
    followers = others | {sender} if sender else others
    after = sender.last_reply if sender else None
    return app[keys.REPLIES].start(
        user_id, client_id, stored.message_id, text, followers, after=after
    )


def new_client_id() -> str:
    return str(uuid.uuid4())
