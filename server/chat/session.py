"""An authenticated WebSocket's frames: the thin client of the `ReplyManager`.

The handler task reads the socket and answers each frame at once: `message`
is handed to the reply manager (stored with group commit, acked after the
commit, its reply started); `cancel`, `resume` and `ping` never wait behind
a reply; `auth` renews the token. Shortly before the token expires the
session sends `error token_expired`, then closes with 4401 unless a fresh
`auth` came. A peer silent for 60 s is dropped; one is pinged every 25 s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from aiohttp import WSMsgType, web

from protocol import (
    Ack,
    Auth,
    Cancel,
    CloseCode,
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
from server import keys
from server.auth.tokens import Claims, TokenError
from server.chat.connection import Connection
from server.chat.deadlines import Deadlines, Entry
from server.chat.replies import ShuttingDown
from server.chat.revocation import end_session, still_valid
from server.chat.store import IdConflict, RateLimited, UnknownConversation

log = logging.getLogger(__name__)

PING_EVERY_S = 25.0
SILENT_LIMIT_S = 60.0
MAX_QUEUED_REPLIES = 256  # bounds memory per connection, far above any real client
EXPIRY_WARNING_S = 30.0
PONG = encode_bytes(Pong())
DATABASE_UNAVAILABLE = "the database is unavailable"


async def refuse(ws: web.WebSocketResponse, code: ErrorCode, message: str, close: int) -> None:
    """An `error` frame, then the close: for a socket that never became a session."""
    await ws.send_frame(encode_bytes(Error(None, code, message)), WSMsgType.TEXT)
    await ws.close(code=close, message=message.encode())


class Session:
    """An authenticated connection's frame handling."""

    __slots__ = (
        "_close_at",
        "_deadline",
        "_next_ping",
        "_pinging",
        "_warn_at",
        "app",
        "claims",
        "conn",
        "connections",
        "replies",
        "user_id",
        "ws",
    )

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
        self.connections = app[keys.CONNECTIONS]
        self.conn = Connection(ws, claims.user_id, transport)
        # Its next deadline in the instance's heap (`server.chat.deadlines`), not timer
        # handles or sleeping tasks of its own (memory per idle connection, issue 14).
        self._deadline: Entry | None = None
        self._next_ping = self._warn_at = self._close_at = math.inf
        self._pinging: asyncio.Task[None] | None = None

    async def run(self) -> None:
        app, ws, conn = self.app, self.ws, self.conn
        try:
            user = await app[keys.USERS].get(self.user_id)
        except Exception:
            await refuse(ws, ErrorCode.UNAVAILABLE, DATABASE_UNAVAILABLE, 1011)
            return
        if not still_valid(user, self.claims.generation):
            await refuse(ws, ErrorCode.UNAUTHORIZED, "invalid token", CloseCode.AUTH_FAILED)
            return
        conn.generation = self.claims.generation
        settings = app[keys.SETTINGS]
        if self.connections.count(self.user_id) >= settings.max_connections_per_user:
            await ws.close(code=CloseCode.POLICY, message=b"too many connections")
            return
        self.connections.add(conn)
        try:
            conn.push(
                encode_bytes(
                    Ready(
                        self.user_id,
                        user["email"],
                        tuple(self.replies.pending(self.user_id)),
                        is_guest=user["is_guest"],
                    )
                )
            )
            self._next_ping = time.monotonic() + PING_EVERY_S
            self._watch_expiry(self.claims)
            await self._read_loop()
            await conn.closed()
        finally:
            conn.closing = True
            self.connections.remove(conn)
            self.replies.unfollow(conn)
            if self._deadline is not None:
                Deadlines.cancel(self._deadline)

    async def _read_loop(self) -> None:
        ws, conn = self.ws, self.conn
        while not ws.closed:
            msg = await ws.receive()
            conn.last_seen = time.monotonic()
            if msg.type == WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self._error(None, ErrorCode.INVALID_FRAME, "binary frames are not used")
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
            await self._on_auth(frame)

    def _error(self, id: str | None, code: ErrorCode, message: str, **extra: Any) -> None:
        self.conn.push(encode_bytes(Error(id, code, message, **extra)))

    def _unavailable(self, id: str | None, exc: Exception, doing: str) -> None:
        """The one answer to a database failure while handling a frame."""
        log.warning("%s failed: %s", doing, exc)
        self._error(id, ErrorCode.UNAVAILABLE, DATABASE_UNAVAILABLE)

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
        try:
            stored, reply = await self.replies.accept(
                self.user_id, frame.id, frame.text, conn, frame.conversation_id
            )
        except ShuttingDown:
            self._error(frame.id, ErrorCode.UNAVAILABLE, "the server is shutting down")
            return
        except IdConflict:
            self._error(frame.id, ErrorCode.ID_CONFLICT, "this id is stored with other content")
            return
        except UnknownConversation:
            self._error(frame.id, ErrorCode.UNKNOWN_CONVERSATION, "no conversation with this id")
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
            self._unavailable(frame.id, exc, "storing a message")
            return
        # A new reply's task was created before the ack's push creates the writer task, so
        # in the next turn the reply pushes its start and tokens (behind the ack) before
        # the writer runs: the ack leaves with them, in one write instead of two.
        conn.push(
            encode_bytes(
                Ack(
                    frame.id,
                    stored.message_id,
                    format_timestamp(stored.timestamp),
                    stored.conversation_id,
                )
            )
        )
        if reply is not None:
            conn.track(reply)
        else:  # a resend: the reply as `resume` from the start gives it
            await self._on_resume(frame.id, -1)

    # -- cancel and resume -----------------------------------------------------------------

    async def _on_cancel(self, frame: Cancel) -> None:
        try:
            known = await self.replies.cancel(self.user_id, frame.id)
        except Exception as exc:
            self._unavailable(frame.id, exc, "cancel")
            return
        if not known:
            self._error(frame.id, ErrorCode.UNKNOWN_MESSAGE, "no message with this id")

    async def _on_resume(self, client_id: str, after_seq: int) -> None:
        try:
            known = await self.replies.resume(self.user_id, client_id, self.conn, after_seq)
        except Exception as exc:
            self._unavailable(client_id, exc, "resume")
            return
        if not known:
            self._error(client_id, ErrorCode.UNKNOWN_MESSAGE, "no message with this id")

    # -- token expiry and heartbeats -------------------------------------------------------

    async def _on_auth(self, frame: Auth) -> None:
        """A fresh token, and a fresh look at the user: one deactivated, deleted or whose
        tokens were revoked since is not renewed but closed (4401)."""
        try:
            claims = self.app[keys.TOKENS].verify(frame.token)
        except TokenError as exc:
            code = ErrorCode.TOKEN_EXPIRED if exc.expired else ErrorCode.UNAUTHORIZED
            self._error(None, code, str(exc))
            return
        if claims.user_id != self.user_id:
            self._error(None, ErrorCode.UNAUTHORIZED, "the token is for another user")
            return
        try:
            user = await self.app[keys.USERS].get(self.user_id)
        except Exception as exc:
            self._unavailable(None, exc, "auth")
            return
        if not still_valid(user, claims.generation):
            end_session(self.conn, "the account was deactivated, deleted or its tokens revoked")
            return
        self.conn.generation = claims.generation
        self._watch_expiry(claims)

    def _watch_expiry(self, claims: Claims) -> None:
        """The warning shortly before `claims` expire (30 s, or a tenth of a short
        token's life), then the close unless a fresh `auth` replaced them."""
        self.claims = claims
        left = max(0.0, claims.expires_at - self.app[keys.TOKENS].clock())
        now = time.monotonic()
        self._warn_at = now + max(0.0, left - min(EXPIRY_WARNING_S, left / 10))
        self._close_at = now + left
        self._schedule()

    def _schedule(self) -> None:
        if self._deadline is not None:
            Deadlines.cancel(self._deadline)
        wake = min(
            self._next_ping, self.conn.last_seen + SILENT_LIMIT_S, self._warn_at, self._close_at
        )
        self._deadline = self.app[keys.DEADLINES].schedule(wake, self)

    def due(self, now: float) -> None:
        """The heartbeat and the token's expiry, at the earliest of their deadlines: ping
        every 25 s; drop a peer that has sent nothing (pongs included) for 60 s, at 60 s
        and not at the next ping after it; warn before the token expires, close at its
        expiry. Called by the instance's `Deadlines`."""
        self._deadline = None
        conn = self.conn
        if self.ws.closed or conn.closing:
            return
        if now - conn.last_seen >= SILENT_LIMIT_S:
            conn.close_soon(CloseCode.POLICY, "no sign of life for 60 s")
            return
        if now >= self._warn_at:
            self._warn_at = math.inf
            self._error(None, ErrorCode.TOKEN_EXPIRED, "the token expires soon; send a fresh auth")
        if now >= self._close_at:
            self._error(None, ErrorCode.TOKEN_EXPIRED, "the token expired")
            conn.close_soon(CloseCode.AUTH_FAILED, "token expired")
            return
        if now >= self._next_ping:
            self._next_ping = now + PING_EVERY_S
            self._pinging = asyncio.create_task(self._ping())
        self._schedule()

    async def _ping(self) -> None:
        try:
            await self.ws.ping()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self._pinging = None
